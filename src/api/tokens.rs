//! The tokens file (`MEDIA_API_TOKENS_FILE`): tenants' bearer tokens, kept as SHA-256 digests,
//! each with its tenant and an optional expiry. It is read again when its modification time,
//! size or inode changes (checked on each use, one `stat`), so tokens are added, revoked and
//! moved between tenants without a restart.
//!
//! ```toml
//! [[token]]
//! sha256 = "<hex SHA-256 of the token>"   # printf %s "$TOKEN" | sha256sum
//! tenant = "acme"
//! expires_at = 2027-01-01T00:00:00Z       # optional
//! ```

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::domain::tenant::validate_tenant_name;

/// One accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub digest: [u8; 32],
    pub tenant: String,
    /// After this instant the token is refused (401), though it stays in the file.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    token: Vec<EntryShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryShape {
    sha256: String,
    tenant: String,
    #[serde(default)]
    expires_at: Option<toml::value::Datetime>,
}

/// Parses the file's text; the error names the entry at fault.
pub fn parse(text: &str) -> Result<Vec<TokenEntry>, String> {
    let shape: FileShape = toml::from_str(text).map_err(|e| e.message().to_string())?;
    let mut entries = Vec::with_capacity(shape.token.len());
    for (index, entry) in shape.token.into_iter().enumerate() {
        let at = |why: String| format!("token #{}: {why}", index + 1);
        let digest: [u8; 32] = hex::decode(entry.sha256.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| at("sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)".into()))?;
        validate_tenant_name(&entry.tenant).map_err(at)?;
        let expires_at = match entry.expires_at {
            None => None,
            Some(value) => Some(
                DateTime::parse_from_rfc3339(&value.to_string())
                    .map_err(|_| {
                        at(format!(
                            "expires_at must be a date-time with an offset, such as 2027-01-01T00:00:00Z, got {value}"
                        ))
                    })?
                    .with_timezone(&Utc),
            ),
        };
        entries.push(TokenEntry { digest, tenant: entry.tenant, expires_at });
    }
    Ok(entries)
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp { modified: meta.modified().ok(), len: meta.len(), inode })
}

struct Loaded {
    stamp: Option<Stamp>,
    entries: Vec<TokenEntry>,
}

pub struct TokensFile {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl TokensFile {
    /// Reads the file once; at start-up an unreadable or invalid file is an error.
    pub fn open(path: &Path) -> Result<Self, String> {
        let stamp = stamp(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let entries = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), loaded: RwLock::new(Loaded { stamp: Some(stamp), entries }) })
    }

    /// How many tokens the file holds now.
    pub fn len(&self) -> usize {
        self.refresh();
        self.loaded.read().unwrap_or_else(PoisonError::into_inner).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of a token's digest, after reloading the file if it changed. Every entry is
    /// compared, so the time taken says nothing about which one matched.
    pub fn find(&self, digest: &[u8; 32]) -> Option<TokenEntry> {
        self.refresh();
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for entry in &loaded.entries {
            if bool::from(entry.digest.ct_eq(digest)) {
                found = Some(entry.clone());
            }
        }
        found
    }

    /// Reloads the file when it changed. A missing file holds no tokens (revoking all of them);
    /// an invalid one is logged and the previous tokens stay, so a half-written edit does not
    /// lock every client out.
    fn refresh(&self) {
        let now = stamp(&self.path).ok();
        if self.loaded.read().unwrap_or_else(PoisonError::into_inner).stamp == now {
            return;
        }
        let mut loaded = self.loaded.write().unwrap_or_else(PoisonError::into_inner);
        if loaded.stamp == now {
            return;
        }
        loaded.stamp = now;
        if now.is_none() {
            tracing::warn!(path = %self.path.display(), "The tokens file is gone: no tenant token is accepted.");
            loaded.entries.clear();
            return;
        }
        match std::fs::read_to_string(&self.path).map_err(|e| e.to_string()).and_then(|text| parse(&text)) {
            Ok(entries) => {
                tracing::info!(path = %self.path.display(), tokens = entries.len(), "Tokens file reloaded.");
                loaded.entries = entries;
            }
            Err(err) => {
                tracing::error!(path = %self.path.display(), error = %err, "The tokens file is invalid; keeping the previous tokens.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    #[test]
    fn entries_name_a_digest_a_tenant_and_maybe_an_expiry() {
        let text = format!(
            "[[token]]\nsha256 = \"{}\"\ntenant = \"acme\"\n\n[[token]]\nsha256 = \"{}\"\ntenant = \"globex\"\nexpires_at = 2027-01-01T00:00:00Z\n",
            hex::encode(digest("one")),
            hex::encode(digest("two")).to_uppercase()
        );
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], TokenEntry { digest: digest("one"), tenant: "acme".into(), expires_at: None });
        assert_eq!(entries[1].digest, digest("two"));
        assert_eq!(entries[1].expires_at.unwrap().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert_eq!(parse("").unwrap(), Vec::new());
        let bad = [
            "[[token]]\nsha256 = \"abc\"\ntenant = \"acme\"\n",
            &format!("[[token]]\nsha256 = \"{}\"\ntenant = \"Acme/x\"\n", hex::encode(digest("x"))),
            &format!("[[token]]\nsha256 = \"{}\"\ntenant = \"a\"\nexpires_at = 2027-01-01\n", hex::encode(digest("x"))),
            &format!("[[token]]\nsha256 = \"{}\"\ntenant = \"a\"\nrole = \"admin\"\n", hex::encode(digest("x"))),
            "token = 3",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_file_is_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let entry = |token: &str, tenant: &str| {
            format!("[[token]]\nsha256 = \"{}\"\ntenant = \"{tenant}\"\n", hex::encode(digest(token)))
        };
        std::fs::write(&path, entry("one", "acme")).unwrap();
        let file = TokensFile::open(&path).unwrap();
        assert_eq!(file.find(&digest("one")).unwrap().tenant, "acme");
        assert!(file.find(&digest("two")).is_none());

        std::fs::write(&path, entry("two", "globex") + &entry("one", "acme-two")).unwrap();
        assert_eq!(file.find(&digest("two")).unwrap().tenant, "globex");
        assert_eq!(file.find(&digest("one")).unwrap().tenant, "acme-two");

        // A broken edit keeps the last good tokens; removing the file revokes them all.
        std::fs::write(&path, "[[token]]\nsha256 = ").unwrap();
        assert_eq!(file.find(&digest("two")).unwrap().tenant, "globex");
        std::fs::remove_file(&path).unwrap();
        assert!(file.find(&digest("two")).is_none());
        assert!(file.is_empty());
        assert!(TokensFile::open(&path).is_err());
    }
}

//! A key that passed the checks every store applies, so an implementation cannot forget them.

use std::fmt;

use super::{StorageError, StorageResult};
use crate::domain::keys::validate_key;

/// An object key that passed [`validate_key`]: no `..`, empty or absolute segment, no control
/// character or backslash. Joined onto a folder, it stays inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks `key`; [`StorageError::InvalidKey`] when it fails.
    pub fn parse(key: &str) -> StorageResult<ObjectKey> {
        match validate_key(key) {
            Ok(()) => Ok(ObjectKey(key.to_string())),
            Err(reason) => Err(StorageError::InvalidKey { key: key.to_string(), reason }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its `/`-separated segments, none empty.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::KeyError;

    #[test]
    fn only_checked_keys_become_object_keys() {
        let key = ObjectKey::parse("uploads/a/b.mp4").unwrap();
        assert_eq!(key.as_str(), "uploads/a/b.mp4");
        assert_eq!(key.segments().collect::<Vec<_>>(), ["uploads", "a", "b.mp4"]);
        assert_eq!(key.to_string(), "uploads/a/b.mp4");
        for (bad, reason) in [
            ("", KeyError::Empty),
            ("../x", KeyError::BadSegment),
            ("/etc/passwd", KeyError::Absolute),
            ("a\\b", KeyError::Backslash),
            ("a\0b", KeyError::ControlCharacter),
            ("uploads//x", KeyError::BadSegment),
        ] {
            match ObjectKey::parse(bad) {
                Err(StorageError::InvalidKey { key, reason: got }) => {
                    assert_eq!(key, bad);
                    assert_eq!(got, reason, "{bad:?}");
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
    }
}

//! Tenants: which keys a caller of the API may see.
//!
//! A tenant's uploads live under `<upload prefix>tenants/<name>/` and its outputs under
//! `<output prefix>tenants/<name>/` (a job's default folder follows its source, so it lands
//! there by itself). A job belongs to the tenant owning both its source and its output folder.
//! The shared scope (the tokens of `MEDIA_API_TOKENS`, or anonymous mode) sees everything
//! outside the tenants' folders, so a deployment that names no tenant keeps its layout.

use crate::domain::job::JobSpec;
use crate::domain::keys::{KeyLayout, TENANTS_FOLDER};
/// Longest tenant name.
const MAX_TENANT_NAME: usize = 48;

/// The keys a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything outside the tenants' folders.
    Shared,
    /// One tenant's folders only; the name passed [`validate_tenant_name`].
    Tenant(String),
}

/// Tenant names become a key segment: lowercase letters, digits and inner `-`, 1 to 48.
pub fn validate_tenant_name(name: &str) -> Result<(), String> {
    let ok = (1..=MAX_TENANT_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("a tenant name is 1 to {MAX_TENANT_NAME} of a-z, 0-9 and inner '-', got `{name}`"))
    }
}

/// The tenant whose folder holds `key`, under either prefix, if any.
pub fn tenant_of(layout: &KeyLayout, key: &str) -> Option<String> {
    [layout.upload_prefix(), layout.output_prefix()].iter().find_map(|prefix| {
        let rest = key.strip_prefix(prefix)?.strip_prefix(TENANTS_FOLDER)?;
        let (name, _) = rest.split_once('/')?;
        validate_tenant_name(name).is_ok().then(|| name.to_string())
    })
}

impl Scope {
    /// The scope's name in the job ledger's index: `shared`, or `tenant:<name>`.
    pub fn label(&self) -> String {
        match self {
            Scope::Shared => "shared".to_string(),
            Scope::Tenant(name) => format!("tenant:{name}"),
        }
    }

    /// The folder new uploads of this scope go under (a subfolder of the upload prefix).
    pub fn upload_root(&self, layout: &KeyLayout) -> String {
        self.root(layout.upload_prefix())
    }

    /// The folder client-chosen output folders of this scope must be under.
    pub fn output_root(&self, layout: &KeyLayout) -> String {
        self.root(layout.output_prefix())
    }

    /// The key of a new upload of this scope: `<upload root><folder>/<sanitised name>`.
    pub fn upload_key(&self, layout: &KeyLayout, folder: &str, file_name: &str) -> String {
        match self {
            Scope::Shared => layout.upload_key(folder, file_name),
            Scope::Tenant(name) => layout.upload_key(&format!("{TENANTS_FOLDER}{name}/{folder}"), file_name),
        }
    }

    fn root(&self, prefix: &str) -> String {
        match self {
            Scope::Shared => prefix.to_string(),
            Scope::Tenant(name) => format!("{prefix}{TENANTS_FOLDER}{name}/"),
        }
    }

    /// Whether a key (or a folder) is this scope's to see.
    pub fn owns(&self, layout: &KeyLayout, key: &str) -> bool {
        match self {
            Scope::Shared => [layout.upload_prefix(), layout.output_prefix()]
                .iter()
                .all(|prefix| !key.starts_with(&format!("{prefix}{TENANTS_FOLDER}"))),
            Scope::Tenant(_) => {
                key.starts_with(&self.upload_root(layout)) || key.starts_with(&self.output_root(layout))
            }
        }
    }

    /// Whether a job is this scope's: both its source and its output folder are.
    pub fn owns_job(&self, layout: &KeyLayout, job: &JobSpec) -> bool {
        self.owns(layout, &job.source_key) && self.owns(layout, &job.output_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KeyLayout {
        KeyLayout::new("uploads/", "outputs/").unwrap()
    }

    #[test]
    fn tenants_see_their_folders_and_the_shared_scope_the_rest() {
        let acme = Scope::Tenant("acme".into());
        let globex = Scope::Tenant("globex".into());
        assert_eq!(acme.upload_root(&layout()), "uploads/tenants/acme/");
        assert_eq!(acme.output_root(&layout()), "outputs/tenants/acme/");
        assert_eq!(Scope::Shared.upload_root(&layout()), "uploads/");
        assert_eq!(acme.upload_key(&layout(), "f", "../a b.mp4"), "uploads/tenants/acme/f/a b.mp4");
        assert_eq!(Scope::Shared.upload_key(&layout(), "f", "x.mp4"), "uploads/f/x.mp4");
        let own = ["uploads/tenants/acme/f/clip.mp4", "outputs/tenants/acme/f/clip.mp4/j1/manifest.json"];
        for key in own {
            assert!(acme.owns(&layout(), key), "{key}");
            assert!(!globex.owns(&layout(), key), "{key}");
            assert!(!Scope::Shared.owns(&layout(), key), "{key}");
        }
        for key in ["uploads/f/clip.mp4", "outputs/f/clip.mp4/j1/", "uploads/tenants-x/a", "uploads/tenants/acmex/a"] {
            assert!(!acme.owns(&layout(), key), "{key}");
        }
        assert!(Scope::Shared.owns(&layout(), "uploads/f/clip.mp4"));
        // The default folder of a tenant's source is the tenant's.
        let dir = layout().job_dir("uploads/tenants/acme/f/clip.mp4", "j1");
        assert!(acme.owns(&layout(), &dir) && !Scope::Shared.owns(&layout(), &dir), "{dir}");
    }

    #[test]
    fn tenant_names_are_one_plain_segment() {
        for ok in ["acme", "a", "team-7", &"x".repeat(48)] {
            assert!(validate_tenant_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "a/b", "..", "-a", "a-", "a b", "ünï", &"x".repeat(49)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad}");
        }
    }
}

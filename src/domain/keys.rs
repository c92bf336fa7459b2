//! The bucket's key layout, and the checks every key passes before it is used.
//!
//! A source `uploads/<path>/<name>` produces its outputs in the job's own folder
//! `outputs/<path>/<name>/<job_id>/`: each attempt's files under `attempt-<n>/`, then
//! `manifest.json` last; a split job keeps its pieces, segments and records under `split/`.
//! Job status lives in the job ledger, not here. Every key the worker composes is made here.

/// Prefix of the job status documents of versions before the job ledger: reserved, so no
/// layout puts uploads or outputs there, and read once by `media-worker ledger import`.
pub const JOBS_PREFIX: &str = "jobs/";

/// The longest key S3 accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Why a key (or a job id) was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("the key contains a control character (NUL, newline, ...)")]
    ControlCharacter,
    #[error("the key contains a backslash")]
    Backslash,
    #[error("the key starts with '/'")]
    Absolute,
    #[error("the key has an empty, '.' or '..' path segment")]
    BadSegment,
    #[error("the key's first segment is reserved for the store's own temporary files")]
    Reserved,
    #[error("a job id must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    BadJobId,
}

/// Refuses keys that could escape a folder on the local backend or confuse tools downstream.
/// The same rules apply on S3, so a job behaves the same on both backends.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::ControlCharacter);
    }
    if key.contains('\\') {
        return Err(KeyError::Backslash);
    }
    if key.starts_with('/') {
        return Err(KeyError::Absolute);
    }
    if key.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(KeyError::BadSegment);
    }
    Ok(())
}

/// A prefix is a key ending in `/` (or empty); same rules otherwise.
pub fn validate_prefix(prefix: &str) -> Result<(), KeyError> {
    match prefix.strip_suffix('/') {
        Some(inner) => validate_key(inner),
        None if prefix.is_empty() => Ok(()),
        None => validate_key(prefix),
    }
}

/// Job ids become keys (a job's folder ends in its id), so they are kept to a safe alphabet.
pub fn validate_job_id(id: &str) -> Result<(), KeyError> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(KeyError::BadJobId) }
}

/// Key of a job's status document in the bucket, where versions before the job ledger kept
/// them (read once more by `media-worker ledger import`).
pub fn status_key(job_id: &str) -> String {
    format!("{JOBS_PREFIX}{job_id}.json")
}

/// The job id of a status document's key (`jobs/<id>.json`); `None` for anything else under
/// `jobs/` (the old source index, delivery records, claims).
pub fn job_id_of_status_key(key: &str) -> Option<&str> {
    key.strip_prefix(JOBS_PREFIX)?.strip_suffix(".json").filter(|id| validate_job_id(id).is_ok())
}

/// The folder, under both prefixes, holding one folder per tenant
/// ([`crate::domain::tenant`]).
pub const TENANTS_FOLDER: &str = "tenants/";

/// The folder, under a scope's upload root, where imported sources are stored (one folder per
/// job: `imports/<job id>/<file name>`).
pub const IMPORTS_FOLDER: &str = "imports/";

/// Whether a path starts with `imports/<API job id>/`: the folder of one imported source.
pub fn starts_with_import_folder(path: &str) -> bool {
    let Some(rest) = path.strip_prefix(IMPORTS_FOLDER) else { return false };
    let Some((folder, _)) = rest.split_once('/') else { return false };
    is_api_job_id(folder)
}

/// Whether a job id is one the API or the CLI makes: `job-` and 32 to 48 lowercase hex digits.
pub fn is_api_job_id(id: &str) -> bool {
    id.strip_prefix("job-").is_some_and(|hex| {
        (32..=48).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Where uploads arrive and where outputs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    upload_prefix: String,
    output_prefix: String,
}

impl KeyLayout {
    /// Both prefixes must be non-empty folders (`uploads/`), and neither may contain the other,
    /// or the worker would take its own outputs for new uploads.
    pub fn new(upload_prefix: &str, output_prefix: &str) -> Result<Self, String> {
        let normalise = |p: &str| if p.ends_with('/') { p.to_string() } else { format!("{p}/") };
        let (upload, output) = (normalise(upload_prefix), normalise(output_prefix));
        for prefix in [&upload, &output] {
            validate_prefix(prefix).map_err(|e| format!("bad prefix `{prefix}`: {e}"))?;
        }
        if upload.starts_with(&output) || output.starts_with(&upload) {
            return Err(format!("the upload prefix `{upload}` and output prefix `{output}` overlap"));
        }
        if upload.starts_with(JOBS_PREFIX) || output.starts_with(JOBS_PREFIX) {
            return Err(format!("`{JOBS_PREFIX}` is reserved for job status"));
        }
        Ok(Self { upload_prefix: upload, output_prefix: output })
    }

    pub fn upload_prefix(&self) -> &str {
        &self.upload_prefix
    }

    pub fn output_prefix(&self) -> &str {
        &self.output_prefix
    }

    pub fn is_upload(&self, key: &str) -> bool {
        key.starts_with(&self.upload_prefix)
    }

    /// Keys the worker writes itself: outputs, status, and sources it imported from a URL.
    /// Events for these are never jobs.
    pub fn is_own_write(&self, key: &str) -> bool {
        key.starts_with(&self.output_prefix) || key.starts_with(JOBS_PREFIX) || self.is_import(key)
    }

    /// A source a worker fetched from a URL: `<upload prefix>imports/job-<hex>/<name>`, or the
    /// same under a tenant's folder (`<upload prefix>tenants/<name>/imports/job-<hex>/...`). Its
    /// job exists before the file does, so the file's upload event must not make a second one.
    /// Client uploads never land here (their keys start with a random folder), and a folder a
    /// user names `imports` keeps making jobs unless its next folder is an API job id.
    pub fn is_import(&self, key: &str) -> bool {
        let Some(relative) = key.strip_prefix(&self.upload_prefix) else { return false };
        let relative = match relative.strip_prefix(TENANTS_FOLDER) {
            Some(in_tenant) => in_tenant.split_once('/').map_or("", |(_, rest)| rest),
            None => relative,
        };
        starts_with_import_folder(relative)
    }

    /// The folder a job writes into: `uploads/a/b/clip.mov` -> `outputs/a/b/clip.mov/<job_id>/`.
    /// The whole file name (extension included) and the job id are in it, so no two sources
    /// (`clip.mov` and `clip.mp4`), and no two writes of one source, ever share a folder. A
    /// source outside the upload prefix keeps its whole path under the output prefix.
    pub fn job_dir(&self, source_key: &str, job_id: &str) -> String {
        let relative = source_key.strip_prefix(&self.upload_prefix).unwrap_or(source_key);
        format!("{}{relative}/{job_id}/", self.output_prefix)
    }

    /// A key chosen for a new upload from a user's file name, under `uploads/<folder>/`.
    pub fn upload_key(&self, folder: &str, file_name: &str) -> String {
        format!("{}{folder}/{}", self.upload_prefix, sanitize_file_name(file_name))
    }
}

/// The manifest's file name, in every job's folder; no output may take it.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The quality sidecar's file name in an attempt's folder: each scored rendition's VMAF per
/// second (and a split job's seams), for plots; the manifest carries the summaries. No preset's
/// file takes this name.
pub const QUALITY_FILE: &str = "quality.json";

/// The manifest's key inside a job's folder: the commit record of its outputs, written last.
pub fn manifest_key(output_dir: &str) -> String {
    format!("{output_dir}{MANIFEST_FILE}")
}

/// The folder of one attempt's files inside a job's folder. Each attempt writes only here, so
/// the files of an earlier (or a stale, still running) attempt never mix with a later one's.
pub fn attempt_dir(output_dir: &str, attempt: u32) -> String {
    format!("{output_dir}attempt-{attempt}/")
}

/// `<output_dir>split/`: what a split job keeps between workers and attempts (deleted once the
/// job completes).
pub fn split_dir(output_dir: &str) -> String {
    format!("{output_dir}split/")
}

/// `split/split.json`: the split record, written once per job.
pub fn record_key(output_dir: &str) -> String {
    format!("{}split.json", split_dir(output_dir))
}

/// The file name of piece `index` (in scratch, and under the job's `split/` folder).
pub fn piece_file(index: u32) -> String {
    format!("piece-{index:05}.nut")
}

/// `split/watermark.img`: a split job's checked watermark image, which every segment draws.
pub fn watermark_key(output_dir: &str) -> String {
    format!("{}watermark.img", split_dir(output_dir))
}

/// Piece `index` of the source, as the split pass cut it.
pub fn piece_key(output_dir: &str, index: u32) -> String {
    format!("{}{}", split_dir(output_dir), piece_file(index))
}

/// Segment `index`'s encoded rendition, by its file name (`hls-360p.ts`, `cmaf-av1-480p.mp4`).
pub fn segment_file_key(output_dir: &str, index: u32, file: &str) -> String {
    format!("{}segment-{index:05}/{file}", split_dir(output_dir))
}

/// The checkpoint: present once every rendition of segment `index` is stored.
pub fn done_key(output_dir: &str, index: u32) -> String {
    format!("{}segment-{index:05}.done.json", split_dir(output_dir))
}

/// How far the encode of segment `index` is, as a fraction written as text (`0.42`), refreshed
/// at every heartbeat while it runs.
pub fn progress_key(output_dir: &str, index: u32) -> String {
    format!("{}segment-{index:05}.progress", split_dir(output_dir))
}

/// Present when segment `index` failed for good.
pub fn failed_key(output_dir: &str, index: u32) -> String {
    format!("{}segment-{index:05}.failed.json", split_dir(output_dir))
}

/// Keeps a user's file name readable but safe as the last segment of a key: letters, digits,
/// spaces and `._-` survive, anything else becomes `_`, and leading dots are dropped.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ') { c } else { '_' })
        .take(200)
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    if trimmed.is_empty() { "file".to_string() } else { trimmed.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KeyLayout {
        KeyLayout::new("uploads/", "outputs/").unwrap()
    }

    #[test]
    fn job_dirs_follow_the_source_path_and_never_collide() {
        let cases = [
            ("uploads/2024/cat video.mov", "outputs/2024/cat video.mov/j1/"),
            ("uploads/clip.mp4", "outputs/clip.mp4/j1/"),
            ("uploads/clip.mov", "outputs/clip.mov/j1/"),
            ("uploads/a/b/c/archive.tar.gz", "outputs/a/b/c/archive.tar.gz/j1/"),
            ("uploads/noext", "outputs/noext/j1/"),
            ("elsewhere/x.avi", "outputs/elsewhere/x.avi/j1/"),
            ("uploads/ünïcødé/日本.mkv", "outputs/ünïcødé/日本.mkv/j1/"),
        ];
        for (source, dir) in cases {
            assert_eq!(layout().job_dir(source, "j1"), dir, "{source}");
            assert!(validate_prefix(dir).is_ok(), "{dir}");
        }
        assert_ne!(layout().job_dir("uploads/clip.mp4", "j1"), layout().job_dir("uploads/clip.mp4", "j2"));
        assert_eq!(manifest_key("outputs/clip.mp4/j1/"), "outputs/clip.mp4/j1/manifest.json");
        assert_eq!(attempt_dir("outputs/clip.mp4/j1/", 2), "outputs/clip.mp4/j1/attempt-2/");
        assert_eq!(job_id_of_status_key("jobs/s3-1.json"), Some("s3-1"));
        assert_eq!(job_id_of_status_key("jobs/by-source/0123/s3-1"), None);
    }

    #[test]
    fn a_split_job_keeps_its_records_in_its_folder() {
        let dir = "outputs/clip.mp4/j1/";
        assert_eq!(split_dir(dir), "outputs/clip.mp4/j1/split/");
        assert_eq!(record_key(dir), "outputs/clip.mp4/j1/split/split.json");
        assert_eq!(piece_key(dir, 3), "outputs/clip.mp4/j1/split/piece-00003.nut");
        assert_eq!(segment_file_key(dir, 3, "hls-360p.ts"), "outputs/clip.mp4/j1/split/segment-00003/hls-360p.ts");
        assert_eq!(done_key(dir, 3), "outputs/clip.mp4/j1/split/segment-00003.done.json");
        assert_eq!(progress_key(dir, 3), "outputs/clip.mp4/j1/split/segment-00003.progress");
        assert_eq!(failed_key(dir, 3), "outputs/clip.mp4/j1/split/segment-00003.failed.json");
    }

    #[test]
    fn hostile_keys_are_refused() {
        let cases = [
            ("", KeyError::Empty),
            ("uploads/../etc/passwd", KeyError::BadSegment),
            ("uploads/./x", KeyError::BadSegment),
            ("uploads//x", KeyError::BadSegment),
            ("uploads/x/", KeyError::BadSegment),
            ("/etc/passwd", KeyError::Absolute),
            ("uploads\\..\\x", KeyError::Backslash),
            ("uploads/a\0b", KeyError::ControlCharacter),
            ("uploads/a\nb", KeyError::ControlCharacter),
        ];
        for (key, expected) in cases {
            assert_eq!(validate_key(key), Err(expected), "{key:?}");
        }
        assert_eq!(validate_key(&"a".repeat(1025)), Err(KeyError::TooLong));
        assert!(validate_key("uploads/2024/cat video (1).mov").is_ok());
        assert!(validate_key("uploads/ünïcødé/日本.mkv").is_ok());
    }

    #[test]
    fn job_ids_are_a_safe_alphabet() {
        assert!(validate_job_id("s3-0123abcd").is_ok());
        assert!(validate_job_id("job_42").is_ok());
        for bad in ["", "../x", "a b", "a/b", &"x".repeat(65)] {
            assert_eq!(validate_job_id(bad), Err(KeyError::BadJobId), "{bad}");
        }
    }

    #[test]
    fn prefixes_must_not_overlap() {
        assert!(KeyLayout::new("media/", "media/out/").is_err());
        assert!(KeyLayout::new("uploads", "uploads/").is_err());
        assert!(KeyLayout::new("jobs/in/", "outputs/").is_err());
        assert_eq!(KeyLayout::new("in", "out").unwrap().upload_prefix(), "in/");
        assert!(layout().is_own_write("outputs/clip/mp4-h264.mp4"));
        assert!(layout().is_own_write("jobs/x.json"));
        assert!(!layout().is_own_write("uploads/x.mp4"));
        let job = "job-5f0c1e0a9b8d4c2fa7e6d5c4b3a29180";
        for import in
            [format!("uploads/imports/{job}/clip.mp4"), format!("uploads/tenants/acme/imports/{job}/clip.mp4")]
        {
            assert!(layout().is_import(&import) && layout().is_own_write(&import), "{import}");
        }
        let uploads = [
            "uploads/3f2a/imports",
            "uploads/importsx/a.mp4",
            "uploads/tenants/imports/a.mp4",
            "imports/job-5f0c1e0a9b8d4c2fa7e6d5c4b3a29180/a.mp4",
            "uploads/imports/2024/a.mp4",
            "uploads/imports/job-1/a.mp4",
            "uploads/imports/JOB-5F0C1E0A9B8D4C2FA7E6D5C4B3A29180/a.mp4",
        ];
        for upload in uploads {
            assert!(!layout().is_import(upload), "{upload}");
        }
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\Users\\me\\clip.mov"), "clip.mov");
        assert_eq!(sanitize_file_name("cat video.mov"), "cat video.mov");
        assert_eq!(sanitize_file_name("..."), "file");
        assert_eq!(sanitize_file_name("a$b;c|d.mp4"), "a_b_c_d.mp4");
        assert_eq!(layout().upload_key("abc", "x.mp4"), "uploads/abc/x.mp4");
    }
}

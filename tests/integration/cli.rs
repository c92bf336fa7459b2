//! The command line as scripts use it, on both backends: stdout holds only the result (one
//! JSON document, or one item per line), exit codes tell completed, failed, timed out and not
//! found apart, `jobs` lists from the status documents, and `dead-letters` lists, shows,
//! redrives and purges. Also `scripts/demo` run from another folder.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use media_worker::domain::status::JobState;
use media_worker::queue::SendOptions;
use serde_json::Value;

use crate::require;
use crate::support::{Clip, Deployment, Kind, emulator, media_tools};

fn tools(kind: Kind) -> bool {
    media_tools() && (kind == Kind::Local || emulator())
}

/// What one `media-worker` command did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Stdout as exactly one JSON document (anything before or after it fails).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn expect(self, code: i32, what: &str) -> Self {
        assert_eq!(self.code, Some(code), "{what}: exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

async fn run(d: &Deployment, args: &[&str]) -> Ran {
    let mut cmd = d.command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("media-worker {args:?} did not finish within 300 s"))
        .expect("run media-worker");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A file no ffprobe reads as media, stored at `key` (outside the upload prefix, so only a
/// submitted job uses it).
async fn put_garbage(d: &Deployment, key: &str) {
    d.storage().put_bytes(key, b"this is not a video".to_vec(), "video/mp4").await.expect("put");
}

async fn submit_wait_and_exit_codes(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    let clip = clip.display().to_string();

    // No worker yet: the wait times out (on S3, waiting for a worker to take the upload).
    let timed_out = run(&d, &["submit", &clip, "--wait", "--timeout", "2s"]).await.expect(3, "timed out");
    assert!(timed_out.stdout.is_empty(), "{}", timed_out.stdout);

    let _worker = d.spawn_worker("worker", &[]);
    let done = run(&d, &["submit", &clip, "--wait", "--timeout", "240s"]).await.expect(0, "completed");
    let manifest = done.json();
    let outputs = manifest["outputs"].as_array().expect("outputs");
    assert!(!outputs.is_empty() && outputs[0]["key"].as_str().is_some_and(|k| k.ends_with(".mp4")), "{manifest}");
    let completed = manifest["job_id"].as_str().expect("job_id").to_string();
    assert!(done.stderr.lines().any(|l| l == format!("job {completed}")), "{}", done.stderr);

    put_garbage(&d, "incoming/broken.mp4").await;
    let failed = run(&d, &["submit", "incoming/broken.mp4", "--wait", "--timeout", "240s"]).await.expect(1, "failed");
    assert!(failed.stdout.is_empty(), "{}", failed.stdout);
    assert!(failed.stderr.contains("failed: not_media"), "{}", failed.stderr);

    // Without --wait: the id alone, then `status --follow` prints the final status document.
    let submitted = run(&d, &["submit", "incoming/broken.mp4"]).await.expect(0, "submitted");
    let [second] = submitted.lines()[..] else { panic!("not one id: {:?}", submitted.stdout) };
    let second = second.to_string();
    let followed = run(&d, &["status", &second, "--follow", "--timeout", "240s"]).await.expect(1, "followed");
    let status = followed.json();
    assert_eq!((status["job_id"].as_str(), status["state"].as_str()), (Some(second.as_str()), Some("failed")));
    assert_eq!(status["error"]["code"], "not_media");
    let status = run(&d, &["status", &completed]).await.expect(0, "status").json();
    assert_eq!(status["state"], "completed");

    run(&d, &["status", "job-does-not-exist"]).await.expect(4, "unknown job");
    run(&d, &["submit", "incoming/missing.mp4"]).await.expect(4, "missing key");
    run(&d, &["submit", "../escape.mp4"]).await.expect(2, "invalid key");
    run(&d, &["jobs", "--state", "broken"]).await.expect(2, "unknown state");

    // `jobs --state failed` lists exactly the failed jobs: the wait-failed one and `second`.
    let store = d.store();
    let failed_ids: BTreeSet<String> = run(&d, &["jobs", "--state", "failed", "--quiet"])
        .await
        .expect(0, "jobs")
        .lines()
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(failed_ids.len(), 2, "{failed_ids:?}");
    assert!(failed_ids.contains(&second));
    for id in &failed_ids {
        let status = store.read(id).await.expect("read").expect("status");
        assert_eq!((status.state, status.job.source_key.as_str()), (JobState::Failed, "incoming/broken.mp4"));
    }
    let listed = run(&d, &["jobs", "--json", "--since", "1h"]).await.expect(0, "jobs --json").json();
    let listed = listed.as_array().expect("an array");
    assert!(listed.iter().any(|j| j["job_id"] == completed.as_str() && j["state"] == "completed"), "{listed:?}");
    assert_eq!(listed.iter().filter(|j| j["state"] == "failed").count(), 2);
    let table = run(&d, &["jobs", "--limit", "1"]).await.expect(0, "jobs --limit");
    assert_eq!(table.lines().len(), 1, "{}", table.stdout);
    assert!(table.stdout.split('\t').count() >= 8, "tab-separated when not a terminal: {}", table.stdout);
}

async fn dead_letters(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    d.queues().ready.send("this is not json", SendOptions::default()).await.expect("send poison");
    put_garbage(&d, "incoming/clip.mp4").await;
    let submitted = run(&d, &["submit", "incoming/clip.mp4"]).await.expect(0, "submit");
    let failed_job = submitted.stdout.trim().to_string();
    d.drain().await;

    let letters = run(&d, &["dead-letters", "list", "--json"]).await.expect(0, "list").json();
    let letters = letters.as_array().expect("an array").clone();
    // Listing hides nothing for longer than it takes.
    assert_eq!(d.queues().dead_letter.counts().await.expect("counts").visible, 2, "{letters:?}");
    assert_eq!(letters.len(), 2, "{letters:?}");
    let poison = letters.iter().find(|l| l["reason"] == "not_json").expect("the poison message");
    assert!(poison["job_id"].is_null() && poison["source_key"].is_null(), "{poison}");
    let failed = letters.iter().find(|l| l["reason"] == "not_media").expect("the failed job");
    assert_eq!(failed["job_id"], failed_job.as_str());
    assert_eq!(failed["source_key"], "incoming/clip.mp4");
    assert_eq!(failed["origin"], "worker");
    for letter in &letters {
        let age = letter["age_seconds"].as_i64().unwrap_or_else(|| panic!("no age: {letter}"));
        assert!((0..600).contains(&age), "{letter}");
    }
    let (poison_id, failed_id) = (
        poison["message_id"].as_str().expect("id").to_string(),
        failed["message_id"].as_str().expect("id").to_string(),
    );

    // One line per dead letter, its id first.
    let table = run(&d, &["dead-letters", "list"]).await.expect(0, "list");
    let ids: BTreeSet<&str> = table.lines().iter().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(ids, BTreeSet::from([poison_id.as_str(), failed_id.as_str()]), "{}", table.stdout);
    let only = run(&d, &["dead-letters", "list", "--reason", "not_json", "--quiet"]).await.expect(0, "list --reason");
    assert_eq!(only.lines(), [poison_id.as_str()]);

    let shown = run(&d, &["dead-letters", "show", &failed_id]).await.expect(0, "show").json();
    assert_eq!(shown["job"]["state"], "failed");
    assert_eq!(shown["attributes"]["reason"], "not_media");
    assert!(shown["body"].as_str().is_some_and(|b| b.contains(&failed_job)), "{shown}");
    run(&d, &["dead-letters", "show", "no-such-message"]).await.expect(4, "show unknown");
    run(&d, &["dead-letters", "purge", "--all"]).await.expect(2, "purge unconfirmed");
    run(&d, &["dead-letters", "redrive"]).await.expect(2, "redrive of nothing named");
    assert_eq!(d.queues().dead_letter.counts().await.expect("counts").visible, 2);

    // The cause removed (a real video at the key), the failed job comes back as a new job.
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("incoming/clip.mp4", &clip).await;
    let redriven = run(&d, &["dead-letters", "redrive", &failed_id, "--json"]).await.expect(0, "redrive").json();
    let [outcome] = redriven.as_array().expect("an array").as_slice() else { panic!("{redriven}") };
    assert_eq!(
        (outcome["action"].as_str(), outcome["previous_job_id"].as_str()),
        (Some("resubmitted"), Some(failed_job.as_str()))
    );
    let new_job = outcome["job_id"].as_str().expect("the new job").to_string();
    assert_ne!(new_job, failed_job);

    // The poison message goes back to the ready queue as it is.
    let redriven = run(&d, &["dead-letters", "redrive", "--all", "--json"]).await.expect(0, "redrive --all").json();
    let [outcome] = redriven.as_array().expect("an array").as_slice() else { panic!("{redriven}") };
    assert_eq!(
        (outcome["message_id"].as_str(), outcome["action"].as_str()),
        (Some(poison_id.as_str()), Some("resent"))
    );
    assert_eq!(d.queues().dead_letter.counts().await.expect("counts").total(), 0);

    d.drain().await;
    let status = d.store().read(&new_job).await.expect("read").expect("the new job's status");
    assert_eq!(status.state, JobState::Completed, "{status:?}");
    assert_eq!(status.job.source_key, "incoming/clip.mp4");
    let manifest = d.json(status.manifest_key.as_deref().expect("manifest key")).await;
    assert_eq!(manifest["job_id"], new_job.as_str());
    let old = d.store().read(&failed_job).await.expect("read").expect("the old job's status");
    assert_eq!(old.state, JobState::Failed, "a failed job stays failed");

    // Still poison: dead-lettered again, then purged.
    let again = run(&d, &["dead-letters", "list", "--json"]).await.expect(0, "list").json();
    let reasons: Vec<&str> = again.as_array().expect("an array").iter().filter_map(|l| l["reason"].as_str()).collect();
    assert_eq!(reasons, ["not_json"]);
    let purged = run(&d, &["dead-letters", "purge", "--all", "--yes"]).await.expect(0, "purge");
    assert!(purged.stdout.is_empty(), "{}", purged.stdout);
    assert_eq!(d.queues().dead_letter.counts().await.expect("counts").total(), 0);
    let empty = run(&d, &["dead-letters", "list"]).await.expect(0, "list of none");
    assert!(empty.stdout.is_empty(), "{}", empty.stdout);
}

crate::on_both_backends!(submit_wait_and_exit_codes, dead_letters);

#[tokio::test]
async fn completions_need_no_settings() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-worker"))
        .args(["completions", "bash"])
        .env_clear()
        .env("MEDIA_BACKEND", "not-a-backend")
        .output()
        .await
        .expect("run media-worker");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let script = String::from_utf8_lossy(&output.stdout);
    assert!(script.contains("complete -F _media__worker") && script.contains("dead-letters"), "{script}");
    // Any other command refuses the broken setting as a usage error.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-worker"))
        .args(["jobs"])
        .env_clear()
        .env("MEDIA_BACKEND", "not-a-backend")
        .output()
        .await
        .expect("run media-worker");
    assert_eq!(output.status.code(), Some(2));
}

fn demo(caller: &Path, data: &Path, args: &[&str], built: bool) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script)
        .args(args)
        .current_dir(caller)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", caller)
        .env("MEDIA_DATA_DIR", data)
        .stdin(Stdio::null());
    if built {
        cmd.env("MEDIA_WORKER_BIN", env!("CARGO_BIN_EXE_media-worker"));
    }
    cmd.output().expect("run scripts/demo")
}

#[test]
fn demo_takes_a_path_relative_to_the_callers_folder() {
    require!(media_tools());
    let dir = tempfile::TempDir::new().expect("temp dir");
    let caller = dir.path().join("somewhere else");
    std::fs::create_dir_all(caller.join("clips")).expect("mkdir");
    let data = dir.path().join("data");

    // A missing file is refused before anything is built.
    let missing = demo(&caller, &data, &["clips/nope.mov"], false);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("clips/nope.mov is not a file") && !stderr.contains("Building"), "{stderr}");

    Clip::default().make(&caller.join("clips/my clip.mp4"));
    let ran = demo(&caller, &data, &["clips/my clip.mp4"], true);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "scripts/demo failed: {stderr}");
    assert!(stderr.contains("Done in") && stderr.contains("  manifest: "), "{stderr}");
    let saved = std::fs::read_to_string(data.join("last-manifest.json")).expect("the saved manifest");
    let manifest: Value = serde_json::from_str(&saved).expect("the saved manifest is JSON");
    assert!(manifest["source"]["key"].as_str().is_some_and(|k| k.ends_with("/my clip.mp4")), "{manifest}");
    assert!(manifest["outputs"].as_array().is_some_and(|o| !o.is_empty()), "{manifest}");
    assert!(!data.join("last-manifest.json.partial").exists());
}

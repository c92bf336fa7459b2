//! Jobs: submit (idempotency, webhooks, URL inputs), read, list, cancel, and delete outputs.

use super::*;

#[tokio::test]
async fn idempotency_keys_return_the_same_job_per_caller() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let headers = [("idempotency-key", "order-17")];
    let first =
        api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &headers).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json());
    let job_id = first.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(first.headers[header::LOCATION], format!("/v1/jobs/{job_id}"));
    assert_eq!(first.json()["state"], "queued");
    assert_eq!(first.json()["output_dir"], format!("outputs/a/clip.mp4/{job_id}/"));
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(api.drain_ready().await.len(), 1, "one message published");

    let again =
        api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &headers).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["job_id"], job_id.as_str());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // Still queued: republished, in case the first request never got to publish.
    assert_eq!(api.drain_ready().await.len(), 1);

    let different = json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/other/"});
    let reused = api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(different), &headers).await;
    reused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");

    let other = api
        .call_as(Some(OTHER_TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &headers)
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    assert_ne!(other.json()["job_id"], job_id.as_str(), "keys are scoped to the caller");

    let plain = api.call(Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4"))).await;
    assert_ne!(plain.json()["job_id"], job_id.as_str());
    let bad = api
        .call_as(
            Some(TOKEN),
            Method::POST,
            "/v1/jobs",
            Some(job_request("uploads/a/clip.mp4")),
            &[("idempotency-key", "")],
        )
        .await;
    bad.assert_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
}

#[tokio::test]
async fn a_queued_job_is_cancelled_and_its_message_skipped() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let submitted = api.call(Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4"))).await;
    let job_id = submitted.json()["job_id"].as_str().unwrap().to_string();

    let answer = api.call(Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
    assert_eq!(answer.json(), json!({"job_id": job_id, "action": "cancelled", "state": "cancelled", "deleted": []}));
    let status = api.status(&job_id).await;
    assert_eq!(status.state, JobState::Cancelled);
    assert!(status.timeline.iter().any(|e| e.note.as_deref() == Some("cancel requested through the API")));

    // The worker drops the queued message: the job ended.
    let worker = crate::worker::Worker::new(api.state.config.clone(), api.state.backend.clone());
    assert_eq!(worker.poll_once().await.unwrap(), 1);
    assert_eq!(worker.summary().skipped, 1);
    assert_eq!(worker.running(), 0);
    assert_eq!(api.status(&job_id).await.state, JobState::Cancelled);

    // A second DELETE finds it ended, with nothing to delete.
    let answer = api.call(Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["action"], "outputs_deleted");
    assert_eq!(answer.json()["deleted"], json!([]));
}

#[tokio::test]
async fn a_completed_job_has_signed_downloads_and_its_outputs_can_be_deleted() {
    let api = api().await;
    completed_job(&api, "job-done", "outputs/a/clip.mp4/job-done/").await;
    // Another job of the same source has its own folder, which is not this job's to delete.
    let nested = "outputs/a/clip.mp4/job-later/attempt-1/mp4-h264.mp4";
    api.state.backend.storage.put_bytes(nested, b"x".to_vec(), "video/mp4").await.unwrap();

    let answer = api.call(Method::GET, "/v1/jobs/job-done", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let view = answer.json();
    assert_eq!(view["state"], "completed");
    assert_eq!(view["manifest"]["outputs"][0]["key"], "outputs/a/clip.mp4/job-done/attempt-1/mp4-h264.mp4");
    let downloads = view["downloads"].as_array().unwrap();
    assert_eq!(downloads.len(), 2, "the output and the manifest");
    let url = downloads[0]["url"].as_str().unwrap();
    let path = url.strip_prefix("http://127.0.0.1:8080").unwrap().to_string();
    assert!(path.starts_with("/v1/files/outputs/a/clip.mp4/job-done/attempt-1/mp4-h264.mp4?expires="), "{path}");

    // The signed URL works without a token; a tampered one does not; a token works too.
    let file = api.call_as(None, Method::GET, &path, None, &[]).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body, b"fake mp4 bytes");
    assert_eq!(file.headers[header::CONTENT_TYPE], "video/mp4");
    let other = path.replace("mp4-h264.mp4", "manifest.json");
    api.call_as(None, Method::GET, &other, None, &[]).await.assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let unsigned = path.split('?').next().unwrap();
    api.call_as(None, Method::GET, unsigned, None, &[]).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(api.call(Method::GET, unsigned, None).await.status, StatusCode::OK);
    api.call(Method::GET, "/v1/files/uploads/a/clip.mp4", None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_key");
    api.call(Method::GET, "/v1/files/outputs/a/..%2F..%2Fjobs/x.json", None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_key");
    api.call(Method::GET, "/v1/files/outputs/none.mp4", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "file_not_found");

    // The event stream of an ended job: its state, then the end.
    let events = api.call(Method::GET, "/v1/jobs/job-done/events", None).await;
    assert_eq!(events.status, StatusCode::OK);
    assert_eq!(events.headers[header::CONTENT_TYPE], "text/event-stream");
    let text = String::from_utf8(events.body).unwrap();
    assert_eq!(text.matches("event: status").count(), 1, "{text}");
    assert!(text.contains("\"state\":\"completed\""), "{text}");

    let answer = api.call(Method::DELETE, "/v1/jobs/job-done", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
    assert_eq!(
        answer.json(),
        json!({"job_id": "job-done", "action": "outputs_deleted", "state": "completed",
               "deleted": ["outputs/a/clip.mp4/job-done/manifest.json", "outputs/a/clip.mp4/job-done/attempt-1/mp4-h264.mp4"]})
    );
    assert_eq!(api.state.backend.storage.list("outputs/").await.unwrap(), [nested]);
    let view = api.call(Method::GET, "/v1/jobs/job-done", None).await.json();
    assert_eq!(view["state"], "completed");
    assert_eq!(view["manifest"], Value::Null);
    assert!(
        view["timeline"].as_array().unwrap().iter().any(|e| e["note"].as_str().is_some_and(|n| n.contains("deleted")))
    );
}

#[tokio::test]
async fn a_cancel_never_overwrites_an_ending() {
    let api = api().await;
    let status = completed_job(&api, "job-raced", "outputs/a/clip.mp4/job-raced/").await;
    // The API read the job while it ran; the worker completed it before the cancel was written.
    let cancel = Event::Cancel { note: "late".into() };
    let refused = api.state.store.apply("job-raced", &cancel).await.unwrap();
    assert!(matches!(refused, crate::jobs::Applied::Refused { .. }), "{refused:?}");
    assert_eq!(api.status("job-raced").await, status);
}

/// Per-job webhooks: refused unless the deployment signs webhooks and the URL is safe to call
/// (checked at submit; the worker checks every connection again).
#[tokio::test]
async fn notify_urls_are_checked_at_submit() {
    let with_notify = |url: &str| {
        let mut body = job_request("uploads/a/clip.mp4");
        body["notify"] = json!({"url": url});
        body
    };
    let plain = api().await;
    plain.source("uploads/a/clip.mp4").await;
    plain
        .call(Method::POST, "/v1/jobs", Some(with_notify("https://example.com/hook")))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "notifications_disabled");

    let secret = crate::notify::sign::Secret::generate();
    let api = api_with(&[("MEDIA_WEBHOOK_SECRET", secret.as_str()), ("MEDIA_WEBHOOK_ALLOW_LOOPBACK", "true")]).await;
    api.source("uploads/a/clip.mp4").await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/",
        "https://[fd00:ec2::254]/",
        "https://10.0.0.8/hook",
        "https://192.168.1.1/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "http://93.184.216.34/hook",
        "https://user:pass@127.0.0.1/hook",
        "ftp://127.0.0.1/hook",
        "not a url",
    ] {
        let answer = api.call(Method::POST, "/v1/jobs", Some(with_notify(url))).await;
        answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_notify_url");
        // The refusal says what is wrong without echoing internals.
        assert!(!answer.json()["error"]["message"].as_str().unwrap_or_default().contains("Error"), "{url}");
    }
    let unknown = json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "notify": {"url": "https://x.example/", "secret": "x"}});
    api.call(Method::POST, "/v1/jobs", Some(unknown))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    // Loopback, with the development setting: accepted, kept with the job and shown.
    let answer = api.call(Method::POST, "/v1/jobs", Some(with_notify("http://127.0.0.1:9/hook"))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
    let job_id = answer.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(api.status(&job_id).await.job.notify.map(|n| n.url).as_deref(), Some("http://127.0.0.1:9/hook"));
    let view = api.call(Method::GET, &format!("/v1/jobs/{job_id}"), None).await.json();
    assert_eq!(view["notify"]["url"], "http://127.0.0.1:9/hook");
    assert_eq!(view["deliveries"]["attempts"], json!([]));
    // Its queued event waits in the ledger's outbox, stored with the job, for a worker's relay.
    let outbox = api.state.backend.ledger.outbox_take(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event.kind, "job.queued");
    assert_eq!(outbox[0].event.status.job_id, job_id);
}

#[tokio::test]
async fn a_failed_job_shows_its_code_public_sentence_not_the_cause() {
    let api = api().await;
    let job: JobSpec = serde_json::from_value(json!({
        "job_id": "job-failed", "source_key": "uploads/a/clip.mp4", "outputs": [{"preset": "mp4-h264"}],
        "output_dir": "outputs/a/clip.mp4/job-failed/"
    }))
    .unwrap();
    let attempt = Attempt::start(&api.state.store, &job, 1, "run-1", "w", 3).await.unwrap().unwrap();
    // A document written with a raw cause (as older workers did) is redacted on the way out.
    let cause =
        "dispatch failure: AccessDenied for arn:aws:iam::123456789012:role/media-worker at /var/scratch/j/in.mp4";
    let raw = crate::domain::status::ErrorInfo { code: "storage".into(), message: cause.into(), retryable: false };
    attempt.fail(raw).await.unwrap();
    let view = api.call(Method::GET, "/v1/jobs/job-failed", None).await.json();
    assert_eq!(view["state"], "failed");
    assert_eq!(view["error"]["code"], "storage");
    assert_eq!(view["error"]["message"], crate::domain::status::public_message("storage"));
    let text = view.to_string();
    assert!(!text.contains("123456789012") && !text.contains("/var/scratch"), "{text}");
}

#[tokio::test]
async fn url_inputs_are_checked_at_submit_and_land_in_the_callers_imports_folder() {
    let with_url = |url: &str| json!({"input": {"url": url}, "outputs": [{"preset": "mp4-h264"}]});
    let strict = api().await;
    for url in [
        "http://127.0.0.1:9/clip.mp4",
        "https://127.0.0.1/clip.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/clip.mp4",
        "https://[::ffff:10.0.0.1]/clip.mp4",
        "http://93.184.216.34/clip.mp4",
        "file:///etc/passwd",
        "not a url",
    ] {
        let answer = strict.call(Method::POST, "/v1/jobs", Some(with_url(url))).await;
        answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "fetch_refused");
    }
    // Exactly one of key and url.
    for input in [json!({}), json!({"key": "uploads/a/clip.mp4", "url": "https://example.com/a.mp4"})] {
        let body = json!({"input": input, "outputs": [{"preset": "mp4-h264"}]});
        strict
            .call(Method::POST, "/v1/jobs", Some(body))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    assert!(strict.drain_ready().await.is_empty(), "no refused job reached the queue");

    // Allowed (development setting, loopback): queued with the URL, nothing fetched yet.
    let (api, _dir, _path) = tenants_api_with(&[("MEDIA_IMPORT_ALLOW_LOOPBACK", "true")]).await;
    for (token, root) in [(TOKEN, "uploads/imports/"), (ACME, "uploads/tenants/acme/imports/")] {
        let url = "http://127.0.0.1:9/media/cat%20video.mov?sig=abc";
        let answer = api.call_as(Some(token), Method::POST, "/v1/jobs", Some(with_url(url)), &[]).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
        let job_id = answer.json()["job_id"].as_str().unwrap().to_string();
        let status = api.status(&job_id).await;
        assert_eq!(status.job.source_key, format!("{root}{job_id}/cat video.mov"));
        assert_eq!(status.job.import.as_ref().map(|i| i.url.as_str()), Some(url));
        assert!(status.job.source.is_empty(), "nothing to pin before the fetch");
        assert!(api.state.backend.storage.head(&status.job.source_key).await.unwrap().is_none());
        let queued = api.drain_ready().await;
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(queued[0].contains(r#""import":{"url":"#), "{}", queued[0]);
    }
    // A URL without a file name is stored as `source`.
    let answer = api.call(Method::POST, "/v1/jobs", Some(with_url("http://127.0.0.1:9/"))).await;
    let job_id = answer.json()["job_id"].as_str().unwrap().to_string();
    assert!(api.status(&job_id).await.job.source_key.ends_with(&format!("/{job_id}/source")));
}

#[tokio::test]
async fn jobs_are_listed_newest_first_a_page_at_a_time_and_per_scope() {
    let (api, _dir, _path) = tenants_api().await;
    let shared_key = api.upload_as(TOKEN).await;
    let acme_key = api.upload_as(ACME).await;
    let submit = |token: &'static str, key: String| {
        let api = &api;
        async move {
            let answer = api.call_as(Some(token), Method::POST, "/v1/jobs", Some(job_request(&key)), &[]).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
            answer.json()["job_id"].as_str().unwrap().to_string()
        }
    };
    let mut shared = Vec::new();
    for _ in 0..5 {
        shared.push(submit(TOKEN, shared_key.clone()).await);
    }
    let acme = [submit(ACME, acme_key.clone()).await, submit(ACME, acme_key.clone()).await];

    // Pages of two, following the cursor: every job once, newest first.
    let mut seen: Vec<Value> = Vec::new();
    let mut uri = "/v1/jobs?limit=2".to_string();
    loop {
        let page = api.call(Method::GET, &uri, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.json());
        let page = page.json();
        let jobs = page["jobs"].as_array().unwrap().clone();
        assert!(jobs.len() <= 2);
        seen.extend(jobs);
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/jobs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let ids: Vec<&str> = seen.iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = shared.iter().map(String::as_str).collect();
    expected.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "the shared scope sees its five jobs, once each");
    // Newest first, to the millisecond (jobs of one millisecond by id).
    let created: Vec<i64> = seen
        .iter()
        .map(|j| j["created_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap().timestamp_millis())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");
    assert_eq!(seen[0]["status_url"], format!("/v1/jobs/{}", ids[0]));
    assert_eq!(seen[0]["outputs"], json!([{"preset": "mp4-h264"}]));

    // A tenant sees its own only; a state filters.
    let mine = api.call_as(Some(ACME), Method::GET, "/v1/jobs", None, &[]).await.json();
    let mut mine: Vec<&str> = mine["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    mine.sort();
    let mut acme_ids: Vec<&str> = acme.iter().map(String::as_str).collect();
    acme_ids.sort();
    assert_eq!(mine, acme_ids);
    let queued = api.call(Method::GET, "/v1/jobs?state=queued&limit=100", None).await.json();
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 5);
    let failed = api.call(Method::GET, "/v1/jobs?state=failed", None).await.json();
    assert_eq!(failed, json!({"jobs": [], "next_cursor": null}));

    for (uri, code) in [
        ("/v1/jobs?cursor=nonsense", "invalid_cursor"),
        ("/v1/jobs?cursor=12.a%2Fb", "invalid_cursor"),
        ("/v1/jobs?limit=0", "invalid_query"),
        ("/v1/jobs?limit=101", "invalid_query"),
        ("/v1/jobs?state=lost", "invalid_query"),
    ] {
        api.call(Method::GET, uri, None).await.assert_error(StatusCode::BAD_REQUEST, code);
    }
    api.call_as(None, Method::GET, "/v1/jobs", None, &[]).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

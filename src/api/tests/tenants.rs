//! Tenants: each sees only its own uploads, jobs and outputs.

use super::*;

#[tokio::test]
async fn tenants_see_only_their_own_uploads_jobs_and_outputs() {
    let (api, _dir, _path) = tenants_api().await;
    let acme_key = api.upload_as(ACME).await;
    assert!(acme_key.starts_with("uploads/tenants/acme/"), "{acme_key}");
    let globex_key = api.upload_as(GLOBEX).await;
    let shared_key = api.upload_as(TOKEN).await;
    assert!(!shared_key.starts_with("uploads/tenants/"), "{shared_key}");

    let api = &api;
    let submit = |token: &'static str, body: Value| async move {
        api.call_as(Some(token), Method::POST, "/v1/jobs", Some(body), &[]).await
    };
    let acme_job = submit(ACME, job_request(&acme_key)).await;
    assert_eq!(acme_job.status, StatusCode::ACCEPTED, "{}", acme_job.json());
    let acme_job = acme_job.json();
    let acme_id = acme_job["job_id"].as_str().unwrap().to_string();
    assert!(acme_job["output_dir"].as_str().unwrap().starts_with("outputs/tenants/acme/"), "{acme_job}");

    // Another tenant's (or the shared scope's) source is as absent as a missing one.
    for (token, key) in [(GLOBEX, &acme_key), (TOKEN, &acme_key), (ACME, &globex_key), (ACME, &shared_key)] {
        submit(token, job_request(key)).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "source_not_found");
        let info = format!("/v1/uploads/{key}");
        api.call_as(Some(token), Method::GET, &info, None, &[])
            .await
            .assert_error(StatusCode::NOT_FOUND, "upload_not_found");
    }
    // Every read, follow, cancel and delete of another tenant's job: 404, and nothing changes.
    for token in [GLOBEX, TOKEN] {
        for (method, uri) in [
            (Method::GET, format!("/v1/jobs/{acme_id}")),
            (Method::GET, format!("/v1/jobs/{acme_id}/events")),
            (Method::DELETE, format!("/v1/jobs/{acme_id}")),
        ] {
            api.call_as(Some(token), method, &uri, None, &[])
                .await
                .assert_error(StatusCode::NOT_FOUND, "job_not_found");
        }
    }
    assert_eq!(api.status(&acme_id).await.state, JobState::Queued);
    assert_eq!(
        api.call_as(Some(ACME), Method::GET, &format!("/v1/jobs/{acme_id}"), None, &[]).await.status,
        StatusCode::OK
    );

    // Output folders: only under the caller's own root, and never inside any job's folder.
    let acme_dir = acme_job["output_dir"].as_str().unwrap().to_string();
    let with_prefix = |key: &str, prefix: &str| json!({"input": {"key": key}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": prefix});
    let refused = [
        (GLOBEX, with_prefix(&globex_key, "outputs/tenants/acme/campaign/")),
        (GLOBEX, with_prefix(&globex_key, "outputs/campaign/")),
        (TOKEN, with_prefix(&shared_key, "outputs/tenants/acme/campaign/")),
        (TOKEN, with_prefix(&shared_key, "outputs/tenants/")),
        (ACME, with_prefix(&acme_key, &acme_dir)),
        (ACME, with_prefix(&acme_key, &format!("{acme_dir}attempt-1/"))),
    ];
    for (token, body) in refused {
        submit(token, body.clone()).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_output_prefix");
    }
    let own = submit(ACME, with_prefix(&acme_key, "outputs/tenants/acme/campaign/")).await;
    assert_eq!(own.status, StatusCode::ACCEPTED, "{}", own.json());
    // The shared scope cannot nest in a job's folder either.
    let shared = submit(TOKEN, job_request(&shared_key)).await.json();
    let shared_dir = shared["output_dir"].as_str().unwrap().to_string();
    submit(TOKEN, with_prefix(&shared_key, &shared_dir))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_output_prefix");

    // Downloads with a token: the caller's own outputs only.
    let acme_file = format!("{acme_dir}attempt-1/mp4-h264.mp4");
    api.state.backend.storage.put_bytes(&acme_file, b"mp4".to_vec(), "video/mp4").await.unwrap();
    let file_uri = format!("/v1/files/{acme_file}");
    assert_eq!(api.call_as(Some(ACME), Method::GET, &file_uri, None, &[]).await.status, StatusCode::OK);
    for token in [GLOBEX, TOKEN] {
        api.call_as(Some(token), Method::GET, &file_uri, None, &[])
            .await
            .assert_error(StatusCode::NOT_FOUND, "file_not_found");
    }
}

/// A `cmaf` job's caption files are checked like its source: another tenant's file, a missing
/// one or one outside the uploads is refused before anything is queued.
#[tokio::test]
async fn caption_files_must_be_the_callers_own_uploads() {
    let (api, _dir, _path) = tenants_api().await;
    let acme_key = api.upload_as(ACME).await;
    let acme_captions = api.upload_as(ACME).await;
    let globex_captions = api.upload_as(GLOBEX).await;
    let with_captions = |captions: &str| {
        json!({"input": {"key": acme_key}, "outputs": [{"preset": "cmaf",
            "captions": [{"key": captions, "language": "en", "name": "English"}]}]})
    };
    let refused = [
        (with_captions(&globex_captions), "captions_not_found"),
        (with_captions("uploads/tenants/acme/missing.srt"), "captions_not_found"),
        (with_captions("outputs/tenants/acme/x.srt"), "invalid_key"),
    ];
    let mut messages = Vec::new();
    for (body, code) in refused {
        let response = api.call_as(Some(ACME), Method::POST, "/v1/jobs", Some(body.clone()), &[]).await;
        response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, code);
        messages.push(response.json()["error"]["message"].as_str().unwrap_or_default().to_string());
    }
    // Another tenant's stored file reads exactly as a missing one: nothing tells it exists.
    let (other, missing) = (&messages[0], &messages[1]);
    assert!(missing.contains("no caption file is stored"), "{messages:?}");
    assert_eq!(
        other.replace(&globex_captions, "KEY"),
        missing.replace("uploads/tenants/acme/missing.srt", "KEY"),
        "{messages:?}"
    );
    let accepted = api.call_as(Some(ACME), Method::POST, "/v1/jobs", Some(with_captions(&acme_captions)), &[]).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.json());
    let bad_language = json!({"input": {"key": acme_key}, "outputs": [{"preset": "cmaf",
        "captions": [{"key": acme_captions, "language": "en\"x"}]}]});
    api.call_as(Some(ACME), Method::POST, "/v1/jobs", Some(bad_language), &[])
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_job");
}

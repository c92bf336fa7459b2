//! Malformed requests: every refusal is a JSON 4xx in the API's error shape.

use super::*;

#[tokio::test]
async fn bad_requests_are_json_4xx_errors() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "priority": 9}),
            unprocessable,
            "invalid_request",
            "priority",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4", "bucket": "x"}, "outputs": [{"preset": "mp4-h264"}]}),
            unprocessable,
            "invalid_request",
            "bucket",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264", "ffmpeg_args": "-i /etc/passwd"}]}),
            unprocessable,
            "invalid_request",
            "ffmpeg_args",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": "mp4-h264"}),
            unprocessable,
            "invalid_request",
            "outputs",
        ),
        (
            json!({"input": {"key": 42}, "outputs": [{"preset": "mp4-h264"}]}),
            unprocessable,
            "invalid_request",
            "input.key",
        ),
        (json!({"input": {"key": "uploads/a/clip.mp4"}}), unprocessable, "invalid_request", "outputs"),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "gif; rm -rf /"}]}),
            unprocessable,
            "invalid_request",
            "mp4-h264",
        ),
        (json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": []}), unprocessable, "invalid_job", "outputs"),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}, {"preset": "mp4-h264"}]}),
            unprocessable,
            "invalid_job",
            "distinct",
        ),
        (job_request("../x"), unprocessable, "invalid_key", ".."),
        (job_request("uploads/../../etc/passwd"), unprocessable, "invalid_key", ".."),
        (job_request("/etc/passwd"), unprocessable, "invalid_key", "'/'"),
        (job_request("uploads/a\u{0}b"), unprocessable, "invalid_key", "control"),
        (job_request("outputs/x/mp4-h264.mp4"), unprocessable, "invalid_key", "uploads/"),
        (job_request("jobs/x.json"), unprocessable, "invalid_key", "uploads/"),
        (job_request("uploads/"), unprocessable, "invalid_key", ""),
        (job_request("uploads/a/missing.mp4"), unprocessable, "source_not_found", "missing.mp4"),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/"}),
            unprocessable,
            "invalid_output_prefix",
            "outputs/",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "jobs/x/"}),
            unprocessable,
            "invalid_output_prefix",
            "",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/../jobs/"}),
            unprocessable,
            "invalid_output_prefix",
            "..",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/x"}),
            unprocessable,
            "invalid_output_prefix",
            "",
        ),
    ];
    for (body, status, code, mention) in cases {
        let answer = api.call(Method::POST, "/v1/jobs", Some(body.clone())).await;
        answer.assert_error(status, code);
        let message = answer.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(mention), "{body}: `{message}` does not mention `{mention}`");
    }

    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = Request::post("/v1/jobs").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    };
    api.send(raw("{\"input\": ", Some("application/json"))).await.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    api.send(raw("{}", None)).await.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    api.send(raw("{}", Some("text/plain")))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let huge = Box::leak(format!("{{\"input\": {{\"key\": \"{}\"}}}}", "a".repeat(100 << 10)).into_boxed_str());
    api.send(raw(huge, Some("application/json")))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    for (uri, code) in [("/v1/jobs/a.b", "invalid_job_id"), ("/v1/jobs/..%2Fetc", "invalid_job_id")] {
        api.call(Method::GET, uri, None).await.assert_error(StatusCode::BAD_REQUEST, code);
        api.call(Method::DELETE, uri, None).await.assert_error(StatusCode::BAD_REQUEST, code);
    }
    api.call(Method::GET, &format!("/v1/jobs/{}", "x".repeat(65)), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_job_id");
    api.call(Method::GET, "/v1/nothing-here", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let answer = api.call(Method::PUT, "/v1/jobs", None).await;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    for (body, code) in [
        (json!({"filename": "a.mp4", "content_type": "video/mp4", "size": 1 << 20}), "too_large"),
        (json!({"filename": "a.mp4", "content_type": "video/mp4\r\nx: y"}), "invalid_content_type"),
        (json!({"filename": "", "content_type": "video/mp4"}), "invalid_filename"),
        (json!({"filename": "a.mp4", "content_type": "video/mp4", "key": "uploads/mine.mp4"}), "invalid_request"),
        (json!({"filename": "a.mp4", "content_type": "video/mp4", "size": -1}), "invalid_request"),
    ] {
        api.call(Method::POST, "/v1/uploads", Some(body)).await.assert_error(unprocessable, code);
    }
    for key in ["uploads/..%2F..%2Fetc/passwd", "outputs/a/b.mp4", "jobs/x.json", "uploads/a%5Cb"] {
        let uri = format!("/v1/uploads/{key}");
        let answer = api.call(Method::GET, &uri, None).await;
        answer.assert_error(unprocessable, "invalid_key");
        let answer = api.call_as(None, Method::PUT, &format!("{uri}?expires=1&signature=00"), None, &[]).await;
        answer.assert_error(unprocessable, "invalid_key");
    }
    // Nothing was published by any of these.
    assert!(api.drain_ready().await.is_empty());
    assert!(api.state.backend.storage.list("jobs/").await.unwrap().is_empty());
}

//! Who may call: tokens, anonymous mode, and a tokens file that expires and reloads.

use super::*;

#[tokio::test]
async fn tokens_are_required_except_on_health_endpoints() {
    let api = api().await;
    for (token, what) in [(None, "missing"), (Some("wrong-token-0123456789"), "wrong")] {
        for (method, uri) in [
            (Method::GET, "/v1/jobs/job-1"),
            (Method::POST, "/v1/jobs"),
            (Method::DELETE, "/v1/jobs/job-1"),
            (Method::POST, "/v1/uploads"),
            (Method::GET, "/v1/uploads/uploads/a/b.mp4"),
            (Method::GET, "/v1/jobs/job-1/events"),
            (Method::GET, "/v1/files/outputs/a/b.mp4"),
        ] {
            let answer = api.call_as(token, method.clone(), uri, Some(job_request("uploads/a.mp4")), &[]).await;
            answer.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer", "{what} token, {method} {uri}");
        }
    }
    // Unknown routes are unknown to everyone: the OpenAPI document lists the known ones anyway.
    api.call_as(None, Method::GET, "/v1/nothing-here", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for uri in ["/healthz", "/readyz", "/openapi.json"] {
        let answer = api.call_as(None, Method::GET, uri, None, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        answer.json();
    }
    assert_eq!(api.call_as(None, Method::GET, "/readyz", None, &[]).await.json()["ready"], true);
    api.call(Method::GET, "/v1/jobs/job-1", None).await.assert_error(StatusCode::NOT_FOUND, "job_not_found");
    api.call_as(Some(OTHER_TOKEN), Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "job_not_found");
}

#[tokio::test]
async fn anonymous_mode_accepts_requests_without_tokens() {
    let api = api_with(&[("MEDIA_API_TOKENS", ""), ("MEDIA_API_ALLOW_ANONYMOUS", "true")]).await;
    api.call_as(None, Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "job_not_found");
}

#[tokio::test]
async fn expired_tokens_are_refused_and_the_tokens_file_reloads() {
    let (api, _dir, path) = tenants_api().await;
    let expired = api.call_as(Some(EXPIRED), Method::GET, "/v1/jobs/job-1", None, &[]).await;
    expired.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(expired.json()["error"]["message"].as_str().unwrap().contains("expired"));

    // Revoke acme, move globex's token to a new tenant, give the expired token a new lease.
    let text = token_entry(GLOBEX, "initech", None) + &token_entry(EXPIRED, "globex", Some("2099-01-01T00:00:00Z"));
    std::fs::write(&path, text).unwrap();
    api.call_as(Some(ACME), Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.call_as(Some(EXPIRED), Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "job_not_found");
    let key = api.upload_as(GLOBEX).await;
    assert!(key.starts_with("uploads/tenants/initech/"), "{key}");
    // The shared tokens are unaffected.
    assert_eq!(api.call(Method::GET, "/healthz", None).await.status, StatusCode::OK);
    api.call(Method::GET, "/v1/jobs/job-1", None).await.assert_error(StatusCode::NOT_FOUND, "job_not_found");
}

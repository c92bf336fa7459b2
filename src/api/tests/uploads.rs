//! Uploads: streamed through signed URLs on the local backend, and multipart uploads per
//! tenant.

use super::*;

#[tokio::test]
async fn local_uploads_stream_through_signed_urls_and_name_their_job() {
    let api = api().await;
    let answer = api
        .call(
            Method::POST,
            "/v1/uploads",
            Some(json!({"filename": "../../My Clip (1).mov", "content_type": "video/quicktime"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.json());
    let ticket = answer.json();
    let key = ticket["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("uploads/") && key.ends_with("/My Clip _1_.mov"), "{key}");
    assert_eq!(ticket["method"], "PUT");
    assert_eq!(ticket["headers"]["content-type"], "video/quicktime");
    let url = ticket["url"].as_str().unwrap();
    let path = url.strip_prefix("http://127.0.0.1:8080").expect("an absolute URL of the API");
    assert!(path.starts_with("/v1/uploads/uploads/") && path.contains("My%20Clip%20_1_.mov?expires="), "{path}");

    let put = |path: String, content_type: &'static str, body: Vec<u8>| {
        Request::put(path).header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap()
    };
    // Another content type, a tampered signature, no signature, or too much data: refused.
    api.send(put(path.to_string(), "text/html", b"x".to_vec()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let tampered = format!("{}0", &path[..path.len() - 1]);
    let tampered = if tampered == path { format!("{}1", &path[..path.len() - 1]) } else { tampered };
    api.send(put(tampered, "video/quicktime", b"x".to_vec()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let unsigned = path.split('?').next().unwrap().to_string();
    api.send(put(unsigned, "video/quicktime", b"x".to_vec()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.send(put(path.to_string(), "video/quicktime", vec![0; 65 << 10]))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(api.state.backend.storage.head(&key).await.unwrap(), None);
    assert!(api.drain_ready().await.is_empty(), "no event for refused uploads");

    let answer = api.send(put(path.to_string(), "video/quicktime", b"0123456789".to_vec())).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let stored = answer.json();
    assert_eq!(stored["key"], key.as_str());
    assert_eq!(stored["size"], 10);
    let job_id = stored["job_id"].as_str().unwrap().to_string();
    assert_eq!(stored["status_url"], format!("/v1/jobs/{job_id}"));
    // The upload event is what the worker turns into that very job.
    let events = api.drain_ready().await;
    assert_eq!(events.len(), 1);
    let layout = &api.state.config.layout;
    let ctx = crate::domain::event::EventContext { layout, default_presets: &api.state.config.default_presets };
    let parsed = crate::domain::ready::ReadyMessage::parse(&events[0], &ctx).unwrap();
    assert_eq!(parsed.jobs()[0].job.job_id, job_id);
    // And the upload's description names it too.
    let encoded = url.split('?').next().unwrap().strip_prefix("http://127.0.0.1:8080/v1/uploads/").unwrap();
    let info = api.call(Method::GET, &format!("/v1/uploads/{encoded}"), None).await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.json()["job_id"], job_id.as_str());
    let missing = api.call(Method::GET, "/v1/uploads/uploads/none/x.mp4", None).await;
    missing.assert_error(StatusCode::NOT_FOUND, "upload_not_found");
}

#[tokio::test]
async fn multipart_uploads_are_their_tenant_s_and_abandoned_ones_are_swept() {
    let (api, _dir, _path) = tenants_api().await;
    let request = json!({"filename": "big.mp4", "content_type": "video/mp4", "size": 1000});
    let created = api.call_as(Some(ACME), Method::POST, "/v1/multipart-uploads", Some(request), &[]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    let created = created.json();
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("uploads/tenants/acme/"), "{key}");
    let id = created["upload_id"].as_str().unwrap();
    let base = format!("/v1/multipart-uploads/{id}");
    let query = format!("?key={}", key.replace(' ', "%20"));
    let calls = [
        (Method::GET, format!("{base}{query}"), None),
        (Method::POST, format!("{base}/parts/1{query}"), Some(json!({"size": 10}))),
        (Method::POST, format!("{base}/complete{query}"), Some(json!({"parts": [{"part_number": 1, "etag": "x"}]}))),
        (Method::DELETE, format!("{base}{query}"), None),
    ];
    for (method, uri, body) in calls {
        let answer = api.call_as(Some(GLOBEX), method.clone(), &uri, body, &[]).await;
        answer.assert_error(StatusCode::NOT_FOUND, "upload_not_found");
    }

    // A part through the API's own signed URL: its length is the signed one, no more, no less.
    let signed =
        api.call_as(Some(ACME), Method::POST, &format!("{base}/parts/1{query}"), Some(json!({"size": 10})), &[]).await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.json());
    let url = signed.json()["url"].as_str().unwrap().strip_prefix("http://127.0.0.1:8080").unwrap().to_string();
    let put =
        |body: &'static [u8]| Request::builder().method(Method::PUT).uri(url.clone()).body(Body::from(body)).unwrap();
    api.send(put(b"0123456789a")).await.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    api.send(put(b"012345678")).await.assert_error(StatusCode::BAD_REQUEST, "part_size_mismatch");
    let stored = api.send(put(b"0123456789")).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert!(stored.headers[header::ETAG].to_str().unwrap().starts_with('"'));
    let tampered = url.replace("size=10", "size=11");
    let forged = Request::builder().method(Method::PUT).uri(tampered).body(Body::from("0123456789a")).unwrap();
    api.send(forged).await.assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let listed = api.call_as(Some(ACME), Method::GET, &format!("{base}{query}"), None, &[]).await.json();
    assert_eq!(listed["parts"][0]["size"], 10);

    // An upload left alone for the abandonment age is removed by the sweep.
    let uploads = api.state.backend.uploads.as_ref();
    assert_eq!(uploads.sweep_multipart(crate::api::routes::multipart::ABANDONED_AFTER).await.unwrap(), 0);
    assert_eq!(uploads.sweep_multipart(Duration::ZERO).await.unwrap(), 1);
    api.call_as(Some(ACME), Method::GET, &format!("{base}{query}"), None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "upload_not_found");
}

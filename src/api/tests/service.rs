//! The service around the resources: the OpenAPI document, CORS, the preset catalogue and
//! the console.

use super::*;

#[tokio::test]
async fn the_openapi_document_is_served_as_json_with_every_path() {
    let api = api().await;
    let answer = api.call_as(None, Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths.len(), 15, "{paths:?}");
    let operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| {
            item.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str().map(String::from))
        })
        .collect();
    let mut unique = operations.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), operations.len(), "operation ids must be unique: {operations:?}");
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let cors = api_with(&[("MEDIA_API_CORS_ORIGINS", "https://app.example.com,http://localhost:5173")]).await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/jobs")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type,idempotency-key")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = cors.send(preflight("https://app.example.com")).await;
    assert!(allowed.status.is_success(), "{:?}", allowed.status);
    assert_eq!(allowed.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    let methods = allowed.headers[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().to_string();
    assert!(methods.contains("POST") && methods.contains("PUT"), "{methods}");
    let headers = allowed.headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("idempotency-key"), "{headers}");
    assert!(!allowed.headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

    let denied = cors.send(preflight("https://evil.example.net")).await;
    assert!(!denied.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{:?}", denied.headers);

    let actual = |origin: &str| {
        Request::builder()
            .uri("/v1/jobs/job-1")
            .header(header::ORIGIN, origin)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap()
    };
    let answer = cors.send(actual("http://localhost:5173")).await;
    answer.assert_error(StatusCode::NOT_FOUND, "job_not_found");
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:5173");
    let exposed = answer.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("etag") && exposed.contains("location"), "{exposed}");
    let other = cors.send(actual("https://evil.example.net")).await;
    assert!(!other.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    // Without configured origins there are no CORS headers at all.
    let plain = api().await;
    let plain = plain.send(preflight("https://app.example.com")).await;
    assert!(!plain.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn the_preset_catalogue_says_what_each_preset_takes() {
    let api = api().await;
    let catalogue = api.call(Method::GET, "/v1/presets", None).await;
    assert_eq!(catalogue.status, StatusCode::OK);
    let presets = catalogue.json()["presets"].as_array().unwrap().clone();
    let named = |name: &str| presets.iter().find(|p| p["name"] == name).cloned().unwrap();
    assert_eq!(named("gif")["options"], json!(["start", "duration"]));
    assert_eq!(named("thumbnail")["options"], json!(["time"]));
    assert_eq!(named("hls")["file"], "hls/master.m3u8");
    assert_eq!(named("mp3")["needs_audio"], true);
    assert!(presets.iter().all(|p| !p["description"].as_str().unwrap().is_empty()));
    // List options: published for `cmaf` only, beside (not among) the ranged options.
    let cmaf = named("cmaf");
    assert_eq!(cmaf["options"], json!(["max_height"]));
    assert_eq!(
        cmaf["choices"],
        json!({
            "codecs": {"values": ["h264", "hevc", "av1"], "default": ["h264"], "multiple": true},
            "packaging": {"values": ["segments", "single_file"], "default": ["segments"], "multiple": false},
        })
    );
    assert_eq!(named("hls")["choices"], json!({}));
    assert_eq!(named("gif")["ranges"]["duration"], json!({"min": 1.0, "max": 6.0, "integer": false}));
}

#[tokio::test]
async fn a_cmaf_job_with_the_catalogue_s_choices_is_accepted_and_others_are_refused() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let catalogue = api.call(Method::GET, "/v1/presets", None).await.json();
    let cmaf = catalogue["presets"].as_array().unwrap().iter().find(|p| p["name"] == "cmaf").cloned().unwrap();
    let codecs = cmaf["choices"]["codecs"]["values"].clone();
    let job = |output: Value| json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [output]});
    let all = job(json!({"preset": "cmaf", "codecs": codecs, "packaging": "single_file"}));
    let accepted = api.call(Method::POST, "/v1/jobs", Some(all)).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.json());
    let vp9 = job(json!({"preset": "cmaf", "codecs": ["vp9"]}));
    assert_eq!(api.call(Method::POST, "/v1/jobs", Some(vp9)).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let none = job(json!({"preset": "cmaf", "codecs": []}));
    assert_eq!(api.call(Method::POST, "/v1/jobs", Some(none)).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let hls = job(json!({"preset": "hls", "packaging": "segments"}));
    assert_eq!(api.call(Method::POST, "/v1/jobs", Some(hls)).await.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_console_is_served_under_a_strict_content_security_policy() {
    let api = api().await;
    let page = api.call_as(None, Method::GET, "/", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let policy = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in
        ["default-src 'self'", "script-src 'self';", "style-src 'self';", "object-src 'none'", "frame-ancestors 'none'"]
    {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    for (path, content_type) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
        ("/console/quality.css", "text/css; charset=utf-8"),
        ("/console/js/quality.js", "text/javascript; charset=utf-8"),
        ("/console/vendor/hls.min.js", "text/javascript; charset=utf-8"),
    ] {
        let asset = api.call_as(None, Method::GET, path, None, &[]).await;
        assert_eq!(
            (asset.status, asset.headers[header::CONTENT_TYPE].to_str().unwrap()),
            (StatusCode::OK, content_type)
        );
    }
    api.call_as(None, Method::GET, "/console/../Cargo.toml", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    api.call_as(None, Method::GET, "/console/nothing.js", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

//! The web console: HTML, CSS and JavaScript compiled into the binary (no build step, no CDN;
//! hls.js is vendored, see `scripts/refresh-hls-js`), served at `/` on the API's own origin so
//! it needs no CORS. It signs in with a token kept in the tab's sessionStorage and calls the
//! same API as any client.
//!
//! Every page goes out under a Content-Security-Policy that allows scripts, styles and
//! connections from this origin only (plus the store's origin on AWS, where uploads, downloads
//! and players talk to S3 directly): no inline script or style, no eval, no workers, no frames.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::api::ApiState;
use crate::api::error::ApiError;

const INDEX_HTML: &str = include_str!("../console/index.html");
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console but its page: path under `/console/`, content type, body. `app.js`
/// is the module the page loads; it imports the others from `js/`.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../console/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../console/app.css")),
    ("quality.css", "text/css; charset=utf-8", include_str!("../console/quality.css")),
    ("vendor/hls.min.js", JS, include_str!("../console/vendor/hls.min.js")),
    ("js/api.js", JS, include_str!("../console/js/api.js")),
    ("js/catalogue.js", JS, include_str!("../console/js/catalogue.js")),
    ("js/charts.js", JS, include_str!("../console/js/charts.js")),
    ("js/choices.js", JS, include_str!("../console/js/choices.js")),
    ("js/confirm.js", JS, include_str!("../console/js/confirm.js")),
    ("js/dom.js", JS, include_str!("../console/js/dom.js")),
    ("js/events.js", JS, include_str!("../console/js/events.js")),
    ("js/extras.js", JS, include_str!("../console/js/extras.js")),
    ("js/format.js", JS, include_str!("../console/js/format.js")),
    ("js/home.js", JS, include_str!("../console/js/home.js")),
    ("js/job.js", JS, include_str!("../console/js/job.js")),
    ("js/outputs.js", JS, include_str!("../console/js/outputs.js")),
    ("js/presets.js", JS, include_str!("../console/js/presets.js")),
    ("js/quality.js", JS, include_str!("../console/js/quality.js")),
    ("js/recaption.js", JS, include_str!("../console/js/recaption.js")),
    ("js/session.js", JS, include_str!("../console/js/session.js")),
    ("js/uploads.js", JS, include_str!("../console/js/uploads.js")),
];

/// The console's page.
pub async fn index(State(state): State<ApiState>) -> Response {
    let extra = other_origins(&state).await;
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response();
    let headers = response.headers_mut();
    // An origin that cannot go into a header leaves the policy without it, never none.
    let policy = HeaderValue::from_str(&policy(&extra)).or_else(|_| HeaderValue::from_str(&policy("")));
    if let Ok(policy) = policy {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    secure(headers);
    response
}

/// The console's scripts (ES modules) and styles.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some(&(_, content_type, body)) = FILES.iter().find(|(path, _, _)| *path == file) else {
        return ApiError::not_found("not_found", "the console has no such file").into_response();
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    secure(response.headers_mut());
    response
}

fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new build brings new files: the browser asks again (a cheap revalidation) each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// The page's policy; `extra` is a space-led list of origins beyond this one that images,
/// media and connections may use.
fn policy(extra: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:{extra}; \
         media-src 'self' blob:{extra}; connect-src 'self'{extra}; worker-src 'none'; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    )
}

/// Where the URLs the API hands out point besides this origin (the store on AWS; on the local
/// backend `MEDIA_API_PUBLIC_URL`, when clients reach the API by another name), found by making
/// such a URL: ` <origin>`, or nothing.
async fn other_origins(state: &ApiState) -> String {
    let presigned = state.backend.uploads.presign_get("outputs/console", std::time::Duration::from_secs(60)).await;
    let sample = match presigned {
        Ok(Some(url)) => url,
        _ => state.key_url("files", "console"),
    };
    origin_of(&sample).map(|origin| format!(" {origin}")).unwrap_or_default()
}

/// `scheme://host[:port]` of a URL, if it is one.
fn origin_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    match parsed.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_urls() {
        assert_eq!(
            origin_of("https://bucket.s3.eu-west-1.amazonaws.com/outputs/x?X-Amz-Signature=1").as_deref(),
            Some("https://bucket.s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(origin_of("http://127.0.0.1:5000/b/k").as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(origin_of("not a url"), None);
    }

    #[test]
    fn the_pages_have_no_inline_script_or_style() {
        let page = INDEX_HTML.to_ascii_lowercase();
        for forbidden in ["<style", " style=", " onclick=", " onload=", " onerror=", "javascript:"] {
            assert!(!page.contains(forbidden), "index.html contains `{forbidden}`");
        }
        for script in page.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(tag.contains("src="), "an inline <script>: <script{tag}>");
        }
        let scripts = FILES.iter().filter(|(path, _, _)| !path.starts_with("vendor/") && path.ends_with(".js"));
        for (path, _, body) in scripts {
            for sink in ["innerhtml", "outerhtml", "insertadjacenthtml", "document.write", "eval(", "new function"] {
                assert!(!body.to_ascii_lowercase().contains(sink), "{path} uses `{sink}`");
            }
        }
    }

    #[test]
    fn every_module_an_import_names_is_served() {
        let served: Vec<&str> = FILES.iter().map(|(path, _, _)| *path).collect();
        for (path, _, body) in FILES.iter().filter(|(path, _, _)| path.ends_with(".js") && !path.starts_with("vendor/"))
        {
            let folder = path.rsplit_once('/').map_or("", |(folder, _)| folder);
            for import in body.split(" from '").skip(1) {
                let target = import.split('\'').next().unwrap_or_default();
                let target = target.strip_prefix("./").expect("imports are relative");
                let resolved = if folder.is_empty() { target.to_string() } else { format!("{folder}/{target}") };
                assert!(served.contains(&resolved.as_str()), "{path} imports {target}, which is not served");
            }
        }
        assert!(INDEX_HTML.contains(r#"<script type="module" src="/console/app.js">"#));
    }

    #[test]
    fn every_stylesheet_the_page_links_is_served() {
        let served: Vec<&str> = FILES.iter().map(|(path, _, _)| *path).collect();
        let sheets: Vec<&str> = INDEX_HTML
            .split(r#"<link rel="stylesheet" href="/console/"#)
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or_default())
            .collect();
        assert_eq!(sheets, ["app.css", "quality.css"]);
        for sheet in sheets {
            assert!(served.contains(&sheet), "index.html links {sheet}, which is not served");
        }
    }
}

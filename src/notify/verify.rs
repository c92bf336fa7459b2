//! Checking a captured webhook request, as a receiver would (`media-worker webhook verify`).

use serde::Serialize;

use super::sign::{Secrets, VerifyError};

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub webhook_id: String,
    pub timestamp: i64,
    /// The event's `type`, when the body is a notification.
    pub event_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("not an HTTP request: no blank line between headers and body")]
    NotHttp,
    #[error("the `{0}` header is missing")]
    Missing(&'static str),
    #[error(transparent)]
    Signature(#[from] VerifyError),
}

/// Verifies a raw HTTP request (request line, headers, a blank line, the body, exactly as
/// received) against `secrets`; with `max_age`, its timestamp must also be that recent.
pub fn verify_request(raw: &[u8], secrets: &Secrets, now: i64, max_age: Option<i64>) -> Result<Verified, CheckError> {
    let (head, body) = split_head(raw).ok_or(CheckError::NotHttp)?;
    let head = String::from_utf8_lossy(head);
    let header = |name: &'static str| {
        head.lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .ok_or(CheckError::Missing(name))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signature = header("webhook-signature")?;
    secrets.verify(&id, &timestamp, body, &signature, now, max_age)?;
    let event_type = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
    Ok(Verified { webhook_id: id, timestamp: timestamp.parse().unwrap_or_default(), event_type })
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    for sep in [&b"\r\n\r\n"[..], &b"\n\n"[..]] {
        if let Some(at) = raw.windows(sep.len()).position(|w| w == sep) {
            return Some((&raw[..at], &raw[at + sep.len()..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sign::Secret;

    #[test]
    fn a_captured_request_verifies_and_a_tampered_one_does_not() {
        let secret = Secret::generate();
        let secrets = Secrets::parse(&secret).unwrap();
        let body = br#"{"version":1,"type":"job.completed"}"#;
        let signature = secrets.sign("msg_1", 1700000000, body);
        let raw = format!(
            "POST /hook HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\nWebhook-Id: msg_1\r\n\
             webhook-timestamp: 1700000000\r\nwebhook-signature: {signature}\r\n\r\n{}",
            String::from_utf8_lossy(body)
        );
        let ok = verify_request(raw.as_bytes(), &secrets, 1700000000, Some(300)).unwrap();
        assert_eq!(ok.webhook_id, "msg_1");
        assert_eq!(ok.event_type.as_deref(), Some("job.completed"));
        let tampered = raw.replace("completed", "failed");
        assert_eq!(
            verify_request(tampered.as_bytes(), &secrets, 1700000000, None),
            Err(CheckError::Signature(VerifyError::NoMatch))
        );
        assert_eq!(
            verify_request(raw.as_bytes(), &secrets, 1800000000, Some(300)),
            Err(CheckError::Signature(VerifyError::TooOld))
        );
        let unsigned = raw.replace("webhook-signature", "x-other");
        assert_eq!(
            verify_request(unsigned.as_bytes(), &secrets, 0, None),
            Err(CheckError::Missing("webhook-signature"))
        );
        assert_eq!(verify_request(b"garbage", &secrets, 0, None), Err(CheckError::NotHttp));
    }
}

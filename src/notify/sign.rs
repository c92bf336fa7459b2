//! Standard Webhooks 1.0 signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` of
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed by the bytes of a `whsec_<base64>`
//! secret. During a rotation several secrets are configured and every one of them signs, so a
//! receiver holding either the old or the new secret accepts the request.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "whsec_";

/// One signing key. Not `Debug`: it is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Parses `whsec_<base64>` (at least 16 bytes of key).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let encoded = raw.strip_prefix(PREFIX).ok_or("a webhook secret starts with `whsec_`")?;
        let bytes = STANDARD.decode(encoded).map_err(|_| "a webhook secret is `whsec_` then base64".to_string())?;
        if bytes.len() < 16 {
            return Err("a webhook secret needs at least 16 bytes of key".into());
        }
        Ok(Secret(bytes))
    }

    /// A new random secret, as `whsec_<base64>`.
    pub fn generate() -> String {
        let mut key = Vec::with_capacity(32);
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        format!("{PREFIX}{}", STANDARD.encode(key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The secrets that sign (all of them) and verify (any of them).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    /// Space-separated `whsec_` secrets.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let secrets = raw.split_whitespace().map(Secret::parse).collect::<Result<Vec<_>, _>>()?;
        Ok(Secrets(secrets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `webhook-signature` header value: one `v1,<base64>` per secret, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|s| format!("v1,{}", STANDARD.encode(s.mac(id, timestamp, body).finalize().into_bytes())))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether any `v1` signature in `header` was made by any of these secrets (in constant
    /// time per comparison), and, with `max_age`, whether the timestamp is within that many
    /// seconds of `now` (either way: replayed old requests and clocks far ahead both fail).
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        body: &[u8],
        header: &str,
        now: i64,
        max_age: Option<i64>,
    ) -> Result<(), VerifyError> {
        let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Timestamp)?;
        if let Some(max_age) = max_age
            && (now - ts).abs() > max_age
        {
            return Err(VerifyError::TooOld);
        }
        for candidate in header.split_whitespace() {
            let Some(encoded) = candidate.strip_prefix("v1,") else { continue };
            let Ok(signature) = STANDARD.decode(encoded) else { continue };
            if self.0.iter().any(|s| s.mac(id, ts, body).verify_slice(&signature).is_ok()) {
                return Ok(());
            }
        }
        Err(VerifyError::NoMatch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a number of seconds")]
    Timestamp,
    #[error("webhook-timestamp is too far from now")]
    TooOld,
    #[error("no signature matches any secret")]
    NoMatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn matches_the_specification_example() {
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let signature = secrets.sign(id, 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(secrets.verify(id, "1614265330", body, &signature, 1614265330, Some(300)), Ok(()));
    }

    #[test]
    fn rotation_signs_with_every_secret_and_verifies_with_any() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let both = Secrets::parse(&format!("{old} {new}")).unwrap();
        let header = both.sign("msg_1", 100, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for one in [&old, &new] {
            let receiver = Secrets::parse(one).unwrap();
            assert_eq!(receiver.verify("msg_1", "100", b"{}", &header, 100, None), Ok(()));
        }
        let stranger = Secrets::parse(&Secret::generate()).unwrap();
        assert_eq!(stranger.verify("msg_1", "100", b"{}", &header, 100, None), Err(VerifyError::NoMatch));
        // Any change to the id, the time or the body breaks it.
        let receiver = Secrets::parse(&old).unwrap();
        assert!(receiver.verify("msg_2", "100", b"{}", &header, 100, None).is_err());
        assert!(receiver.verify("msg_1", "101", b"{}", &header, 101, None).is_err());
        assert!(receiver.verify("msg_1", "100", b"{ }", &header, 100, None).is_err());
        assert_eq!(receiver.verify("msg_1", "100", b"{}", &header, 1000, Some(300)), Err(VerifyError::TooOld));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert!(Secrets::parse("hunter2").is_err());
        assert!(Secrets::parse("whsec_!!!").is_err());
        assert!(Secrets::parse("whsec_c2hvcnQ=").is_err());
        assert!(Secrets::parse("").unwrap().is_empty());
    }
}

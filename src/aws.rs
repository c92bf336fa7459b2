//! How every AWS client is configured: the timeouts and the stalled-stream protection, applied
//! to the one SDK configuration the binaries load, so no client (S3, SQS, DynamoDB, EventBridge,
//! SNS) is made without them. A leaf: it reads nothing else of the crate.
//!
//! Region, credentials (the task role on ECS) and `AWS_ENDPOINT_URL` come from the standard
//! chain, untouched.

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};

/// Every AWS call is bounded, so a connection that silently stopped answering (a NAT that
/// forgot its mapping: no reset, no data) is dropped and the call retried on a fresh one
/// instead of hanging forever. A TCP connect gets this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One try of a small call (status documents, heads, lists, queue sends and deletes), up to
/// its response's headers; the SDK retries a try that times out. Transfers and the long poll
/// set their own (see `storage::s3` and `queue::sqs`).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole call, its retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// A response or request body that moves no bytes for this long fails (and a download resumes
/// where it stopped): streams are bounded by stalls, never by their size.
pub const STALL_GRACE: Duration = Duration::from_secs(15);

/// The timeouts of every AWS client.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// Bodies fail after [`STALL_GRACE`] without progress, in both directions.
pub fn stalled_stream_protection() -> StalledStreamProtectionConfig {
    StalledStreamProtectionConfig::enabled().grace_period(STALL_GRACE).build()
}

/// A loader with this crate's timeouts and stalled-stream protection; the rest stays as given
/// (tests pin a region and credentials on it).
pub fn configure(loader: ConfigLoader) -> ConfigLoader {
    loader.timeout_config(timeouts()).stalled_stream_protection(stalled_stream_protection())
}

/// The SDK configuration every AWS client is made from.
pub async fn load() -> SdkConfig {
    configure(aws_config::defaults(BehaviorVersion::latest())).load().await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shared configuration as [`load`] makes it, with a fixed region and test credentials
    /// so nothing is looked up.
    pub(crate) async fn offline() -> SdkConfig {
        configure(aws_config::defaults(BehaviorVersion::latest()))
            .region(aws_config::Region::new("us-east-1"))
            .test_credentials()
            .load()
            .await
    }

    /// What a client made from the shared configuration must carry.
    pub(crate) fn assert_shared(timeouts: Option<&TimeoutConfig>, stall: Option<&StalledStreamProtectionConfig>) {
        assert_eq!(timeouts, Some(&super::timeouts()));
        let stall = stall.expect("stalled-stream protection is set");
        assert!(stall.upload_enabled() && stall.download_enabled());
        assert_eq!(stall.grace_period(), STALL_GRACE);
    }

    #[tokio::test]
    async fn the_shared_config_bounds_calls_and_streams() {
        let shared = offline().await;
        assert_shared(shared.timeout_config(), shared.stalled_stream_protection().as_ref());
        let timeouts = timeouts();
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(OPERATION_TIMEOUT));
    }
}

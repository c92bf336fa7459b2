//! Which implementations the binaries connect to, and where the AWS backend finds its resources.

use super::table::{ConfigError, Env, parse_bool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Aws,
    Local,
}

/// Where the AWS backend finds its resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    pub bucket: String,
    pub force_path_style: bool,
    pub ready_queue_url: String,
    pub processing_queue_url: String,
    pub dead_letter_queue_url: String,
    /// The job ledger's DynamoDB table.
    pub jobs_table: String,
}

/// The backend (`aws` when a bucket is named, unless told otherwise) and, for AWS, its resources.
pub(super) fn parse(env: &Env) -> Result<(BackendKind, Option<AwsSettings>), ConfigError> {
    let bucket = env.get("MEDIA_S3_BUCKET");
    let backend = match env.get("MEDIA_BACKEND").as_deref() {
        None => {
            if bucket.is_some() {
                BackendKind::Aws
            } else {
                BackendKind::Local
            }
        }
        Some("aws") => BackendKind::Aws,
        Some("local") => BackendKind::Local,
        Some(other) => {
            return Err(ConfigError::new("MEDIA_BACKEND", format!("expected `aws` or `local`, got `{other}`")));
        }
    };
    // Parsed whatever the backend, so a typo is caught before the day it matters.
    let force_path_style = env.parse_with("MEDIA_S3_FORCE_PATH_STYLE", parse_bool)?;
    let aws = match backend {
        BackendKind::Local => None,
        BackendKind::Aws => Some(AwsSettings {
            bucket: env.required("MEDIA_S3_BUCKET")?,
            force_path_style,
            ready_queue_url: env.required("MEDIA_READY_QUEUE_URL")?,
            processing_queue_url: env.required("MEDIA_PROCESSING_QUEUE_URL")?,
            dead_letter_queue_url: env.required("MEDIA_DEAD_LETTER_QUEUE_URL")?,
            jobs_table: env.required("MEDIA_JOBS_TABLE")?,
        }),
    };
    Ok((backend, aws))
}

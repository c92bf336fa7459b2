//! Chooses and connects the storage, queue and ledger implementations, once, at start-up.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{BackendKind, Config};
use crate::ledger::Ledger;
use crate::ledger::dynamo::DynamoLedger;
use crate::ledger::sqlite::SqliteLedger;
use crate::queue::Queues;
use crate::queue::local::LocalQueue;
use crate::queue::sqs::SqsQueue;
use crate::storage::local::{EventSink, LocalStorage};
use crate::storage::s3::S3Storage;
use crate::storage::{ClientUploads, ObjectStore};

/// The bucket name local events carry.
pub const LOCAL_BUCKET: &str = "local";
/// The local backend's job ledger, in the data folder.
pub const LEDGER_FILE: &str = "ledger.db";

/// Everything the binaries talk to.
#[derive(Clone)]
pub struct Backend {
    pub storage: Arc<dyn ObjectStore>,
    /// The same store, for the transfers the API arranges with clients.
    pub uploads: Arc<dyn ClientUploads>,
    pub queues: Queues,
    /// Job records, their events, and the documents beside them.
    pub ledger: Arc<dyn Ledger>,
    /// The bucket (or `local`), as S3 events name it; part of event-derived job ids.
    pub bucket: String,
}

pub async fn connect(config: &Config) -> anyhow::Result<Backend> {
    match (config.backend, &config.aws) {
        (BackendKind::Aws, Some(aws)) => {
            let shared = crate::aws::load().await;
            let s3_config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(aws.force_path_style).build();
            let s3 = aws_sdk_s3::Client::from_conf(s3_config);
            let sqs = aws_sdk_sqs::Client::new(&shared);
            let dynamodb = aws_sdk_dynamodb::Client::new(&shared);
            let store = Arc::new(S3Storage::new(s3, &aws.bucket, config.multipart_threshold));
            Ok(Backend {
                storage: store.clone(),
                uploads: store,
                ledger: Arc::new(DynamoLedger::new(dynamodb, &aws.jobs_table)),
                queues: Queues {
                    ready: Arc::new(SqsQueue::new(sqs.clone(), &aws.ready_queue_url)),
                    processing: Arc::new(SqsQueue::new(sqs.clone(), &aws.processing_queue_url)),
                    dead_letter: Arc::new(SqsQueue::new(sqs.clone(), &aws.dead_letter_queue_url)),
                    notifications: config
                        .notify
                        .queue_url
                        .as_deref()
                        .map(|url| Arc::new(SqsQueue::new(sqs, url)) as Arc<dyn crate::queue::Queue>),
                },
                bucket: aws.bucket.clone(),
            })
        }
        _ => {
            let db = config.data_dir.join("queue.db");
            let open = |name: &str| {
                LocalQueue::open(&db, name)
                    .with_context(|| format!("opening the local queue database {}", db.display()))
            };
            let queues = Queues {
                ready: Arc::new(open("ready")?),
                processing: Arc::new(open("processing")?),
                dead_letter: Arc::new(open("dead-letter")?),
                notifications: Some(Arc::new(open("notifications")?)),
            };
            let sink = EventSink {
                upload_prefix: config.layout.upload_prefix().to_string(),
                queue: queues.ready.clone(),
                bucket: LOCAL_BUCKET.to_string(),
            };
            let root = LocalStorage::root_in(&config.data_dir);
            let storage = LocalStorage::new(root.clone(), Some(sink))
                .with_context(|| format!("opening the local object store {}", root.display()))?;
            let path = config.data_dir.join(LEDGER_FILE);
            let ledger =
                SqliteLedger::open(&path).with_context(|| format!("opening the job ledger {}", path.display()))?;
            let store = Arc::new(storage);
            Ok(Backend {
                storage: store.clone(),
                uploads: store,
                queues,
                ledger: Arc::new(ledger),
                bucket: LOCAL_BUCKET.to_string(),
            })
        }
    }
}

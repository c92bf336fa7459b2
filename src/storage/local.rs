//! placeholder
use super::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub struct EventSink {
    pub upload_prefix: String,
    pub queue: Arc<dyn crate::queue::Queue>,
    pub bucket: String,
}
pub struct LocalStorage;
impl LocalStorage {
    pub fn new(_root: PathBuf, _e: Option<EventSink>) -> anyhow::Result<Self> {
        anyhow::bail!("x")
    }
}
#[async_trait]
impl Storage for LocalStorage {
    async fn put_file(&self, _: &str, _: &Path, _: &str) -> StorageResult<ObjectInfo> {
        todo!()
    }
    async fn put_bytes(&self, _: &str, _: Vec<u8>, _: &str) -> StorageResult<()> {
        todo!()
    }
    async fn get_to_file(&self, _: &str, _: &Path) -> StorageResult<ObjectInfo> {
        todo!()
    }
    async fn get_bytes(&self, _: &str) -> StorageResult<Option<Vec<u8>>> {
        todo!()
    }
    async fn head(&self, _: &str) -> StorageResult<Option<ObjectInfo>> {
        todo!()
    }
    async fn list(&self, _: &str) -> StorageResult<Vec<String>> {
        todo!()
    }
    async fn delete(&self, _: &str) -> StorageResult<()> {
        todo!()
    }
}

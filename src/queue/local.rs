//! placeholder
use std::path::Path;
pub struct LocalQueue;
impl LocalQueue {
    pub fn open(_db: &Path, _name: &str) -> anyhow::Result<LocalQueue> {
        anyhow::bail!("todo")
    }
}
#[async_trait::async_trait]
impl super::Queue for LocalQueue {
    async fn send(&self, _: &str, _: super::SendOptions) -> anyhow::Result<()> {
        anyhow::bail!("x")
    }
    async fn receive(
        &self,
        _: usize,
        _: std::time::Duration,
        _: std::time::Duration,
    ) -> anyhow::Result<Vec<super::Received>> {
        anyhow::bail!("x")
    }
    async fn delete(&self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("x")
    }
    async fn change_visibility(&self, _: &str, _: std::time::Duration) -> anyhow::Result<()> {
        anyhow::bail!("x")
    }
    async fn counts(&self) -> anyhow::Result<super::QueueCounts> {
        anyhow::bail!("x")
    }
    fn name(&self) -> &str {
        "x"
    }
}

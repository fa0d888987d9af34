//! A build's log: each line to the pusher as it happens and to the log file,
//! which is written as `<id>.log.partial` and renamed to `<id>.log` when the
//! build ends.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

#[derive(Debug)]
pub(crate) struct BuildLog {
    path: PathBuf,
    file: tokio::fs::File,
    output: mpsc::Sender<String>,
    /// The last lines, for the failure message.
    recent: VecDeque<String>,
}

fn partial(path: &Path) -> PathBuf {
    path.with_extension("log.partial")
}

impl BuildLog {
    pub(crate) async fn create(
        path: &Path,
        output: mpsc::Sender<String>,
    ) -> std::io::Result<BuildLog> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::File::create(partial(path)).await?;
        Ok(BuildLog {
            path: path.to_path_buf(),
            file,
            output,
            recent: VecDeque::new(),
        })
    }

    /// Writes one line. A pusher that went away does not stop the build.
    pub(crate) async fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        if let Err(error) = self.file.write_all(format!("{text}\n").as_bytes()).await {
            tracing::warn!(%error, "cannot write the build log");
        }
        let _ = self.output.send(text.clone()).await;
        self.recent.push_back(text);
        if self.recent.len() > 50 {
            self.recent.pop_front();
        }
    }

    /// The last `count` lines.
    pub(crate) fn tail(&self, count: usize) -> String {
        let skip = self.recent.len().saturating_sub(count);
        self.recent
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Syncs the log and puts it in its final place.
    pub(crate) async fn finish(self) {
        let _ = self.file.sync_all().await;
        drop(self.file);
        let _ = tokio::fs::rename(partial(&self.path), &self.path).await;
    }
}

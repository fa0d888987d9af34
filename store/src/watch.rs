//! Prefix watches as a stream of typed events that survive a broken connection.
//!
//! After a reconnect the watch resumes from the revision after the last one it
//! delivered, so no event is lost or repeated. If etcd has compacted that
//! revision away, the watch reads the whole prefix again and delivers it as a
//! [`WatchEvent::Snapshot`] with [`SnapshotReason::Compacted`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use crate::client::{Entry, Store};
use crate::keys::{Key, Prefix};
use crate::records::Record;

/// Why a watch delivers the whole directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The first event of [`Store::watch`].
    Initial,
    /// The watch could not resume because etcd compacted the history it missed.
    Compacted,
}

/// One change under a watched prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    /// Everything under the prefix at `revision`: forget what you knew and use this.
    Snapshot {
        entries: Vec<Entry<T>>,
        /// Keys whose values could not be decoded, with the reason.
        invalid: Vec<(String, String)>,
        revision: i64,
        reason: SnapshotReason,
    },
    Put {
        key: String,
        value: T,
        revision: i64,
    },
    Delete {
        key: String,
        revision: i64,
    },
    /// A value was written that is not a valid record; treat the key as unusable.
    Invalid {
        key: String,
        reason: String,
        revision: i64,
    },
}

impl<T> WatchEvent<T> {
    /// For a watch of one key ([`Store::watch_key`]): its value after this
    /// event, `None` if it is absent (or not a valid record).
    pub fn into_latest(self) -> Option<T> {
        match self {
            WatchEvent::Snapshot { entries, .. } => entries.into_iter().next().map(|e| e.value),
            WatchEvent::Put { value, .. } => Some(value),
            WatchEvent::Delete { .. } | WatchEvent::Invalid { .. } => None,
        }
    }

    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Snapshot { revision, .. }
            | WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. }
            | WatchEvent::Invalid { revision, .. } => *revision,
        }
    }
}

/// A running watch; dropping it stops the watch.
#[derive(Debug)]
pub struct Watch<T> {
    /// The events of one etcd answer at a time: a transaction's changes
    /// (one revision) are never split.
    batches: mpsc::Receiver<Vec<WatchEvent<T>>>,
    /// What is left of the batch being delivered one by one.
    pending: std::collections::VecDeque<WatchEvent<T>>,
    task: JoinHandle<()>,
}

impl<T> Drop for Watch<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Unpin> Stream for Watch<T> {
    type Item = WatchEvent<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            match self.batches.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.pending.extend(batch),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T> Watch<T> {
    /// The next event; `None` only if the watch task ended, which it does not by itself.
    pub async fn next_event(&mut self) -> Option<WatchEvent<T>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            self.pending.extend(self.batches.recv().await?);
        }
    }

    /// The events of the next etcd answer together (never empty): every
    /// change of one revision is in the same batch, in order.
    pub async fn next_batch(&mut self) -> Option<Vec<WatchEvent<T>>> {
        if !self.pending.is_empty() {
            return Some(self.pending.drain(..).collect());
        }
        self.batches.recv().await
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    Snapshot,
    Revision(i64),
}

impl Store {
    /// Watches `prefix`: first a [`WatchEvent::Snapshot`] of everything there, then
    /// every change after it, across reconnects.
    pub fn watch<T: Record>(&self, prefix: &Prefix<T>) -> Watch<T> {
        self.start_watch(prefix, Start::Snapshot)
    }

    /// Watches `prefix` for changes at `revision` and later (e.g. a
    /// [`crate::Listing::revision`] + 1).
    pub fn watch_from<T: Record>(&self, prefix: &Prefix<T>, revision: i64) -> Watch<T> {
        self.start_watch(prefix, Start::Revision(revision))
    }

    /// Watches the one key `key`: a snapshot (empty or the value), then its
    /// changes.
    pub fn watch_key<T: Record>(&self, key: &Key<T>) -> Watch<T> {
        self.start_watch(&Prefix::only(key), Start::Snapshot)
    }

    /// Waits until `until` holds for `key`'s value (`None`: absent): it reads
    /// the key, then follows its changes on a watch (no polling), and returns
    /// the value it had then. It waits for as long as it takes: callers bound
    /// it with a timeout.
    pub async fn wait_until<T: Record>(
        &self,
        key: &Key<T>,
        mut until: impl FnMut(Option<&T>) -> bool,
    ) -> Option<T> {
        let mut watch = self.watch_key(key);
        while let Some(event) = watch.next_event().await {
            let now = event.into_latest();
            if until(now.as_ref()) {
                return now;
            }
        }
        // The watch task does not end while the store lives.
        std::future::pending().await
    }

    fn start_watch<T: Record>(&self, prefix: &Prefix<T>, start: Start) -> Watch<T> {
        let (sender, batches) = mpsc::channel(64);
        let span = tracing::info_span!("watch", prefix = prefix.as_str());
        let task =
            tokio::spawn(run_watch(self.clone(), prefix.clone(), start, sender).instrument(span));
        Watch {
            batches,
            pending: Default::default(),
            task,
        }
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// The watch loop: (re)read the snapshot if needed, open a watch at the next
/// revision, deliver its events, and on any break wait and start over.
async fn run_watch<T: Record>(
    store: Store,
    prefix: Prefix<T>,
    start: Start,
    sender: mpsc::Sender<Vec<WatchEvent<T>>>,
) {
    let (mut next_revision, mut snapshot_reason) = match start {
        Start::Snapshot => (0, Some(SnapshotReason::Initial)),
        Start::Revision(revision) => (revision, None),
    };
    let mut retry = FIRST_RETRY;
    loop {
        if let Some(reason) = snapshot_reason {
            match store.list(&prefix).await {
                Ok(listing) => {
                    next_revision = listing.revision + 1;
                    snapshot_reason = None;
                    let snapshot = WatchEvent::Snapshot {
                        entries: listing.entries,
                        invalid: listing.invalid,
                        revision: listing.revision,
                        reason,
                    };
                    if sender.send(vec![snapshot]).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    warn!(%error, "cannot read the watched prefix; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            }
        }

        let mut client = store.client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next_revision);
        let opened = store
            .call(
                || format!("watch {}", prefix.as_str()),
                client.watch(prefix.as_str(), Some(options)),
            )
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(error) => {
                warn!(%error, "cannot open watch; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        };

        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    info!("watch stream ended; reconnecting");
                    break;
                }
                Err(error) => {
                    info!(%error, "watch connection broke; reconnecting");
                    break;
                }
            };
            if response.created() {
                // A working stream: the next break starts retrying from the shortest wait.
                retry = FIRST_RETRY;
            }
            if response.compact_revision() > 0 {
                warn!(
                    wanted = next_revision,
                    compacted = response.compact_revision(),
                    "missed history was compacted; reading the prefix again"
                );
                snapshot_reason = Some(SnapshotReason::Compacted);
                break;
            }
            if response.canceled() {
                warn!(
                    reason = response.cancel_reason(),
                    "etcd cancelled the watch; reopening"
                );
                break;
            }
            let mut batch = Vec::with_capacity(response.events().len());
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = kv.mod_revision();
                next_revision = revision + 1;
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                if !prefix.contains(&key) {
                    continue;
                }
                let typed = match event.event_type() {
                    EventType::Delete => WatchEvent::Delete { key, revision },
                    EventType::Put => match T::decode(kv.value()) {
                        Ok(value) => WatchEvent::Put {
                            key,
                            value,
                            revision,
                        },
                        Err(reason) => WatchEvent::Invalid {
                            key,
                            reason,
                            revision,
                        },
                    },
                };
                batch.push(typed);
            }
            if !batch.is_empty() && sender.send(batch).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

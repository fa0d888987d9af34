//! Work left by a server that stopped: a build or rollout record says
//! "running" while an `alive` key on its server's lease exists; once that
//! key is gone with the lease, the record is ended for it.

use crate::client::{Store, Versioned};
use crate::error::{Result, StoreError};
use crate::keys::Key;
use crate::names::AppName;
use crate::records::{Build, BuildStatus, Record};

/// What a build left by a server that stopped says.
pub const ABANDONED_BUILD: &str =
    "the server that ran it stopped before it ended: push again to build it";

impl Store {
    /// The record at `key` (read as `read`, running) as it really is: if
    /// `alive` is gone, `ended` of it is written (a transaction: unless the
    /// record changed, or came alive, meanwhile) and answered; else the
    /// record as read (or as it is now, if it changed).
    pub async fn end_if_abandoned<T: Record>(
        &self,
        key: &Key<T>,
        alive: &Key<String>,
        read: Versioned<T>,
        ended: impl FnOnce(T) -> T,
    ) -> Result<T> {
        if self.get(alive).await?.is_some() {
            return Ok(read.value);
        }
        let ended = ended(read.value);
        let written = self
            .transaction()
            .require_absent(alive)
            .update(key, read.mod_revision, &ended)
            .commit()
            .await;
        match written {
            Ok(_) => Ok(ended),
            Err(StoreError::Conflict { .. }) => {
                Ok(self.get(key).await?.map_or(ended, |now| now.value))
            }
            Err(error) => Err(error),
        }
    }

    /// Build `id` of `app` (read as `read`) as it really is: a running one
    /// whose `alive` key is gone is ended as failed; `now` is the time to
    /// record.
    pub async fn settled_build(
        &self,
        app: &AppName,
        id: &str,
        read: Versioned<Build>,
        now: u64,
    ) -> Result<Build> {
        if read.value.status != BuildStatus::Running {
            return Ok(read.value);
        }
        let key = self.keys().build(app, id)?;
        let alive = self.keys().build_alive(app, id)?;
        self.end_if_abandoned(&key, &alive, read, |mut build| {
            build.status = BuildStatus::Failed;
            build.finished_at = Some(now);
            build.error = Some(ABANDONED_BUILD.to_string());
            build
        })
        .await
    }
}

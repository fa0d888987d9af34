//! A build's record as it really is: one left running by a server that
//! stopped (its `alive` key gone with that server's lease) has ended.

use crate::client::{Store, Versioned};
use crate::error::{Result, StoreError};
use crate::names::AppName;
use crate::records::{Build, BuildStatus};

/// What a build left by a server that stopped says.
pub const ABANDONED_BUILD: &str =
    "the server that ran it stopped before it ended: push again to build it";

impl Store {
    /// Build `id` of `app` (read as `read`) as it really is: a running one
    /// whose `alive` key is gone is ended as failed, in etcd too (unless it
    /// changed, or came alive, meanwhile); `now` is the time to record.
    pub async fn settled_build(
        &self,
        app: &AppName,
        id: &str,
        read: Versioned<Build>,
        now: u64,
    ) -> Result<Build> {
        let mut build = read.value;
        if build.status != BuildStatus::Running {
            return Ok(build);
        }
        let alive = self.keys().build_alive(app, id)?;
        if self.get(&alive).await?.is_some() {
            return Ok(build);
        }
        build.status = BuildStatus::Failed;
        build.finished_at = Some(now);
        build.error = Some(ABANDONED_BUILD.to_string());
        let key = self.keys().build(app, id)?;
        let written = self
            .transaction()
            .require_absent(&alive)
            .update(&key, read.mod_revision, &build)
            .commit()
            .await;
        match written {
            Ok(_) => Ok(build),
            Err(StoreError::Conflict { .. }) => {
                Ok(self.get(&key).await?.map_or(build, |now| now.value))
            }
            Err(error) => Err(error),
        }
    }
}

//! Leases: a guard that keeps a lease alive while it lives and revokes it when
//! dropped, and [`Registration`], a key that exists exactly while its owner lives.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::client::Store;
use crate::error::Result;
use crate::keys::Key;
use crate::records::Record;

/// A granted lease, kept alive by a background task until dropped.
///
/// Dropping it stops the keep-alive and revokes the lease, so keys bound to it
/// vanish at once; if the owner dies without dropping it, they vanish after the TTL.
#[derive(Debug)]
pub struct Lease {
    id: i64,
    ttl: Duration,
    store: Store,
    keeper: JoinHandle<()>,
    expired: watch::Receiver<bool>,
    /// False once `revoke` has done it, so Drop does not do it again.
    revoke_on_drop: bool,
}

impl Lease {
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Resolves when etcd says the lease has expired (the keep-alive could not
    /// reach etcd for a whole TTL). Keys bound to it are then gone.
    pub async fn expired(&self) {
        let mut expired = self.expired.clone();
        // An Err means the keeper task ended, which only happens after expiry or abort.
        let _ = expired.wait_for(|expired| *expired).await;
    }

    /// Revokes the lease now and waits for etcd to confirm.
    pub async fn revoke(mut self) -> Result<()> {
        self.keeper.abort();
        self.revoke_on_drop = false;
        let mut client = self.store.client();
        let id = self.id;
        self.store
            .call(|| format!("revoke lease {id:x}"), client.lease_revoke(id))
            .await
            .map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
        if !self.revoke_on_drop {
            return;
        }
        // Revoke in the background so keys go at once instead of after the TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let id = self.id;
            runtime.spawn(async move {
                let mut client = store.client();
                if let Err(error) = store
                    .call(|| format!("revoke lease {id:x}"), client.lease_revoke(id))
                    .await
                {
                    debug!(%error, "lease revoke on drop failed; it expires by itself");
                }
            });
        }
    }
}

impl Store {
    /// Takes the lock `key` for `holder` on `lease` once nobody holds it
    /// (create-if-absent); while someone does, it waits on a watch until
    /// their key goes, with their lease or their release. `waiting` runs
    /// once, the first time it must wait. The lock is held while `lease`
    /// lives (drop it to let go). Returns the revision of the write.
    pub async fn acquire<F: std::future::Future<Output = ()>>(
        &self,
        key: &Key<String>,
        holder: &str,
        lease: &Lease,
        waiting: impl FnOnce() -> F,
    ) -> Result<i64> {
        let mut waiting = Some(waiting);
        loop {
            let taken = self
                .transaction()
                .require_absent(key)
                .put_on_lease(key, &holder.to_string(), lease)
                .commit()
                .await;
            match taken {
                Ok(revision) => return Ok(revision),
                Err(crate::StoreError::Conflict { .. }) => {
                    if let Some(waiting) = waiting.take() {
                        waiting().await;
                    }
                    self.wait_until(key, |holder| holder.is_none()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Writes `value` at `key` bound to `lease`: it goes when the lease does.
    pub async fn put_on_lease<T: Record>(
        &self,
        key: &Key<T>,
        value: &T,
        lease: &Lease,
    ) -> Result<i64> {
        self.put_raw(key.as_str(), value.encode(), Some(lease.id()))
            .await
    }

    /// Creates `key` if it is absent, to vanish `ttl` later (on a lease that
    /// nobody keeps alive); whether it was created. A record of something
    /// seen once, such as a webhook delivery.
    pub async fn create_expiring<T: Record>(
        &self,
        key: &Key<T>,
        value: &T,
        ttl: Duration,
    ) -> Result<bool> {
        let (id, _) = self.grant_bare_lease(ttl).await?;
        match self
            .transaction()
            .require_absent(key)
            .put_on_lease_id(key, value, id)
            .commit()
            .await
        {
            Ok(_) => Ok(true),
            Err(crate::StoreError::Conflict { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// A lease of `ttl` (whole seconds, at least 1) that nobody keeps alive:
    /// its id and TTL in seconds.
    async fn grant_bare_lease(&self, ttl: Duration) -> Result<(i64, i64)> {
        let ttl_seconds = ttl.as_secs().max(1) as i64;
        let mut client = self.client();
        let granted = self
            .call(
                || format!("grant a {ttl_seconds}s lease"),
                client.lease_grant(ttl_seconds, None),
            )
            .await?;
        Ok((granted.id(), ttl_seconds))
    }

    /// Grants a lease of `ttl` (whole seconds, at least 1) and keeps it alive.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let (id, ttl_seconds) = self.grant_bare_lease(ttl).await?;
        let (expired_sender, expired) = watch::channel(false);
        let keeper = tokio::spawn(
            keep_alive(
                self.clone(),
                id,
                Duration::from_secs(ttl_seconds as u64),
                expired_sender,
            )
            .instrument(tracing::debug_span!("lease", id = format_args!("{id:x}"))),
        );
        Ok(Lease {
            id,
            ttl: Duration::from_secs(ttl_seconds as u64),
            store: self.clone(),
            keeper,
            expired,
            revoke_on_drop: true,
        })
    }

    /// Writes `key` bound to a lease and keeps it there while the returned
    /// [`Registration`] lives: if the lease is lost (etcd was unreachable for a
    /// whole TTL), a new lease is granted and the key written again.
    pub async fn register<T: Record + Clone + Sync>(
        &self,
        key: &Key<T>,
        value: &T,
        ttl: Duration,
    ) -> Result<Registration> {
        let lease = self.grant_lease(ttl).await?;
        self.put_raw(key.as_str(), value.encode(), Some(lease.id()))
            .await?;
        let store = self.clone();
        let key_text = key.as_str().to_string();
        let bytes = value.encode();
        let task = tokio::spawn(
            async move {
                let mut lease = lease;
                loop {
                    lease.expired().await;
                    warn!("lease expired: registering again");
                    lease = loop {
                        match store.grant_lease(ttl).await {
                            Ok(new_lease) => match store
                                .put_raw(&key_text, bytes.clone(), Some(new_lease.id()))
                                .await
                            {
                                Ok(_) => break new_lease,
                                Err(error) => warn!(%error, "cannot write registration; retrying"),
                            },
                            Err(error) => warn!(%error, "cannot grant lease; retrying"),
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    };
                    info!("registered again");
                }
            }
            .instrument(tracing::info_span!("registration", key = %key)),
        );
        Ok(Registration { task })
    }
}

/// A key that exists while this guard lives; dropping it deletes the key (by
/// revoking its lease).
#[derive(Debug)]
pub struct Registration {
    task: JoinHandle<()>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Aborting drops the task's Lease, whose Drop revokes it.
        self.task.abort();
    }
}

/// Sends a keep-alive every third of the TTL; reopens the keep-alive stream
/// after a broken connection; reports expiry when etcd answers TTL 0.
async fn keep_alive(store: Store, id: i64, ttl: Duration, expired: watch::Sender<bool>) {
    let interval = (ttl / 3).max(Duration::from_millis(300));
    loop {
        let mut client = store.client();
        let opened = store
            .call(
                || format!("keep lease {id:x} alive"),
                client.lease_keep_alive(id),
            )
            .await;
        let (mut keeper, mut responses) = match opened {
            Ok(pair) => pair,
            Err(error) => {
                debug!(%error, "cannot open keep-alive stream; retrying");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        loop {
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(store.timeout(), responses.message()).await {
                Ok(Ok(Some(response))) if response.ttl() <= 0 => {
                    let _ = expired.send(true);
                    return;
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    debug!("keep-alive stream broke; reopening");
                    break;
                }
            }
            tokio::time::sleep(interval).await;
        }
        tokio::time::sleep(interval).await;
    }
}

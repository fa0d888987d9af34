//! The connection to etcd and the typed key-value calls: get, list, put, delete,
//! and transactions that apply only if what they compare still holds.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};

use crate::error::{ConflictKind, Result, StoreError};
use crate::keys::{Key, Keys, Prefix};
use crate::records::Record;

/// How many times [`Store::update_with`] reads and tries again when someone
/// else wrote the key in between.
pub const UPDATE_TRIES: usize = 10;

/// How to reach the cluster store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix everything lives under, e.g. `/paz`.
    pub prefix: String,
    /// The most any single call may take; also the connect timeout.
    pub timeout: Duration,
    /// Client TLS (`https://` endpoints): the CA to check etcd with, and the
    /// certificate and key to present.
    pub tls: Option<crate::TlsFiles>,
}

impl StoreConfig {
    pub fn new(endpoints: Vec<String>) -> StoreConfig {
        StoreConfig {
            endpoints,
            prefix: "/paz".to_string(),
            timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// A value with the revisions needed to update it safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    /// The store revision of the last change: pass it to `update` to swap safely.
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// One entry of a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub key: String,
    pub value: T,
    pub mod_revision: i64,
    /// The store revision that created the key: orders keys by creation.
    pub create_revision: i64,
}

/// The keys under a prefix at one store revision.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub entries: Vec<Entry<T>>,
    /// Keys whose value could not be decoded, with the reason; never silently dropped.
    pub invalid: Vec<(String, String)>,
    /// The store revision this listing was read at; watch from `revision + 1`.
    pub revision: i64,
}

/// A handle on the cluster store. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.root())
            .finish()
    }
}

fn normalize_endpoint(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim();
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let authority = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(StoreError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(url)
}

impl Store {
    /// Connects and checks that etcd answers within `config.timeout`.
    pub async fn connect(config: StoreConfig) -> Result<Store> {
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| normalize_endpoint(endpoint))
            .collect::<Result<Vec<_>>>()?;
        let joined = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(StoreError::InvalidEndpoint {
                endpoint: String::new(),
            });
        }
        let unreachable = |detail: String| StoreError::Unreachable {
            endpoints: joined.clone(),
            timeout: config.timeout,
            detail,
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(5), config.timeout)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &config.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|error| {
                    unreachable(format!(
                        "cannot read {}: {error} (etcd's client certificates are readable only by Paz's user)",
                        path.display()
                    ))
                })
            };
            let (ca, cert, key) = (read(&tls.ca)?, read(&tls.cert)?, read(&tls.key)?);
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(ca))
                    .identity(etcd_client::Identity::from_pem(cert, key)),
            );
        }
        let client =
            match tokio::time::timeout(config.timeout, Client::connect(&endpoints, Some(options)))
                .await
            {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => return Err(unreachable(error.to_string())),
                Err(_) => return Err(unreachable("no answer".to_string())),
            };
        let store = Store {
            client,
            keys: Keys::new(&config.prefix),
            endpoints: joined.clone(),
            timeout: config.timeout,
        };
        // The client connects lazily; ask for something so a dead etcd fails here.
        match store.revision().await {
            Ok(_) => Ok(store),
            Err(StoreError::Timeout { .. }) => Err(unreachable("no answer".to_string())),
            Err(StoreError::Etcd { source, .. }) => Err(unreachable(source.to_string())),
            Err(other) => Err(other),
        }
    }

    /// The key layout under this store's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A clone of the underlying client, for the store's own modules.
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one etcd call under the store's timeout.
    pub(crate) async fn call<T>(
        &self,
        operation: impl FnOnce() -> String,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(StoreError::Etcd {
                operation: operation(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout {
                endpoints: self.endpoints.clone(),
                operation: operation(),
                timeout: self.timeout,
            }),
        }
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64> {
        let mut client = self.client();
        let root = self.keys.root().to_string();
        let response = self
            .call(
                || format!("get {root}"),
                client.get(root.clone(), Some(GetOptions::new().with_count_only())),
            )
            .await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// The id of the lease `key` lives on: `None` when the key is absent
    /// or on no lease.
    pub async fn lease_of<T>(&self, key: &Key<T>) -> Result<Option<i64>> {
        let mut client = self.client();
        let response = self
            .call(|| format!("get {key}"), client.get(key.as_str(), None))
            .await?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| kv.lease())
            .filter(|lease| *lease != 0))
    }

    pub async fn get<T: Record>(&self, key: &Key<T>) -> Result<Option<Versioned<T>>> {
        let mut client = self.client();
        let response = self
            .call(|| format!("get {key}"), client.get(key.as_str(), None))
            .await?;
        match response.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                value: decode(key.as_str(), kv.value())?,
                mod_revision: kv.mod_revision(),
                create_revision: kv.create_revision(),
            })),
        }
    }

    /// Every entry under `prefix`, read at one revision.
    pub async fn list<T: Record>(&self, prefix: &Prefix<T>) -> Result<Listing<T>> {
        let mut client = self.client();
        let response = self
            .call(
                || format!("list {}", prefix.as_str()),
                client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut listing = Listing {
            entries: Vec::new(),
            invalid: Vec::new(),
            revision: response.header().map(|h| h.revision()).unwrap_or_default(),
        };
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if !prefix.contains(&key) {
                continue;
            }
            match T::decode(kv.value()) {
                Ok(value) => listing.entries.push(Entry {
                    key,
                    value,
                    mod_revision: kv.mod_revision(),
                    create_revision: kv.create_revision(),
                }),
                Err(reason) => listing.invalid.push((key, reason)),
            }
        }
        Ok(listing)
    }

    /// The names below `prefix` of the keys under it, without their values
    /// (for a directory whose values are large, such as unit files).
    pub async fn list_names<T>(&self, prefix: &Prefix<T>) -> Result<Vec<String>> {
        let named = self.names_and_leases(prefix).await?;
        Ok(named.into_iter().map(|(name, _)| name).collect())
    }

    /// Each key under `prefix` by its name below it, with the lease it
    /// lives on (0: none), read without the values.
    async fn names_and_leases<T>(&self, prefix: &Prefix<T>) -> Result<Vec<(String, i64)>> {
        let mut client = self.client();
        let options = GetOptions::new().with_prefix().with_keys_only();
        let response = self
            .call(
                || format!("list {}", prefix.as_str()),
                client.get(prefix.as_str(), Some(options)),
            )
            .await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.lease()))
            .filter(|(key, _)| prefix.contains(key))
            .map(|(key, lease)| (prefix.child_name(&key).to_string(), lease))
            .collect())
    }

    /// How long ago each key under `prefix` that lives on a lease had that
    /// lease renewed, by its name below the prefix: a machine's heartbeat
    /// age. Keys on no lease, or whose lease just ended, are left out.
    pub async fn lease_ages<T>(
        &self,
        prefix: &Prefix<T>,
    ) -> Result<std::collections::BTreeMap<String, Duration>> {
        let mut leased = self.names_and_leases(prefix).await?;
        leased.retain(|(_, lease)| *lease != 0);
        // Each lease asked once, however many keys live on it.
        let leases: std::collections::BTreeSet<i64> = leased.iter().map(|(_, l)| *l).collect();
        let asked = leases.into_iter().map(|lease| {
            let mut client = self.client();
            async move {
                let answer = self
                    .call(
                        || format!("lease time-to-live {lease:x} under {}", prefix.as_str()),
                        client.lease_time_to_live(lease, None),
                    )
                    .await;
                (lease, answer)
            }
        });
        let mut by_lease = std::collections::BTreeMap::new();
        for (lease, answer) in futures::future::join_all(asked).await {
            let answer = answer?;
            // A lease that ended answers a TTL of -1.
            if answer.ttl() >= 0 {
                let age = answer.granted_ttl().saturating_sub(answer.ttl()).max(0);
                by_lease.insert(lease, Duration::from_secs(age as u64));
            }
        }
        Ok(leased
            .iter()
            .filter_map(|(name, lease)| Some((name.clone(), *by_lease.get(lease)?)))
            .collect())
    }

    /// Every entry under `prefix` by its name below the prefix (the unit
    /// name of `.../units/<name>`), read at one revision.
    pub async fn list_named<T: Record>(
        &self,
        prefix: &Prefix<T>,
    ) -> Result<std::collections::BTreeMap<String, T>> {
        let listing = self.list(prefix).await?;
        Ok(listing
            .entries
            .into_iter()
            .map(|entry| (prefix.child_name(&entry.key).to_string(), entry.value))
            .collect())
    }

    /// Writes `value` whatever was there; returns the new revision.
    pub async fn put<T: Record>(&self, key: &Key<T>, value: &T) -> Result<i64> {
        self.put_raw(key.as_str(), value.encode(), None).await
    }

    pub(crate) async fn put_raw(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<i64> {
        let mut client = self.client();
        let options = lease.map(|id| PutOptions::new().with_lease(id));
        let response = self
            .call(|| format!("put {key}"), client.put(key, value, options))
            .await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete<T>(&self, key: &Key<T>) -> Result<bool> {
        let mut client = self.client();
        let response = self
            .call(
                || format!("delete {key}"),
                client.delete(key.as_str(), None),
            )
            .await?;
        Ok(response.deleted() > 0)
    }

    /// Writes `value` only if `key` does not exist; else a [`ConflictKind::AlreadyExists`] conflict.
    pub async fn create<T: Record>(&self, key: &Key<T>, value: &T) -> Result<i64> {
        self.transaction().create(key, value).commit().await
    }

    /// Writes `value` only if `key` is unchanged since `expected_revision` (a
    /// [`Versioned::mod_revision`]); else a [`ConflictKind::Changed`] or
    /// [`ConflictKind::Gone`] conflict.
    pub async fn update<T: Record>(
        &self,
        key: &Key<T>,
        expected_revision: i64,
        value: &T,
    ) -> Result<i64> {
        self.transaction()
            .update(key, expected_revision, value)
            .commit()
            .await
    }

    /// Reads `key`, applies `change` and writes the result only if nobody
    /// wrote the key in between; reads again and retries when someone did
    /// (up to [`UPDATE_TRIES`] times, then a [`ConflictKind::Changed`]
    /// conflict). `None` if the key does not exist; nothing is written when
    /// `change` refuses.
    pub async fn update_with<T: Record, R, E: From<StoreError>>(
        &self,
        key: &Key<T>,
        mut change: impl FnMut(&mut T) -> std::result::Result<R, E>,
    ) -> std::result::Result<Option<(T, R)>, E> {
        for _ in 0..UPDATE_TRIES {
            let Some(mut current) = self.get(key).await? else {
                return Ok(None);
            };
            let result = change(&mut current.value)?;
            match self.update(key, current.mod_revision, &current.value).await {
                Ok(_) => return Ok(Some((current.value, result))),
                Err(error) if error.conflict().is_some() => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Conflict {
            key: key.as_str().to_string(),
            kind: ConflictKind::Changed,
        }
        .into())
    }

    /// Deletes `key` only if it is unchanged since `expected_revision`.
    pub async fn delete_if_unchanged<T>(
        &self,
        key: &Key<T>,
        expected_revision: i64,
    ) -> Result<i64> {
        self.transaction()
            .delete_if_unchanged(key, expected_revision)
            .commit()
            .await
    }

    /// Starts an all-or-nothing change of several keys.
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction {
            store: self,
            conditions: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// Records `release` as the app's next release, pending, and returns its
    /// number; two writers racing get different numbers.
    pub async fn create_release(
        &self,
        app: &crate::AppName,
        release: crate::records::NewRelease,
    ) -> Result<u64> {
        loop {
            let listing = self.list(&self.keys.releases(app)).await?;
            let next = listing
                .entries
                .iter()
                .map(|entry| entry.value.n)
                .max()
                .unwrap_or(0)
                + 1;
            let numbered = release.clone().numbered(next);
            match self.create(&self.keys.release(app, next), &numbered).await {
                Ok(_) => return Ok(next),
                Err(error) if error.conflict().is_some() => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Discards history before `revision` (operators and tests; etcd also does it itself).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let mut client = self.client();
        self.call(
            || format!("compact at revision {revision}"),
            client.compact(revision, None),
        )
        .await?;
        Ok(())
    }
}

fn decode<T: Record>(key: &str, bytes: &[u8]) -> Result<T> {
    T::decode(bytes).map_err(|reason| StoreError::Decode {
        key: key.to_string(),
        reason,
    })
}

/// What a [`Transaction`] requires of one key before it writes anything.
#[derive(Debug)]
enum Condition {
    Absent(String),
    Unchanged(String, i64),
}

/// An all-or-nothing change: either every condition holds and every write
/// applies, or nothing changes and the first failed condition is returned as a
/// typed conflict.
#[must_use = "a transaction does nothing until it is committed"]
pub struct Transaction<'a> {
    store: &'a Store,
    conditions: Vec<Condition>,
    writes: Vec<TxnOp>,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("conditions", &self.conditions)
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl Transaction<'_> {
    /// Requires `key` to be absent.
    pub fn require_absent<T>(mut self, key: &Key<T>) -> Self {
        self.conditions
            .push(Condition::Absent(key.as_str().to_string()));
        self
    }

    /// Requires `key` to be unchanged since `revision`.
    pub fn require_unchanged<T>(mut self, key: &Key<T>, revision: i64) -> Self {
        self.conditions
            .push(Condition::Unchanged(key.as_str().to_string(), revision));
        self
    }

    pub fn put<T: Record>(mut self, key: &Key<T>, value: &T) -> Self {
        self.writes
            .push(TxnOp::put(key.as_str(), value.encode(), None));
        self
    }

    pub fn delete<T>(mut self, key: &Key<T>) -> Self {
        self.writes.push(TxnOp::delete(key.as_str(), None));
        self
    }

    /// Writes `value` on the lease `id`, which nobody keeps alive.
    pub(crate) fn put_on_lease_id<T: Record>(mut self, key: &Key<T>, value: &T, id: i64) -> Self {
        self.writes.push(TxnOp::put(
            key.as_str(),
            value.encode(),
            Some(etcd_client::PutOptions::new().with_lease(id)),
        ));
        self
    }

    /// Writes `value` on `lease`: the key goes when the lease does.
    pub fn put_on_lease<T: Record>(
        mut self,
        key: &Key<T>,
        value: &T,
        lease: &crate::Lease,
    ) -> Self {
        self.writes.push(TxnOp::put(
            key.as_str(),
            value.encode(),
            Some(etcd_client::PutOptions::new().with_lease(lease.id())),
        ));
        self
    }

    /// Deletes every key under `prefix` (all of them, whatever record they hold).
    pub fn delete_prefix<T>(mut self, prefix: &Prefix<T>) -> Self {
        self.writes.push(TxnOp::delete(
            prefix.as_str(),
            Some(DeleteOptions::new().with_prefix()),
        ));
        self
    }

    /// Create-if-absent.
    pub fn create<T: Record>(self, key: &Key<T>, value: &T) -> Self {
        self.require_absent(key).put(key, value)
    }

    /// Update-if-unchanged.
    pub fn update<T: Record>(self, key: &Key<T>, expected_revision: i64, value: &T) -> Self {
        self.require_unchanged(key, expected_revision)
            .put(key, value)
    }

    pub fn delete_if_unchanged<T>(self, key: &Key<T>, expected_revision: i64) -> Self {
        self.require_unchanged(key, expected_revision).delete(key)
    }

    /// Applies the change; returns the new store revision.
    pub async fn commit(self) -> Result<i64> {
        let store = self.store;
        let compares: Vec<Compare> = self
            .conditions
            .iter()
            .map(|condition| match condition {
                Condition::Absent(key) => {
                    Compare::create_revision(key.as_str(), CompareOp::Equal, 0)
                }
                Condition::Unchanged(key, revision) => {
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
                }
            })
            .collect();
        // On failure, read every compared key back to say which condition failed.
        let reads: Vec<TxnOp> = self
            .conditions
            .iter()
            .map(|condition| match condition {
                Condition::Absent(key) | Condition::Unchanged(key, _) => {
                    TxnOp::get(key.as_str(), None)
                }
            })
            .collect();
        let txn = Txn::new()
            .when(compares)
            .and_then(self.writes)
            .or_else(reads);
        let described = self
            .conditions
            .iter()
            .map(|condition| match condition {
                Condition::Absent(key) | Condition::Unchanged(key, _) => key.as_str(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut client = store.client();
        let response = store
            .call(|| format!("transaction on {described}"), client.txn(txn))
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or_default();
        if response.succeeded() {
            return Ok(revision);
        }
        for (condition, read) in self.conditions.iter().zip(response.op_responses()) {
            let current = match read {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
                _ => None,
            };
            let (key, kind) = match (condition, current) {
                (Condition::Absent(key), Some(_)) => (key, ConflictKind::AlreadyExists),
                (Condition::Unchanged(key, _), None) => (key, ConflictKind::Gone),
                (Condition::Unchanged(key, expected), Some(found)) if found != *expected => {
                    (key, ConflictKind::Changed)
                }
                _ => continue,
            };
            return Err(StoreError::Conflict {
                key: key.clone(),
                kind,
            });
        }
        // The keys changed back between the compare and the read: still a conflict.
        Err(StoreError::Conflict {
            key: described,
            kind: ConflictKind::Changed,
        })
    }
}

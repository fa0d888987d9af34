//! Paz's ACME role (RFC 8555, HTTP-01): on every edge host that runs with
//! `--acme-email`, it orders a certificate for each name Paz routes and
//! renews it two thirds into its lifetime. Everything it shares lives in
//! etcd, so that any edge host can take any step:
//!
//! - the account's credentials (`/paz/tls/acme/account/<hash>`), made once
//!   with a create-if-absent transaction;
//! - a lock per name (`/paz/tls/locks/<name>`, on the orderer's lease): one
//!   edge host orders a name at a time;
//! - the pending challenges (`/paz/tls/acme/http01/<token>`, on the same
//!   lease), which every edge host's proxy answers, so the CA's probe may
//!   reach any of them;
//! - the certificate and its key (`/paz/tls/certs/<name>`), which every
//!   proxy serves, with the state `certs:list` shows.
//!
//! A failed order waits before the next, doubling from `--acme-backoff` up
//! to a day, so a name the CA refuses stays under its rate limits.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use store::records::{CertSource, CertState, Certificate};
use store::{Store, StoreError, UPDATE_TRIES};
use tracing::{info, warn};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the role orders.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The account's contact (`mailto:`).
    pub email: String,
    /// The CA's directory URL.
    pub directory: String,
    /// A CA certificate (PEM) to trust for the directory's HTTPS, for a test CA.
    pub ca_file: Option<PathBuf>,
    /// The wait after a first failed order; it doubles with each failure, up to a day.
    pub backoff: Duration,
    /// How often every name is looked at, besides when etcd says something changed.
    pub check_every: Duration,
    /// Who holds a lock: this host and process, shown to operators.
    pub holder: String,
}

impl AcmeConfig {
    pub fn new(email: String) -> AcmeConfig {
        AcmeConfig {
            email,
            directory: LETS_ENCRYPT.to_string(),
            ca_file: None,
            backoff: Duration::from_secs(300),
            check_every: Duration::from_secs(60),
            holder: format!("pid-{}", std::process::id()),
        }
    }
}

/// Why an order failed; the text is what `certs:list` shows.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the CA: {0}")]
    Ca(#[from] instant_acme::Error),
    #[error("the CA refused the challenge: {0}")]
    Refused(String),
    #[error("the order ended {0:?}")]
    Order(OrderStatus),
    #[error("the CA offers no HTTP-01 challenge for this name")]
    NoHttp01,
    #[error("the issued certificate is not usable: {0}")]
    Issued(#[from] tls::TlsError),
    #[error("this edge host lost its lock on the name (etcd was unreachable for the lease's life); another may order it")]
    LostLock,
    #[error("cannot read the CA file {path}: {error}")]
    CaFile { path: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the role until the task is dropped.
pub async fn run(store: Store, config: AcmeConfig) {
    let mut role = Role {
        store,
        config,
        account: None,
        account_failures: 0,
        account_retry: None,
        unrecorded: Mutex::default(),
    };
    let keys = role.store.keys().clone();
    // Any change to what is routed, or to a certificate, is looked at at
    // once (after a short pause, so that a burst is looked at once).
    let mut apps = role.store.watch(&keys.apps());
    let mut config = role.store.watch(&keys.config());
    let mut endpoints = role.store.watch(&keys.endpoints());
    let mut certs = role.store.watch(&keys.certificates());
    loop {
        let wake = role.pass().await;
        let next = tokio::time::sleep(wake.min(role.config.check_every));
        tokio::select! {
            () = next => {}
            Some(_) = apps.next_batch() => {}
            Some(_) = config.next_batch() => {}
            Some(_) = endpoints.next_batch() => {}
            Some(_) = certs.next_batch() => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Role {
    store: Store,
    config: AcmeConfig,
    account: Option<Account>,
    /// Attempts at the account that failed in a row, and when to try again.
    account_failures: u32,
    account_retry: Option<Instant>,
    /// Names whose order's outcome could not be written to etcd, with when
    /// they may be ordered again: so a store that is away cannot make this
    /// host ask the CA in a loop.
    unrecorded: Mutex<HashMap<String, Instant>>,
}

/// Orders run at once, at most.
const CONCURRENT_ORDERS: usize = 4;

/// How long the lock's lease lives without its holder.
const LOCK_TTL: Duration = Duration::from_secs(30);

impl Role {
    /// Looks at every routed name once and orders those that are due;
    /// how long until the next is due.
    async fn pass(&mut self) -> Duration {
        let (due, next) = match self.due().await {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "ACME: cannot read the routed names and certificates; trying again later");
                return self.config.check_every;
            }
        };
        if due.is_empty() {
            return next;
        }
        if let Some(retry) = self.account_retry {
            if let Some(wait) = retry.checked_duration_since(Instant::now()) {
                return wait;
            }
        }
        let account = match self.account().await {
            Ok(account) => {
                self.account_failures = 0;
                self.account_retry = None;
                account
            }
            Err(error) => {
                // The CA's account limits are per address: back off as for an order.
                self.account_failures = self.account_failures.saturating_add(1);
                let wait = backoff(self.config.backoff, self.account_failures);
                self.account_retry = Some(Instant::now() + wait);
                warn!(%error, directory = %self.config.directory, retry_in = ?wait, "ACME: no account at the CA");
                return wait;
            }
        };
        let this = &*self;
        let ordered = std::sync::atomic::AtomicUsize::new(0);
        futures::stream::iter(due)
            .for_each_concurrent(CONCURRENT_ORDERS, |name| {
                let (account, ordered) = (account.clone(), &ordered);
                async move {
                    if this.order_under_lock(&account, &name).await {
                        ordered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await;
        if ordered.into_inner() > 0 {
            // Look again soon: what was ordered changed the records.
            Duration::from_secs(1)
        } else {
            // Every due name is another host's to order now.
            next.min(Duration::from_secs(5))
        }
    }

    /// The routed names whose certificate should be ordered now, and how
    /// long until the next one is due.
    async fn due(&self) -> Result<(Vec<String>, Duration), StoreError> {
        let keys = self.store.keys();
        let domain = self.store.get(&keys.domain()).await?.map(|d| d.value);
        let apps = self.store.list(&keys.apps()).await?;
        let endpoints = self.store.list_names(&keys.endpoints()).await?;
        let routed = store::records::routed_names(
            domain.as_deref(),
            apps.entries.iter().map(|entry| &entry.value),
            endpoints.iter().map(|name| keys.endpoint_label(name)),
        );
        let stored = self.store.list(&keys.certificates()).await?;
        let records: Vec<&Certificate> = stored.entries.iter().map(|e| &e.value).collect();
        let now = support::now();
        let next = records
            .iter()
            .filter(|record| record.source == CertSource::Acme && routed.contains(&record.domain))
            .map(|record| match record.state {
                CertState::Valid => record.renew_at(),
                _ => record.retry_at,
            })
            .filter(|at| *at > now)
            .min()
            .map_or(self.config.check_every, |at| Duration::from_secs(at - now));
        let mut unrecorded = self.unrecorded.lock().expect("not poisoned");
        unrecorded.retain(|_, until| *until > Instant::now());
        let due = routed
            .into_iter()
            .filter(|name| !unrecorded.contains_key(name) && wants_order(name, &records, now))
            .collect();
        Ok((due, next))
    }

    /// The account, restored from etcd or made (once for the cluster).
    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let key = self.store.keys().acme_account(&self.config.directory);
        let account = match self.store.get(&key).await? {
            Some(stored) => {
                let credentials: AccountCredentials =
                    serde_json::from_str(&stored.value).map_err(|error| {
                        AcmeError::Refused(format!(
                            "the stored account at {key} is not readable: {error}"
                        ))
                    })?;
                self.builder()?.from_credentials(credentials).await?
            }
            None => {
                let contact = format!("mailto:{}", self.config.email);
                let (account, credentials) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &[&contact],
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await?;
                let text = serde_json::to_string(&credentials).expect("credentials serialize");
                match self.store.create(&key, &text).await {
                    Ok(_) => {
                        info!(directory = %self.config.directory, id = account.id(), "ACME: account made");
                        account
                    }
                    // Another edge host made one first: use that one.
                    Err(error) if error.conflict().is_some() => {
                        let stored = self.store.get(&key).await?.ok_or(error)?;
                        let credentials: AccountCredentials = serde_json::from_str(&stored.value)
                            .map_err(|error| {
                            AcmeError::Refused(format!(
                                "the stored account is not readable: {error}"
                            ))
                        })?;
                        self.builder()?.from_credentials(credentials).await?
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        match &self.config.ca_file {
            Some(path) => {
                std::fs::metadata(path).map_err(|error| AcmeError::CaFile {
                    path: path.display().to_string(),
                    error: error.to_string(),
                })?;
                Ok(Account::builder_with_root(path)?)
            }
            None => Ok(Account::builder()?),
        }
    }

    /// Orders `name` if no other edge host is ordering it, and records the
    /// outcome; whether it ordered.
    async fn order_under_lock(&self, account: &Account, name: &str) -> bool {
        let keys = self.store.keys();
        let (Ok(lock), Ok(record_key)) = (keys.certificate_lock(name), keys.certificate(name))
        else {
            return false;
        };
        let lease = match self.store.grant_lease(LOCK_TTL).await {
            Ok(lease) => lease,
            Err(error) => {
                warn!(%error, name, "ACME: cannot take a lease for the lock");
                return false;
            }
        };
        let taken = self
            .store
            .transaction()
            .require_absent(&lock)
            .put_on_lease(&lock, &self.config.holder, &lease)
            .commit()
            .await;
        if taken.is_err() {
            // Another edge host orders it (or etcd is away): its turn.
            return false;
        }
        // Read again under the lock: another host may have just finished.
        let current = match self.store.get(&record_key).await {
            Ok(current) => current,
            Err(error) => {
                warn!(%error, name, "ACME: cannot read the certificate record");
                return false;
            }
        };
        let now = support::now();
        let record = current.as_ref().map(|c| c.value.clone());
        if !wants_order(name, &record.iter().collect::<Vec<_>>(), now) {
            return false;
        }
        let mut record = record.unwrap_or_else(|| Certificate::pending(name, now));
        record.state = if record.is_issued() {
            CertState::Renewing
        } else {
            CertState::Pending
        };
        record.updated_at = now;
        // Should this host die mid-order, the next order waits as after a
        // failure: a crash never makes the CA be asked in a loop.
        let pending_failures = record.failures.saturating_add(1);
        record.retry_at = now + backoff(self.config.backoff, pending_failures).as_secs();
        let revision = match current {
            Some(current) => {
                self.store
                    .update(&record_key, current.mod_revision, &record)
                    .await
            }
            None => self.store.create(&record_key, &record).await,
        };
        let Ok(mut revision) = revision else {
            // Changed meanwhile (certs:add, certs:remove): look again next pass.
            return false;
        };
        info!(name, state = ?record.state, "ACME: ordering a certificate");
        let ordered = tokio::select! {
            ordered = self.order(account, name, &lease) => ordered,
            () = lease.expired() => Err(AcmeError::LostLock),
        };
        let now = support::now();
        match ordered {
            Ok(bundle) => {
                info!(
                    name,
                    not_after = bundle.leaf.not_after,
                    "ACME: certificate issued"
                );
                record.chain_pem = bundle.chain_pem;
                record.key_pem = bundle.key_pem;
                record.not_before = bundle.leaf.not_before;
                record.not_after = bundle.leaf.not_after;
                record.issuer = bundle.leaf.issuer;
                record.state = CertState::Valid;
                record.reason = None;
                record.failures = 0;
                record.retry_at = 0;
            }
            Err(error) => {
                record.failures = record.failures.saturating_add(1);
                let wait = backoff(self.config.backoff, record.failures);
                warn!(name, %error, retry_in = ?wait, "ACME: order failed");
                record.state = CertState::Failed;
                record.reason = Some(error.to_string());
                record.retry_at = now + wait.as_secs();
            }
        }
        record.updated_at = now;
        // Over the record as it is now, if it is still ACME's: a certificate
        // added by hand or removed meanwhile stays so; one asked to renew
        // meanwhile (certs:renew) takes this outcome.
        let mut recorded = false;
        for _ in 0..UPDATE_TRIES {
            match self.store.update(&record_key, revision, &record).await {
                Ok(_) => {
                    recorded = true;
                    break;
                }
                Err(error) => {
                    if error.conflict().is_none() {
                        warn!(%error, name, "ACME: cannot record the order's outcome; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    match self.store.get(&record_key).await {
                        Ok(Some(now)) if now.value.source == CertSource::Acme => {
                            revision = now.mod_revision;
                        }
                        Ok(_) => {
                            recorded = true;
                            break;
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        if !recorded {
            let wait = backoff(self.config.backoff, record.failures.max(1));
            self.unrecorded
                .lock()
                .expect("not poisoned")
                .insert(name.to_string(), Instant::now() + wait);
        }
        // The lease goes with the lock and the challenges on it.
        if let Err(error) = lease.revoke().await {
            warn!(%error, name, "ACME: cannot let go of the lock; it expires by itself");
        }
        true
    }

    /// One order of `name`, its challenges written on `lease`.
    async fn order(
        &self,
        account: &Account,
        name: &str,
        lease: &store::Lease,
    ) -> Result<tls::Bundle, AcmeError> {
        let identifiers = [Identifier::Dns(name.to_string())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut tokens = Vec::new();
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                let mut challenge = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or(AcmeError::NoHttp01)?;
                let token = challenge.token.clone();
                let key = self
                    .store
                    .keys()
                    .acme_challenge(&token)
                    .map_err(|error| AcmeError::Refused(error.to_string()))?;
                let answer = challenge.key_authorization().as_str().to_string();
                self.store.put_on_lease(&key, &answer, lease).await?;
                tokens.push(key);
                challenge.set_ready().await?;
            }
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(500))
            .timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retries).await;
        for key in &tokens {
            let _ = self.store.delete(key).await;
        }
        match status? {
            OrderStatus::Ready => {}
            OrderStatus::Invalid => return Err(AcmeError::Refused(why_invalid(&mut order).await)),
            other => return Err(AcmeError::Order(other)),
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&retries).await?;
        let bundle = format!("{chain_pem}\n{key_pem}");
        Ok(tls::check_bundle(name, bundle.as_bytes(), support::now())?)
    }
}

/// The CA's reason for an invalid order: the failed challenge's problem.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(match &problem.detail {
                    Some(detail) => detail.clone(),
                    None => problem.to_string(),
                });
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid".to_string()
    } else {
        reasons.join("; ")
    }
}

/// The wait after `failures` failed orders in a row: `base`, doubled each
/// time, at most a day.
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(Duration::from_secs(86_400)).max(base)
}

/// Whether `name` (routed) should be ordered at `now`, given the stored
/// records: none yet, or its own ACME record pending, failed and past its
/// wait, renewing, or two thirds into its lifetime. A certificate brought by
/// hand (its own or a wildcard over it) is never replaced.
pub fn wants_order(name: &str, records: &[&Certificate], now: u64) -> bool {
    let manual = records.iter().any(|record| {
        record.source == CertSource::Manual
            && tls::covers(&record.domain, name)
            && record.not_after > now
    });
    if manual {
        return false;
    }
    let Some(own) = records.iter().find(|record| record.domain == name) else {
        return true;
    };
    if own.source == CertSource::Manual {
        return false;
    }
    match own.state {
        CertState::Valid => now >= own.renew_at(),
        CertState::Pending | CertState::Renewing | CertState::Failed => now >= own.retry_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(domain: &str, source: CertSource, state: CertState) -> Certificate {
        Certificate {
            source,
            state,
            not_before: 1000,
            not_after: 1900,
            ..Certificate::pending(domain, 1000)
        }
    }

    #[test]
    fn a_name_is_ordered_when_new_failed_past_its_wait_or_two_thirds_old() {
        let now = 1500;
        assert!(wants_order("a.test", &[], now), "new");
        let valid = record("a.test", CertSource::Acme, CertState::Valid);
        assert!(!wants_order("a.test", &[&valid], 1599));
        assert!(wants_order("a.test", &[&valid], 1600), "at two thirds");
        let mut failed = record("a.test", CertSource::Acme, CertState::Failed);
        failed.retry_at = 1700;
        assert!(!wants_order("a.test", &[&failed], 1699), "waits");
        assert!(wants_order("a.test", &[&failed], 1700));
        let manual = record("a.test", CertSource::Manual, CertState::Valid);
        assert!(!wants_order("a.test", &[&manual], 5000), "never by hand");
        let wildcard = record("*.test", CertSource::Manual, CertState::Valid);
        assert!(
            !wants_order("b.test", &[&wildcard], now),
            "a wildcard covers it"
        );
        assert!(
            wants_order("b.test", &[&wildcard], 2000),
            "not once it expired"
        );
    }

    #[test]
    fn failures_back_off_doubling_up_to_a_day() {
        let base = Duration::from_secs(300);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), Duration::from_secs(600));
        assert_eq!(backoff(base, 4), Duration::from_secs(2400));
        assert_eq!(backoff(base, 40), Duration::from_secs(86_400));
    }
}

//! The typed records stored under the key layout, and how each is encoded.
//!
//! Records are JSON, except values that the 2015 tools and humans read directly:
//! unit files are plain text, `current` is a decimal number, service addresses are
//! `ip:port`, the domain and schedule entries are plain strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::AppName;

/// A value that can be stored at a key: how it is written and read back.
pub trait Record: Sized + Send + 'static {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// Plain UTF-8 text (unit files, `ip:port`, machine ids, the domain).
impl Record for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "value is not UTF-8 text".to_string())
    }
}

/// Raw bytes, for tools that look at every key whatever it holds.
impl Record for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

/// A decimal number (release numbers).
impl Record for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| "value is not a decimal number".to_string())
    }
}

macro_rules! json_record {
    ($($name:ty),* $(,)?) => {$(
        impl Record for $name {
            fn encode(&self) -> Vec<u8> {
                serde_json::to_vec(self).expect("records always serialize")
            }
            fn decode(bytes: &[u8]) -> Result<Self, String> {
                serde_json::from_slice(bytes).map_err(|error| error.to_string())
            }
        }
    )*};
}

json_record!(
    App,
    Release,
    SshKey,
    Token,
    Build,
    Machine,
    ProxyRecord,
    UnitState,
    ImageEvent,
    Certificate,
    CronState
);
json_record!(crate::Rollout);

/// What a key or token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including creating apps and managing keys.
    Admin,
    /// Push and manage the apps listed in `apps` only.
    Deployer,
    /// Pull images only (tokens for agents).
    Machine,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Machine => "machine",
        }
    }
}

/// `/paz/keys/<fingerprint>`: an SSH public key allowed to connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshKey {
    pub name: String,
    /// As `ssh-keygen -lf` prints it: `SHA256:<base64>`.
    pub fingerprint: String,
    /// The OpenSSH one-line form (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
    pub role: Role,
    /// Apps a deployer may use; empty for admins.
    #[serde(default)]
    pub apps: Vec<AppName>,
}

/// `/paz/tokens/<id>`: an API, registry or webhook credential. Only the secret's
/// SHA-256 is stored; the secret is shown once when the token is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    pub name: String,
    pub secret_sha256: String,
    pub role: Role,
    #[serde(default)]
    pub apps: Vec<AppName>,
    /// Its webhook signing secret, sealed with the control hosts' `hooks.key`
    /// ([`crate::HookKey`]); `None`: it cannot sign webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_sealed: Option<String>,
}

impl Token {
    /// A new token and its secret (`paz_` and 48 hex digits), which is shown
    /// once and never stored: only its SHA-256 is.
    pub fn create(name: &str, role: Role, apps: Vec<AppName>) -> (Token, String) {
        let random: [u8; 24] = rand::random();
        let secret = format!("paz_{}", hex::encode(random));
        let token = Token {
            name: name.to_string(),
            secret_sha256: secret_sha256(&secret),
            role,
            apps,
            signing_sealed: None,
        };
        (token, secret)
    }

    /// Whether `secret` has the form of a token's secret (`paz_` and 48
    /// lowercase hex digits): what has not names no token, and is refused
    /// without a look at etcd.
    pub fn is_secret_form(secret: &str) -> bool {
        secret.strip_prefix("paz_").is_some_and(|digits| {
            digits.len() == 48
                && digits
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }

    /// Whether `secret` is this token's (compared in constant time).
    pub fn secret_matches(&self, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        secret_sha256(secret)
            .as_bytes()
            .ct_eq(self.secret_sha256.as_bytes())
            .into()
    }
}

/// The SHA-256 of a token's secret, in hex, as [`Token`] keeps it.
pub fn secret_sha256(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// `/paz/apps/<app>`: an app's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct App {
    pub name: AppName,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Extra domains routed to the app besides `<app>.<domain>`.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The port the app listens on; `None` means the image's first exposed port, else 5000.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub scale: Scale,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub deploy: DeploySettings,
    #[serde(default)]
    pub https: HttpsSettings,
    /// Memory and CPU limits (`resource:limit`), taken into each new release.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
}

/// How the proxy serves an app over HTTPS (`https:redirect`, `https:hsts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpsSettings {
    /// A 308 from http:// to https://; `None`: on once the name has a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
    /// `Strict-Transport-Security` on answers over HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hsts: bool,
}

impl App {
    /// A new app with the documented defaults.
    pub fn new(name: AppName, created_at: u64) -> App {
        App {
            name,
            created_at,
            domains: Vec::new(),
            port: None,
            health: Health::default(),
            scale: Scale::default(),
            env: BTreeMap::new(),
            deploy: DeploySettings::default(),
            https: HttpsSettings::default(),
            resources: Resources::default(),
        }
    }
}

/// An app's memory and CPU limits: for every process type, and per type
/// over that (`resource:limit APP [--process TYPE] memory=512m cpus=1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// For every process type without its own.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub all: Limits,
    /// A process type's own limits, over `all`, by type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, Limits>,
}

impl Resources {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.processes.is_empty()
    }

    /// The limits of `process`: its own, else the app's.
    pub fn of(&self, process: &str) -> Limits {
        let own = self.processes.get(process).cloned().unwrap_or_default();
        Limits {
            memory: own.memory.or(self.all.memory),
            nano_cpus: own.nano_cpus.or(self.all.nano_cpus),
        }
    }
}

/// Limits on one process type's containers; `None`: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Limits {
    /// Bytes of memory, swap included (`--memory` and `--memory-swap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Billionths of a CPU (`--cpus 0.5` is 500000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<u64>,
}

impl Limits {
    /// Whether neither limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.nano_cpus.is_none()
    }
}

/// How an instance is checked before it takes traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub path: String,
    /// Seconds one check may take.
    pub timeout: u64,
    pub attempts: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/".to_string(),
            timeout: 5,
            attempts: 3,
        }
    }
}

/// How many instances of each process type run: `web` and `worker`, and
/// any other type of the release's Procfile beside them
/// (`{"web": 2, "worker": 0, "clock": 1}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scale {
    pub web: u32,
    #[serde(default)]
    pub worker: u32,
    /// The other process types that run, by name (none at 0).
    #[serde(flatten, default)]
    pub others: BTreeMap<String, u32>,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            web: 1,
            worker: 0,
            others: BTreeMap::new(),
        }
    }
}

impl Scale {
    /// How many instances of `process` run.
    pub fn of(&self, process: &str) -> u32 {
        match process {
            "web" => self.web,
            "worker" => self.worker,
            other => self.others.get(other).copied().unwrap_or(0),
        }
    }

    /// Sets how many instances of `process` run.
    pub fn set(&mut self, process: &str, count: u32) {
        match process {
            "web" => self.web = count,
            "worker" => self.worker = count,
            other if count == 0 => {
                self.others.remove(other);
            }
            other => {
                self.others.insert(other.to_string(), count);
            }
        }
    }

    /// Every process type and its count: web, worker, then the others by name.
    pub fn all(&self) -> Vec<(&str, u32)> {
        let mut all = vec![("web", self.web), ("worker", self.worker)];
        all.extend(self.others.iter().map(|(name, n)| (name.as_str(), *n)));
        all
    }
}

/// What deploys the app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeploySettings {
    /// The branch whose pushes deploy; `None` means `main`, or `master`.
    #[serde(default)]
    pub branch: Option<String>,
    /// A registry repository whose new tags deploy the app (`deploy:follow`).
    #[serde(default)]
    pub image_repo: Option<String>,
    /// A glob on tags of `image_repo`; `None` means every tag.
    #[serde(default)]
    pub tag_pattern: Option<String>,
}

/// Why a release was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseCause {
    Push,
    Image,
    Rollback,
    Config,
    Scale,
}

/// Where a release is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseStatus {
    /// Recorded, not yet rolled out.
    Pending,
    /// Being rolled out.
    Deploying,
    /// Serving (it is, or was, `current`).
    Active,
    /// Its instances did not become healthy; it never took traffic.
    Failed,
    /// Replaced by a later release.
    Superseded,
}

/// `/paz/apps/<app>/releases/<n>`: one immutable version of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Release {
    pub n: u64,
    /// `repo@sha256:digest`.
    pub image: String,
    #[serde(default)]
    pub git_sha: Option<String>,
    /// The app's env at the time of the release.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub created_at: u64,
    /// Key name or token name that caused it.
    pub by: String,
    pub cause: ReleaseCause,
    pub status: ReleaseStatus,
    /// Process types from the Procfile (`web`, `worker`, ...) and their commands;
    /// empty means the image's own command is `web`.
    #[serde(default)]
    pub processes: BTreeMap<String, String>,
    /// The Procfile's `release:` command, run once before a rollout.
    #[serde(default)]
    pub release_command: Option<String>,
    /// The reference `image` was resolved from, when it named a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The TCP ports the image exposes, lowest first: without a port
    /// setting, instances listen on the first (else 5000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<u16>,
    /// The app's limits when the release was made.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Scheduled jobs from `app.json`'s `cron` list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<CronJob>,
}

/// A scheduled job of a release (`app.json`: `{"command": "...",
/// "schedule": "0 3 * * *"}`), run as a one-off at each tick, in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CronJob {
    /// Made from its schedule and command: `c` and 7 hex digits.
    pub id: String,
    /// Shell, as a Procfile line is (`sh -c`).
    pub command: String,
    pub schedule: String,
}

/// `/paz/apps/<app>/cron/<id>`: what the scheduler's leader (or
/// `cron:run`) did with a job: its last tick, the one-off running now,
/// and how the last one ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CronState {
    /// The last tick (seconds since the Unix epoch) that was run or skipped.
    #[serde(default)]
    pub last_tick: Option<u64>,
    /// The unit of the one-off that runs now.
    #[serde(default)]
    pub running: Option<String>,
    #[serde(default)]
    pub last_started_at: Option<u64>,
    #[serde(default)]
    pub last_finished_at: Option<u64>,
    /// The last run's exit code (`None`: it ended without one, e.g. its
    /// container could not start).
    #[serde(default)]
    pub last_exit: Option<i64>,
    /// What else the last tick or run said (skipped as the run before
    /// still ran; could not start).
    #[serde(default)]
    pub note: Option<String>,
}

/// A release before Paz numbers it ([`crate::Store::create_release`]): it
/// is recorded pending, with the next number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelease {
    pub image: crate::ResolvedImage,
    pub git_sha: Option<String>,
    pub env: BTreeMap<String, String>,
    pub created_at: u64,
    pub by: String,
    pub cause: ReleaseCause,
    pub processes: BTreeMap<String, String>,
    pub release_command: Option<String>,
    pub resources: Resources,
    pub cron: Vec<CronJob>,
}

impl NewRelease {
    /// The release as it is recorded as number `n`.
    pub fn numbered(self, n: u64) -> Release {
        Release {
            n,
            image: self.image.image,
            source: self.image.source,
            exposed_ports: self.image.exposed_ports,
            git_sha: self.git_sha,
            env: self.env,
            created_at: self.created_at,
            by: self.by,
            cause: self.cause,
            status: ReleaseStatus::Pending,
            processes: self.processes,
            release_command: self.release_command,
            resources: self.resources,
            cron: self.cron,
        }
    }
}

/// Where an image event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// A tagged manifest pushed to Paz's own registry.
    Push,
    /// `POST /hooks/registry`: another registry's notification.
    Registry,
    /// `POST /hooks/dockerhub`.
    Dockerhub,
    /// `POST /hooks/deploy`: `{app, image}`.
    Deploy,
}

/// `/paz/images/events/<id>`: a new image is available (the deployer turns it
/// into a deploy of the apps that follow the repository; the web UI lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageEvent {
    /// As pushed, e.g. `web` or `127.0.0.1:5000/web/worker` for another registry.
    pub repository: String,
    #[serde(default)]
    pub tag: Option<String>,
    /// `sha256:...`, when the source says it.
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub media_type: Option<String>,
    /// The app the event is for, when the source names one (`/hooks/deploy`).
    #[serde(default)]
    pub app: Option<AppName>,
    /// The token that caused it.
    pub by: String,
    pub source: ImageSource,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Running,
    Succeeded,
    Failed,
}

/// `/paz/builds/<app>/<id>`: one build of a pushed commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Build {
    pub git_sha: String,
    pub status: BuildStatus,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// The build log, relative to the data dir (`builds/<app>/<id>.log`).
    pub log_path: String,
    /// `Dockerfile`, or the buildpack that made one (`static`, `node`, ...).
    #[serde(default)]
    pub buildpack: Option<String>,
    /// The image it made, `repo@sha256:...`.
    #[serde(default)]
    pub image: Option<String>,
    /// The git tree plus the build inputs: a push with the same key reuses `image`.
    #[serde(default)]
    pub cache_key: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Who pushed.
    #[serde(default)]
    pub by: String,
}

/// `/paz/machines/<machine-id>`: a live agent (on a lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Machine {
    /// The address other hosts reach this machine's containers on.
    pub addr: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub started_at: u64,
    /// The agent's endpoint (`http://ip:port`): its instances' logs and
    /// stats (with the cluster's agent secret) and its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `/paz/proxies/<id>`: a live proxy that serves metrics (on a lease), so
/// that Prometheus finds it through the server's service discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProxyRecord {
    /// Where its Prometheus metrics are served (`ip:port`, path `/metrics`).
    pub metrics: String,
    pub started_at: u64,
}

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// Ordered from the ACME CA by Paz, and renewed by it.
    Acme,
    /// Brought with `certs:add`; Paz never renews it.
    Manual,
}

/// Where a certificate is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    /// Wanted, not issued yet.
    Pending,
    Valid,
    /// Due for renewal (or asked with `certs:renew`); the old one serves meanwhile.
    Renewing,
    /// The last order failed (`reason`); tried again at `retry_at`.
    Failed,
}

/// `/paz/tls/certs/<domain>`: a certificate and its private key, served by
/// every edge host. The key is secret: only Paz's roles read this
/// directory, and the verbs never show `key_pem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The name it is for (`*.example.com` for a wildcard).
    pub domain: String,
    pub source: CertSource,
    pub state: CertState,
    /// The chain, leaf first, in PEM; empty until one is issued.
    #[serde(default)]
    pub chain_pem: String,
    /// The leaf's private key in PEM (PKCS#8); empty until issued.
    #[serde(default)]
    pub key_pem: String,
    /// The leaf's validity, seconds since the Unix epoch (0: none yet).
    #[serde(default)]
    pub not_before: u64,
    #[serde(default)]
    pub not_after: u64,
    /// The leaf's issuer (its common name, or the whole name).
    #[serde(default)]
    pub issuer: String,
    /// Why the last order failed, in the CA's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Orders failed in a row: the wait before the next grows with them.
    #[serde(default)]
    pub failures: u32,
    /// No order before this time (seconds since the Unix epoch).
    #[serde(default)]
    pub retry_at: u64,
    /// When this record last changed.
    #[serde(default)]
    pub updated_at: u64,
}

impl Certificate {
    /// A name wanted, nothing ordered yet.
    pub fn pending(domain: &str, now: u64) -> Certificate {
        Certificate {
            domain: domain.to_string(),
            source: CertSource::Acme,
            state: CertState::Pending,
            chain_pem: String::new(),
            key_pem: String::new(),
            not_before: 0,
            not_after: 0,
            issuer: String::new(),
            reason: None,
            failures: 0,
            retry_at: 0,
            updated_at: now,
        }
    }

    /// Whether it holds a certificate to serve (issued, maybe expired).
    pub fn is_issued(&self) -> bool {
        !self.chain_pem.is_empty() && !self.key_pem.is_empty()
    }

    /// When an ACME certificate is renewed: two thirds into its lifetime.
    pub fn renew_at(&self) -> u64 {
        self.not_before + self.not_after.saturating_sub(self.not_before) * 2 / 3
    }
}

/// Every name the proxy routes, which are the names ACME certificates are
/// ordered for: `<app>.<domain>` of each app, each domain added to one, and
/// `<label>.<domain>` of each of Paz's own endpoints (`/paz/endpoints/`).
pub fn routed_names<'a>(
    domain: Option<&str>,
    apps: impl IntoIterator<Item = &'a App>,
    endpoint_labels: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for app in apps {
        if let Some(domain) = domain {
            names.insert(format!("{}.{domain}", app.name));
        }
        names.extend(app.domains.iter().map(|name| name.to_ascii_lowercase()));
    }
    if let Some(domain) = domain {
        names.extend(
            endpoint_labels
                .into_iter()
                .map(|label| format!("{label}.{domain}")),
        );
    }
    names
}

/// A unit's state as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActiveState {
    Activating,
    Active,
    Deactivating,
    Inactive,
    Failed,
}

/// `/paz/state/<unit-name>`: the agent's report on a unit (on a lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnitState {
    pub machine: String,
    pub active: ActiveState,
    #[serde(default)]
    pub container: Option<String>,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// Why it failed, or why it is (re)starting.
    #[serde(default)]
    pub reason: Option<String>,
    /// How often the agent restarted it after a crash.
    #[serde(default)]
    pub restarts: u32,
    /// While activating: the agent is pulling the unit's image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pulling: bool,
    /// A one-off that exited: its exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn only_what_has_a_secrets_form_is_looked_up() {
        let (token, secret) = Token::create("ci", Role::Deployer, vec![]);
        assert!(Token::is_secret_form(&secret));
        assert!(token.secret_matches(&secret));
        for not_one in [
            "",
            "paz_",
            "paz_xyz",
            &secret.to_uppercase(),
            &format!("{secret}0"),
            &secret[4..],
        ] {
            assert!(!Token::is_secret_form(not_one), "{not_one}");
        }
    }

    #[test]
    fn app_record_is_readable_json_with_defaults() {
        let app = App::new(AppName::new("web").unwrap(), 1700000000);
        expect![[r#"{"name":"web","created_at":1700000000,"domains":[],"port":null,"health":{"path":"/","timeout":5,"attempts":3},"scale":{"web":1,"worker":0},"env":{},"deploy":{"branch":null,"image_repo":null,"tag_pattern":null},"https":{}}"#]]
        .assert_eq(&String::from_utf8(app.encode()).unwrap());
        let minimal = App::decode(br#"{"name":"web","created_at":1}"#).unwrap();
        assert_eq!(
            minimal.scale,
            Scale {
                web: 1,
                worker: 0,
                others: BTreeMap::new()
            }
        );
        // Any other Procfile type sits beside web and worker.
        let scale: Scale = serde_json::from_str(r#"{"web":2,"clock":1}"#).unwrap();
        assert_eq!(scale.all(), [("web", 2), ("worker", 0), ("clock", 1)]);
        assert_eq!(
            serde_json::to_string(&scale).unwrap(),
            r#"{"web":2,"worker":0,"clock":1}"#
        );
        assert_eq!(minimal.health, Health::default());
    }

    #[test]
    fn bad_values_decode_to_errors_not_panics() {
        assert!(App::decode(b"not json").is_err());
        assert!(App::decode(br#"{"name":"Bad_Name","created_at":1}"#)
            .unwrap_err()
            .contains("app name `Bad_Name` is invalid"));
        assert_eq!(u64::decode(b"7").unwrap(), 7);
        assert!(u64::decode(b"seven").is_err());
        assert!(String::decode(&[0xff, 0xfe]).is_err());
    }
}

//! Who is asking: Paz tokens (`/paz/tokens`) by HTTP Basic (user = token name,
//! password = secret), by bearer secret, or by an HMAC-SHA256 signature of a
//! webhook body. The token list is kept current by an etcd watch, so a revoked
//! token stops working at once.

use axum::http::{header, HeaderMap};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use store::records::{Role, Token};
use store::{AppName, Store, TokenCache};

use crate::error::{RegistryError, Result};

/// An authenticated caller and its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) apps: Vec<AppName>,
}

impl Principal {
    fn from_token(token: &Token) -> Principal {
        Principal {
            name: token.name.clone(),
            role: token.role,
            apps: token.apps.clone(),
        }
    }

    fn owns(&self, repository: &str) -> bool {
        let app = repository.split('/').next().unwrap_or(repository);
        self.apps.iter().any(|owned| owned.as_str() == app)
    }

    pub(crate) fn may_pull(&self, repository: &str) -> bool {
        matches!(self.role, Role::Admin | Role::Machine) || self.owns(repository)
    }

    pub(crate) fn may_push(&self, repository: &str) -> bool {
        self.role == Role::Admin || (self.role == Role::Deployer && self.owns(repository))
    }

    pub(crate) fn may_use_app(&self, app: &AppName) -> bool {
        self.role == Role::Admin || (self.role == Role::Deployer && self.apps.contains(app))
    }

    pub(crate) fn require_pull(&self, repository: &str) -> Result<()> {
        if self.may_pull(repository) {
            Ok(())
        } else {
            Err(RegistryError::denied(format!(
                "token `{}` may not pull {repository}",
                self.name
            )))
        }
    }

    pub(crate) fn require_push(&self, repository: &str) -> Result<()> {
        if self.may_push(repository) {
            Ok(())
        } else {
            let why = if self.role == Role::Machine {
                "machine tokens only pull"
            } else {
                "it is not one of the token's apps"
            };
            Err(RegistryError::denied(format!(
                "token `{}` may not push to {repository}: {why}",
                self.name
            )))
        }
    }
}

/// The caller of a registry request, from its Basic credentials.
pub(crate) async fn basic(tokens: &TokenCache, headers: &HeaderMap) -> Result<Principal> {
    let missing = || {
        RegistryError::unauthorized("authenticate with a Paz token: docker login -u TOKEN-NAME (password: the token's secret)")
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(missing)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(missing)?;
    let (name, secret) = decoded.split_once(':').ok_or_else(missing)?;
    match tokens.check(name, secret).await {
        Some(token) => Ok(Principal::from_token(&token)),
        None => Err(RegistryError::unauthorized("unknown token or wrong secret")),
    }
}

/// The token whose secret is `secret` (bearer and `?token=` auth).
pub(crate) async fn by_secret(tokens: &TokenCache, secret: &str) -> Option<Principal> {
    match tokens.by_secret(secret).await {
        Ok(token) => token.map(|token| Principal::from_token(&token)),
        Err(error) => {
            tracing::warn!(%error, "cannot check a bearer token: the store did not answer");
            None
        }
    }
}

/// How far (seconds) a signed webhook's timestamp may be from now.
pub(crate) const SIGNATURE_WINDOW: u64 = 300;

/// The token whose webhook signing secret signed `body`, from
/// `X-Paz-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
/// The secret is the token's own (shown once by `tokens:create`), kept sealed
/// in its record with the control hosts' `hooks.key`: nothing in etcd signs.
/// A signature is taken once, and only within [`SIGNATURE_WINDOW`] of its
/// timestamp, so a captured delivery cannot be replayed.
pub(crate) async fn by_signature(
    tokens: &TokenCache,
    store: &Store,
    hook_key: Option<&store::HookKey>,
    body: &[u8],
    header: &str,
) -> std::result::Result<Principal, String> {
    let malformed = || {
        "X-Paz-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\"> with the token's signing secret".to_string()
    };
    let (mut timestamp, mut given) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => given = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(given)) = (timestamp, given) else {
        return Err(malformed());
    };
    let now = support::now();
    if now.abs_diff(timestamp) > SIGNATURE_WINDOW {
        return Err(format!(
            "the signature's timestamp is more than {SIGNATURE_WINDOW} s from now: sign each delivery when it is sent"
        ));
    }
    let Some(hook_key) = hook_key else {
        return Err(
            "this server has no hooks.key to check signatures with: use a bearer token".to_string(),
        );
    };
    let mut found = None;
    // Every token is tried, so the time taken says nothing about which matched.
    for token in tokens.all().await {
        let Some(secret) = token
            .signing_sealed
            .as_deref()
            .and_then(|sealed| hook_key.open(&token.name, sealed))
        else {
            continue;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret) else {
            continue;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&given).is_ok() {
            found = Some(Principal::from_token(&token));
        }
    }
    let principal = found
        .ok_or_else(|| "the signature does not match any token's signing secret".to_string())?;
    let seen = store
        .keys()
        .hook_seen(&hex::encode(<Sha256 as sha2::Digest>::digest(&given)))
        .map_err(|error| error.to_string())?;
    let window = std::time::Duration::from_secs(2 * SIGNATURE_WINDOW);
    match store.create_expiring(&seen, &principal.name, window).await {
        Ok(true) => Ok(principal),
        Ok(false) => Err(
            "this signed delivery was taken already: a replay is refused; sign each delivery anew"
                .to_string(),
        ),
        Err(error) => Err(format!("cannot record the delivery: {error}")),
    }
}

//! `certs:*` and `https:*` verbs: the certificates every edge host serves
//! (ordered by the ACME role, or brought with `certs:add`) and how each
//! app is served over HTTPS. A certificate's private key is never shown.

use std::collections::BTreeMap;

use serde::Serialize;
use store::records::{CertSource, CertState, Certificate};
use store::AppName;

use crate::apps::update;
use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// One certificate as `certs:list` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertRow {
    pub domain: String,
    /// `pending`, `valid`, `renewing`, `failed`, or `none` (routed, no certificate yet).
    pub state: String,
    /// `acme`, `manual`, or `-`.
    pub source: String,
    pub issuer: Option<String>,
    /// When the certificate expires (RFC 3339), if there is one.
    pub expires: Option<String>,
    /// Why the last order failed, in the CA's words.
    pub reason: Option<String>,
    /// When a failed or pending order is tried again (RFC 3339).
    pub retry_at: Option<String>,
    /// The app the name routes to; `None`: not routed (an ACME certificate is then not renewed).
    pub app: Option<String>,
}

/// `certs:list`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct CertList(pub Vec<CertRow>);

impl std::fmt::Display for CertList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(
                f,
                "no certificates: run the proxy with --acme-email, or bring one with certs:add DOMAIN < bundle.pem"
            );
        }
        let width = self.0.iter().map(|row| row.domain.len()).max().unwrap_or(6);
        write!(
            f,
            "{:width$}  {:8}  {:6}  {:20}  ISSUER",
            "DOMAIN", "STATE", "SOURCE", "EXPIRES"
        )?;
        for row in &self.0 {
            write!(
                f,
                "\n{:width$}  {:8}  {:6}  {:20}  {}",
                row.domain,
                row.state,
                row.source,
                row.expires.as_deref().unwrap_or("-"),
                row.issuer.as_deref().unwrap_or("-"),
            )?;
            if row.app.is_none() {
                write!(f, "  (not routed: not renewed)")?;
            }
            if let Some(reason) = &row.reason {
                let retry = row
                    .retry_at
                    .as_deref()
                    .map(|at| format!(" (next try {at})"))
                    .unwrap_or_default();
                write!(f, "\n{:width$}  failed: {reason}{retry}", "")?;
            }
        }
        Ok(())
    }
}

/// Which app each routed name goes to.
async fn routes(context: &Context) -> Result<BTreeMap<String, AppName>, VerbError> {
    let keys = context.store.keys();
    let domain = context.store.get(&keys.domain()).await?.map(|d| d.value);
    let apps = context.store.list(&keys.apps()).await?;
    let mut routes = BTreeMap::new();
    for entry in apps.entries {
        let app = entry.value;
        for name in store::records::routed_names(domain.as_deref(), [&app], []) {
            routes.insert(name, app.name.clone());
        }
    }
    Ok(routes)
}

pub(crate) async fn list(context: &Context, caller: &Caller) -> Result<CertList, VerbError> {
    let keys = context.store.keys();
    let mut routes = routes(context).await?;
    let own = own_names(context).await?;
    // Paz's own names are Paz's, even where an app has the same name.
    for name in &own {
        routes.remove(name);
    }
    let stored = context.store.list(&keys.certificates()).await?;
    let mut by_name: BTreeMap<String, Option<Certificate>> = stored
        .entries
        .into_iter()
        .map(|entry| (entry.value.domain.clone(), Some(entry.value)))
        .collect();
    for name in routes.keys().chain(own.iter()) {
        by_name.entry(name.clone()).or_insert(None);
    }
    let mut rows = Vec::new();
    for (name, record) in by_name {
        let app = routes.get(&name);
        // A deployer sees the names of its own apps only; Paz's own names
        // and wildcards are an admin's.
        let visible = caller.is_admin() || app.is_some_and(|app| caller.may_use(app));
        if !visible {
            continue;
        }
        let routed = app
            .map(ToString::to_string)
            .or_else(|| own.contains(&name).then(|| "paz".to_string()));
        rows.push(match record {
            None => CertRow {
                domain: name,
                state: "none".into(),
                source: "-".into(),
                issuer: None,
                expires: None,
                reason: None,
                retry_at: None,
                app: routed,
            },
            Some(record) => CertRow {
                state: state_name(record.state).into(),
                source: match record.source {
                    CertSource::Acme => "acme".into(),
                    CertSource::Manual => "manual".into(),
                },
                issuer: (!record.issuer.is_empty()).then(|| record.issuer.clone()),
                expires: (record.not_after > 0).then(|| crate::utc(record.not_after)),
                retry_at: (record.retry_at > 0 && record.state != CertState::Valid)
                    .then(|| crate::utc(record.retry_at)),
                reason: record.reason.filter(|_| record.state == CertState::Failed),
                // Wildcards are routed through the names under them.
                app: routed.or_else(|| record.domain.starts_with("*.").then(|| "*".into())),
                domain: name,
            },
        });
    }
    Ok(CertList(rows))
}

fn state_name(state: CertState) -> &'static str {
    match state {
        CertState::Pending => "pending",
        CertState::Valid => "valid",
        CertState::Renewing => "renewing",
        CertState::Failed => "failed",
    }
}

/// The domain of a `certs:*` verb, checked: a name, or `*.` and a name.
fn domain_arg(domain: &str) -> Result<String, VerbError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    store::names::check_domain(domain.strip_prefix("*.").unwrap_or(&domain))?;
    Ok(domain)
}

/// Paz's own published names (`paz.<domain>`, `registry.<domain>`).
async fn own_names(context: &Context) -> Result<Vec<String>, VerbError> {
    let keys = context.store.keys();
    let Some(domain) = context.store.get(&keys.domain()).await?.map(|d| d.value) else {
        return Ok(Vec::new());
    };
    let names = context.store.list_names(&keys.endpoints()).await?;
    let labels: std::collections::BTreeSet<&str> =
        names.iter().map(|name| keys.endpoint_label(name)).collect();
    Ok(labels
        .iter()
        .map(|label| format!("{label}.{domain}"))
        .collect())
}

/// Refuses unless `caller` may manage the certificate of `domain`: an admin,
/// or a deployer of the app the name routes to (wildcards and Paz's own
/// names: admins only, also when an app is named `paz`).
async fn require_cert_rights(
    context: &Context,
    caller: &Caller,
    domain: &str,
) -> Result<(), VerbError> {
    if caller.is_admin() {
        return Ok(());
    }
    if domain.starts_with("*.") {
        return caller.require_admin("manage a wildcard certificate");
    }
    if own_names(context).await?.iter().any(|own| own == domain) {
        return caller.require_admin(&format!("manage the certificate of Paz's own {domain}"));
    }
    match routes(context).await?.get(domain) {
        Some(app) => caller.require_app(app),
        None => caller.require_admin(&format!(
            "manage the certificate of {domain}, which routes to no app of theirs"
        )),
    }
}

/// What a `certs:*` or `https:*` verb did.
#[derive(Debug, Serialize)]
pub struct CertChange {
    #[serde(skip)]
    pub said: String,
    pub domain: String,
    pub state: Option<String>,
    pub expires: Option<String>,
}

crate::shown_as_said!(CertChange);

pub(crate) async fn add(
    context: &Context,
    caller: &Caller,
    args: Args,
    stdin: &[u8],
) -> Result<CertChange, VerbError> {
    let domain = domain_arg(&args.one()?)?;
    require_cert_rights(context, caller, &domain).await?;
    if stdin.is_empty() {
        return Err(VerbError::Invalid(format!(
            "no certificate on stdin: certs:add {domain} < bundle.pem (the chain, leaf first, and its private key)"
        )));
    }
    let now = context.now();
    let bundle = tls::check_bundle(&domain, stdin, now).map_err(|error| {
        VerbError::Invalid(format!("certificate for {domain} refused: {error}"))
    })?;
    let record = Certificate {
        source: CertSource::Manual,
        state: CertState::Valid,
        chain_pem: bundle.chain_pem,
        key_pem: bundle.key_pem,
        not_before: bundle.leaf.not_before,
        not_after: bundle.leaf.not_after,
        issuer: bundle.leaf.issuer,
        ..Certificate::pending(&domain, now)
    };
    context
        .store
        .put(&context.store.keys().certificate(&domain)?, &record)
        .await?;
    let expires = crate::utc(record.not_after);
    Ok(CertChange {
        said: format!("added the certificate of {domain} (issued by {}, expires {expires}); every proxy serves it now, and Paz never renews it", record.issuer),
        domain,
        state: Some("valid".into()),
        expires: Some(expires),
    })
}

pub(crate) async fn remove(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<CertChange, VerbError> {
    let domain = domain_arg(&args.one()?)?;
    require_cert_rights(context, caller, &domain).await?;
    let key = context.store.keys().certificate(&domain)?;
    if !context.store.delete(&key).await? {
        return Err(VerbError::NotFound(format!(
            "no certificate for {domain}: certs:list shows those there are"
        )));
    }
    Ok(CertChange {
        said: format!("removed the certificate of {domain}; if the name is still routed and ACME is on, a new one is ordered"),
        domain,
        state: None,
        expires: None,
    })
}

pub(crate) async fn renew(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<CertChange, VerbError> {
    let domain = domain_arg(&args.one()?)?;
    require_cert_rights(context, caller, &domain).await?;
    let key = context.store.keys().certificate(&domain)?;
    let now = context.now();
    let renewed = context
        .store
        .update_with(&key, |record| {
            if record.source == CertSource::Manual {
                return Err(VerbError::Invalid(format!(
                    "the certificate of {domain} was brought with certs:add: Paz cannot renew it; add a new one the same way"
                )));
            }
            // The CA's limits are the cluster's: a deployer renews a name at
            // most once an hour, and never ahead of a failed order's wait.
            if !caller.is_admin() {
                let wait_until = record
                    .retry_at
                    .max(record.updated_at + RENEW_EVERY_SECONDS);
                if now < wait_until {
                    return Err(VerbError::Conflict(format!(
                        "the certificate of {domain} changed less than an hour ago or waits after a failed order: renew it after {} (an admin may now)",
                        crate::utc(wait_until)
                    )));
                }
            }
            record.state = if record.is_issued() {
                CertState::Renewing
            } else {
                CertState::Pending
            };
            record.retry_at = 0;
            record.updated_at = now;
            Ok(())
        })
        .await?;
    let Some((record, ())) = renewed else {
        return Err(VerbError::NotFound(format!(
            "no certificate for {domain}: one is ordered once the name is routed (domains:add) and the proxy runs with --acme-email"
        )));
    };
    Ok(CertChange {
        said: format!("renewing the certificate of {domain}: an edge host with --acme-email orders it now (certs:list shows when it is done)"),
        domain,
        state: Some(state_name(record.state).into()),
        expires: (record.not_after > 0).then(|| crate::utc(record.not_after)),
    })
}

/// How often a deployer may ask for a certificate again.
const RENEW_EVERY_SECONDS: u64 = 3600;

/// `on`, `off`, or (where there is one) `default`.
fn switch(args: &Args, default: bool) -> Result<(String, Option<bool>), VerbError> {
    let (app, value) = args.two()?;
    match value.as_str() {
        "on" => Ok((app, Some(true))),
        "off" => Ok((app, Some(false))),
        "default" if default => Ok((app, None)),
        _ => Err(args.usage()),
    }
}

/// What an `https:*` verb set.
#[derive(Debug, Serialize)]
pub struct HttpsChange {
    #[serde(skip)]
    pub said: String,
    pub https: store::records::HttpsSettings,
}

crate::shown_as_said!(HttpsChange);

pub(crate) async fn redirect(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<HttpsChange, VerbError> {
    let (name, on) = switch(&args, true)?;
    let (app, ()) = update(context, caller, &name, |app| {
        app.https.redirect = on;
        Ok(())
    })
    .await?;
    let said = match on {
        Some(true) => "http:// answers 308 to https:// for each name with a certificate",
        Some(false) => "http:// is served as it is, without a redirect",
        None => "the default: http:// answers 308 to https:// once a name has a certificate",
    };
    let said = format!("{}: {said}", app.name);
    Ok(HttpsChange {
        said,
        https: app.https,
    })
}

pub(crate) async fn hsts(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<HttpsChange, VerbError> {
    let (name, on) = switch(&args, false)?;
    let on = on.unwrap_or_default();
    let (app, ()) = update(context, caller, &name, |app| {
        app.https.hsts = on;
        Ok(())
    })
    .await?;
    let said = if on {
        format!("{}: answers over HTTPS carry Strict-Transport-Security: max-age=31536000 (browsers then refuse http:// for a year)", app.name)
    } else {
        format!("{}: no Strict-Transport-Security header", app.name)
    };
    Ok(HttpsChange {
        said,
        https: app.https,
    })
}

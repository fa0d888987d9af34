//! `tokens:*` verbs: credentials for the REST API, the registry and webhooks.
//! Only the SHA-256 of a secret is stored; the secret is shown once.

use rand::RngExt;
use serde_json::json;
use store::records::Token;
use store::AppName;

use crate::args::Args;
use crate::keys::role_and_apps;
use crate::{Caller, Context, Outcome, VerbError};

fn describe(token: &Token) -> String {
    let role = token.role.as_str();
    let apps = token
        .apps
        .iter()
        .map(AppName::as_str)
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{}  {role}  {}",
        token.name,
        if apps.is_empty() { "-" } else { &apps }
    )
}

pub(crate) async fn list(context: &Context, caller: &Caller) -> Result<Outcome, VerbError> {
    caller.require_admin("list tokens")?;
    let listing = context.store.list(&context.store.keys().tokens()).await?;
    let text = listing
        .entries
        .iter()
        .map(|entry| describe(&entry.value))
        .collect::<Vec<_>>()
        .join("\n");
    let json = json!(listing
        .entries
        .iter()
        .map(|entry| json!({"name": entry.value.name, "role": entry.value.role, "apps": entry.value.apps}))
        .collect::<Vec<_>>());
    Ok(Outcome::new(text, json))
}

pub(crate) async fn create(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let (name, flags) = args.one_and_flags()?;
    caller.require_admin("create tokens")?;
    let (role, apps) = role_and_apps(&flags)?;
    let key = context.store.keys().token(&name)?;
    let (mut token, secret) = Token::create(&name, role, apps);
    // Its webhook signing secret, sealed with the control hosts' key: etcd
    // holds nothing that signs.
    let signing = context.hooks.as_ref().map(|hooks| {
        let random: [u8; 24] = rand::rng().random();
        let signing = format!("whsec_{}", hex::encode(random));
        token.signing_sealed = Some(hooks.seal(&name, signing.as_bytes()));
        signing
    });
    context
        .store
        .create(&key, &token)
        .await
        .map_err(|error| match error.conflict() {
            Some(_) => VerbError::Conflict(format!(
                "a token named `{name}` exists: revoke it first or choose another name"
            )),
            None => error.into(),
        })?;
    let signing_line = signing
        .as_ref()
        .map(|signing| format!("\nwebhook signing secret (shown once; X-Paz-Signature): {signing}"))
        .unwrap_or_default();
    Ok(Outcome::new(
        format!(
            "created token {}\nsecret (shown once, keep it safe): {secret}{signing_line}",
            describe(&token)
        ),
        json!({"name": name, "secret": secret, "signing_secret": signing, "role": token.role, "apps": token.apps}),
    ))
}

pub(crate) async fn revoke(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    caller.require_admin("revoke tokens")?;
    let key = context.store.keys().token(&name)?;
    if !context.store.delete(&key).await? {
        return Err(VerbError::NotFound(format!(
            "no token named `{name}`: see tokens:list"
        )));
    }
    Ok(Outcome::new(
        format!("revoked token {name}"),
        json!({"name": name}),
    ))
}

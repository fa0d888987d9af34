//! `tokens:*` verbs: credentials for the REST API, the registry and webhooks.
//! Only the SHA-256 of a secret is stored; the secret is shown once.

use rand::RngExt;
use serde::Serialize;
use store::records::{Role, Token};
use store::AppName;

use crate::args::Args;
use crate::keys::role_and_apps;
use crate::{Caller, Context, VerbError};

/// A token as listed: its name, role and apps (never its secret's hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenRow {
    pub name: String,
    pub role: Role,
    pub apps: Vec<AppName>,
}

impl From<&Token> for TokenRow {
    fn from(token: &Token) -> TokenRow {
        TokenRow {
            name: token.name.clone(),
            role: token.role,
            apps: token.apps.clone(),
        }
    }
}

impl std::fmt::Display for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let apps = crate::apps_column(&self.apps);
        write!(f, "{}  {}  {apps}", self.name, self.role.as_str())
    }
}

/// The API tokens (`tokens:list`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct TokenList(pub Vec<TokenRow>);

impl std::fmt::Display for TokenList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::lines_or(f, &self.0, "no tokens: create one with tokens:create NAME")
    }
}

pub(crate) async fn list(context: &Context, caller: &Caller) -> Result<TokenList, VerbError> {
    caller.require_admin("list tokens")?;
    let listing = context.store.list(&context.store.keys().tokens()).await?;
    Ok(TokenList(
        listing
            .entries
            .iter()
            .map(|entry| TokenRow::from(&entry.value))
            .collect(),
    ))
}

/// A token just made, with its secrets: the only time they are shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    pub name: String,
    pub secret: String,
    /// The webhook signing secret, where the server can seal one.
    pub signing_secret: Option<String>,
    pub role: Role,
    pub apps: Vec<AppName>,
}

impl std::fmt::Display for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = TokenRow {
            name: self.name.clone(),
            role: self.role,
            apps: self.apps.clone(),
        };
        write!(
            f,
            "created token {row}\nsecret (shown once, keep it safe): {}",
            self.secret
        )?;
        if let Some(signing) = &self.signing_secret {
            write!(
                f,
                "\nwebhook signing secret (shown once; X-Paz-Signature): {signing}"
            )?;
        }
        Ok(())
    }
}

pub(crate) async fn create(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<NewToken, VerbError> {
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
    Ok(NewToken {
        name,
        secret,
        signing_secret: signing,
        role: token.role,
        apps: token.apps,
    })
}

/// A token revoked (`tokens:revoke`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub name: String,
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revoked token {}", self.name)
    }
}

pub(crate) async fn revoke(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Revoked, VerbError> {
    let name = args.one()?;
    caller.require_admin("revoke tokens")?;
    let key = context.store.keys().token(&name)?;
    if !context.store.delete(&key).await? {
        return Err(VerbError::NotFound(format!(
            "no token named `{name}`: see tokens:list"
        )));
    }
    Ok(Revoked { name })
}

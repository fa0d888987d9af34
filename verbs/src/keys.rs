//! SSH keys: parsing OpenSSH public keys into records, and the `ssh-keys:*` verbs.

use serde::Serialize;
use ssh_key::{Algorithm, HashAlg, PublicKey};
use store::names::check_segment;
use store::records::{Role, SshKey};
use store::AppName;

use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// The SHA256 fingerprint of a key, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Whether Paz accepts keys of this algorithm (ed25519, ECDSA and RSA).
pub fn is_supported(algorithm: &Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. }
    )
}

/// Parses the first key line of `text` (an OpenSSH `.pub` file) into a record.
pub fn parse_public_key(
    text: &str,
    name: &str,
    role: Role,
    apps: Vec<AppName>,
) -> Result<SshKey, VerbError> {
    check_segment("key name", name)?;
    if text.contains("PRIVATE KEY") {
        return Err(VerbError::Invalid(
            "that is a private key: give the public key (the .pub file)".to_string(),
        ));
    }
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .ok_or_else(|| {
            VerbError::Invalid("no public key given: pass the .pub file on stdin".to_string())
        })?;
    let key = PublicKey::from_openssh(line).map_err(|_| {
        VerbError::Invalid(
            "not an OpenSSH public key: give a line such as `ssh-ed25519 AAAA... me@host`"
                .to_string(),
        )
    })?;
    if !is_supported(&key.algorithm()) {
        return Err(VerbError::Invalid(format!(
            "{} keys are not accepted: use an ed25519, ECDSA or RSA key",
            key.algorithm().as_str()
        )));
    }
    Ok(SshKey {
        name: name.to_string(),
        fingerprint: fingerprint(&key),
        public_key: line.to_string(),
        role,
        apps,
    })
}

/// Adds `key` unless its fingerprint or its name is taken.
pub async fn add_key(context: &Context, key: &SshKey) -> Result<(), VerbError> {
    let store = &context.store;
    let existing = store.list(&store.keys().ssh_keys()).await?;
    if let Some(same) = existing
        .entries
        .iter()
        .find(|entry| entry.value.fingerprint == key.fingerprint)
    {
        return Err(VerbError::Conflict(format!(
            "this key is already added as `{}`",
            same.value.name
        )));
    }
    if existing
        .entries
        .iter()
        .any(|entry| entry.value.name == key.name)
    {
        return Err(VerbError::Conflict(format!(
            "a key named `{}` exists: remove it first or choose another name",
            key.name
        )));
    }
    store
        .create(&store.keys().ssh_key(&key.fingerprint)?, key)
        .await
        .map_err(|error| match error.conflict() {
            Some(_) => VerbError::Conflict("this key was added meanwhile".to_string()),
            None => error.into(),
        })?;
    Ok(())
}

/// Parses `--role` and `--apps` (shared with tokens).
pub(crate) fn role_and_apps(
    flags: &std::collections::BTreeMap<String, String>,
) -> Result<(Role, Vec<AppName>), VerbError> {
    let role = match flags.get("--role").map(String::as_str) {
        None | Some("deployer") => Role::Deployer,
        Some("admin") => Role::Admin,
        Some("machine") => Role::Machine,
        Some(other) => {
            return Err(VerbError::Invalid(format!(
                "role `{other}` is invalid: use admin, deployer or machine"
            )))
        }
    };
    let apps = match flags.get("--apps") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .filter(|name| !name.is_empty())
            .map(AppName::new)
            .collect::<Result<Vec<_>, _>>()?,
    };
    if role != Role::Deployer && !apps.is_empty() {
        return Err(VerbError::Invalid(
            "--apps is for deployers: an admin may use every app, a machine only pulls".to_string(),
        ));
    }
    Ok((role, apps))
}

/// An SSH key as `ssh-keys:*` show it: name, role, fingerprint and apps.
struct Described<'a>(&'a SshKey);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.0;
        let apps = crate::apps_column(&key.apps);
        write!(
            f,
            "{}  {}  {}  {apps}",
            key.name,
            key.role.as_str(),
            key.fingerprint
        )
    }
}

/// The SSH keys (`ssh-keys:list`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct KeyList(pub Vec<SshKey>);

impl std::fmt::Display for KeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::lines_or(
            f,
            self.0.iter().map(Described),
            "no SSH keys: add one with ssh-keys:add NAME < key.pub",
        )
    }
}

/// A key added or removed (`ssh-keys:add`, `ssh-keys:remove`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct KeyChange {
    #[serde(skip)]
    pub done: &'static str,
    pub key: SshKey,
}

impl std::fmt::Display for KeyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} key {}", self.done, Described(&self.key))
    }
}

pub(crate) async fn list(context: &Context, caller: &Caller) -> Result<KeyList, VerbError> {
    caller.require_admin("list keys")?;
    let listing = context.store.list(&context.store.keys().ssh_keys()).await?;
    Ok(KeyList(
        listing
            .entries
            .into_iter()
            .map(|entry| entry.value)
            .collect(),
    ))
}

pub(crate) async fn add(
    context: &Context,
    caller: &Caller,
    args: Args,
    stdin: &[u8],
) -> Result<KeyChange, VerbError> {
    let (name, flags) = args.one_and_flags()?;
    caller.require_admin("add keys")?;
    let (role, apps) = role_and_apps(&flags)?;
    if role == Role::Machine {
        return Err(VerbError::Invalid(
            "machine is a role for tokens (agents pulling images): give a key admin or deployer"
                .to_string(),
        ));
    }
    let text = String::from_utf8_lossy(stdin);
    let key = parse_public_key(&text, &name, role, apps)?;
    add_key(context, &key).await?;
    Ok(KeyChange { done: "added", key })
}

pub(crate) async fn remove(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<KeyChange, VerbError> {
    let wanted = args.one()?;
    caller.require_admin("remove keys")?;
    let store = &context.store;
    let listing = store.list(&store.keys().ssh_keys()).await?;
    let found = listing
        .entries
        .iter()
        .find(|entry| entry.value.name == wanted || entry.value.fingerprint == wanted)
        .ok_or_else(|| {
            VerbError::NotFound(format!(
                "no key named or with fingerprint `{wanted}`: see ssh-keys:list"
            ))
        })?;
    let admins = listing
        .entries
        .iter()
        .filter(|entry| entry.value.role == Role::Admin)
        .count();
    if found.value.role == Role::Admin && admins == 1 {
        return Err(VerbError::Conflict(format!(
            "`{}` is the last admin key: add another admin key before removing it",
            found.value.name
        )));
    }
    let key = store.keys().ssh_key(&found.value.fingerprint)?;
    store
        .delete_if_unchanged(&key, found.mod_revision)
        .await
        .map_err(|error| match error.conflict() {
            Some(_) => VerbError::Conflict("the key changed meanwhile: try again".to_string()),
            None => error.into(),
        })?;
    Ok(KeyChange {
        done: "removed",
        key: found.value.clone(),
    })
}

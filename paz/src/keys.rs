//! `paz keys add`: adds an SSH key on this host, straight into etcd, for when no
//! one can connect over SSH yet (the first admin key).

use anyhow::Context;
use store::records::Role;
use store::{AppName, Store, StoreConfig};

use crate::cli::{KeysAddFlags, StoreFlags};

pub(crate) async fn add(flags: KeysAddFlags) -> anyhow::Result<()> {
    let role = if flags.role == "admin" {
        Role::Admin
    } else {
        Role::Deployer
    };
    let apps = flags
        .apps
        .iter()
        .filter(|name| !name.is_empty())
        .map(|name| AppName::new(name))
        .collect::<Result<Vec<_>, _>>()?;
    let text = std::fs::read_to_string(&flags.file)
        .with_context(|| format!("cannot read {}", flags.file.display()))?;
    let key = verbs::keys::parse_public_key(&text, &flags.name, role, apps)
        .with_context(|| format!("{}", flags.file.display()))?;
    let (store, data_dir) = connect(&flags.store).await?;
    verbs::keys::add_key(
        &verbs::Context {
            store,
            data_dir,
            rollouts: None,
            hooks: None,
            clock: verbs::Clock::System,
            rollout_record: None,
        },
        &key,
    )
    .await?;
    println!(
        "added key {} ({}) as {}",
        key.name, key.fingerprint, flags.role
    );
    Ok(())
}

/// Connects to `--etcd`, or to the etcd that `paz up` on this host recorded in
/// `<data-dir>/etcd.url`.
pub(crate) async fn connect(flags: &StoreFlags) -> anyhow::Result<(Store, std::path::PathBuf)> {
    let data_dir = flags
        .data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("/var/lib/paz"));
    let mut tls = flags.etcd_tls.as_deref().map(store::TlsFiles::in_dir);
    let endpoints = match &flags.etcd {
        Some(endpoints) => endpoints.clone(),
        None => {
            let recorded = data_dir.join("etcd.url");
            let url = std::fs::read_to_string(&recorded).with_context(|| {
                format!(
                    "no --etcd given and {} is missing: pass --etcd URL, or --data-dir of the paz up on this host",
                    recorded.display()
                )
            })?;
            let url = url.trim().to_string();
            // The local etcd of that paz up answers only Paz's certificate.
            if url.starts_with("https://") && tls.is_none() {
                tls = Some(store::TlsFiles::in_dir(
                    &data_dir.join(crate::LOCAL_ETCD_TLS),
                ));
            }
            vec![url]
        }
    };
    let mut config = StoreConfig::new(endpoints);
    config.prefix = flags.etcd_prefix.clone();
    config.tls = tls;
    Ok((Store::connect(config).await?, data_dir))
}

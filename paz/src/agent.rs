//! `paz agent`: the agent of this host, on its own (`paz up` runs one too).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::AgentFlags;

/// The local address this host uses to reach `endpoint` (an etcd URL).
pub(crate) fn address_towards(endpoint: &str) -> anyhow::Result<String> {
    let authority = endpoint
        .split("://")
        .last()
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let stream = std::net::TcpStream::connect(authority).with_context(|| {
        format!("cannot reach {authority} to learn this host's address: pass --advertise-addr")
    })?;
    Ok(stream.local_addr()?.ip().to_string())
}

/// `k=v` pairs into metadata.
pub(crate) fn metadata(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::new();
    for pair in pairs.iter().filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        else {
            bail!("--metadata `{pair}` is invalid: use KEY=VALUE, such as region=eu");
        };
        metadata.insert(key.to_string(), value.to_string());
    }
    Ok(metadata)
}

pub(crate) async fn run(flags: AgentFlags) -> anyhow::Result<()> {
    let metadata = metadata(&flags.metadata)?;
    let registry = match (flags.registry, flags.registry_token) {
        (Some(registry), Some(token)) => {
            let Some((name, secret)) = token.split_once(':') else {
                bail!("--registry-token is NAME:SECRET");
            };
            Some(engine::RegistryLogin {
                registry,
                name: name.to_string(),
                secret: secret.to_string(),
            })
        }
        (None, None) => None,
        _ => bail!("--registry and --registry-token go together"),
    };
    let (store, data_dir) = crate::keys::connect(&flags.store).await?;
    crate::private_data_dir(&data_dir)?;
    let advertise = match flags.advertise_addr {
        Some(address) => address,
        None => address_towards(store.endpoints().split(',').next().unwrap_or_default())?,
    };
    let mut config = agent::AgentConfig::new(data_dir, advertise);
    config.metadata = metadata;
    config.registry = registry;
    config.drain = Duration::from_secs(flags.drain);
    config.endpoint_listen = flags.logs.agent_listen;
    config.log_cap = flags.logs.log_cap.unwrap_or(agent::DEFAULT_LOG_CAP);
    let agent = agent::Agent::new(config, store).await?;
    println!("agent {} is running", agent.id());
    Ok(agent.run(crate::stop_signal()).await?)
}

//! The agent's containers in the Docker Engine: made from a unit's
//! [`ContainerSpec`], labelled with the unit and the machine so that three
//! agents can share one engine and an agent adopts its own after a restart.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::TryStreamExt;
use units::ContainerSpec;

pub(crate) const UNIT_LABEL: &str = "paz.unit";
pub(crate) const MACHINE_LABEL: &str = "paz.machine";
const STOP_TIMEOUT_LABEL: &str = "paz.stop-timeout";

/// A container of this machine as the engine has it.
#[derive(Debug, Clone)]
pub(crate) struct Actual {
    pub(crate) id: String,
    pub(crate) running: bool,
    pub(crate) exit_code: i64,
    pub(crate) image: String,
    pub(crate) stop_timeout: u64,
}

fn describe(error: bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        bollard::errors::Error::DockerStreamError { error } => error,
        other => other.to_string(),
    }
}

/// This machine's containers, by unit.
pub(crate) async fn list(
    docker: &Docker,
    machine: &str,
) -> Result<HashMap<String, Actual>, String> {
    let filter = format!("{MACHINE_LABEL}={machine}");
    let filters = HashMap::from([("label", vec![filter.as_str()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = docker
        .list_containers(Some(options))
        .await
        .map_err(describe)?;
    let mut found = HashMap::new();
    for summary in summaries {
        let (Some(id), Some(labels)) = (summary.id, summary.labels) else {
            continue;
        };
        let Some(unit) = labels.get(UNIT_LABEL) else {
            continue;
        };
        let Ok(inspected) = docker.inspect_container(&id, None).await else {
            continue;
        };
        let state = inspected.state.unwrap_or_default();
        found.insert(
            unit.clone(),
            Actual {
                id,
                running: state.running.unwrap_or(false),
                exit_code: state.exit_code.unwrap_or(0),
                image: inspected.config.and_then(|c| c.image).unwrap_or_default(),
                stop_timeout: labels
                    .get(STOP_TIMEOUT_LABEL)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(10),
            },
        );
    }
    Ok(found)
}

/// Pulls `image` with `credentials` (for Paz's registry).
pub(crate) async fn pull(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<(), String> {
    let options = CreateImageOptionsBuilder::new().from_image(image).build();
    docker
        .create_image(Some(options), None, credentials)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
        .map_err(|error| format!("cannot pull {image}: {}", describe(error)))
}

fn memory_bytes(text: &str) -> Result<i64, String> {
    let lower = text.to_ascii_lowercase();
    let (number, unit) = lower.split_at(
        lower
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(lower.len()),
    );
    let number: i64 = number
        .parse()
        .map_err(|_| format!("memory `{text}` is not a size such as 256m"))?;
    let factor = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("memory `{text}` is not a size such as 256m")),
    };
    Ok(number * factor)
}

/// Creates and starts the container of `unit` from `spec`; returns its id.
pub(crate) async fn start(
    docker: &Docker,
    machine: &str,
    unit: &str,
    spec: &ContainerSpec,
    stop_timeout: u64,
    publish_ip: Option<std::net::IpAddr>,
) -> Result<String, String> {
    let mut env: Vec<String> = Vec::new();
    for file in &spec.env_files {
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read --env-file {file}: {error}"))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    env.extend(spec.env.iter().map(|(key, value)| format!("{key}={value}")));
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    labels.insert(UNIT_LABEL.to_string(), unit.to_string());
    labels.insert(MACHINE_LABEL.to_string(), machine.to_string());
    labels.insert(STOP_TIMEOUT_LABEL.to_string(), stop_timeout.to_string());
    let mut bindings = HashMap::new();
    let mut exposed = Vec::new();
    for port in &spec.ports {
        let key = format!("{}/tcp", port.container);
        exposed.push(key.clone());
        bindings.insert(
            key,
            Some(vec![PortBinding {
                host_ip: port
                    .ip
                    .clone()
                    .or_else(|| publish_ip.map(|ip| ip.to_string())),
                host_port: Some(port.host.map(|h| h.to_string()).unwrap_or_default()),
            }]),
        );
    }
    let host_config = HostConfig {
        port_bindings: Some(bindings),
        binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
        memory: spec.memory.as_deref().map(memory_bytes).transpose()?,
        nano_cpus: match &spec.cpus {
            Some(cpus) => Some(
                (cpus
                    .parse::<f64>()
                    .map_err(|_| format!("--cpus `{cpus}` is not a number"))?
                    * 1e9) as i64,
            ),
            None => None,
        },
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        labels: Some(labels),
        exposed_ports: Some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    };
    // A container of the same name left by an earlier run of this machine
    // goes first; one of another machine sharing this engine is not ours.
    if let Ok(existing) = docker.inspect_container(&spec.name, None).await {
        let owner = existing
            .config
            .and_then(|config| config.labels)
            .and_then(|labels| labels.get(MACHINE_LABEL).cloned());
        if owner.as_deref() != Some(machine) {
            return Err(format!(
                "a container named {name} that this machine did not start (it belongs to {owner}) exists on this Docker Engine: if it is left over from another Paz install, remove it with `docker rm -f {name}`; otherwise give the app another name",
                name = spec.name,
                owner = owner
                    .as_deref()
                    .map(|machine| format!("machine {machine}"))
                    .unwrap_or_else(|| "no Paz machine".to_string())
            ));
        }
        let _ = docker
            .remove_container(
                &spec.name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&spec.name)
                    .build(),
            ),
            body,
        )
        .await
        .map_err(|error| format!("cannot create the container: {}", describe(error)))?;
    if let Err(error) = docker.start_container(&created.id, None).await {
        let _ = docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        return Err(format!("cannot start the container: {}", describe(error)));
    }
    Ok(created.id)
}

/// SIGTERM, then kill after `timeout` seconds; then remove.
pub(crate) async fn stop(docker: &Docker, id: &str, timeout: u64) {
    let options = StopContainerOptionsBuilder::new().t(timeout as i32).build();
    let _ = docker.stop_container(id, Some(options)).await;
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
}

/// The host port Docker published for `container_port` of the container
/// that this machine's agent started for `unit`: found by its labels, then
/// read by its id, never by its name (a container of that name started by
/// another install on this engine is not this unit's).
///
/// `known` is the id found by the last call: it is read again by id (one
/// call), and only when that container is gone or stopped is the machine's
/// container of `unit` looked for again by its labels.
pub(crate) async fn host_port(
    docker: &Docker,
    machine: &str,
    unit: &str,
    container_port: u16,
    known: &mut Option<String>,
) -> Option<u16> {
    if let Some(id) = known.as_deref() {
        if let Some(port) = published_port(docker, id, machine, unit, container_port).await {
            return Some(port);
        }
        *known = None;
    }
    let machine_filter = format!("{MACHINE_LABEL}={machine}");
    let unit_filter = format!("{UNIT_LABEL}={unit}");
    let filters = HashMap::from([("label", vec![machine_filter.as_str(), unit_filter.as_str()])]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    let id = docker
        .list_containers(Some(options))
        .await
        .ok()?
        .into_iter()
        .find_map(|summary| summary.id)?;
    let port = published_port(docker, &id, machine, unit, container_port).await?;
    *known = Some(id);
    Some(port)
}

/// The host port of container `id`, if it runs and carries this machine's
/// labels for `unit`.
async fn published_port(
    docker: &Docker,
    id: &str,
    machine: &str,
    unit: &str,
    container_port: u16,
) -> Option<u16> {
    let inspected = docker.inspect_container(id, None).await.ok()?;
    let labels = inspected.config.as_ref()?.labels.as_ref()?;
    if labels.get(MACHINE_LABEL).map(String::as_str) != Some(machine)
        || labels.get(UNIT_LABEL).map(String::as_str) != Some(unit)
    {
        return None;
    }
    if !inspected.state?.running? {
        return None;
    }
    let ports = inspected.network_settings?.ports?;
    let bindings = ports.get(&format!("{container_port}/tcp"))?.as_ref()?;
    // Docker may publish different ports for IPv4 and IPv6: the IPv4 one is
    // the one reached at the advertised address.
    let ipv4 = |binding: &&bollard::models::PortBinding| {
        binding
            .host_ip
            .as_deref()
            .is_none_or(|ip| ip.is_empty() || ip.contains('.'))
    };
    bindings
        .iter()
        .filter(ipv4)
        .chain(bindings.iter())
        .find_map(|binding| binding.host_port.as_deref()?.parse().ok())
}

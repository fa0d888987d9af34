//! The agent's containers in the Docker Engine: made from a unit's
//! [`ContainerSpec`], labelled with the unit and the machine so that three
//! agents can share one engine and an agent adopts its own after a restart.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
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
    /// Whether the kernel killed it for its memory.
    pub(crate) oom_killed: bool,
    /// Created, never started (a one-off waiting for its caller).
    pub(crate) created_only: bool,
    /// An attached one-off (its stdin open for a caller): its output is
    /// the caller's, never copied to the log.
    pub(crate) attached: bool,
}

use engine::describe;

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
        let attached = inspected
            .config
            .as_ref()
            .and_then(|config| config.open_stdin)
            .unwrap_or(false);
        found.insert(
            unit.clone(),
            Actual {
                id,
                running: state.running.unwrap_or(false),
                exit_code: state.exit_code.unwrap_or(0),
                oom_killed: state.oom_killed.unwrap_or(false),
                created_only: state.status
                    == Some(bollard::models::ContainerStateStatusEnum::CREATED),
                attached,
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

/// Where a container of `unit` runs and how it is told apart: the machine
/// that starts it, how long it may take to stop, and the address its ports
/// are published on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement<'a> {
    pub(crate) machine: &'a str,
    pub(crate) unit: &'a str,
    pub(crate) stop_timeout: u64,
    pub(crate) publish_ip: Option<std::net::IpAddr>,
}

/// Creates and starts the container of a unit from `spec`; returns its id.
pub(crate) async fn start(
    docker: &Docker,
    placement: Placement<'_>,
    spec: &ContainerSpec,
) -> Result<String, String> {
    let id = create(docker, placement, spec).await?;
    if let Err(error) = docker.start_container(&id, None).await {
        force_remove(docker, &id).await;
        return Err(format!("cannot start the container: {}", describe(error)));
    }
    Ok(id)
}

/// Creates the container of a unit from `spec`, not started; returns its id.
pub(crate) async fn create(
    docker: &Docker,
    placement: Placement<'_>,
    spec: &ContainerSpec,
) -> Result<String, String> {
    let env = read_env_files(spec)?;
    let body = container_body(placement, spec, env)?;
    remove_leftover(docker, placement.machine, &spec.name).await?;
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
    Ok(created.id)
}

/// The lines of the unit's `--env-file`s, comments and blank lines left out.
fn read_env_files(spec: &ContainerSpec) -> Result<Vec<String>, String> {
    let mut env = Vec::new();
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
    Ok(env)
}

/// What the engine is asked to create for `spec`: `env` (from env files)
/// then the unit's `-e`s, the unit's labels plus the agent's, the ports
/// published on the unit's address or `publish_ip`, volumes and limits.
fn container_body(
    placement: Placement<'_>,
    spec: &ContainerSpec,
    mut env: Vec<String>,
) -> Result<ContainerCreateBody, String> {
    env.extend(spec.env.iter().map(|(key, value)| format!("{key}={value}")));
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    labels.insert(UNIT_LABEL.to_string(), placement.unit.to_string());
    labels.insert(MACHINE_LABEL.to_string(), placement.machine.to_string());
    let stop_timeout = placement.stop_timeout.to_string();
    labels.insert(STOP_TIMEOUT_LABEL.to_string(), stop_timeout);
    let mut bindings = HashMap::new();
    let mut exposed = Vec::new();
    for port in &spec.ports {
        let key = format!("{}/tcp", port.container);
        exposed.push(key.clone());
        let host_ip = port
            .ip
            .clone()
            .or_else(|| placement.publish_ip.map(|ip| ip.to_string()));
        let host_port = Some(port.host.map(|h| h.to_string()).unwrap_or_default());
        bindings.insert(key, Some(vec![PortBinding { host_ip, host_port }]));
    }
    let memory = |text: &Option<String>| -> Result<Option<i64>, String> {
        text.as_deref()
            .map(|text| units::memory_bytes(text).map(|bytes| bytes as i64))
            .transpose()
    };
    let nano_cpus = spec
        .cpus
        .as_deref()
        .map(|cpus| units::nano_cpus(cpus).map(|nano| nano as i64))
        .transpose()?;
    let host_config = HostConfig {
        port_bindings: Some(bindings),
        binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
        memory: memory(&spec.memory)?,
        memory_swap: memory(&spec.memory_swap)?,
        nano_cpus,
        ..Default::default()
    };
    // An attached one-off: its caller's stdin, closed when the caller's ends.
    let attached = spec.interactive.then_some(true);
    Ok(ContainerCreateBody {
        open_stdin: attached,
        stdin_once: attached,
        attach_stdin: attached,
        attach_stdout: attached,
        attach_stderr: attached,
        tty: spec.tty.then_some(true),
        image: Some(spec.image.clone()),
        env: Some(env),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        labels: Some(labels),
        exposed_ports: Some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// Removes a container named `name` left by an earlier run of this
/// machine; refuses when one of another machine sharing this engine (or
/// of no Paz machine) has the name.
async fn remove_leftover(docker: &Docker, machine: &str, name: &str) -> Result<(), String> {
    let Ok(existing) = docker.inspect_container(name, None).await else {
        return Ok(());
    };
    let owner = existing
        .config
        .and_then(|config| config.labels)
        .and_then(|labels| labels.get(MACHINE_LABEL).cloned());
    if owner.as_deref() != Some(machine) {
        let owner = owner
            .as_deref()
            .map(|machine| format!("machine {machine}"))
            .unwrap_or_else(|| "no Paz machine".to_string());
        return Err(format!(
            "a container named {name} that this machine did not start (it belongs to {owner}) exists on this Docker Engine: if it is left over from another Paz install, remove it with `docker rm -f {name}`; otherwise give the app another name"
        ));
    }
    force_remove(docker, name).await;
    Ok(())
}

async fn force_remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(id, Some(options)).await;
}

/// SIGTERM, then kill after `timeout` seconds; returns its exit code.
pub(crate) async fn stop(docker: &Docker, id: &str, timeout: u64) -> Option<i64> {
    let options = StopContainerOptionsBuilder::new().t(timeout as i32).build();
    let _ = docker.stop_container(id, Some(options)).await;
    let inspected = docker.inspect_container(id, None).await.ok()?;
    inspected.state?.exit_code
}

/// Removes a container, stopped or not.
pub(crate) async fn remove(docker: &Docker, id: &str) {
    force_remove(docker, id).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        let unit = "[Service]\nExecStart=/usr/bin/docker run --rm --name demo-v1-web-1 -p 10.0.0.9::8080 -p 9090 -e PORT=8080 --label app=demo --memory 256m --memory-swap 256m --cpus 0.5 -v /srv/data:/data demo@sha256:ab ./serve --fast\n";
        match units::parse_unit("demo-v1-web-1.service", unit)
            .unwrap()
            .exec
        {
            units::Exec::Container(spec) => spec,
            other => panic!("not a container: {other:?}"),
        }
    }

    #[test]
    fn a_container_carries_the_units_settings_and_the_agents_labels() {
        let placement = Placement {
            machine: "8c1f",
            unit: "demo-v1-web-1.service",
            stop_timeout: 30,
            publish_ip: Some("10.0.0.7".parse().unwrap()),
        };
        let body = container_body(placement, &spec(), vec!["FROM_FILE=1".into()]).unwrap();
        assert_eq!(body.image.as_deref(), Some("demo@sha256:ab"));
        assert_eq!(
            body.cmd,
            Some(vec!["./serve".to_string(), "--fast".to_string()])
        );
        assert_eq!(
            body.env,
            Some(vec!["FROM_FILE=1".to_string(), "PORT=8080".to_string()]),
            "env files first, then -e, as docker run does"
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels["paz.unit"], "demo-v1-web-1.service");
        assert_eq!(labels["paz.machine"], "8c1f");
        assert_eq!(labels["paz.stop-timeout"], "30");
        assert_eq!(labels["app"], "demo");
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(
            host.memory_swap,
            Some(256 << 20),
            "no swap beyond the limit"
        );
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.binds, Some(vec!["/srv/data:/data".to_string()]));
        let bindings = host.port_bindings.unwrap();
        let bound = |port: &str| bindings[port].as_ref().unwrap()[0].clone();
        // A port with its own address keeps it; the others are published on
        // the advertised address only, never on every address of the host.
        assert_eq!(bound("8080/tcp").host_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(bound("9090/tcp").host_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(bound("9090/tcp").host_port.as_deref(), Some(""));
    }

    #[test]
    fn bad_limits_are_refused_with_what_is_wrong() {
        let placement = Placement {
            machine: "8c1f",
            unit: "demo-v1-web-1.service",
            stop_timeout: 10,
            publish_ip: None,
        };
        let mut bad = spec();
        bad.cpus = Some("lots".into());
        let error = container_body(placement, &bad, Vec::new()).unwrap_err();
        assert_eq!(
            error,
            "cpus `lots` is not a number of CPUs such as 1 or 0.5"
        );
        let mut bad = spec();
        bad.memory = Some("12parsecs".into());
        let error = container_body(placement, &bad, Vec::new()).unwrap_err();
        assert_eq!(error, "memory `12parsecs` is not a size such as 512m");
    }
}

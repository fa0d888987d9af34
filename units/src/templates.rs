//! The unit files Paz renders for an app instance and its sidekick, from
//! `units/templates/`.

use crate::exec;
use crate::spec::{render_docker_run, render_sidekick, ContainerSpec, Port, SidekickSpec};

const APP: &str = include_str!("../templates/app.service");
const ANNOUNCE: &str = include_str!("../templates/announce.service");
const RUN: &str = include_str!("../templates/run.service");

/// One instance of a release of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub app: String,
    pub release: u64,
    /// `web`, `worker`, ...
    pub process: String,
    pub index: u32,
    /// `registry/app@sha256:...`.
    pub image: String,
    /// The port the app listens on inside the container (`$PORT`).
    pub port: u16,
    pub env: Vec<(String, String)>,
    /// The command, if not the image's own.
    pub command: Vec<String>,
    /// The etcd key the sidekick announces (`/paz/services/<app>/<release>/<i>`).
    pub service_key: String,
    pub health_path: String,
    pub health_timeout: u64,
    pub health_attempts: u32,
    pub stop_timeout: u64,
    /// Bytes of memory, swap included, if limited.
    pub memory: Option<u64>,
    /// Billionths of a CPU, if limited.
    pub nano_cpus: Option<u64>,
}

/// A rendered unit: its name and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedUnit {
    pub name: String,
    pub text: String,
}

fn fill(template: &str, values: &[(&str, String)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{{{name}}}}}"), value)
        })
}

/// The instance's unit and its sidekick's.
pub fn render_instance(instance: &Instance) -> Result<(RenderedUnit, RenderedUnit), String> {
    crate::spec::check_image(&instance.image)?;
    let name = format!(
        "{}-v{}-{}-{}",
        instance.app, instance.release, instance.process, instance.index
    );
    let unit = format!("{name}.service");
    // As on Heroku and Dokku: PORT to listen on (web only: only web gets a
    // port and a route), DYNO naming the instance (`web.1`); the app's own
    // env cannot override either.
    let web = instance.process == "web";
    let mut env = Vec::new();
    if web {
        env.push(("PORT".to_string(), instance.port.to_string()));
    }
    env.push((
        "DYNO".to_string(),
        format!("{}.{}", instance.process, instance.index),
    ));
    env.extend(
        instance
            .env
            .iter()
            .filter(|(key, _)| (key != "PORT" || !web) && key != "DYNO")
            .cloned(),
    );
    let container = ContainerSpec {
        name: name.clone(),
        image: instance.image.clone(),
        remove: true,
        ports: if web {
            vec![Port {
                ip: None,
                host: None,
                container: instance.port,
            }]
        } else {
            Vec::new()
        },
        env,
        labels: vec![
            ("paz.app".to_string(), instance.app.clone()),
            ("paz.release".to_string(), instance.release.to_string()),
            ("paz.unit".to_string(), unit.clone()),
        ],
        command: instance.command.clone(),
        // The same swap limit: memory and swap together, so no swap beyond it.
        memory: instance.memory.map(crate::spec::render_memory),
        memory_swap: instance.memory.map(crate::spec::render_memory),
        cpus: instance.nano_cpus.map(crate::spec::render_cpus),
        ..ContainerSpec::default()
    };
    let mut docker = vec!["/usr/bin/docker".to_string(), "run".to_string()];
    docker.extend(render_docker_run(&container));
    let app_text = fill(
        APP,
        &[
            ("app", instance.app.clone()),
            ("release", instance.release.to_string()),
            ("process", instance.process.clone()),
            ("index", instance.index.to_string()),
            ("stop_timeout", instance.stop_timeout.to_string()),
            ("exec_start", exec::join(&docker)),
        ],
    );
    let sidekick = SidekickSpec {
        unit: unit.clone(),
        key: instance.service_key.clone(),
        check: instance.health_path.clone(),
        timeout: instance.health_timeout,
        attempts: instance.health_attempts,
    };
    let mut paz = vec!["/usr/bin/paz".to_string(), "sidekick".to_string()];
    paz.extend(render_sidekick(&sidekick));
    let announce_text = fill(
        ANNOUNCE,
        &[("unit", unit.clone()), ("exec_start", exec::join(&paz))],
    );
    Ok((
        RenderedUnit {
            name: unit,
            text: app_text,
        },
        RenderedUnit {
            name: format!("{name}-announce.service"),
            text: announce_text,
        },
    ))
}

/// A one-off container of a release (`run`, `run:detached`): its unit is
/// `<app>-v<release>-run-<id>.service`, never restarted once it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOff {
    pub app: String,
    pub release: u64,
    /// Lowercase letters and digits, starting with a letter ([`check_run_id`]).
    pub id: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    /// The command, exec form; empty: the image's own.
    pub command: Vec<String>,
    /// Bytes of memory, swap included, if limited.
    pub memory: Option<u64>,
    /// Billionths of a CPU, if limited.
    pub nano_cpus: Option<u64>,
    /// An attached caller's stdin stays open; its agent starts the
    /// container only once the caller is attached.
    pub attached: bool,
    /// A TTY (the caller asked for one).
    pub tty: bool,
}

/// A one-off's id: 2 to 16 lowercase letters and digits, starting with a
/// letter (so that its unit name can never read as an instance's).
pub fn check_run_id(id: &str) -> Result<(), String> {
    let valid = (2..=16).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a one-off's id such as a1b2c3d4: see run:list APP",
            id.escape_debug()
        ))
    }
}

/// The one-off's unit.
pub fn render_one_off(run: &OneOff) -> Result<RenderedUnit, String> {
    crate::spec::check_image(&run.image)?;
    check_run_id(&run.id)?;
    let name = format!("{}-v{}-run-{}", run.app, run.release, run.id);
    let unit = format!("{name}.service");
    let mut env = vec![("DYNO".to_string(), format!("run.{}", run.id))];
    env.extend(run.env.iter().filter(|(key, _)| key != "DYNO").cloned());
    let container = ContainerSpec {
        name: name.clone(),
        image: run.image.clone(),
        env,
        labels: vec![
            ("paz.app".to_string(), run.app.clone()),
            ("paz.release".to_string(), run.release.to_string()),
            ("paz.unit".to_string(), unit.clone()),
            ("paz.run".to_string(), run.id.clone()),
        ],
        command: run.command.clone(),
        memory: run.memory.map(crate::spec::render_memory),
        memory_swap: run.memory.map(crate::spec::render_memory),
        cpus: run.nano_cpus.map(crate::spec::render_cpus),
        restart: Some("no".to_string()),
        interactive: run.attached,
        tty: run.tty,
        ..ContainerSpec::default()
    };
    let mut docker = vec!["/usr/bin/docker".to_string(), "run".to_string()];
    docker.extend(render_docker_run(&container));
    let text = fill(
        RUN,
        &[
            ("app", run.app.clone()),
            ("release", run.release.to_string()),
            ("id", run.id.clone()),
            ("exec_start", exec::join(&docker)),
        ],
    );
    Ok(RenderedUnit { name: unit, text })
}

/// What a one-off's unit name says (`<app>-v<release>-run-<id>.service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunName<'a> {
    pub app: &'a str,
    pub release: u64,
    pub id: &'a str,
}

/// Reads a unit name made by [`render_one_off`]; `None` for other names.
pub fn parse_run_name(unit: &str) -> Option<RunName<'_>> {
    let (stem, id) = unit.strip_suffix(".service")?.rsplit_once("-run-")?;
    let (app, release) = stem.rsplit_once("-v")?;
    let release = release.parse().ok()?;
    (!app.is_empty() && check_run_id(id).is_ok()).then_some(RunName { app, release, id })
}

/// What an instance's unit name says: `<app>-v<release>-<process>-<index>.service`,
/// or its sidekick's, `...-<index>-announce.service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceName<'a> {
    pub app: &'a str,
    pub release: u64,
    pub process: &'a str,
    pub index: u32,
    pub sidekick: bool,
}

/// Reads a unit name made by [`render_instance`], from the right (an app's
/// name may itself contain `-v2-`); `None` for other names.
pub fn parse_instance_name(unit: &str) -> Option<InstanceName<'_>> {
    let stem = unit.strip_suffix(".service")?;
    let (stem, sidekick) = match stem.strip_suffix("-announce") {
        Some(stem) => (stem, true),
        None => (stem, false),
    };
    let mut parts = stem.rsplitn(4, '-');
    let index = parts.next()?.parse().ok()?;
    let process = parts.next()?;
    let release = parts.next()?.strip_prefix('v')?.parse().ok()?;
    let app = parts.next()?;
    let process_ok = !process.is_empty()
        && process
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (process_ok && !app.is_empty()).then_some(InstanceName {
        app,
        release,
        process,
        index,
        sidekick,
    })
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn instance_names_are_read_from_the_right() {
        let name = parse_instance_name("my-v2-app-v12-web-3-announce.service").unwrap();
        assert_eq!(
            name,
            InstanceName {
                app: "my-v2-app",
                release: 12,
                process: "web",
                index: 3,
                sidekick: true
            }
        );
        assert_eq!(
            parse_instance_name("demo-v1-web-1.service").unwrap().app,
            "demo"
        );
        assert!(parse_instance_name("plain.service").is_none());
        assert!(parse_instance_name("demo-vx-web-1.service").is_none());
        assert!(parse_instance_name("demo-v1-web-x.service").is_none());
    }

    #[test]
    fn a_one_offs_name_never_reads_as_an_instances() {
        // An app may be called `x-v1`: its one-off is still not `x`'s web.
        assert_eq!(
            parse_run_name("x-v1-v3-run-a1234567.service"),
            Some(RunName {
                app: "x-v1",
                release: 3,
                id: "a1234567"
            })
        );
        assert!(parse_instance_name("x-v1-v3-run-a1234567.service").is_none());
        assert!(parse_run_name("demo-v1-run-1234.service").is_none());
        assert!(parse_run_name("demo-run-a1234.service").is_none());
        assert!(parse_run_name("demo-v1-web-1.service").is_none());
        for bad in ["", "a", "A1", "1a", "a-b", "a_b", "abcdefghijklmnopq"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }
}

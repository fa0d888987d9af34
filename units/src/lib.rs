//! fleet-style unit files: the format (`file`), command lines and specifiers
//! (`exec`), `[X-Fleet]` placement (`fleet`), the `ExecStart` subset the agent
//! runs (`spec`), and the templates Paz renders an app instance and its
//! sidekick from. Depends on nothing of Paz.

#![forbid(unsafe_code)]

pub mod exec;
pub mod file;
pub mod fleet;
pub mod spec;
mod templates;

pub use file::UnitFile;
pub use fleet::Placement;
pub use spec::{
    check_image, memory_bytes, nano_cpus, render_cpus, render_memory, ContainerSpec, Exec, Port,
    SidekickSpec,
};
pub use templates::{
    check_run_id, parse_instance_name, parse_run_name, render_instance, render_one_off, Instance,
    InstanceName, OneOff, RenderedUnit, RunName,
};

/// A unit file that cannot be used, with the line it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct UnitError {
    pub line: usize,
    pub message: String,
}

impl UnitError {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> UnitError {
        UnitError {
            line,
            message: message.into(),
        }
    }
}

/// A checked unit: its file, what it runs and where it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub file: UnitFile,
    pub exec: Exec,
    pub placement: Placement,
    /// `[Unit] BindsTo=`: the unit this one lives and dies with.
    pub binds_to: Option<String>,
    /// `[Service] TimeoutStopSec=`, seconds (default 10).
    pub stop_timeout: u64,
}

/// Checks a unit file named `name`: the format, `[X-Fleet]`, and that its
/// `ExecStart` is in the subset the agent runs. Specifiers are expanded with
/// the unit's name; `%m` and `%H` are left for the machine to fill.
pub fn parse_unit(name: &str, text: &str) -> Result<Unit, UnitError> {
    if !name.ends_with(".service") || name.len() > 200 || name.contains('/') {
        return Err(UnitError::at(
            0,
            format!("unit name `{name}` is invalid: use NAME.service"),
        ));
    }
    let file = UnitFile::parse(text)?;
    let placement = Placement::from_file(&file, text)?;
    let line = UnitFile::line_of(text, "ExecStart");
    let exec_starts = file.all("Service", "ExecStart");
    let exec_start = match exec_starts.as_slice() {
        [one] => *one,
        [] => return Err(UnitError::at(0, "[Service] has no ExecStart")),
        _ => return Err(UnitError::at(line, "a Paz unit has exactly one ExecStart")),
    };
    let specifiers = exec::Specifiers {
        unit: name.to_string(),
        machine_id: "%m".to_string(),
        hostname: "%H".to_string(),
    };
    let expanded = exec::expand(exec_start, &specifiers, line)?;
    let words = exec::split(&expanded).map_err(|message| UnitError::at(line, message))?;
    let exec = match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["/usr/bin/docker", "run", ..] => Exec::Container(spec::parse_docker_run(&words[2..]).map_err(|m| UnitError::at(line, m))?),
        ["/usr/bin/paz", "sidekick", ..] => Exec::Sidekick(spec::parse_sidekick(&words[2..]).map_err(|m| UnitError::at(line, m))?),
        _ => {
            return Err(UnitError::at(
                line,
                format!(
                    "ExecStart `{exec_start}` is not supported: Paz runs `/usr/bin/docker run ...` and `/usr/bin/paz sidekick ...`"
                ),
            ))
        }
    };
    let stop_timeout = match file.get("Service", "TimeoutStopSec") {
        None => 10,
        Some(value) => value.trim_end_matches('s').parse().map_err(|_| {
            UnitError::at(
                UnitFile::line_of(text, "TimeoutStopSec"),
                format!("TimeoutStopSec `{value}` is not whole seconds"),
            )
        })?,
    };
    Ok(Unit {
        name: name.to_string(),
        binds_to: file.get("Unit", "BindsTo").map(str::to_string),
        file,
        exec,
        placement,
        stop_timeout,
    })
}

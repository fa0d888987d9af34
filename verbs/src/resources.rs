//! `resource:limit`, `resource:limit-clear` and `resource:report` (Dokku's
//! names): the memory and CPUs an app's containers may use, for every
//! process type or for one. A change is a new release of the serving image,
//! rolled out, whose units carry the limits.

use std::collections::BTreeMap;

use serde::Serialize;
use store::records::{Limits, Resources};
use store::AppName;

use crate::apps::{load, update};
use crate::args::Args;
use crate::releases::{after_config_change, ConfigChange};
use crate::{Caller, Context, VerbError};

/// Docker's smallest memory limit.
const MIN_MEMORY: u64 = 6 << 20;

/// Limits changed (`resource:limit`, `resource:limit-clear`), and the
/// release that carries them.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct LimitChange {
    pub resources: Resources,
    #[serde(skip)]
    pub change: ConfigChange,
}

impl std::fmt::Display for LimitChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.change)
    }
}

/// An app's limits (`resource:report`): as set, and what each process type
/// of the serving release gets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceReport {
    pub app: AppName,
    /// As set: for every type, and per type.
    pub resources: Resources,
    /// What each process type of the serving release (and any with limits
    /// of its own) gets.
    pub effective: BTreeMap<String, Limits>,
}

fn memory_text(limits: &Limits) -> String {
    limits
        .memory
        .map(units::render_memory)
        .unwrap_or_else(|| "-".into())
}

fn cpus_text(limits: &Limits) -> String {
    limits
        .nano_cpus
        .map(units::render_cpus)
        .unwrap_or_else(|| "-".into())
}

impl std::fmt::Display for ResourceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<12}  {:<8}  cpus", "process", "memory")?;
        let all = &self.resources.all;
        write!(
            f,
            "{:<12}  {:<8}  {}",
            "(all)",
            memory_text(all),
            cpus_text(all)
        )?;
        for (process, limits) in &self.effective {
            write!(
                f,
                "\n{process:<12}  {:<8}  {}",
                memory_text(limits),
                cpus_text(limits)
            )?;
        }
        Ok(())
    }
}

/// The `--process` of `args`, checked: a process type that may have limits.
fn process_flag(flags: &BTreeMap<String, String>) -> Result<Option<String>, VerbError> {
    let Some(process) = flags.get("--process") else {
        return Ok(None);
    };
    store::names::check_process_type(process)
        .map_err(|error| VerbError::Invalid(format!("--process `{process}`: {error}")))?;
    if process == "release" {
        return Err(VerbError::Invalid(
            "--process release: the release command runs in a one-off container without limits of its own: limit every process instead".into(),
        ));
    }
    Ok(Some(process.clone()))
}

/// One `memory=` or `cpus=` setting; `None` for `none` (no limit).
enum Setting {
    Memory(Option<u64>),
    Cpus(Option<u64>),
}

fn setting(word: &str) -> Result<Setting, VerbError> {
    let invalid = |why: String| VerbError::Invalid(format!("`{word}`: {why}: nothing changed"));
    match word.split_once('=') {
        Some(("memory", "none")) => Ok(Setting::Memory(None)),
        Some(("cpus", "none")) => Ok(Setting::Cpus(None)),
        Some(("memory", text)) => {
            let bytes = units::memory_bytes(text).map_err(invalid)?;
            if bytes < MIN_MEMORY {
                return Err(invalid(format!(
                    "memory `{text}` is below Docker's smallest limit, 6m"
                )));
            }
            Ok(Setting::Memory(Some(bytes)))
        }
        Some(("cpus", text)) => Ok(Setting::Cpus(Some(
            units::nano_cpus(text).map_err(invalid)?,
        ))),
        _ => Err(VerbError::Invalid(format!(
            "`{word}` is not a limit: use memory=SIZE (512m, 1g) or cpus=N (1, 0.5), or none to lift one"
        ))),
    }
}

/// Records the app's new limits and releases them; `change` edits the
/// limits of `process` (or of every type).
async fn change_limits(
    context: &Context,
    caller: &Caller,
    name: &str,
    process: Option<&str>,
    mut change: impl FnMut(&mut Limits),
    said: String,
) -> Result<LimitChange, VerbError> {
    let (record, ()) = update(context, caller, name, |record| {
        let resources = &mut record.resources;
        match process {
            Some(process) => {
                let limits = resources.processes.entry(process.to_string()).or_default();
                change(limits);
                if limits.is_empty() {
                    resources.processes.remove(process);
                }
            }
            None => change(&mut resources.all),
        }
        Ok(())
    })
    .await?;
    let change = after_config_change(context, caller, &record, said).await?;
    Ok(LimitChange {
        resources: record.resources,
        change,
    })
}

fn whom(app: &str, process: Option<&str>) -> String {
    match process {
        Some(process) => format!("{app}'s {process} processes"),
        None => format!("every process of {app}"),
    }
}

pub(crate) async fn limit(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<LimitChange, VerbError> {
    let (words, flags) = args.parse()?;
    if words.len() < 2 {
        return Err(args.usage());
    }
    let process = process_flag(&flags)?;
    let (app, _) = load(context, caller, &words[0]).await?;
    if let Some(process) = &process {
        crate::instances::in_procfile(context, &app, std::iter::once(process.as_str())).await?;
    }
    let settings = words[1..]
        .iter()
        .map(|word| setting(word))
        .collect::<Result<Vec<_>, _>>()?;
    let said: Vec<String> = settings
        .iter()
        .map(|setting| match setting {
            Setting::Memory(Some(bytes)) => format!("memory {}", units::render_memory(*bytes)),
            Setting::Memory(None) => "no memory limit".into(),
            Setting::Cpus(Some(nano)) => format!("cpus {}", units::render_cpus(*nano)),
            Setting::Cpus(None) => "no CPU limit".into(),
        })
        .collect();
    let said = format!(
        "set {} for {}",
        said.join(" and "),
        whom(&words[0], process.as_deref())
    );
    let apply = |limits: &mut Limits| {
        for setting in &settings {
            match setting {
                Setting::Memory(memory) => limits.memory = *memory,
                Setting::Cpus(cpus) => limits.nano_cpus = *cpus,
            }
        }
    };
    change_limits(context, caller, &words[0], process.as_deref(), apply, said).await
}

pub(crate) async fn clear(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<LimitChange, VerbError> {
    let (words, flags) = args.parse()?;
    let [name] = words.as_slice() else {
        return Err(args.usage());
    };
    let process = process_flag(&flags)?;
    let said = format!("lifted the limits of {}", whom(name, process.as_deref()));
    let (app, record) = load(context, caller, name).await?;
    // Lifting a type's own limits needs no Procfile check: it may be gone.
    let process = process.filter(|p| record.value.resources.processes.contains_key(p));
    let process = match (process, flags.contains_key("--process")) {
        (None, true) => {
            return Err(VerbError::NotFound(format!(
                "{app}'s {} processes have no limits of their own: see resource:report {app}",
                flags["--process"]
            )))
        }
        (process, _) => process,
    };
    change_limits(
        context,
        caller,
        name,
        process.as_deref(),
        |limits| *limits = Limits::default(),
        said,
    )
    .await
}

pub(crate) async fn report(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<ResourceReport, VerbError> {
    let name = args.one()?;
    let (app, record) = load(context, caller, &name).await?;
    let resources = record.value.resources;
    let mut types = vec!["web".to_string()];
    if let Some(release) = crate::releases::serving_release(context, &app).await? {
        types.extend(release.processes.into_keys().filter(|p| p != "release"));
    }
    types.extend(resources.processes.keys().cloned());
    let effective = types
        .into_iter()
        .map(|process| {
            let limits = resources.of(&process);
            (process, limits)
        })
        .collect();
    Ok(ResourceReport {
        app,
        resources,
        effective,
    })
}

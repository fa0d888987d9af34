//! `[X-Fleet]` placement options and fleet's rules on combining them.

use std::collections::BTreeMap;

use globset::Glob;

use crate::file::UnitFile;
use crate::UnitError;

/// Where a unit may run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Only on this machine.
    pub machine_id: Option<String>,
    /// On the machine that runs this other unit.
    pub machine_of: Option<String>,
    /// Only on machines with all of these metadata values (a key may allow several).
    pub machine_metadata: BTreeMap<String, Vec<String>>,
    /// Never beside units whose names match these globs.
    pub conflicts: Vec<String>,
    /// On every machine (that matches the metadata).
    pub global: bool,
}

impl Placement {
    pub(crate) fn from_file(file: &UnitFile, text: &str) -> Result<Placement, UnitError> {
        let line = |key: &str| UnitFile::line_of(text, key);
        let mut placement = Placement {
            machine_id: file.get("X-Fleet", "MachineID").map(str::to_string),
            machine_of: file.get("X-Fleet", "MachineOf").map(str::to_string),
            ..Placement::default()
        };
        for value in file.all("X-Fleet", "MachineMetadata") {
            for pair in value.split_whitespace() {
                let pair = pair.trim_matches('"');
                let (key, wanted) = pair
                    .split_once('=')
                    .filter(|(key, wanted)| !key.is_empty() && !wanted.is_empty())
                    .ok_or_else(|| {
                        UnitError::at(
                            line("MachineMetadata"),
                            format!("MachineMetadata `{pair}` is not key=value"),
                        )
                    })?;
                placement
                    .machine_metadata
                    .entry(key.to_string())
                    .or_default()
                    .push(wanted.to_string());
            }
        }
        for value in file.all("X-Fleet", "Conflicts") {
            for pattern in value.split_whitespace() {
                Glob::new(pattern).map_err(|error| {
                    UnitError::at(
                        line("Conflicts"),
                        format!("Conflicts `{pattern}` is not a glob: {error}"),
                    )
                })?;
                placement.conflicts.push(pattern.to_string());
            }
        }
        if let Some(global) = file.get("X-Fleet", "Global") {
            placement.global = match global.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => true,
                "false" | "no" | "0" | "off" => false,
                other => {
                    return Err(UnitError::at(
                        line("Global"),
                        format!("Global `{other}` is not a boolean"),
                    ))
                }
            };
        }
        let known = [
            "MachineID",
            "MachineOf",
            "MachineMetadata",
            "Conflicts",
            "Global",
        ];
        for section in file.sections.iter().filter(|s| s.name == "X-Fleet") {
            if let Some((key, _)) = section
                .entries
                .iter()
                .find(|(key, _)| !known.contains(&key.as_str()))
            {
                return Err(UnitError::at(
                    line(key),
                    format!("[X-Fleet] {key} is not supported: use {}", known.join(", ")),
                ));
            }
        }
        // fleet's rules: a global unit runs everywhere its metadata allows, so it
        // cannot also be pinned or kept apart; a unit pinned to a machine cannot
        // also follow another unit.
        if placement.global {
            for (key, set) in [
                ("MachineID", placement.machine_id.is_some()),
                ("MachineOf", placement.machine_of.is_some()),
                ("Conflicts", !placement.conflicts.is_empty()),
            ] {
                if set {
                    return Err(UnitError::at(
                        line(key),
                        format!("Global=true cannot be combined with {key}"),
                    ));
                }
            }
        }
        if placement.machine_id.is_some() && placement.machine_of.is_some() {
            return Err(UnitError::at(
                line("MachineOf"),
                "MachineID and MachineOf cannot be combined: a unit is pinned one way",
            ));
        }
        Ok(placement)
    }

    /// Whether a machine with `metadata` may run this unit.
    pub fn metadata_allows(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.machine_metadata.iter().all(|(key, wanted)| {
            metadata
                .get(key)
                .is_some_and(|value| wanted.contains(value))
        })
    }

    /// Whether this unit conflicts with a unit named `other`.
    pub fn conflicts_with(&self, other: &str) -> bool {
        self.conflicts
            .iter()
            .filter_map(|pattern| Glob::new(pattern).ok())
            .any(|glob| glob.compile_matcher().is_match(other))
    }
}

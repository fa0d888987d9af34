//! A verb's arguments: positionals and the `--flag [value]` options it takes.

use std::collections::BTreeMap;

use crate::error::VerbError;
use crate::Verb;

/// Flags that take a value; every other `--flag` is a switch.
const VALUE_FLAGS: &[&str] = &["--role", "--apps", "--process"];

#[derive(Debug)]
pub(crate) struct Args {
    /// The verb's usage line; the flags it names are the ones allowed.
    usage: &'static str,
    raw: Vec<String>,
}

impl Args {
    pub(crate) fn new(verb: &Verb, raw: &[String]) -> Args {
        Args {
            usage: verb.usage,
            raw: raw.to_vec(),
        }
    }

    pub(crate) fn usage(&self) -> VerbError {
        VerbError::Usage(self.usage)
    }

    /// Splits into positionals and flags; refuses flags the usage does not name.
    pub(crate) fn parse(&self) -> Result<(Vec<String>, BTreeMap<String, String>), VerbError> {
        let mut positionals = Vec::new();
        let mut flags = BTreeMap::new();
        let mut words = self.raw.iter();
        while let Some(word) = words.next() {
            if let Some(name) = word.strip_prefix("--") {
                let flag = format!("--{}", name.split('=').next().unwrap_or(name));
                if !self
                    .usage
                    .split_whitespace()
                    .any(|part| part.trim_start_matches('[').trim_end_matches(']') == flag)
                {
                    return Err(VerbError::Invalid(format!(
                        "unknown option `{flag}`: usage: {}",
                        self.usage
                    )));
                }
                let value = if let Some((_, value)) = name.split_once('=') {
                    value.to_string()
                } else if VALUE_FLAGS.contains(&flag.as_str()) {
                    words.next().ok_or_else(|| self.usage())?.clone()
                } else {
                    String::new()
                };
                flags.insert(flag, value);
            } else {
                positionals.push(word.clone());
            }
        }
        Ok((positionals, flags))
    }

    /// The words as given, for a verb that reads its own options.
    pub(crate) fn raw(&self) -> &[String] {
        &self.raw
    }

    /// Exactly one positional and no flags.
    pub(crate) fn one(&self) -> Result<String, VerbError> {
        let [first] = <[String; 1]>::try_from(self.exactly(1)?).map_err(|_| self.usage())?;
        Ok(first)
    }

    /// Exactly two positionals and no flags.
    pub(crate) fn two(&self) -> Result<(String, String), VerbError> {
        let [first, second] =
            <[String; 2]>::try_from(self.exactly(2)?).map_err(|_| self.usage())?;
        Ok((first, second))
    }

    /// Exactly one positional, and the flags the usage names.
    pub(crate) fn one_and_flags(&self) -> Result<(String, BTreeMap<String, String>), VerbError> {
        let (positionals, flags) = self.parse()?;
        let [first] = <[String; 1]>::try_from(positionals).map_err(|_| self.usage())?;
        Ok((first, flags))
    }

    /// Exactly `count` positionals and no flags.
    pub(crate) fn exactly(&self, count: usize) -> Result<Vec<String>, VerbError> {
        let (positionals, flags) = self.parse()?;
        if positionals.len() != count || !flags.is_empty() {
            return Err(self.usage());
        }
        Ok(positionals)
    }

    /// At least `count` positionals and no flags.
    pub(crate) fn at_least(&self, count: usize) -> Result<Vec<String>, VerbError> {
        let (positionals, flags) = self.parse()?;
        if positionals.len() < count || !flags.is_empty() {
            return Err(self.usage());
        }
        Ok(positionals)
    }
}

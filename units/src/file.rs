//! The unit file format as systemd defines it: `[Section]` headers, `Key=Value`
//! lines (keys may repeat), `#` and `;` comments, and lines continued with a
//! trailing backslash. Rendering a parsed file gives it back in normal form.

use crate::UnitError;

/// One `[Section]` and its entries, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub entries: Vec<(String, String)>,
}

/// A parsed unit file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitFile {
    pub sections: Vec<Section>,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl UnitFile {
    pub fn parse(text: &str) -> Result<UnitFile, UnitError> {
        let mut file = UnitFile::default();
        let mut lines = text.lines().enumerate().peekable();
        while let Some((index, raw)) = lines.next() {
            let number = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if trimmed.starts_with('[') {
                let name = trimmed
                    .strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
                    .filter(|name| !name.is_empty() && !name.contains(['[', ']']))
                    .ok_or_else(|| {
                        UnitError::at(number, format!("`{trimmed}` is not a [Section] header"))
                    })?;
                file.sections.push(Section {
                    name: name.to_string(),
                    entries: Vec::new(),
                });
                continue;
            }
            let (key, value) = trimmed
                .split_once('=')
                .ok_or_else(|| UnitError::at(number, format!("`{trimmed}` is not Key=Value")))?;
            let key = key.trim();
            if !valid_key(key) {
                return Err(UnitError::at(number, format!("`{key}` is not a valid key")));
            }
            let mut value = value.trim().to_string();
            // A trailing backslash continues the value on the next line.
            while value.ends_with('\\') {
                value.pop();
                match lines.next() {
                    Some((_, next)) => {
                        let next = next.trim();
                        if next.starts_with('#') || next.starts_with(';') {
                            continue;
                        }
                        value = format!("{} {next}", value.trim_end());
                    }
                    None => {
                        return Err(UnitError::at(
                            number,
                            "the file ends inside a continued line",
                        ))
                    }
                }
            }
            let section = file.sections.last_mut().ok_or_else(|| {
                UnitError::at(number, format!("`{key}` comes before any [Section]"))
            })?;
            section
                .entries
                .push((key.to_string(), value.trim().to_string()));
        }
        Ok(file)
    }

    /// The normal form: sections in order, one `Key=Value` a line, a blank line between sections.
    pub fn render(&self) -> String {
        self.sections
            .iter()
            .map(|section| {
                let mut text = format!("[{}]\n", section.name);
                for (key, value) in &section.entries {
                    text.push_str(&format!("{key}={value}\n"));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every value of `key` in `section`, in order.
    pub fn all<'a>(&'a self, section: &str, key: &str) -> Vec<&'a str> {
        self.sections
            .iter()
            .filter(|s| s.name == section)
            .flat_map(|s| s.entries.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The last value of `key` in `section` (later ones override, as in systemd).
    pub fn get<'a>(&'a self, section: &str, key: &str) -> Option<&'a str> {
        self.all(section, key).pop()
    }

    /// The line number of the first `key=` in `section`, for error messages.
    pub fn line_of(text: &str, key: &str) -> usize {
        text.lines()
            .position(|line| line.trim_start().starts_with(&format!("{key}=")))
            .map(|index| index + 1)
            .unwrap_or(0)
    }
}

//! Command lines in unit files: splitting with systemd's quoting rules, joining
//! back with quotes where needed, and `%` specifiers.

use crate::UnitError;

/// Splits a command line as systemd does: whitespace separates words; double
/// or single quotes group; backslash escapes (`\"`, `\\`, `\n`, `\t`, `\s`).
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    let escaped = chars.next().ok_or("a backslash ends the line")?;
                    word.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        's' => ' ',
                        other => other,
                    });
                }
                (_, c) => word.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!("a {q} quote is not closed"));
        }
        words.push(word);
    }
}

/// Joins words into a command line that [`split`] gives back unchanged.
pub fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
            if plain {
                word.replace('%', "%%")
            } else {
                let mut quoted = String::from("\"");
                for c in word.chars() {
                    match c {
                        '"' => quoted.push_str("\\\""),
                        '\\' => quoted.push_str("\\\\"),
                        '\n' => quoted.push_str("\\n"),
                        '\t' => quoted.push_str("\\t"),
                        '%' => quoted.push_str("%%"),
                        c => quoted.push(c),
                    }
                }
                quoted.push('"');
                quoted
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `%` specifiers expand to.
#[derive(Debug, Clone, Default)]
pub struct Specifiers {
    /// `%n`: the full unit name (`web-v1-web-1.service`).
    pub unit: String,
    /// `%m`: the machine id.
    pub machine_id: String,
    /// `%H`: the host name.
    pub hostname: String,
}

/// Expands `%n`, `%N`, `%p`, `%i`, `%m`, `%H` and `%%`; any other is refused.
pub fn expand(value: &str, specifiers: &Specifiers, line: usize) -> Result<String, UnitError> {
    let stem = specifiers
        .unit
        .strip_suffix(".service")
        .unwrap_or(&specifiers.unit);
    let (prefix, instance) = match stem.split_once('@') {
        Some((prefix, instance)) => (prefix, instance),
        None => (stem, ""),
    };
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('n') => out.push_str(&specifiers.unit),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(prefix),
            Some('i') => out.push_str(instance),
            Some('m') => out.push_str(&specifiers.machine_id),
            Some('H') => out.push_str(&specifiers.hostname),
            Some(other) => {
                return Err(UnitError::at(
                    line,
                    format!("the specifier %{other} is not supported: use %n %N %p %i %m %H or %%"),
                ))
            }
            None => {
                return Err(UnitError::at(
                    line,
                    "a % ends the line: write %% for a percent sign",
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_systemd() {
        assert_eq!(
            split(r#"/bin/echo "a b" 'c d' e\ f "x\"y""#).unwrap(),
            ["/bin/echo", "a b", "c d", "e f", "x\"y"]
        );
        assert_eq!(split("  one\ttwo  ").unwrap(), ["one", "two"]);
        assert!(split("\"open").unwrap_err().contains("not closed"));
        let words: Vec<String> = ["docker", "run", "-e", "A=b c", "x\"y", "50%", ""]
            .map(String::from)
            .to_vec();
        let joined = join(&words);
        let expanded = expand(&joined, &Specifiers::default(), 1).unwrap();
        assert_eq!(split(&expanded).unwrap(), words);
    }

    #[test]
    fn specifiers_expand_and_unknown_ones_are_refused() {
        let specifiers = Specifiers {
            unit: "web@2.service".into(),
            machine_id: "m1".into(),
            hostname: "h".into(),
        };
        assert_eq!(
            expand("%n %N %p %i %m %H 100%%", &specifiers, 1).unwrap(),
            "web@2.service web@2 web 2 m1 h 100%"
        );
        assert_eq!(
            expand("%x", &specifiers, 7).unwrap_err().to_string(),
            "line 7: the specifier %x is not supported: use %n %N %p %i %m %H or %%"
        );
    }
}

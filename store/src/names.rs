//! Name validation shared by every entry point (SSH verbs, REST API, CLI, webhooks).
//!
//! A name that reaches the store has been checked here first, so no entry point can
//! smuggle `/`, `..` or other key syntax into the etcd key layout.

use std::fmt;

/// Why a user-supplied name was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "app name `{name}` is invalid: {reason}; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"
    )]
    App { name: String, reason: &'static str },
    #[error("domain `{name}` is invalid: {reason}; use dot-separated labels of lowercase letters, digits and dashes, such as paz.example.com")]
    Domain { name: String, reason: &'static str },
    #[error("process type `{name}` is invalid: {reason}; use 1 to 32 lowercase letters, digits and underscores, starting with a letter")]
    Process { name: String, reason: &'static str },
    #[error("{what} `{name}` is invalid: {reason}; use 1 to 128 letters, digits, dots, dashes, underscores or colons")]
    Segment {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
}

/// A validated app name: a DNS label (`[a-z][a-z0-9-]{0,62}`, no trailing dash).
///
/// It is a DNS label because the app's URL is `http://<app>.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct AppName(String);

/// In the API's description: a string that follows the app-name rule.
impl utoipa::PartialSchema for AppName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"))
            .description(Some("an app name: a-z, 0-9 and -, starting with a letter"))
            .into()
    }
}

impl utoipa::ToSchema for AppName {}

impl AppName {
    /// Checks `name` against the app-name rule.
    pub fn new(name: &str) -> Result<AppName, NameError> {
        let refuse = |reason| {
            Err(NameError::App {
                name: name.to_string(),
                reason,
            })
        };
        let Some(first) = name.chars().next() else {
            return refuse("it is empty");
        };
        if name.len() > 63 {
            return refuse("it is longer than 63 characters");
        }
        if !first.is_ascii_lowercase() {
            return refuse("it must start with a lowercase letter");
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return refuse(if bad.is_ascii_uppercase() {
                "it has an uppercase letter"
            } else {
                "it has a character other than a-z, 0-9 and -"
            });
        }
        if name.ends_with('-') {
            return refuse("it ends with a dash");
        }
        Ok(AppName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppName::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for AppName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        AppName::new(&name).map_err(serde::de::Error::custom)
    }
}

/// Checks any other value that becomes one segment of an etcd key (key names,
/// fingerprints, token ids, machine ids, unit names, instance ids).
///
/// `what` names the value in the error, e.g. "machine id".
pub fn check_segment<'a>(what: &'static str, name: &'a str) -> Result<&'a str, NameError> {
    let refuse = |reason| {
        Err(NameError::Segment {
            what,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > 128 {
        return refuse("it is longer than 128 characters");
    }
    if name == "." || name == ".." {
        return refuse("it is a path component");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '+' | '@' | '='))
    {
        return refuse("it has a character that is not allowed");
    }
    Ok(name)
}

/// Checks a Procfile process type (`web`, `worker`, `clock`): it is part of
/// unit names (`<app>-v<n>-<type>-<index>`), which are split at dashes, so
/// it has none.
pub fn check_process_type(name: &str) -> Result<&str, NameError> {
    let refuse = |reason| {
        Err(NameError::Process {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > 32 {
        return refuse("it is longer than 32 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return refuse("it does not start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return refuse("it has a character other than a-z, 0-9 and _");
    }
    Ok(name)
}

/// Checks a DNS name used for routing (the base domain, `domains:add`).
pub fn check_domain(name: &str) -> Result<&str, NameError> {
    let refuse = |reason| {
        Err(NameError::Domain {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > 253 {
        return refuse("it is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return refuse("it has an empty label");
        }
        if label.len() > 63 {
            return refuse("a label is longer than 63 characters");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return refuse("it has a character other than a-z, 0-9, - and .");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return refuse("a label starts or ends with a dash");
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn good_app_names_pass() {
        for name in ["a", "myapp", "my-app-2", "x1", &"a".repeat(63)] {
            assert_eq!(AppName::new(name).unwrap().as_str(), name);
        }
    }

    fn refusal(name: &str) -> String {
        AppName::new(name).unwrap_err().to_string()
    }

    #[test]
    fn bad_app_names_are_refused_with_what_is_allowed() {
        expect![[r#"app name `My_App` is invalid: it must start with a lowercase letter; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"#]]
        .assert_eq(&refusal("My_App"));
        expect![[r#"app name `my_app` is invalid: it has a character other than a-z, 0-9 and -; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"#]]
        .assert_eq(&refusal("my_app"));
        expect![[r#"app name `-x` is invalid: it must start with a lowercase letter; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"#]]
        .assert_eq(&refusal("-x"));
        expect![[r#"app name `a/b` is invalid: it has a character other than a-z, 0-9 and -; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"#]]
        .assert_eq(&refusal("a/b"));
        expect![[r#"app name `..` is invalid: it must start with a lowercase letter; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"#]]
        .assert_eq(&refusal(".."));
        expect![[r#"app name `` is invalid: it is empty; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"#]]
        .assert_eq(&refusal(""));
        assert!(refusal(&"a".repeat(64)).contains("longer than 63 characters"));
        assert!(refusal("abc-").contains("ends with a dash"));
        assert!(refusal("aBc").contains("uppercase letter"));
        assert!(refusal("a b").contains("other than a-z"));
        assert!(refusal("é").contains("lowercase letter"));
    }

    #[test]
    fn app_names_are_checked_when_read_from_json() {
        assert!(serde_json::from_str::<AppName>("\"ok-app\"").is_ok());
        let error = serde_json::from_str::<AppName>("\"../etc\"").unwrap_err();
        assert!(error.to_string().contains("app name `../etc` is invalid"));
    }

    #[test]
    fn domains_are_dns_names() {
        for good in ["paz.localhost", "a.b-c.example.com", "localhost"] {
            assert_eq!(check_domain(good), Ok(good));
        }
        for bad in ["", "Paz.io", "a..b", ".a", "a.", "-a.b", "a_b.c", "a b"] {
            let error = check_domain(bad).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("domain `{bad}` is invalid")),
                "{error}"
            );
        }
    }

    #[test]
    fn key_segments_refuse_key_syntax() {
        assert!(check_segment("machine id", "0f3a-b").is_ok());
        assert!(check_segment("key fingerprint", "SHA256:abc+/x=").is_err());
        for bad in ["", ".", "..", "a/b", "a b", "a\nb", &"x".repeat(129)] {
            let error = check_segment("machine id", bad).unwrap_err().to_string();
            assert!(error.starts_with("machine id `"), "{error}");
        }
    }
}

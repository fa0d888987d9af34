//! Who runs a verb, and what their role lets them do.

use store::records::{Role, SshKey, Token};
use store::AppName;

use crate::error::VerbError;

/// The authenticated caller: an SSH key or an API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's or token's name, recorded as `by` on what it changes.
    pub name: String,
    pub role: Role,
    /// The apps a deployer may use.
    pub apps: Vec<AppName>,
    /// Whether it is a token (else an SSH key): how to grant it more.
    pub token: bool,
}

impl Caller {
    pub fn from_key(key: &SshKey) -> Caller {
        Caller {
            name: key.name.clone(),
            role: key.role,
            apps: key.apps.clone(),
            token: false,
        }
    }

    pub fn from_token(token: &Token) -> Caller {
        Caller {
            name: token.name.clone(),
            role: token.role,
            apps: token.apps.clone(),
            token: true,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this caller may push to, clone and manage `app`.
    pub fn may_use(&self, app: &AppName) -> bool {
        self.is_admin() || self.apps.contains(app)
    }

    /// Refuses unless the caller is an admin; `what` names the refused action.
    pub fn require_admin(&self, what: &str) -> Result<(), VerbError> {
        if self.is_admin() {
            return Ok(());
        }
        Err(VerbError::Denied(format!(
            "`{}` is a {} and may not {what}: that needs the admin role",
            self.name,
            self.role.as_str()
        )))
    }

    /// Refuses unless the caller may use `app`.
    pub fn require_app(&self, app: &AppName) -> Result<(), VerbError> {
        if self.may_use(app) {
            return Ok(());
        }
        let allowed = if self.apps.is_empty() {
            "none".to_string()
        } else {
            self.apps
                .iter()
                .map(AppName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let grant = if self.token {
            format!(
                "a token can't be changed: an admin makes one with tokens:create NAME --apps {app}"
            )
        } else {
            "an admin can add it with ssh-keys:add --apps".to_string()
        };
        Err(VerbError::Denied(format!(
            "`{}` may not use app `{app}`: its apps are {allowed}; {grant}",
            self.name
        )))
    }
}

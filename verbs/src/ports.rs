//! `ports:set`: the port an app's instances listen on (`$PORT`), Dokku-like.
//! A change is a new release of the serving image, rolled out.

use serde::Serialize;
use store::AppName;

use crate::apps::update;
use crate::args::Args;
use crate::releases::ConfigChange;
use crate::{Caller, Context, VerbError};

/// The port set (`ports:set`), and the release it made.
#[derive(Debug, Serialize)]
pub struct PortChange {
    pub app: AppName,
    /// `None`: the image's first exposed port, else 5000.
    pub port: Option<u16>,
    #[serde(skip)]
    pub change: ConfigChange,
}

impl std::fmt::Display for PortChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.change)
    }
}

pub(crate) async fn set(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<PortChange, VerbError> {
    let (name, value) = args.two()?;
    let port = match value.as_str() {
        "default" => None,
        text => Some(
            text.parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| {
                    VerbError::Invalid(format!(
                        "`{text}` is not a port: use a number from 1 to 65535, or `default` for the image's EXPOSE (else 5000)"
                    ))
                })?,
        ),
    };
    let (app, ()) = update(context, caller, &name, |app| {
        app.port = port;
        Ok(())
    })
    .await?;
    let said = match port {
        Some(port) => format!("{} listens on port {port}", app.name),
        None => format!(
            "{} listens on its image's first exposed port, else 5000",
            app.name
        ),
    };
    let change = crate::releases::after_config_change(context, caller, &app, said).await?;
    Ok(PortChange {
        app: app.name,
        port,
        change,
    })
}

//! `ports:set`: the port an app's instances listen on (`$PORT`), Dokku-like.
//! A change is a new release of the serving image, rolled out.

use serde_json::json;

use crate::apps::update;
use crate::args::Args;
use crate::{Caller, Context, Outcome, VerbError};

pub(crate) async fn set(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
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
    let outcome = crate::releases::after_config_change(context, caller, &app, said).await?;
    Ok(Outcome::new(
        outcome.text,
        json!({"app": app.name, "port": port}),
    ))
}

//! A sidekick: checks its instance with the app's health check on the
//! container's published port, announces `ip:port` on a lease while healthy,
//! withdraws after too many failures in a row, and when it is stopped.

use std::time::Duration;

use bollard::Docker;
use store::{Key, Registration, Store};
use tokio::sync::watch;
use tracing::{info, warn};
use units::SidekickSpec;

/// How often the instance is checked.
const INTERVAL: Duration = Duration::from_secs(1);
/// The first wait between checks of an instance never yet healthy; it doubles
/// up to [`INTERVAL`], so a deploy learns that a new instance is up within a
/// fraction of its start-up time instead of a whole interval later.
const FIRST_WAIT: Duration = Duration::from_millis(50);
/// The lease TTL of an announcement.
const ANNOUNCE_TTL: Duration = Duration::from_secs(10);

/// What a sidekick task needs.
pub(crate) struct Sidekick {
    pub(crate) spec: SidekickSpec,
    pub(crate) key: Key<String>,
    /// This machine's id: only a container it labelled is checked.
    pub(crate) machine: String,
    /// The address its published port is checked on (where it is published).
    pub(crate) check_ip: std::net::IpAddr,
    /// The port the app listens on inside the container of `spec.unit`.
    pub(crate) container_port: u16,
    /// The address other hosts reach this machine's published ports on.
    pub(crate) advertise: String,
    /// Where a failing check is told, in the app's log.
    pub(crate) logs: crate::logs::Logs,
}

/// One check: `GET path` on the instance's own published port answers with
/// a status below 500 that is not a redirect. Redirects are never followed,
/// so an app cannot make the agent (root, on the host's network) ask any
/// other address for it.
///
/// A failed check says what it got: the answer's status, or why there was none.
async fn healthy(
    client: &reqwest::Client,
    address: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("http://{address}{path}");
    match client.get(&url).timeout(timeout).send().await {
        Ok(response) => {
            let status = response.status();
            if !status.is_redirection() && status.as_u16() < 500 {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            }
        }
        Err(error) if error.is_timeout() => Err(format!(
            "GET {path} got no answer within {}s",
            timeout.as_secs()
        )),
        Err(error) => Err(format!("GET {path} failed: {}", without_url(&error))),
    }
}

/// A request error's own words, without the URL (an address of this host).
fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut said = String::from("cannot connect");
    while let Some(cause) = source {
        said = cause.to_string();
        source = cause.source();
    }
    said
}

/// Runs until `stop` turns true; the announcement goes with it.
pub(crate) async fn run(
    sidekick: Sidekick,
    store: Store,
    docker: Docker,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, key = %sidekick.key, "cannot make the health-check client");
            return;
        }
    };
    let timeout = Duration::from_secs(sidekick.spec.timeout.max(1));
    let mut failures = 0u32;
    let mut last_answer = String::new();
    let mut wait = FIRST_WAIT;
    // The registration and the address it announces.
    let mut announced: Option<(Registration, String)> = None;
    // The id of the container checked last, read again by id.
    let mut container = None;
    loop {
        let port = crate::docker::host_port(
            &docker,
            &sidekick.machine,
            &sidekick.spec.unit,
            sidekick.container_port,
            &mut container,
        )
        .await;
        let checked = match port {
            Some(port) => {
                let address = std::net::SocketAddr::new(sidekick.check_ip, port);
                healthy(&client, address, &sidekick.spec.check, timeout).await
            }
            None => Err("its container is not running".to_string()),
        };
        if let Err(answer) = &checked {
            last_answer.clone_from(answer);
        }
        if checked.is_ok() {
            failures = 0;
            let address = format!("{}:{}", sidekick.advertise, port.unwrap_or_default());
            // A replaced container has a new port: announce where it is now.
            if announced.as_ref().is_none_or(|(_, said)| *said != address) {
                match store.register(&sidekick.key, &address, ANNOUNCE_TTL).await {
                    Ok(registration) => {
                        info!(key = %sidekick.key, %address, "announced");
                        announced = Some((registration, address));
                    }
                    Err(error) => warn!(%error, "cannot announce; will try again"),
                }
            }
        } else {
            failures += 1;
            if failures >= sidekick.spec.attempts.max(1) && announced.take().is_some() {
                withdraw(&store, &sidekick.key).await;
                info!(key = %sidekick.key, failures, "health check failing: withdrawn");
                sidekick.logs.note(
                    &sidekick.spec.unit,
                    format!("health check failed {failures} times ({last_answer}): withdrawn from the proxy"),
                );
            }
        }
        let pause = if announced.is_some() {
            INTERVAL
        } else {
            let pause = wait;
            wait = (wait * 2).min(INTERVAL);
            pause
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    if announced.take().is_some() {
        withdraw(&store, &sidekick.key).await;
    }
    info!(key = %sidekick.key, "the sidekick stopped");
}

/// Deletes the announcement now (its lease, revoked as the registration drops,
/// would take it too, but the proxy must stop routing before anything else).
async fn withdraw(store: &Store, key: &Key<String>) {
    if let Err(error) = store.delete(key).await {
        warn!(%error, %key, "cannot withdraw; the lease will");
    }
}

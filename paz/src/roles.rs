//! One supervisor for the roles of a process (`paz up`, `paz server`): each
//! role runs in a task and a tracing span of its own; the process runs until
//! a signal or until any role ends, then every role is told to stop at once
//! and given one deadline to finish. A role that ends by itself is an error
//! that names it, so that the process exits non-zero and a service manager
//! restarts it.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn, Instrument};

/// Resolves when the roles are told to stop.
pub(crate) type Stop = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The running roles.
pub(crate) struct Roles {
    running: JoinSet<(&'static str, anyhow::Result<()>)>,
    names: Vec<&'static str>,
    stop: watch::Sender<bool>,
}

impl Roles {
    pub(crate) fn new() -> Roles {
        Roles {
            running: JoinSet::new(),
            names: Vec::new(),
            stop: watch::channel(false).0,
        }
    }

    /// A future that resolves when the roles are told to stop.
    pub(crate) fn stop_signal(&self) -> Stop {
        let mut stopped = self.stop.subscribe();
        Box::pin(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
    }

    /// Runs `role` (given its stop signal) as the role `name`.
    pub(crate) fn spawn<F, E>(&mut self, name: &'static str, role: impl FnOnce(Stop) -> F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error>,
    {
        let task = role(self.stop_signal());
        self.names.push(name);
        self.running.spawn(
            async move { (name, task.await.map_err(Into::into)) }
                .instrument(tracing::info_span!("role", role = name)),
        );
    }

    /// Runs until `shutdown` resolves (its outcome is the outcome) or a role
    /// ends (an error naming it); then stops every role, waiting at most
    /// `deadline` for all of them together.
    pub(crate) async fn run_until(
        mut self,
        shutdown: impl Future<Output = anyhow::Result<()>>,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        info!(roles = ?self.names, "running");
        let outcome = tokio::select! {
            outcome = shutdown => outcome,
            Some(ended) = self.running.join_next() => Err(ended_early(ended)),
        };
        if let Err(error) = &outcome {
            error!("{error:#}");
        }
        info!("stopping every role");
        let _ = self.stop.send(true);
        let drain = async {
            while let Some(ended) = self.running.join_next().await {
                match ended {
                    Ok((name, Ok(()))) => info!(role = name, "stopped"),
                    Ok((name, Err(error))) => {
                        warn!(role = name, "stopped with an error: {error:#}")
                    }
                    Err(error) => warn!(%error, "a role's task failed while stopping"),
                }
            }
        };
        if tokio::time::timeout(deadline, drain).await.is_err() {
            warn!(
                "roles still running after {} s; stopping them now",
                deadline.as_secs()
            );
            self.running.abort_all();
        }
        outcome
    }

    /// The roles started, in order.
    #[cfg(test)]
    fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// What a role that ended before it was told to stop did.
fn ended_early(
    ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Error {
    match ended {
        Ok((name, Ok(()))) => anyhow::anyhow!("the {name} stopped by itself: stopping Paz"),
        Ok((name, Err(error))) => error.context(format!("the {name} failed: stopping Paz")),
        Err(error) if error.is_panic() => {
            anyhow::anyhow!("a role panicked: stopping Paz ({error})")
        }
        Err(error) => anyhow::anyhow!("a role's task was cancelled: stopping Paz ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_role_that_fails_stops_the_others_and_is_named() {
        let mut roles = Roles::new();
        let (told, mut was_told) = tokio::sync::oneshot::channel();
        roles.spawn("proxy", move |stop| async move {
            stop.await;
            let _ = told.send(());
            Ok::<(), std::io::Error>(())
        });
        roles.spawn("scheduler", |_| async {
            Err::<(), _>(anyhow::anyhow!("its leader key is gone"))
        });
        assert_eq!(roles.names(), ["proxy", "scheduler"]);
        let outcome = roles
            .run_until(std::future::pending(), Duration::from_secs(5))
            .await;
        let said = format!("{:#}", outcome.unwrap_err());
        assert!(said.contains("the scheduler failed"), "{said}");
        assert!(said.contains("its leader key is gone"), "{said}");
        assert!(was_told.try_recv().is_ok(), "the proxy was told to stop");
    }

    #[tokio::test]
    async fn a_signal_stops_every_role_under_one_deadline() {
        let mut roles = Roles::new();
        for name in ["registry", "agent"] {
            roles.spawn(name, |stop| async move {
                stop.await;
                Ok::<(), std::io::Error>(())
            });
        }
        // One that ignores the stop is cut off at the deadline.
        roles.spawn("stuck", |_| async {
            std::future::pending::<()>().await;
            Ok::<(), std::io::Error>(())
        });
        let outcome = roles
            .run_until(async { Ok(()) }, Duration::from_millis(200))
            .await;
        assert!(outcome.is_ok());
    }
}

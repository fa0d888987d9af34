//! The deploy handler `paz up` gives gitd: build the pushed commit with the
//! builder, then roll the release out with the deployer, streaming both to
//! the pusher. Also the deployer as the verbs' [`verbs::Rollouts`] handle.

use builder::{BuildRequest, Builder};
use deployer::{Deployer, Step};
use futures::future::BoxFuture;
use gitd::{DeployHandler, Output, Push};

#[derive(Debug, Clone)]
pub(crate) struct BuildAndRelease {
    pub(crate) builder: Builder,
    pub(crate) deployer: Deployer,
}

impl DeployHandler for BuildAndRelease {
    fn deploy(&self, push: Push, output: Output) -> BoxFuture<'static, Result<(), String>> {
        let builder = self.builder.clone();
        let deployer = self.deployer.clone();
        Box::pin(async move {
            let (lines, forward) = relay(move |line: String| {
                let output = output.clone();
                async move {
                    output.line(line).await;
                    true
                }
            });
            let app = push.app.clone();
            let by = push.pusher.name.clone();
            let request = BuildRequest {
                app: push.app,
                git_sha: push.new_sha,
                repo: push.repo,
                git_env: push.git_env,
                by: push.pusher.name,
                may_use: push.pusher.apps,
            };
            let result = match builder.build(request, lines.clone()).await {
                // In a task of its own: a pusher who goes away must not cut a
                // rollout short (it finishes, or rolls back, either way).
                Ok(built) => {
                    let steps = as_lines(lines.clone());
                    tokio::spawn(async move {
                        deployer
                            .roll_out_recorded(&app, built.release, ("push", &by), steps)
                            .await
                            .map_err(|error| error.to_string())
                    })
                    .await
                    .unwrap_or_else(|error| Err(format!("the deploy task failed: {error}")))
                }
                Err(error) => Err(error.to_string()),
            };
            // Every line reaches the pusher before the verdict.
            drop(lines);
            let _ = forward.await;
            result
        })
    }
}

/// The release phase, run by the builder (the owner of Docker on a server).
#[derive(Debug, Clone)]
pub(crate) struct BuilderReleasePhase(pub(crate) Builder);

impl deployer::ReleasePhase for BuilderReleasePhase {
    fn run(
        &self,
        app: store::AppName,
        image: String,
        command: String,
        env: Vec<(String, String)>,
        report: tokio::sync::mpsc::Sender<Step>,
    ) -> BoxFuture<'static, Result<(), deployer::DeployError>> {
        let builder = self.0.clone();
        Box::pin(async move {
            let (lines, forward) = relay(move |line| {
                let report = report.clone();
                async move { report.send(Step::Output { line }).await.is_ok() }
            });
            let result = builder
                .run_release_command(app.as_str(), &image, &command, &env, &lines)
                .await
                .map_err(|error| deployer::DeployError::ReleasePhase(error.to_string()));
            drop(lines);
            let _ = forward.await;
            result
        })
    }
}

/// The deployer, as the verbs see it.
#[derive(Debug, Clone)]
pub(crate) struct Rollouts(pub(crate) Deployer);

impl verbs::Rollouts for Rollouts {
    fn roll_out(
        &self,
        app: store::AppName,
        n: u64,
        report: tokio::sync::mpsc::Sender<Step>,
    ) -> BoxFuture<'static, Result<(), deployer::DeployError>> {
        let deployer = self.0.clone();
        Box::pin(async move { deployer.roll_out(&app, n, &report).await })
    }

    fn restart(
        &self,
        app: store::AppName,
        report: tokio::sync::mpsc::Sender<Step>,
    ) -> BoxFuture<'static, Result<(), deployer::DeployError>> {
        let deployer = self.0.clone();
        Box::pin(async move { deployer.restart(&app, &report).await })
    }

    fn resolve_image(
        &self,
        reference: String,
    ) -> BoxFuture<'static, Result<store::ResolvedImage, deployer::DeployError>> {
        let deployer = self.0.clone();
        Box::pin(async move { deployer.resolve_image(&reference).await })
    }

    fn image_owner(&self, reference: &str) -> Option<store::AppName> {
        self.0.image_owner(reference)
    }
}

/// A channel for a rollout's steps whose text lines go on to `lines` (the
/// pusher's output).
fn as_lines(lines: tokio::sync::mpsc::Sender<String>) -> tokio::sync::mpsc::Sender<Step> {
    let (steps, _relayed) = relay(move |step: Step| {
        let lines = lines.clone();
        async move { lines.send(step.to_string()).await.is_ok() }
    });
    steps
}

/// A channel whose items `deliver` passes on, one at a time and in order,
/// until it says `false` or every sender is gone; the task ends then, so
/// awaiting it means that all went on.
fn relay<T, F>(
    mut deliver: impl FnMut(T) -> F + Send + 'static,
) -> (tokio::sync::mpsc::Sender<T>, tokio::task::JoinHandle<()>)
where
    T: Send + 'static,
    F: std::future::Future<Output = bool> + Send,
{
    let (sender, mut received) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        while let Some(item) = received.recv().await {
            if !deliver(item).await {
                break;
            }
        }
    });
    (sender, task)
}

//! The deploy handler `paz up` gives gitd: build the pushed commit with the
//! builder, streaming its lines to the pusher, and record the release. The
//! rollout itself is the deployer's (not part of this Paz yet).

use builder::{BuildRequest, Builder};
use futures::future::BoxFuture;
use gitd::{DeployHandler, Output, Push};

#[derive(Debug, Clone)]
pub(crate) struct BuildAndRelease {
    pub(crate) builder: Builder,
}

impl DeployHandler for BuildAndRelease {
    fn deploy(&self, push: Push, output: Output) -> BoxFuture<'static, Result<(), String>> {
        let builder = self.builder.clone();
        Box::pin(async move {
            let (lines, mut received) = tokio::sync::mpsc::channel(64);
            let forward = tokio::spawn(async move {
                while let Some(line) = received.recv().await {
                    output.line(line).await;
                }
            });
            let request = BuildRequest {
                app: push.app,
                git_sha: push.new_sha,
                repo: push.repo,
                git_env: push.git_env,
                by: push.pusher.name,
            };
            let built = builder.build(request, lines).await;
            // Every line reaches the pusher before the verdict.
            let _ = forward.await;
            built.map(|_| ())
        })
    }
}

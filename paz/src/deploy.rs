//! The deploy handler `paz up` gives gitd while Paz has no builder: it accepts
//! a push to the deploy branch, keeps the commit, and says plainly that nothing
//! was built or deployed.

use futures::future::BoxFuture;
use gitd::{DeployHandler, Output, Push};

#[derive(Debug)]
pub(crate) struct StoreOnly;

impl DeployHandler for StoreOnly {
    fn deploy(&self, push: Push, output: Output) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            output
                .line(format!(
                    "received {} on {} for {}; this Paz has no builder yet, so it was stored and not deployed",
                    &push.new_sha[..push.new_sha.len().min(12)],
                    push.branch,
                    push.app
                ))
                .await;
            Ok(())
        })
    }
}

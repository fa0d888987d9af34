//! Paz's deployer and scheduler: a release becomes units that are rolled out
//! instance by instance, and each unit is placed on a machine by the one
//! elected scheduler.

#![forbid(unsafe_code)]

pub mod cron;
mod error;
pub mod follow;
pub mod placement;
mod record;
pub mod rollout;
pub mod scheduler;

pub use error::DeployError;
pub use follow::{FollowConfig, ImageFollower};
pub use record::RolloutRecord;
pub use rollout::{DeployConfig, Deployer, ReleasePhase};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use store::Step;

//! What hosts keep and tell about their instances, shared by the agent that
//! keeps it and the server that asks for it: log [`Line`]s and the
//! [`Query`] that selects them, instance and host [`Stats`], and the
//! [`AgentClient`] that reads both from an agent's endpoint with the
//! cluster's agent secret.

#![forbid(unsafe_code)]

pub mod attach;
mod client;
mod exposition;
mod line;
mod stats;

pub use client::{AgentClient, TelemetryError};
pub use exposition::{to_text_format, TEXT_FORMAT};
pub use line::{Event, Line, MachineLine, Query, Source};
pub use stats::{ContainerStats, HostStats, Stats};

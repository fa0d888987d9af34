//! Paz's cluster state in etcd: the only crate that talks to etcd.
//!
//! - [`Keys`] is the key layout of DESIGN.md, typed: each key knows its record.
//! - [`Store`] gets, lists, puts and deletes typed records under a timeout, and
//!   applies [`Transaction`]s whose conflicts are typed ([`ConflictKind`]).
//! - [`Lease`] and [`Registration`] tie keys to the life of their owner.
//! - [`Watch`] streams typed changes under a prefix and survives reconnects.
//! - [`LocalEtcd`] runs a private etcd server as a child process.

#![forbid(unsafe_code)]

mod abandoned;
mod client;
pub mod cron;
mod error;
mod etcd_tls;
mod hook_key;
pub mod images;
mod keys;
mod lease;
mod local_etcd;
pub mod names;
pub mod records;
mod steps;
mod tokens;
mod watch;

pub use abandoned::ABANDONED_BUILD;
pub use client::{Entry, Listing, Store, StoreConfig, Transaction, Versioned, UPDATE_TRIES};
pub use error::{ConflictKind, Result, StoreError};
pub use etcd_tls::{EtcdTls, EtcdTlsError, TlsFiles};
pub use hook_key::HookKey;
pub use images::{ImageResolver, ResolvedImage};
pub use keys::{fingerprint_segment, Key, Keys, Prefix, ServiceKey};
pub use lease::{Lease, Registration};
pub use local_etcd::{LocalEtcd, LocalEtcdError};
pub use names::{AppName, NameError};
pub use records::Record;
pub use steps::{Rollout, RolloutStatus, Step};
pub use tokens::TokenCache;
pub use watch::{SnapshotReason, Watch, WatchEvent};

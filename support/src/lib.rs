//! Small helpers that several Paz crates need and that are not Paz's own
//! business: files written whole or not at all, one async lock per key, and
//! the clock.

#![forbid(unsafe_code)]

pub mod clock;
pub mod fs;
pub mod locks;
pub mod slots;

pub use clock::{now, Clock};
pub use fs::{write_file, write_private_file};
pub use locks::KeyedLocks;
pub use slots::Slots;

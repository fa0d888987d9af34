//! The clock: seconds since the Unix epoch, from the system or, in tests
//! that compare output with a snapshot, fixed.

/// Where "now" comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// Always this many seconds since the epoch.
    Fixed(u64),
}

impl Clock {
    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => now(),
            Clock::Fixed(seconds) => *seconds,
        }
    }
}

/// Seconds since the Unix epoch by the system's clock (0 before 1970).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_stands_still_and_the_system_one_moves_on() {
        assert_eq!(Clock::Fixed(1_700_000_000).now(), 1_700_000_000);
        assert!(Clock::System.now() > 1_700_000_000);
    }
}

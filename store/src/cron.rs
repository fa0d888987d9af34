//! Cron schedules as `app.json`'s `cron` list gives them (Dokku's format:
//! five fields, minute hour day-of-month month day-of-week, or `@daily`
//! and the like), in UTC, read by `croner`.

use std::str::FromStr;

/// Why a schedule is refused.
fn parse(schedule: &str) -> Result<croner::Cron, String> {
    let shorthand = schedule.trim_start().starts_with('@');
    if !shorthand && schedule.split_whitespace().count() != 5 {
        return Err(format!(
            "`{}` is not a cron schedule: use five fields, minute hour day month weekday (`0 3 * * *`), or @hourly, @daily, @weekly, @monthly",
            schedule.escape_debug()
        ));
    }
    croner::Cron::from_str(schedule).map_err(|error| {
        format!(
            "`{}` is not a cron schedule ({error}): use five fields, minute hour day month weekday (`0 3 * * *`)",
            schedule.escape_debug()
        )
    })
}

/// Checks `schedule`; the error says what is wrong.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    parse(schedule).map(|_| ())
}

/// The first time `schedule` names after `after` (seconds since the Unix
/// epoch, UTC), if there is one.
pub fn next_after(schedule: &str, after: u64) -> Option<u64> {
    let cron = parse(schedule).ok()?;
    let after = chrono::DateTime::from_timestamp(i64::try_from(after).ok()?, 0)?;
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_read_as_cron_reads_them_in_utc() {
        // 2026-12-01T02:59:30Z
        let at = 1_796_093_970;
        assert_eq!(next_after("0 3 * * *", at), Some(1_796_094_000));
        assert_eq!(next_after("* * * * *", at), Some(1_796_094_000));
        assert_eq!(
            next_after("*/15 * * * *", 1_796_094_000),
            Some(1_796_094_900)
        );
        assert_eq!(next_after("@hourly", at), Some(1_796_094_000));
        for bad in [
            "",
            "lots",
            "* * * *",
            "61 * * * *",
            "* * * * * *",
            "0 3 * * mon-",
        ] {
            assert!(check_schedule(bad).is_err(), "{bad}");
            assert_eq!(next_after(bad, at), None, "{bad}");
        }
        assert!(check_schedule("0 3 * * *").is_ok());
    }
}

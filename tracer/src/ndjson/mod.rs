//! NDJSON schema 1 (docs/json-schema.md): the writer (one complete object per line, flushed
//! per line) and the reader `tracer report` replays, kept side by side so they agree.

pub mod reader;
pub mod writer;

use std::time::SystemTime;

use time::{OffsetDateTime, macros::format_description};

pub use writer::Writer;

pub const SCHEMA: u64 = 1;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// Wall-clock time of day in UTC, `14:23:05`, for people reading a view or a report.
pub fn clock(t: SystemTime) -> String {
    let fmt = format_description!("[hour]:[minute]:[second]");
    OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "??:??:??".into())
}

/// Parse an RFC 3339 time (the meta line's `started_at`).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_millis_and_clock_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(51_785_500);
        assert_eq!(rfc3339(t), "1970-01-01T14:23:05.500Z");
        assert_eq!(clock(t), "14:23:05");
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
    }
}

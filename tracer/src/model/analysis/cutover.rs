//! The cutover: the moment the move was declared. Marked by `--cutover-at`, the live view's `c`
//! key or the first DNS change; the first mark wins, later ones are recorded but do not move it.

use std::time::{Duration, SystemTime};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// `--cutover-at`: now, or a point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutoverAt {
    Now,
    At(SystemTime),
}

pub fn parse_cutover_at(s: &str) -> Result<CutoverAt, String> {
    if s == "now" {
        return Ok(CutoverAt::Now);
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| CutoverAt::At(t.into()))
        .map_err(|_| {
            format!("'{s}' is neither `now` nor an RFC 3339 time (e.g. 2026-11-23T11:22:19Z)")
        })
}

/// Milliseconds since the run started at which `at` falls; 0 if before the start.
pub fn offset_ms(started: SystemTime, at: SystemTime) -> u64 {
    at.duration_since(started)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Who declared the cutover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutoverSource {
    /// `--cutover-at`.
    Flag,
    /// The live view's `c` key.
    Key,
    /// The first answer change of a `--watch-dns` name.
    Dns,
    /// A recording whose cutover event names no source we know.
    Recorded,
}

impl CutoverSource {
    pub fn name(self) -> &'static str {
        match self {
            CutoverSource::Flag => "flag",
            CutoverSource::Key => "key",
            CutoverSource::Dns => "dns",
            CutoverSource::Recorded => "event",
        }
    }

    pub fn parse(s: &str) -> CutoverSource {
        match s {
            "flag" => CutoverSource::Flag,
            "key" => CutoverSource::Key,
            "dns" => CutoverSource::Dns,
            _ => CutoverSource::Recorded,
        }
    }
}

impl std::fmt::Display for CutoverSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The declared cutover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cutover {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    pub source: CutoverSource,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_or_rfc3339_or_a_clear_error() {
        assert_eq!(parse_cutover_at("now"), Ok(CutoverAt::Now));
        let t = parse_cutover_at("1970-01-01T00:00:10Z").unwrap();
        assert_eq!(
            t,
            CutoverAt::At(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
        let e = parse_cutover_at("yesterday").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn offsets_clamp_before_start() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(offset_ms(start, start + Duration::from_millis(1500)), 1500);
        assert_eq!(offset_ms(start, SystemTime::UNIX_EPOCH), 0);
    }
}

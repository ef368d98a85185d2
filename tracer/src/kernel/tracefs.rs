//! tracefs: make sure it is mounted (a fresh machine may not have it), and read the field offsets
//! of `sock:inet_sock_set_state` from its `format` file instead of hard-coding them.

use std::path::Path;

use tracer_common::TpOffsets;

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const EVENT: &str = "events/sock/inet_sock_set_state/format";

/// Where tracefs is, and whether tracer had to mount it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracefs {
    pub root: String,
    pub mounted_by_us: bool,
}

fn has_event(root: &str) -> bool {
    Path::new(root).join(EVENT).exists()
}

/// Find tracefs, mounting it at /sys/kernel/tracing when it is absent.
pub fn ensure() -> Result<Tracefs, String> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if has_event(root) {
            return Ok(Tracefs {
                root: root.into(),
                mounted_by_us: false,
            });
        }
    }
    if let Err(err) = super::mount_fs("tracefs", Path::new(TRACEFS)) {
        return Err(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({err}): run `mount -t tracefs nodev {TRACEFS}`"
        ));
    }
    if !has_event(TRACEFS) {
        return Err(format!(
            "tracefs mounted at {TRACEFS} has no sock:inet_sock_set_state event: this kernel lacks the tracepoint (needs Linux 4.16+)"
        ));
    }
    Ok(Tracefs {
        root: TRACEFS.into(),
        mounted_by_us: true,
    })
}

/// The fields of a tracepoint `format` description: (name, offset, size), array suffixes and
/// pointer stars dropped from the name.
pub fn fields(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|line| {
        let rest = line.trim().strip_prefix("field:")?;
        let value = |key: &str| {
            rest.split(';')
                .find_map(|p| p.trim().strip_prefix(key))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        let decl = rest.split(';').next().unwrap_or("").trim();
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("");
        let name = name.split('[').next().unwrap_or("");
        Some((name, value("offset:")?, value("size:").unwrap_or(0)))
    })
}

/// Parse the offsets of the fields tracer reads from a tracepoint `format` description.
pub fn parse_format(text: &str) -> Result<TpOffsets, String> {
    let mut o = TpOffsets::default();
    let mut found = 0u32;
    for (name, offset, size) in fields(text) {
        let slot = match name {
            "skaddr" => &mut o.skaddr,
            "oldstate" => &mut o.oldstate,
            "newstate" => &mut o.newstate,
            "sport" => &mut o.sport,
            "dport" => &mut o.dport,
            "family" => &mut o.family,
            "protocol" => &mut o.protocol,
            "saddr" => &mut o.saddr,
            "daddr" => &mut o.daddr,
            "saddr_v6" => &mut o.saddr_v6,
            "daddr_v6" => &mut o.daddr_v6,
            _ => continue,
        };
        *slot = offset;
        o.record_len = o.record_len.max(offset + size);
        found += 1;
    }
    if found != 11 {
        return Err(format!(
            "sock:inet_sock_set_state has an unexpected format ({found} of 11 fields found)"
        ));
    }
    Ok(o)
}

/// Offsets of `sock:inet_sock_set_state` on this kernel.
pub fn offsets(fs: &Tracefs) -> Result<TpOffsets, String> {
    let path = Path::new(&fs.root).join(EVENT);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_format(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";

    #[test]
    fn parses_the_6_18_format() {
        let o = parse_format(FORMAT_6_18).unwrap();
        assert_eq!(
            (o.skaddr, o.oldstate, o.newstate, o.sport, o.dport, o.family),
            (8, 16, 20, 24, 26, 28)
        );
        assert_eq!(
            (o.protocol, o.saddr, o.daddr, o.saddr_v6, o.daddr_v6),
            (30, 32, 36, 40, 56)
        );
        assert_eq!(o.record_len, 72, "the end of daddr_v6");
    }

    #[test]
    fn a_missing_field_is_an_error() {
        let text = FORMAT_6_18.replace("daddr_v6", "other");
        assert!(parse_format(&text).unwrap_err().contains("10 of 11"));
    }
}

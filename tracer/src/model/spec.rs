//! `--old`/`--new` SPECs: an address, a CIDR prefix, a hostname (resolved once at start, its
//! addresses shown) or `@file` with one SPEC a line and `#` comments. Repeatable and
//! comma-separated. Resolution is injected so the parsing is tested without DNS.

use std::net::IpAddr;

use super::addr::Prefix;

/// One SPEC as the user wrote it, with the prefixes it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub text: String,
    pub prefixes: Vec<Prefix>,
    /// True when `text` was a hostname resolved at start.
    pub resolved: bool,
}

fn looks_like_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && !s.starts_with('-')
        && !s.starts_with('.')
}

fn one(text: &str, resolve: &dyn Fn(&str) -> Result<Vec<IpAddr>, String>) -> Result<Spec, String> {
    let looks_numeric = text.contains('/')
        || text.contains(':')
        || text.chars().all(|c| c.is_ascii_digit() || c == '.');
    if looks_numeric {
        return Ok(Spec {
            text: text.into(),
            prefixes: vec![Prefix::parse(text)?],
            resolved: false,
        });
    }
    if !looks_like_hostname(text) {
        return Err(format!(
            "'{text}' is not an IP address, CIDR prefix or hostname"
        ));
    }
    let mut addrs = resolve(text)?;
    if addrs.is_empty() {
        return Err(format!("hostname '{text}' resolved to no address"));
    }
    addrs.sort();
    addrs.dedup();
    Ok(Spec {
        text: text.into(),
        prefixes: addrs.into_iter().map(Prefix::host).collect(),
        resolved: true,
    })
}

/// Parse every `--old`/`--new` argument. `read` loads an `@file`.
pub fn parse(
    args: &[String],
    resolve: &dyn Fn(&str) -> Result<Vec<IpAddr>, String>,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Vec<Spec>, String> {
    let mut out = Vec::new();
    for arg in args {
        for item in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some(path) = item.strip_prefix('@') {
                let text = read(path)?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    out.push(one(line, resolve).map_err(|e| format!("{path}:{}: {e}", n + 1))?);
                }
            } else {
                out.push(one(item, resolve)?);
            }
        }
    }
    Ok(out)
}

/// Resolve through the system resolver (getaddrinfo), once.
pub fn system_resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .map(|it| it.map(|sa| sa.ip()).collect())
        .map_err(|e| format!("cannot resolve hostname '{host}': {e}"))
}

pub fn read_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read SPEC file '{path}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_dns(host: &str) -> Result<Vec<IpAddr>, String> {
        match host {
            "db.example" => Ok(vec![
                "127.10.0.2".parse().unwrap(),
                "127.10.0.1".parse().unwrap(),
            ]),
            "empty.example" => Ok(vec![]),
            _ => Err(format!("cannot resolve hostname '{host}'")),
        }
    }

    fn no_files(p: &str) -> Result<String, String> {
        match p {
            "sets.txt" => Ok("# old side\n127.10.0.0/16\n\n db.example # primary\n".into()),
            "bad.txt" => Ok("127.10.0.0/16\n10.0.0.0/99\n".into()),
            _ => Err(format!("cannot read SPEC file '{p}'")),
        }
    }

    fn run(args: &[&str]) -> Result<Vec<Spec>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, &fake_dns, &no_files)
    }

    #[test]
    fn addresses_prefixes_and_commas() {
        let s = run(&["127.10.0.0/16,127.10.9.9", "fd00::/64"]).unwrap();
        let texts: Vec<String> = s.iter().map(|s| s.prefixes[0].to_string()).collect();
        assert_eq!(texts, ["127.10.0.0/16", "127.10.9.9/32", "fd00::/64"]);
        assert!(s.iter().all(|s| !s.resolved));
    }

    #[test]
    fn hostnames_resolve_once_sorted() {
        let s = run(&["db.example"]).unwrap();
        assert!(s[0].resolved);
        let p: Vec<String> = s[0].prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(p, ["127.10.0.1/32", "127.10.0.2/32"]);
        assert!(
            run(&["nope.example"])
                .unwrap_err()
                .contains("cannot resolve")
        );
        assert!(run(&["empty.example"]).unwrap_err().contains("no address"));
    }

    #[test]
    fn files_with_comments_and_line_numbers() {
        let s = run(&["@sets.txt"]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].text, "db.example");
        let e = run(&["@bad.txt"]).unwrap_err();
        assert!(e.starts_with("bad.txt:2:"), "{e}");
        assert!(run(&["@missing"]).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(run(&["300.1.2.3"]).is_err());
        assert!(run(&["not a host!"]).unwrap_err().contains("not an IP"));
        assert!(run(&["10.0.0.0/40"]).unwrap_err().contains("prefix length"));
    }
}

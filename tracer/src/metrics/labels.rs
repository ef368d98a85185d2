//! `--label key=value`: extra labels put on every series (site, service, ...). Names are checked
//! here so a typo fails at start, not as a scrape error in Prometheus later.

/// Labels tracer sets itself: a user label of the same name would make series ambiguous.
pub const RESERVED: &[&str] = &[
    "cohort",
    "direction",
    "basis",
    "map",
    "destination",
    "pid",
    "comm",
    "connect",
    "state",
    "version",
    "job",
    "instance",
];

/// A valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__")
}

/// One `key=value` (the value may be empty, and may hold any text: it is escaped on output).
pub fn parse(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not key=value (example: --label site=fra1)"))?;
    if !valid_name(k) {
        return Err(format!(
            "'{k}' is not a label name: use letters, digits and _, not starting with a digit or __"
        ));
    }
    if RESERVED.contains(&k) {
        return Err(format!(
            "label '{k}' is set by tracer (or by Prometheus): choose another name"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The whole set: each name at most once.
pub fn check(labels: &[(String, String)]) -> Result<(), String> {
    for (i, (k, _)) in labels.iter().enumerate() {
        if labels[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(format!("--label {k} is given twice: give each label once"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(valid_name("site"));
        assert!(valid_name("_x1"));
        assert!(!valid_name("1site"));
        assert!(!valid_name("si-te"));
        assert!(!valid_name("__name__"));
        assert!(!valid_name(""));
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse("site=fra 1=x").unwrap(),
            ("site".into(), "fra 1=x".into())
        );
        assert_eq!(parse("empty=").unwrap(), ("empty".into(), String::new()));
        assert!(parse("novalue").unwrap_err().contains("key=value"));
        assert!(parse("bad-name=1").unwrap_err().contains("label name"));
        assert!(parse("cohort=old").unwrap_err().contains("set by tracer"));
    }

    #[test]
    fn duplicates_are_refused() {
        let l = |k: &str| (k.to_string(), "v".to_string());
        assert!(check(&[l("a"), l("b")]).is_ok());
        assert!(check(&[l("a"), l("a")]).unwrap_err().contains("twice"));
    }
}

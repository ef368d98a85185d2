use std::path::Path;

use super::*;

fn err(text: &str) -> String {
    let e = parse(text, Path::new("/nonexistent-dir")).err().unwrap();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn an_empty_file_serves_plain_http_without_auth() {
    let c = parse("", Path::new(".")).unwrap();
    assert!(c.tls.is_none() && c.users.is_empty() && c.headers.is_empty());
    let c = parse("basic_auth_users: {}\n", Path::new(".")).unwrap();
    assert!(c.users.is_empty());
}

#[test]
fn users_need_bcrypt_hashes() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let c = parse(
        &format!("basic_auth_users:\n  alice: {hash}\n"),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(c.users.get("alice"), Some(&hash));
    // The `$2y$` form htpasswd writes is a bcrypt hash too.
    let y = hash.replacen("$2b$", "$2y$", 1);
    assert!(parse(&format!("basic_auth_users:\n  a: {y}\n"), Path::new(".")).is_ok());
    let e = err("basic_auth_users:\n  alice: plaintext\n");
    assert!(
        e.contains("basic_auth_users.alice") && e.contains("htpasswd"),
        "{e}"
    );
}

#[test]
fn mistakes_name_the_key_and_the_fix() {
    let e = err("tls_server_config:\n  certfile: x\n");
    assert!(e.contains("certfile"), "{e}");
    let e = err("tls_server_config:\n  key_file: k.pem\n");
    assert!(e.contains("no cert_file"), "{e}");
    let e = err("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n");
    assert!(
        e.contains("cert_file") && e.contains("/nonexistent-dir/c.pem"),
        "{e}"
    );
    let e = err("tls_server_config:\n  cert: x\n  cert_file: y\n");
    assert!(e.contains("keep one"), "{e}");
    let e = err("tls_server_config:\n  cert: not pem\n  key: not pem\n");
    assert!(e.contains("tls_server_config.cert"), "{e}");
    let e = err("rate_limit:\n  burst: 2\n");
    assert!(e.contains("rate_limit is not supported"), "{e}");
    let e = err("http_server_config:\n  headers:\n    X-Evil: 1\n");
    assert!(e.contains("X-Evil"), "{e}");
    let e = err("basic_auth_users: [a, b]\n");
    assert!(e.contains("basic_auth_users"), "{e}");
    let e = err(": : :\n");
    assert!(e.contains("web config format"), "{e}");
}

#[test]
fn tls_versions_and_client_certificates() {
    assert_eq!(versions(None, None).unwrap().len(), 2);
    assert_eq!(
        versions(Some("TLS13"), None).unwrap(),
        vec![&rustls::version::TLS13]
    );
    assert!(
        versions(Some("TLS10"), None)
            .unwrap_err()
            .contains("below 1.2")
    );
    assert!(
        versions(Some("TLS13"), Some("TLS12"))
            .unwrap_err()
            .contains("swap")
    );
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let inline = |extra: &str| {
        let ind = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}{extra}",
            ind(&cert),
            ind(&key)
        )
    };
    assert!(parse(&inline(""), Path::new(".")).unwrap().tls.is_some());
    let e = parse(
        &inline("  client_auth_type: RequireAndVerifyClientCert\n"),
        Path::new("."),
    )
    .err()
    .unwrap();
    assert!(e.contains("needs client_ca_file"), "{e}");
    let e = parse(
        &inline("  client_auth_type: RequestClientCert\n"),
        Path::new("."),
    )
    .err()
    .unwrap();
    assert!(e.contains("RequireAndVerifyClientCert"), "{e}");
    let ca: String = cert.lines().map(|l| format!("    {l}\n")).collect();
    let with_ca = inline(&format!(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n{ca}"
    ));
    assert!(parse(&with_ca, Path::new(".")).unwrap().tls.is_some());
}

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn status(reply: &str) -> u16 {
    reply.split(' ').nth(1).unwrap().parse().unwrap()
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").unwrap().1
}

#[test]
fn serves_the_latest_text_in_the_negotiated_format() {
    let ep = bind("127.0.0.1:0", None).unwrap();
    assert_eq!(ep.scheme(), "http");
    let addr = ep.local;
    let latest = Latest::default();
    ep.serve(latest.clone()).unwrap();
    latest.set("prom 1\n".into(), "om 1\n# EOF\n".into());
    let close = "Connection: close\r\n\r\n";
    let r = get(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
    );
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("version=0.0.4"), "{r}");
    assert_eq!(body(&r), "prom 1\n");
    let r = get(
        addr,
        &format!(
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n{close}"
        ),
    );
    assert_eq!(body(&r), "om 1\n# EOF\n", "{r}");
    latest.set("prom 2\n".into(), String::new());
    assert_eq!(
        body(&get(addr, "GET /metrics HTTP/1.0\r\n\r\n")),
        "prom 2\n"
    );
    let r = get(addr, &format!("HEAD /metrics HTTP/1.1\r\n{close}"));
    assert!(status(&r) == 200 && body(&r).is_empty(), "{r}");
    assert_eq!(
        status(&get(addr, &format!("GET /nope HTTP/1.1\r\n{close}"))),
        404
    );
    let r = get(addr, &format!("POST /metrics HTTP/1.1\r\n{close}"));
    assert_eq!(status(&r), 405, "{r}");
    assert!(r.to_ascii_lowercase().contains("allow: get, head"), "{r}");
    assert_eq!(status(&get(addr, "garbage\r\n\r\n")), 400);
}

#[test]
fn a_port_in_use_is_one_line_naming_the_fix() {
    let first = bind("127.0.0.1:0", None).unwrap();
    let e = bind(&first.local.to_string(), None).err().unwrap();
    assert!(e.contains("in use") && e.contains("free port"), "{e}");
    assert!(!e.contains('\n'));
    let e = bind("not-an-address", None).err().unwrap();
    assert!(e.contains("--metrics not-an-address"), "{e}");
}

/// A TLS client that trusts only `ca`; one request, the whole reply.
fn tls_get(addr: SocketAddr, ca: &CertificateDer<'static>, request: String) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8(out).unwrap()
    })
}

#[test]
fn tls_with_basic_auth_lets_in_only_the_configured_user() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("tracer-webcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let cfg = dir.join("web.yml");
    std::fs::write(
        &cfg,
        format!(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  prom: {hash}\n"
        ),
    )
    .unwrap();
    let ep = bind("127.0.0.1:0", Some(&cfg)).unwrap();
    assert_eq!(ep.scheme(), "https");
    let addr = ep.local;
    let latest = Latest::default();
    ep.serve(latest.clone()).unwrap();
    latest.set("prom 1\n".into(), "om 1\n".into());
    let ca = ck.cert.der().clone();
    let req = |auth: Option<&str>| {
        let h = auth.map_or(String::new(), |a| {
            format!("Authorization: Basic {}\r\n", STANDARD.encode(a))
        });
        format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{h}Connection: close\r\n\r\n")
    };
    let r = tls_get(addr, &ca, req(None));
    assert_eq!(status(&r), 401, "{r}");
    assert!(
        r.to_ascii_lowercase().contains("www-authenticate: basic"),
        "{r}"
    );
    assert_eq!(status(&tls_get(addr, &ca, req(Some("prom:bad")))), 401);
    assert_eq!(status(&tls_get(addr, &ca, req(Some("eve:pw")))), 401);
    let r = tls_get(addr, &ca, req(Some("prom:pw")));
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body(&r), "prom 1\n");
    assert!(
        r.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{r}"
    );
    // Plain HTTP to the TLS port gets no metrics.
    let plain = {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req(Some("prom:pw")).as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(!plain.contains("prom 1"), "{plain}");
    let _ = std::fs::remove_dir_all(&dir);
}

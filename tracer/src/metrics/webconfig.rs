//! `--web-config FILE`: the web configuration file of Prometheus exporters (exporter-toolkit's
//! format: `tls_server_config`, `http_server_config.headers`, `basic_auth_users` with bcrypt
//! hashes), so a fleet secures tracer the way it secures node_exporter. Read and checked once,
//! before anything is traced: every mistake is one line naming the key and the fix.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// What the file asks for, checked and ready to serve with.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// TLS when `tls_server_config` is given.
    pub tls: Option<Arc<ServerConfig>>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<Tls>,
    http_server_config: Option<Http>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    rate_limit: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert: Option<String>,
    key: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    client_allowed_sans: Option<Value>,
    cipher_suites: Option<Value>,
    curve_preferences: Option<Value>,
    prefer_server_cipher_suites: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Http {
    /// Only HTTP/1.1 is served (Prometheus scrapes with it by default); accepted for
    /// compatibility with files written for other exporters.
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The headers exporter-toolkit allows in `http_server_config.headers`.
const HEADERS: &[&str] = &[
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

/// Read and check `path`.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let at = format!("--web-config {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {at}: {e}: give the path of a web config file (exporter-toolkit format)"
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|e| format!("{at}: {}", e.replace('\n', " ")))
}

/// Check the file's text; relative file names are taken from `base` (the file's directory).
pub fn parse(text: &str, base: &Path) -> Result<WebConfig, String> {
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            format!("{e}: write the exporter-toolkit web config format (tls_server_config, http_server_config, basic_auth_users)")
        })?
    };
    if file.rate_limit.is_some() {
        return Err(unsupported("rate_limit"));
    }
    let mut cfg = WebConfig::default();
    for (user, hash) in file.basic_auth_users {
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(format!(
                "basic_auth_users.{user}: not a bcrypt hash: make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
            ));
        }
        cfg.users.insert(user, hash);
    }
    if let Some(http) = file.http_server_config {
        for (name, value) in http.headers {
            let Some(known) = HEADERS.iter().find(|h| h.eq_ignore_ascii_case(&name)) else {
                return Err(format!(
                    "http_server_config.headers.{name}: not one of {}: remove it",
                    HEADERS.join(", ")
                ));
            };
            if !value.is_empty() {
                cfg.headers.push((known.to_string(), value));
            }
        }
    }
    cfg.tls = file.tls_server_config.map(|t| tls(t, base)).transpose()?;
    Ok(cfg)
}

fn unsupported(key: &str) -> String {
    format!("{key} is not supported by tracer: remove it (the rustls defaults apply)")
}

/// PEM text given inline or by file name; exactly one of the two.
fn pem(
    inline: Option<String>,
    file: Option<String>,
    key: &str,
    base: &Path,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: both {key} and {key}_file given: keep one"
        )),
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(name)) => {
            let p = base.join(&name);
            std::fs::read(&p).map(Some).map_err(|e| {
                format!(
                    "tls_server_config.{key}_file {}: {e}: give a readable PEM file (relative names are taken from the config file's directory)",
                    p.display()
                )
            })
        }
        (None, None) => Ok(None),
    }
}

fn tls(t: Tls, base: &Path) -> Result<Arc<ServerConfig>, String> {
    for (key, v) in [
        ("client_allowed_sans", &t.client_allowed_sans),
        ("cipher_suites", &t.cipher_suites),
        ("curve_preferences", &t.curve_preferences),
        (
            "prefer_server_cipher_suites",
            &t.prefer_server_cipher_suites,
        ),
    ] {
        if v.is_some() {
            return Err(unsupported(&format!("tls_server_config.{key}")));
        }
    }
    let cert = pem(t.cert, t.cert_file, "cert", base)?
        .ok_or("tls_server_config: no cert_file (or cert): give the server certificate (PEM)")?;
    let key = pem(t.key, t.key_file, "key", base)?
        .ok_or("tls_server_config: no key_file (or key): give the server's private key (PEM)")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert: not PEM certificates ({e}): give the PEM file of the server certificate"))?;
    if chain.is_empty() {
        return Err("tls_server_config.cert: no certificate in it: give the PEM file of the server certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        format!("tls_server_config.key: no PEM private key ({e}): give the server's unencrypted private key")
    })?;
    let versions = versions(t.min_version.as_deref(), t.max_version.as_deref())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let ca = pem(t.client_ca, t.client_ca_file, "client_ca", base)?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match (auth, ca) {
        ("NoClientCert", _) => builder.with_no_client_auth(),
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                let c = c.map_err(|e| format!("tls_server_config.client_ca: not PEM ({e}): give the CA certificate of the scrapers"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls_server_config.client_ca: {e}"))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == "VerifyClientCertIfGiven" {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v
                .build()
                .map_err(|e| format!("tls_server_config.client_ca: {e}"))?;
            builder.with_client_cert_verifier(v)
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth} needs client_ca_file: give the CA that signs the scrapers' certificates"
            ));
        }
        (other, _) => {
            return Err(format!(
                "tls_server_config.client_auth_type {other}: use NoClientCert, RequireAndVerifyClientCert or VerifyClientCertIfGiven (the others do not verify the client)"
            ));
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_server_config: the key does not fit the certificate or is not usable ({e}): give the matching pair"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |key: &str, v: &str| match v {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key} {v}: TLS below 1.2 is not offered (rustls): use TLS12 or TLS13"
        )),
        other => Err(format!(
            "tls_server_config.{key} {other}: use TLS12 or TLS13"
        )),
    };
    let lo = min
        .map(|v| rank("min_version", v))
        .transpose()?
        .unwrap_or(12);
    let hi = max
        .map(|v| rank("max_version", v))
        .transpose()?
        .unwrap_or(13);
    if lo > hi {
        return Err("tls_server_config: min_version is above max_version: swap them".into());
    }
    let mut out = vec![];
    if lo <= 12 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= 13 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "webconfig_tests.rs"]
mod tests;

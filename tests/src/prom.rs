//! A real Prometheus server (Debian's package) for the metrics end-to-end test: started on
//! loopback with a temporary config and storage, queried over its HTTP API, killed on drop.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{tmp_path, tool};

/// One series of an instant query: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

/// A free loopback port (bound, read, released: Prometheus binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `GET path` over HTTP/1.0 (so the reply is never chunked); returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status: {head}")))?;
    Ok((status, body.to_string()))
}

/// Percent-encoding of a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Start Prometheus scraping `target` (plain HTTP, job `tracer`) every second, and wait
    /// (bounded) until it is ready.
    pub fn start(target: SocketAddr) -> Prometheus {
        Self::start_with(
            &format!("  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n"),
            &[],
        )
    }

    /// Start Prometheus with these `scrape_configs` entries (YAML list items, indented by two)
    /// and rule files, scraping and evaluating every second; wait (bounded) until it is ready.
    pub fn start_with(scrape_configs: &str, rule_files: &[PathBuf]) -> Prometheus {
        let bin = tool("prometheus");
        let dir = tmp_path("prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        let rules: String = rule_files
            .iter()
            .map(|p| format!("  - '{}'\n", p.display()))
            .collect();
        let rules = if rules.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rules}")
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rules}scrape_configs:\n{scrape_configs}"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, addr, log };
        let t0 = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(addr, "/-/ready") {
                break;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("prometheus exited ({st}): {}", p.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "prometheus not ready in 60 s: {}",
                p.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<what>` (targets, rules, ...) as JSON.
    pub fn api(&self, what: &str) -> Value {
        let (status, body) =
            http_get(self.addr, &format!("/api/v1/{what}")).expect("query prometheus");
        assert_eq!(status, 200, "{what}: {body}");
        serde_json::from_str(&body).expect("prometheus answers JSON")
    }

    /// An instant query (at `time`, Unix seconds, or now) through `/api/v1/query`.
    pub fn query(&self, q: &str, time: Option<f64>) -> Vec<Sample> {
        let mut path = format!("/api/v1/query?query={}", encode(q));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let (status, body) = http_get(self.addr, &path).expect("query prometheus");
        let v: Value = serde_json::from_str(&body).expect("prometheus answers JSON");
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(v["data"]["resultType"], "vector", "{q}: {body}");
        v["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value: f64 = r["value"][1]
                    .as_str()
                    .expect("value")
                    .parse()
                    .expect("number");
                (labels, value)
            })
            .collect()
    }

    /// The one value of a query that must return exactly one series.
    pub fn one(&self, q: &str, time: Option<f64>) -> f64 {
        let r = self.query(q, time);
        assert_eq!(r.len(), 1, "{q} at {time:?}: {r:?}");
        r[0].1
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

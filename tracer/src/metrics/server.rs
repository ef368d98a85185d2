//! A minimal HTTP/1.1 responder for `GET /metrics`. Hand-written on std threads rather than
//! hyper: scrapes are a few per minute, the whole protocol needed is one request line, one
//! header and a `Connection: close` reply, and a thread of its own keeps serving whatever loop
//! (headless or live view) drives the sampler. A scrape only clones the latest rendered text.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use super::exposition::Format;

/// The latest exposition in both formats, swapped in by the sink after every snapshot.
#[derive(Clone, Default)]
pub struct Latest(Arc<Mutex<(Arc<String>, Arc<String>)>>);

impl Latest {
    pub fn set(&self, prometheus: String, openmetrics: String) {
        let pair = (Arc::new(prometheus), Arc::new(openmetrics));
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = pair;
    }

    pub fn get(&self, fmt: Format) -> Arc<String> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match fmt {
            Format::Prometheus => g.0.clone(),
            Format::OpenMetrics => g.1.clone(),
        }
    }
}

/// Clients served at once; more get 503 (a scraper retries next interval).
const MAX_CLIENTS: usize = 8;
const MAX_HEAD: usize = 8192;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound listener, not yet serving: binding comes before tracing starts, so a port in use is
/// reported before any program is loaded.
pub struct Endpoint {
    listener: TcpListener,
    pub local: SocketAddr,
}

pub fn bind(spec: &str) -> Result<Endpoint, String> {
    let listener = TcpListener::bind(spec).map_err(|e| {
        format!("cannot listen on --metrics {spec}: {e}: give ADDR:PORT of this host with a free port (e.g. 127.0.0.1:9464)")
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics {spec}: {e}"))?;
    Ok(Endpoint { listener, local })
}

impl Endpoint {
    /// Serve from `latest` on a thread of its own for the rest of the process.
    pub fn serve(self, latest: Latest) -> Result<(), String> {
        let active = Arc::new(AtomicUsize::new(0));
        thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for conn in self.listener.incoming() {
                    let Ok(stream) = conn else { continue };
                    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                        active.fetch_sub(1, Ordering::SeqCst);
                        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                        let _ = reply(&stream, 503, "text/plain", b"busy\n", false, &[]);
                        continue;
                    }
                    let (latest, done) = (latest.clone(), active.clone());
                    let spawned =
                        thread::Builder::new()
                            .name("metrics-conn".into())
                            .spawn(move || {
                                let _ = handle(stream, &latest);
                                done.fetch_sub(1, Ordering::SeqCst);
                            });
                    if spawned.is_err() {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the metrics server thread: {e}"))
    }
}

/// The parts of a request head we use.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub accept: String,
}

/// Parse a request head (up to the blank line). None if it is not HTTP.
pub fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    if !first.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Some(Request {
        method,
        path,
        accept,
    })
}

fn read_head(mut s: &TcpStream) -> io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn reply(
    mut s: &TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
    head_only: bool,
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if !head_only {
        s.write_all(body)?;
    }
    s.flush()
}

fn handle(stream: TcpStream, latest: &Latest) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&stream)?;
    let Some(req) = parse_head(&head) else {
        return reply(&stream, 400, "text/plain", b"bad request\n", false, &[]);
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return reply(
            &stream,
            405,
            "text/plain",
            b"only GET\n",
            false,
            &[("Allow", "GET, HEAD")],
        );
    }
    match req.path.as_str() {
        "/metrics" => {
            let fmt = Format::from_accept(&req.accept);
            let body = latest.get(fmt);
            reply(
                &stream,
                200,
                fmt.content_type(),
                body.as_bytes(),
                head_only,
                &[],
            )
        }
        "/" => reply(
            &stream,
            200,
            "text/plain",
            b"tracer: metrics at /metrics\n",
            head_only,
            &[],
        ),
        _ => reply(
            &stream,
            404,
            "text/plain",
            b"not found: try /metrics\n",
            head_only,
            &[],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn parses_request_heads() {
        let r = parse_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT: text/plain\r\n\r\n");
        assert_eq!(
            r,
            Some(Request {
                method: "GET".into(),
                path: "/metrics".into(),
                accept: "text/plain".into()
            })
        );
        assert_eq!(parse_head("hello"), None);
        assert_eq!(parse_head("GET / SPDY\r\n\r\n"), None);
    }

    #[test]
    fn serves_the_latest_text_in_the_negotiated_format() {
        let ep = bind("127.0.0.1:0").unwrap();
        let addr = ep.local;
        let latest = Latest::default();
        ep.serve(latest.clone()).unwrap();
        latest.set("prom 1\n".into(), "om 1\n# EOF\n".into());
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("version=0.0.4"), "{r}");
        assert!(r.ends_with("\r\n\r\nprom 1\n"), "{r}");
        let r = get(
            addr,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
        );
        assert!(r.ends_with("om 1\n# EOF\n"), "{r}");
        latest.set("prom 2\n".into(), String::new());
        assert!(get(addr, "GET /metrics HTTP/1.0\r\n\r\n").ends_with("prom 2\n"));
        let r = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn a_port_in_use_is_one_line_naming_the_fix() {
        let first = bind("127.0.0.1:0").unwrap();
        let e = bind(&first.local.to_string()).err().unwrap();
        assert!(e.contains("in use") && e.contains("free port"), "{e}");
        assert!(!e.contains('\n'));
        let e = bind("not-an-address").err().unwrap();
        assert!(e.contains("--metrics not-an-address"), "{e}");
    }
}

//! The `/metrics` endpoint on hyper (HTTP/1.1), with TLS (rustls) and basic auth from the web
//! config. It runs on a tokio runtime of its own thread, so a scrape never waits for a sampling
//! pass of the main loop (which blocks on map reads) and the endpoint serves whatever loop
//! (headless or live view) drives the sampler. A scrape only clones the latest rendered text.

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{io::AsyncRead, io::AsyncWrite, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{
    auth::Users,
    exposition::Format,
    webconfig::{self, WebConfig},
};

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

/// Connections served at once; more are closed at accept (a scraper retries next interval).
const MAX_CLIENTS: usize = 8;
/// Time for a TLS handshake or a request head to arrive.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept-alive connection is closed after this long (Prometheus opens a new one).
const CONN_LIFETIME: Duration = Duration::from_secs(300);

/// A bound listener and a checked web config, not yet serving: both come before tracing
/// starts, so a port in use or a bad config file is reported before any program is loaded.
pub struct Endpoint {
    listener: TcpListener,
    pub local: SocketAddr,
    web: WebConfig,
}

pub fn bind(spec: &str, web_config: Option<&Path>) -> Result<Endpoint, String> {
    let web = web_config
        .map(webconfig::load)
        .transpose()?
        .unwrap_or_default();
    let listener = TcpListener::bind(spec).map_err(|e| {
        format!("cannot listen on --metrics {spec}: {e}: give ADDR:PORT of this host with a free port (e.g. 127.0.0.1:9464)")
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics {spec}: {e}"))?;
    Ok(Endpoint {
        listener,
        local,
        web,
    })
}

/// What every request needs.
struct App {
    latest: Latest,
    users: Users,
    headers: Vec<(String, String)>,
}

impl Endpoint {
    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.web.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serve from `latest` on a thread of its own for the rest of the process.
    pub fn serve(self, latest: Latest) -> Result<(), String> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| format!("metrics listener: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the metrics runtime: {e}"))?;
        let app = Arc::new(App {
            latest,
            users: Users::new(self.web.users.clone()),
            headers: self.web.headers.clone(),
        });
        let tls = self.web.tls.clone().map(TlsAcceptor::from);
        let listener = self.listener;
        thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || rt.block_on(accept_loop(listener, tls, app)))
            .map(|_| ())
            .map_err(|e| format!("cannot start the metrics server thread: {e}"))
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, app: Arc<App>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors and the like: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CONN_LIFETIME, async {
                match tls {
                    Some(acc) => {
                        if let Ok(Ok(s)) = tokio::time::timeout(IO_TIMEOUT, acc.accept(tcp)).await {
                            serve_conn(s, app).await;
                        }
                    }
                    None => serve_conn(tcp, app).await,
                }
            })
            .await;
        });
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S, app: Arc<App>) {
    let svc = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(req, &app).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(req: Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    let mut r = route(req, app).await;
    for (k, v) in &app.headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

async fn route(req: Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    if !app.users.open() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let users = app.users.clone();
        let ok = tokio::task::spawn_blocking(move || users.allows(given.as_deref()))
            .await
            .unwrap_or(false);
        if !ok {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tracer\""),
            );
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",");
            let fmt = Format::from_accept(&accept);
            let body = app.latest.get(fmt);
            let mut r = Response::new(Full::new(Bytes::from(body.as_bytes().to_vec())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(fmt.content_type()),
            );
            r
        }
        "/" => text(StatusCode::OK, "tracer: metrics at /metrics\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

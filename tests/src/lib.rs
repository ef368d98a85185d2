//! Harness for the integration tests: run the real `tracer` binary headless, drive real
//! loopback traffic, read back its NDJSON. Requirements (root, the binary, tools) fail loudly:
//! these tests never skip.

use std::{
    io::Read,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod dnsd;
pub mod failover;
pub mod procs;
pub mod prom;
pub mod tls;

/// The binary under test: `TRACER_BIN` (set by `cargo xtask test`) or the release build.
pub fn tracer_bin() -> PathBuf {
    let p = std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer")
        });
    assert!(
        p.is_file(),
        "tracer binary not found at {}: run the tests with `cargo xtask test`",
        p.display()
    );
    p
}

/// The connect hook the kernel matrix forces for this run (`cargo xtask vm-test` sets
/// `TRACER_TEST_CONNECT_HOOK`); `None` lets tracer choose.
pub fn forced_hook() -> Option<String> {
    std::env::var("TRACER_TEST_CONNECT_HOOK")
        .ok()
        .filter(|h| !h.is_empty() && h != "auto")
}

/// The state hook forced for this run (`TRACER_TEST_STATE_HOOK`, set by the kernel matrix and
/// by `cargo xtask test` for its second pass); `None` lets tracer choose.
pub fn forced_state_hook() -> Option<String> {
    std::env::var("TRACER_TEST_STATE_HOOK")
        .ok()
        .filter(|h| !h.is_empty() && h != "auto")
}

/// These tests load BPF programs: without root they fail, loudly, never skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "integration tests need root (BPF, network namespaces): run `cargo xtask test` as root"
    );
}

pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: `cargo xtask test` installs it (cargo xtask bootstrap)");
}

pub fn tmp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracer-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Parsed NDJSON of a finished run.
pub struct Output {
    pub lines: Vec<Value>,
    pub status: ExitStatus,
    pub stderr: String,
    pub raw: String,
}

impl Output {
    fn of_type(&self, t: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == t).collect()
    }
    pub fn meta(&self) -> &Value {
        self.of_type("meta").first().copied().expect("a meta line")
    }
    pub fn summary(&self) -> &Value {
        let last = self.lines.last().expect("some lines");
        assert_eq!(last["type"], "summary", "the summary is the last line");
        last
    }
    pub fn snapshots(&self) -> Vec<&Value> {
        self.of_type("snapshot")
    }
    pub fn events(&self, kind: &str) -> Vec<&Value> {
        self.of_type("event")
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }
    /// `cohorts.<cohort>` of the summary as (attempts, established, failed, closed, open).
    /// Program runs the kernel skipped (a run that would nest on its CPU), as the summary says.
    pub fn lost(&self) -> u64 {
        n(&self.summary()["lost_events"])
    }
    /// `got` equals `want`, unless the run reported lost events: each skipped run can leave a
    /// count off by one, so then each count may be off by at most the lost events, and must be
    /// exact again once nothing was lost.
    pub fn assert_counts<const K: usize>(&self, got: [u64; K], want: [u64; K], what: &str) {
        let lost = self.lost();
        if lost == 0 {
            assert_eq!(got, want, "{what} (no lost events)");
            return;
        }
        let off = got.iter().zip(&want).map(|(g, w)| g.abs_diff(*w)).max();
        assert!(
            off.unwrap_or(0) <= lost,
            "{what}: {got:?}, want {want:?} give or take the {lost} lost events"
        );
        if got != want {
            eprintln!("{what}: {got:?} for {want:?}, with {lost} lost events reported");
        }
    }
    pub fn cohort(&self, c: &str) -> (u64, u64, u64, u64, u64) {
        counters(&self.summary()["cohorts"][c])
    }
    /// `inbound.<cohort>` of the summary as (accepted, closed, open).
    pub fn inbound(&self, c: &str) -> (u64, u64, u64) {
        let v = &self.summary()["inbound"][c];
        (n(&v["accepted"]), n(&v["closed"]), n(&v["open"]))
    }
    pub fn destination(&self, addr: &str) -> Option<(u64, u64, u64, u64, u64)> {
        self.summary()["destinations"]
            .as_array()?
            .iter()
            .find(|d| d["addr"] == addr)
            .map(counters)
    }
}

pub fn n(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an integer, got {v}"))
}

pub fn counters(v: &Value) -> (u64, u64, u64, u64, u64) {
    (
        n(&v["attempts"]),
        n(&v["established"]),
        n(&v["failed"]),
        n(&v["closed"]),
        n(&v["open"]),
    )
}

/// A headless `tracer watch` writing NDJSON to a file.
pub struct Run {
    child: Child,
    json: PathBuf,
    stderr_path: PathBuf,
}

impl Run {
    /// Start `tracer watch --headless --json FILE` with `args` (`--interval 200ms` unless they
    /// give one), and wait until it is tracing
    /// (its meta line is written after the programs are attached and the census is taken).
    pub fn start(name: &str, args: &[&str]) -> Run {
        Run::start_with(name, args, Command::new(tracer_bin()))
    }

    /// The same, with tracer run by `cmd` (e.g. `Netns::cmd(tracer_bin())`, with environment).
    pub fn start_with(name: &str, args: &[&str], cmd: Command) -> Run {
        Run::start_cmd(cmd, tmp_path(&format!("{name}.ndjson")), args)
    }

    /// The same with a command of the caller's that runs tracer (e.g. through `setpriv` as
    /// another user), writing NDJSON to `json` (its stderr beside it).
    pub fn start_cmd(mut cmd: Command, json: PathBuf, args: &[&str]) -> Run {
        require_root();
        let stderr_path = json.with_extension("stderr");
        let _ = std::fs::remove_file(&json);
        // 200 ms unless the test gives its own interval.
        let interval = (!args.contains(&"--interval")).then_some(["--interval", "200ms"]);
        let child = cmd
            .args(["watch", "--headless"])
            .args(interval.into_iter().flatten())
            .arg("--json")
            .arg(&json)
            .args(args)
            .args(forced_hook().map(|h| format!("--connect-hook={h}")))
            .args(forced_state_hook().map(|h| format!("--state-hook={h}")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn tracer");
        let mut run = Run {
            child,
            json,
            stderr_path,
        };
        let t0 = Instant::now();
        loop {
            let text = std::fs::read_to_string(&run.json).unwrap_or_default();
            if text.lines().any(|l| l.contains("\"type\":\"meta\"")) {
                break;
            }
            if let Ok(Some(st)) = run.child.try_wait() {
                panic!(
                    "tracer exited before tracing ({st}): {}",
                    std::fs::read_to_string(&run.stderr_path).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "tracer did not start in 30 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        run
    }

    /// What tracer wrote to stderr so far (notes such as the metrics address).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal, wait (bounded) and parse what was written.
    pub fn stop_with(mut self, sig: i32) -> Output {
        // Let the last events land in one more snapshot before stopping.
        thread::sleep(Duration::from_millis(300));
        // SAFETY: plain kill(2) to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("tracer did not stop within 20 s of signal {sig}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        read_output(&self.json, &self.stderr_path, status)
    }

    pub fn stop(self) -> Output {
        self.stop_with(libc::SIGINT)
    }
}

/// A test that fails before `stop` must not leave tracer running: it would keep its programs
/// attached and hold whatever it inherited (a lock held around the test run, say).
impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn read_output(json: &PathBuf, stderr: &PathBuf, status: ExitStatus) -> Output {
    let raw = std::fs::read_to_string(json).unwrap_or_default();
    let lines = raw
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {l}", i + 1))
        })
        .collect();
    Output {
        lines,
        status,
        stderr: std::fs::read_to_string(stderr).unwrap_or_default(),
        raw,
    }
}

/// A listener that accepts in the background and keeps every accepted socket until dropped
/// (or until `close_accepted`).
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ip: &str) -> Server {
        let ip: IpAddr = ip.parse().expect("ip");
        let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (s2, a2) = (stop.clone(), accepted.clone());
        let handle = thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => a2.lock().unwrap().push(s),
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Server {
            addr,
            stop,
            accepted,
            handle: Some(handle),
        }
    }

    /// Wait until `n` connections were accepted in total (bounded).
    pub fn wait_accepted(&self, n: usize) {
        let t0 = Instant::now();
        while self.accepted.lock().unwrap().len() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "server accepted too few"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `n` connections that connect and close at once.
pub fn short_connections(to: SocketAddr, n: usize) {
    for _ in 0..n {
        drop(TcpStream::connect(to).expect("connect"));
    }
}

/// `n` connections kept open by the caller.
pub fn open_connections(to: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(to).expect("connect"))
        .collect()
}

/// `n` connects that are refused (nothing listens at `to`).
pub fn refused_connections(to: SocketAddr, n: usize) {
    for _ in 0..n {
        let e = TcpStream::connect(to).expect_err("must be refused");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    }
}

/// Run a command to completion (bounded by the command itself), returning stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made for one test, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = format!("tracer-{tag}-{}", std::process::id());
        let ip = tool("ip");
        let _ = Command::new(&ip).args(["netns", "del", &name]).output();
        sh(Command::new(&ip).args(["netns", "add", &name]));
        sh(Command::new(&ip).args(["-n", &name, "link", "set", "lo", "up"]));
        Netns { name }
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(tool("ip"));
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip"))
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Run `tracer` with arguments and capture exit code and stderr (for the error cases).
pub fn tracer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tracer_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tracer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Read a child's whole stdout (helper processes print one result line).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

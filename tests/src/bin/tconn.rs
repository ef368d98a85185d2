//! Traffic helper for the integration tests: runs as its own process (own pid and comm), also
//! inside the test's network namespaces.
//!
//! tconn [--comm NAME] pair ADDR N      listen on ADDR:0, make N short connections to it
//! tconn [--comm NAME] connect ADDR:PORT N   N connects; prints "ok=X failed=Y"
//! tconn [--comm NAME] hold ADDR N      listen on ADDR:0, hold N connections until stdin closes
//! tconn [--comm NAME] giveup ADDR:PORT N MS  N connects, each abandoned (closed) after MS ms
//!                                       without an answer; prints "ok=X failed=Y"
//! tconn [--comm NAME] paced ADDR:PORT PER_SEC MS   PER_SEC connects a second for MS ms; prints
//!                                       "ok=X failed=Y last_ms=T" (T: last connect, ms since epoch)

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

fn listener(addr: &str) -> TcpListener {
    let sa: SocketAddr = format!("{addr}:0")
        .replace("[[", "[")
        .parse()
        .unwrap_or_else(|e| panic!("bad listen address {addr}: {e}"));
    TcpListener::bind(sa).unwrap_or_else(|e| panic!("bind {sa}: {e}"))
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--comm") {
        set_comm(&args[1]);
        args.drain(..2);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    match args[0].as_str() {
        "pair" | "hold" => {
            let l = listener(&args[1]);
            let target = l.local_addr().unwrap();
            let n: usize = args[2].parse().unwrap();
            let mut held = Vec::new();
            for _ in 0..n {
                assert!(Instant::now() < deadline, "tconn: time limit");
                let c = TcpStream::connect(target).expect("connect");
                let (s, _) = l.accept().expect("accept");
                if args[0] == "hold" {
                    held.push((c, s));
                }
            }
            println!("done {n}");
            if args[0] == "hold" {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
            }
        }
        "connect" => {
            let target: SocketAddr = args[1].parse().expect("ADDR:PORT");
            let n: usize = args[2].parse().unwrap();
            let (mut ok, mut failed) = (0, 0);
            for _ in 0..n {
                assert!(Instant::now() < deadline, "tconn: time limit");
                match TcpStream::connect(target) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            println!("ok={ok} failed={failed}");
        }
        "giveup" => {
            // The application's own connect timeout: the socket is closed while in SYN_SENT.
            let target: SocketAddr = args[1].parse().expect("ADDR:PORT");
            let n: usize = args[2].parse().unwrap();
            let ms: u64 = args[3].parse().unwrap();
            let (mut ok, mut failed) = (0, 0);
            for _ in 0..n {
                assert!(Instant::now() < deadline, "tconn: time limit");
                match TcpStream::connect_timeout(&target, Duration::from_millis(ms)) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            println!("ok={ok} failed={failed}");
        }
        "paced" => {
            let target: SocketAddr = args[1].parse().expect("ADDR:PORT");
            let per_sec: u64 = args[2].parse().unwrap();
            let ms: u64 = args[3].parse().unwrap();
            let (mut ok, mut failed, mut last) = (0u64, 0u64, 0u128);
            let t0 = Instant::now();
            let step = Duration::from_micros(1_000_000 / per_sec.max(1));
            for i in 0..per_sec * ms / 1000 {
                // Paced on an absolute schedule, so a slow connect does not stretch the run.
                let due = t0 + step * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                assert!(Instant::now() < deadline, "tconn: time limit");
                match TcpStream::connect(target) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
                last = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
            }
            println!("ok={ok} failed={failed} last_ms={last}");
        }
        other => panic!("tconn: unknown mode {other}"),
    }
}

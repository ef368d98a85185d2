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
//! tconn errno ADDR:PORT [udp]          one connect; prints the errno, 0 when it connected
//! tconn [--comm NAME] unsent ADDR A B   in a network namespace of its own: A connects to
//!                                       ADDR:9 with no route (loopback down), then, with two
//!                                       local ports, two held connections to ADDR and B more
//!                                       that find no free port; prints "no_route=X no_port=Y ok=Z"

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
        "errno" => {
            let target: SocketAddr = args[1].parse().expect("ADDR:PORT");
            let r = if args.get(2).map(String::as_str) == Some("udp") {
                let any: SocketAddr = if target.is_ipv6() {
                    "[::]:0".parse().unwrap()
                } else {
                    "0.0.0.0:0".parse().unwrap()
                };
                std::net::UdpSocket::bind(any).and_then(|u| u.connect(target))
            } else {
                TcpStream::connect(target).map(drop)
            };
            println!("{}", r.err().and_then(|e| e.raw_os_error()).unwrap_or(0));
        }
        "unsent" => unsent(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap()),
        other => panic!("tconn: unknown mode {other}"),
    }
}

/// Connects that fail before a SYN exists, without touching the host: a fresh network namespace
/// has no route at all until its loopback is up, and its own local port range.
fn unsent(addr: &str, no_route: usize, no_port: usize) {
    // SAFETY: single-threaded here; moves this process into a new, empty network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    let errno = |r: std::io::Result<TcpStream>| r.err().and_then(|e| e.raw_os_error());
    let target: SocketAddr = format!("{addr}:9").parse().expect("ADDR");
    let mut counts = [0usize; 2];
    for _ in 0..no_route {
        if errno(TcpStream::connect(target)) == Some(libc::ENETUNREACH) {
            counts[0] += 1;
        }
    }
    loopback_up();
    // /proc/sys/net is the opener's namespace: this changes only ours.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001")
        .expect("set the namespace's port range");
    let l = TcpListener::bind(format!("{addr}:7000")).expect("listen");
    let to = l.local_addr().unwrap();
    let held: Vec<TcpStream> = (0..2).filter_map(|_| TcpStream::connect(to).ok()).collect();
    for _ in 0..no_port {
        if errno(TcpStream::connect(to)) == Some(libc::EADDRNOTAVAIL) {
            counts[1] += 1;
        }
    }
    println!(
        "no_route={} no_port={} ok={}",
        counts[0],
        counts[1],
        held.len()
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
}

fn loopback_up() {
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS on an ifreq we own, through a socket we close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req),
            0,
            "SIOCGIFFLAGS"
        );
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        assert_eq!(rc, 0, "lo up: {}", std::io::Error::last_os_error());
        libc::close(fd);
    }
}

//! The workload, run as its own process (`xtask bench-agent ...` from the release build) so its
//! CPU, file descriptors and lifetime are its own. Loopback only, bounded in count and time.
//!
//! bench-agent churn THREADS SECS addrs=A,B   listen on each A:0, connect/send/close to them
//! bench-agent churn THREADS SECS spread=N    listen on 0.0.0.0:0 (only inside the bench's own
//!                                            network namespace) and spread over N addresses of
//!                                            127.10.0.0/16 and 127.20.0.0/16
//! bench-agent hold ADDR N                    hold N established connections to ADDR until
//!                                            stdin closes; prints "ready N"
//!
//! churn prints one JSON line: its own count of connects, the truth the contenders are judged by.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

/// Upper bound on connects per client thread, whatever the duration.
const MAX_CONNECTS_PER_THREAD: u64 = 20_000_000;
/// Longest churn the agent accepts.
const MAX_SECS: f64 = 120.0;
/// Most background connections one hold agent keeps.
const MAX_HOLD: usize = 100_000;

pub fn main(args: &[String]) -> Result<()> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["churn", threads, secs, target] => {
            let threads: usize = threads.parse().context("churn THREADS")?;
            let secs: f64 = secs.parse().context("churn SECS")?;
            if !((1..=64).contains(&threads) && secs > 0.0 && secs <= MAX_SECS) {
                bail!("churn wants 1-64 threads and 0-{MAX_SECS} seconds");
            }
            churn(
                threads,
                Duration::from_secs_f64(secs),
                parse_target(target)?,
            )
        }
        ["hold", addr, n] => {
            let n: usize = n.parse().context("hold N")?;
            if n > MAX_HOLD {
                bail!("hold at most {MAX_HOLD} connections per agent");
            }
            hold(addr.parse().context("hold ADDR")?, n)
        }
        _ => bail!("usage: bench-agent churn THREADS SECS addrs=A,B|spread=N | hold ADDR N"),
    }
}

enum Target {
    Listen(Vec<Ipv4Addr>),
    Spread(u32),
}

fn parse_target(s: &str) -> Result<Target> {
    if let Some(list) = s.strip_prefix("addrs=") {
        let addrs = list
            .split(',')
            .map(|a| {
                a.parse::<Ipv4Addr>()
                    .with_context(|| format!("bad address {a}"))
            })
            .collect::<Result<Vec<_>>>()?;
        if addrs.iter().any(|a| !a.is_loopback()) {
            bail!("churn only to 127.0.0.0/8");
        }
        return Ok(Target::Listen(addrs));
    }
    if let Some(n) = s.strip_prefix("spread=") {
        let n: u32 = n.parse().context("spread=N")?;
        if !(1..=120_000).contains(&n) {
            bail!("spread=N wants 1..=120000 addresses");
        }
        return Ok(Target::Spread(n));
    }
    bail!("churn target is addrs=A,B or spread=N")
}

/// Destination `i` of a spread: even ones in 127.10.0.0/16 (old), odd ones in 127.20.0.0/16 (new),
/// never .0 or .255 in the last byte.
pub fn spread_addr(i: u32) -> Ipv4Addr {
    let k = i / 2;
    let (hi, lo) = (k / 254, k % 254 + 1);
    let second = if i.is_multiple_of(2) { 10 } else { 20 };
    Ipv4Addr::new(127, second, hi as u8, lo as u8)
}

/// Accept, read what the client sent until it shuts down its side, close: a full, ordinary
/// lifecycle on both halves (no reset from unread data).
fn serve(l: TcpListener) {
    let mut buf = [0u8; 64];
    loop {
        let Ok((mut s, _)) = l.accept() else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

/// Acceptor threads per listener: the clients wait for the server (see `exchange`), so the
/// servers must keep up with all client threads.
const ACCEPTORS: usize = 2;

fn serve_with(l: TcpListener) -> Result<()> {
    for _ in 1..ACCEPTORS {
        let l2 = l.try_clone()?;
        thread::spawn(move || serve(l2));
    }
    thread::spawn(move || serve(l));
    Ok(())
}

/// One connection: connect, send a byte, shut down our side and wait for the server to close
/// (EOF). Waiting keeps the clients in step with the servers: no accept queue overflows, no SYN
/// retransmits stalling a client for a second, and every counted connect really completed.
/// The client still closes first (client `FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT`).
fn exchange(to: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect(to)?;
    s.write_all(b"x")?;
    s.shutdown(std::net::Shutdown::Write)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 8];
    while s.read(&mut buf)? != 0 {}
    Ok(())
}

fn churn(threads: usize, secs: Duration, target: Target) -> Result<()> {
    let (dests, names): (Vec<SocketAddr>, Vec<String>) = match &target {
        Target::Listen(addrs) => {
            let mut dests = Vec::new();
            for a in addrs {
                let l = TcpListener::bind((*a, 0)).with_context(|| format!("bind {a}:0"))?;
                dests.push(l.local_addr()?);
                serve_with(l)?;
            }
            (dests, addrs.iter().map(|a| a.to_string()).collect())
        }
        Target::Spread(n) => {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).context("bind 0.0.0.0:0")?;
            let port = l.local_addr()?.port();
            serve_with(l)?;
            let dests = (0..*n)
                .map(|i| SocketAddr::from((spread_addr(i), port)))
                .collect();
            (dests, vec![])
        }
    };
    let dests = Arc::new(dests);
    let per_dest: Arc<Vec<AtomicU64>> = Arc::new(names.iter().map(|_| AtomicU64::new(0)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let t0 = Instant::now();
    let deadline = t0 + secs;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (dests, per_dest, errors, first_error) = (
                dests.clone(),
                per_dest.clone(),
                errors.clone(),
                first_error.clone(),
            );
            thread::spawn(move || {
                let mut ok = 0u64;
                // Each thread walks all destinations, starting at its own offset.
                let mut d = t % dests.len();
                while ok < MAX_CONNECTS_PER_THREAD && Instant::now() < deadline {
                    d = (d + 1) % dests.len();
                    match exchange(dests[d]) {
                        Ok(()) => {
                            ok += 1;
                            if let Some(c) = per_dest.get(d) {
                                c.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| format!("{}: {e}", dests[d]));
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                ok
            })
        })
        .collect();
    let connects: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let elapsed = t0.elapsed();
    let per: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .zip(per_dest.iter())
        .map(|(n, c)| (n.clone(), json!(c.load(Ordering::Relaxed))))
        .collect();
    let line = json!({
        "connects": connects,
        "errors": errors.load(Ordering::Relaxed),
        "first_error": *first_error.lock().unwrap(),
        "elapsed_ms": elapsed.as_millis() as u64,
        "destinations": dests.len(),
        "per_addr": per,
    });
    println!("{line}");
    std::io::stdout().flush()?;
    // The acceptor threads block in accept: leave without joining them.
    std::process::exit(0);
}

/// Raise the soft fd limit to the hard one (never above it).
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        r.rlim_max
    }
}

fn hold(addr: Ipv4Addr, n: usize) -> Result<()> {
    if !addr.is_loopback() {
        bail!("hold only on 127.0.0.0/8");
    }
    let limit = raise_nofile() as usize;
    if 2 * n + 16 > limit {
        bail!(
            "{n} connections need {} fds, the hard limit is {limit}",
            2 * n + 16
        );
    }
    let l = TcpListener::bind((addr, 0)).with_context(|| format!("bind {addr}:0"))?;
    let to = l.local_addr()?;
    let mut held = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let c = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
        let (s, _) = l.accept().context("accept")?;
        held.push(c);
        held.push(s);
    }
    println!("ready {n}");
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_addresses_are_distinct_and_in_the_cohorts() {
        let n = 60_000;
        let set: std::collections::HashSet<_> = (0..n).map(spread_addr).collect();
        assert_eq!(set.len(), n as usize);
        for a in &set {
            let o = a.octets();
            assert!(o[0] == 127 && (o[1] == 10 || o[1] == 20), "{a}");
            assert!(o[3] != 0 && o[3] != 255, "{a}");
        }
        assert_eq!(spread_addr(0), Ipv4Addr::new(127, 10, 0, 1));
        assert_eq!(spread_addr(1), Ipv4Addr::new(127, 20, 0, 1));
    }
}

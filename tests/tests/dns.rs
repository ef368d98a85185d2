//! `--watch-dns`: a tiny DNS server on loopback, started by the test, whose answer changes;
//! tracer must record the change (old and new addresses, TTL, long-TTL flag), take it as the
//! cutover, and count connections to the new answer as the new side.

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tracer_tests::*;

/// Answer every A query with `answer` (address, TTL); other types get no answers.
fn dns_server(
    ip: &str,
    answer: Arc<Mutex<(Ipv4Addr, u32)>>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let sock = UdpSocket::bind((ip, 53)).unwrap_or_else(|e| panic!("bind {ip}:53: {e}"));
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            // The question: labels up to the zero byte, then type and class.
            let mut i = 12;
            while i < n && q[i] != 0 {
                i += q[i] as usize + 1;
            }
            if i + 5 > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let question = &q[12..i + 5];
            let (addr, ttl) = *answer.lock().unwrap();
            let answers = u16::from(qtype == 1);
            let mut r = vec![q[0], q[1], 0x81, 0x80, 0, 1];
            r.extend(answers.to_be_bytes());
            r.extend([0, 0, 0, 0]);
            r.extend(question);
            if answers == 1 {
                r.extend([0xc0, 0x0c, 0, 1, 0, 1]);
                r.extend(ttl.to_be_bytes());
                r.extend([0, 4]);
                r.extend(addr.octets());
            }
            let _ = sock.send_to(&r, from);
        }
    })
}

#[test]
fn a_dns_change_is_recorded_with_ttl_and_becomes_the_cutover_and_the_new_side() {
    let dns_ip = "127.53.0.1";
    let answer = Arc::new(Mutex::new((Ipv4Addr::new(127, 133, 53, 7), 30)));
    let stop = Arc::new(AtomicBool::new(false));
    let h = dns_server(dns_ip, answer.clone(), stop.clone());
    let conf = tmp_path("resolv.conf");
    std::fs::write(
        &conf,
        format!("nameserver {dns_ip}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    // SAFETY: set before any thread of this test reads the environment; Run passes it on.
    unsafe { std::env::set_var("TRACER_RESOLV_CONF", &conf) };

    let old = Server::start("127.133.53.7");
    let new = Server::start("127.143.53.7");
    let run = Run::start("dns", &["--watch-dns", "api.tracer.test."]);
    short_connections(old.addr, 5);
    *answer.lock().unwrap() = (Ipv4Addr::new(127, 143, 53, 7), 600);
    // Wait (bounded) for tracer to see the change before connecting to the new answer.
    let json = tmp_path("dns.ndjson");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&json)
        .unwrap_or_default()
        .contains("\"dns_change\"")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no dns_change within 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    short_connections(new.addr, 7);
    let out = run.stop();
    stop.store(true, Ordering::Relaxed);
    let _ = h.join();
    unsafe { std::env::remove_var("TRACER_RESOLV_CONF") };

    assert!(out.status.success(), "{}", out.stderr);
    // Without --old/--new the answer at start is the old side.
    assert_eq!(out.meta()["old"][0], "127.133.53.7/32");
    assert_eq!(out.meta()["watch_dns"][0], "api.tracer.test.");
    let ch = out.events("dns_change");
    assert_eq!(ch.len(), 1, "{ch:?}");
    assert_eq!(ch[0]["name"], "api.tracer.test.");
    assert_eq!(ch[0]["old"][0], "127.133.53.7");
    assert_eq!(ch[0]["new"][0], "127.143.53.7");
    assert_eq!(ch[0]["ttl"], 600);
    assert_eq!(ch[0]["long_ttl"], true);
    let cut = out.events("cutover");
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0]["source"], "dns");
    assert_eq!(cut[0]["elapsed_ms"], ch[0]["elapsed_ms"]);
    // Connections to the new answer count as new once the trie was updated.
    assert_eq!(out.cohort("old").0, 5);
    assert_eq!(out.cohort("new").0, 7);
}

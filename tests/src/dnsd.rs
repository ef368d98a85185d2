//! Real DNS servers for the resolver tests, inside a test network namespace: NSD (Debian's
//! `nsd`) authoritative for a test zone, and Unbound (`unbound`) caching resolvers in front of
//! it. Each logs what it did into the test's temp directory; `dig` (`bind9-dnsutils`) is the
//! independent client that checks what a server answers.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{Netns, sh, tmp_path, tool};

/// A daemon run in the foreground in the namespace, killed on drop.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Send `sig` to the daemon (`ip netns exec` execs it: the child is the daemon).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The zone file text of `cut.test.`: SOA (negative TTL `neg_ttl` by its minimum, the SOA's
/// own TTL longer), NS ns1 at `ns_ip`, `api` A and AAAA with `ttl`, `www` a CNAME to `api`.
pub fn zone(serial: u32, ns_ip: &str, ttl: u32, neg_ttl: u32, a: &str, aaaa: &str) -> String {
    format!(
        "$ORIGIN cut.test.\n$TTL {ttl}\n\
         @ 3600 IN SOA ns1.cut.test. hostmaster.cut.test. {serial} 3600 600 86400 {neg_ttl}\n\
         @ 3600 IN NS ns1.cut.test.\n\
         ns1 3600 IN A {ns_ip}\n\
         api IN A {a}\n\
         api IN AAAA {aaaa}\n\
         www IN CNAME api.cut.test.\n"
    )
}

/// Wait (bounded) until `dig` gets an answer from `server` for `name` and `rtype`.
pub fn wait_answering(ns: &Netns, server: &str, name: &str, rtype: &str) {
    let t0 = Instant::now();
    loop {
        let out = dig(ns, server, name, rtype);
        if !out.trim().is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{server} does not answer {name} within 15 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `dig +short` at `server` (one try, 1 s timeout): the answer lines, empty when none.
pub fn dig(ns: &Netns, server: &str, name: &str, rtype: &str) -> String {
    let out = ns
        .cmd(tool("dig"))
        .args([
            "+short",
            "+tries=1",
            "+time=1",
            &format!("@{server}"),
            name,
            rtype,
        ])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// NSD authoritative for `cut.test.` on `ip`:53 with the zone file at `zone_path`.
pub fn nsd(ns: &Netns, tag: &str, ip: &str, zone_path: &Path) -> Daemon {
    let dir = tmp_path(&format!("nsd-{tag}"));
    std::fs::create_dir_all(&dir).expect("nsd dir");
    let d = dir.display();
    let log = dir.join("nsd.log");
    let conf = dir.join("nsd.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  ip-address: {ip}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  \
             zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  \
             xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             logfile: \"{}\"\n  verbosity: 2\n  server-count: 1\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: cut.test.\n  zonefile: \"{}\"\n",
            log.display(),
            zone_path.display()
        ),
    )
    .expect("nsd.conf");
    sh(Command::new(tool("nsd-checkconf")).arg(&conf));
    let child = ns
        .cmd(tool("nsd"))
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nsd");
    Daemon { child, log }
}

/// Unbound on `ip`:53 resolving `cut.test.` through the authoritative `auth_ip`, asking it from
/// `outgoing_ip`. `serve_expired`: keep answering expired records when the authoritative server
/// cannot be reached (RFC 8767), the resolver that keeps an answer past its TTL.
pub fn unbound(
    ns: &Netns,
    tag: &str,
    ip: &str,
    outgoing_ip: &str,
    auth_ip: &str,
    serve_expired: bool,
) -> Daemon {
    let dir = tmp_path(&format!("unbound-{tag}"));
    std::fs::create_dir_all(&dir).expect("unbound dir");
    let d = dir.display();
    let log = dir.join("unbound.log");
    let expired = if serve_expired {
        "  serve-expired: yes\n  serve-expired-ttl: 0\n  serve-expired-client-timeout: 0\n"
    } else {
        "  serve-expired: no\n"
    };
    let conf = dir.join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: {ip}\n  port: 53\n  outgoing-interface: {outgoing_ip}\n  \
             username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  \
             logfile: \"{}\"\n  use-syslog: no\n  verbosity: 1\n  log-queries: yes\n  \
             log-replies: yes\n  log-time-ascii: yes\n  do-not-query-localhost: no\n  \
             access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  \
             local-zone: \"test.\" nodefault\n  do-ip6: no\n  prefetch: no\n  num-threads: 1\n  \
             cache-min-ttl: 0\n{expired}\
             remote-control:\n  control-enable: no\n\
             stub-zone:\n  name: \"cut.test.\"\n  stub-addr: {auth_ip}\n",
            log.display()
        ),
    )
    .expect("unbound.conf");
    sh(Command::new(tool("unbound-checkconf")).arg(&conf));
    let child = ns
        .cmd(tool("unbound"))
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start unbound");
    Daemon { child, log }
}

//! DNS answers per process, captured in the kernel (tracer-ebpf `dns.rs`): attach the programs
//! on the cgroup v2 root, read the ring buffer, and decode each answer with hickory-proto.
//! Optional: where the hooks cannot attach, everything else runs and the run says so.

use std::{
    fs::File,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr},
};
use hickory_proto::{
    op::{Message, MessageType},
    rr::RData,
};
use tracer_common::dns::{
    DNS_HDR_LEN, DNS_STAT_DROPPED, DNS_STAT_SEEN, DNS_STAT_TRUNCATED, DnsMsgHdr,
};

use super::hooks::one_line;
use crate::model::dns_seen::{CaptureStats as Stats, DnsAnswerSeen, Owner};

/// What the run reports as the hook in use.
pub const NAME: &str = "cgroup_skb/ingress + cgroup connect4/6, sendmsg4/6 (UDP port 53)";

/// Its own programs; the connect hooks (`unsent::CONNECT_PROGS`) are shared and stay attached
/// when the capture fails (they only note owners).
const ADDR_PROGS: [&str; 2] = ["dns_sendmsg4", "dns_sendmsg6"];
const INGRESS: &str = "dns_ingress";

/// Why there is no capture when `--no-dns-capture` was given (meta, `dns_not_captured`).
pub const TURNED_OFF: &str = "turned off (--no-dns-capture)";

/// Load and attach the capture's programs on the cgroup v2 root (or the `--cgroup` directory:
/// then only its tasks' answers are seen), or say why not (then none
/// stays attached).
pub fn attach(ebpf: &mut Ebpf, cgroup: Option<&super::filter::Cgroup>) -> Result<(), String> {
    let root = super::unsent::open_at(cgroup)?;
    let r = attach_all(ebpf, &root);
    if r.is_err() {
        for name in ADDR_PROGS {
            if let Some(p) = ebpf.program_mut(name)
                && let Ok(p) = <&mut CgroupSockAddr>::try_from(p)
            {
                let _ = p.unload();
            }
        }
        if let Some(p) = ebpf.program_mut(INGRESS)
            && let Ok(p) = <&mut CgroupSkb>::try_from(p)
        {
            let _ = p.unload();
        }
    }
    r
}

fn attach_all(ebpf: &mut Ebpf, root: &File) -> Result<(), String> {
    super::unsent::attach_sock_addr(ebpf, root, &super::unsent::CONNECT_PROGS)?;
    super::unsent::attach_sock_addr(ebpf, root, &ADDR_PROGS)?;
    let p: &mut CgroupSkb = ebpf
        .program_mut(INGRESS)
        .ok_or("program dns_ingress missing from the object")?
        .try_into()
        .map_err(|e| one_line(&e))?;
    p.load()
        .map_err(|e| format!("{INGRESS}: {}", one_line(&e)))?;
    p.attach(root, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .map_err(|e| format!("{INGRESS}: {}", one_line(&e)))?;
    Ok(())
}

/// The reader of the capture's ring buffer.
pub struct Capture {
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    /// Wall clock minus CLOCK_MONOTONIC (the kernel's timestamps), fixed at start.
    clock: Clock,
    unparsed: u64,
}

/// Turns the kernel's monotonic nanoseconds into wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_at_zero: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime with a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        Clock {
            wall_at_zero: SystemTime::now() - mono,
        }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        self.wall_at_zero + Duration::from_nanos(mono_ns)
    }
}

impl Capture {
    /// Take the capture's maps out of the loaded object (after `attach` succeeded).
    pub fn new(ebpf: &mut Ebpf) -> Result<Capture, String> {
        let ring = RingBuf::try_from(ebpf.take_map("DNS_EVENTS").ok_or("no DNS_EVENTS map")?)
            .map_err(|e| one_line(&e))?;
        let stats = PerCpuArray::try_from(ebpf.take_map("DNS_STAT").ok_or("no DNS_STAT map")?)
            .map_err(|e| one_line(&e))?;
        Ok(Capture {
            ring,
            stats,
            clock: Clock::now(),
            unparsed: 0,
        })
    }

    /// Every answer waiting in the ring buffer, oldest first. Records that are not DNS
    /// responses (another protocol on port 53) are counted as `unparsed`.
    pub fn drain(&mut self) -> Vec<DnsAnswerSeen> {
        let mut out = vec![];
        while let Some(item) = self.ring.next() {
            match decode(&item, &self.clock) {
                Some(a) => out.push(a),
                None => self.unparsed += 1,
            }
        }
        out
    }

    pub fn stats(&self) -> Stats {
        let get = |i: u32| {
            self.stats
                .get(&i, 0)
                .map(|v| v.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
                .unwrap_or(0)
        };
        Stats {
            seen: get(DNS_STAT_SEEN),
            dropped: get(DNS_STAT_DROPPED),
            truncated: get(DNS_STAT_TRUNCATED),
            unparsed: self.unparsed,
        }
    }
}

/// The name as users write it: lower case, no trailing dot.
fn name_str(n: &hickory_proto::rr::Name) -> String {
    let s = n.to_ascii().to_ascii_lowercase();
    s.strip_suffix('.').map(str::to_string).unwrap_or(s)
}

/// The RFC 1035/6895 mnemonic of a response code, as dig and resolver logs print it.
fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => return format!("RCODE{code}"),
    }
    .into()
}

/// One ring buffer record (header, then payload) as a typed answer; None when it is not a
/// DNS response.
pub fn decode(rec: &[u8], clock: &Clock) -> Option<DnsAnswerSeen> {
    if rec.len() < DNS_HDR_LEN {
        return None;
    }
    // SAFETY: DnsMsgHdr is plain data valid for any bit pattern; the length is checked.
    let h: DnsMsgHdr = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
    let payload = rec.get(DNS_HDR_LEN..DNS_HDR_LEN + h.len as usize)?;
    let msg = Message::from_vec(payload).ok()?;
    if msg.metadata.message_type != MessageType::Response {
        return None;
    }
    let q = msg.queries.first()?;
    let mut addrs = vec![];
    let mut cnames = vec![];
    let mut ttl: Option<u32> = None;
    for r in &msg.answers {
        match &r.data {
            RData::A(a) => addrs.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
            RData::CNAME(c) => cnames.push(name_str(&c.0)),
            _ => continue,
        }
        ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
    }
    let ip = Ipv6Addr::from(h.saddr);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    Some(DnsAnswerSeen {
        at: clock.wall(h.ns),
        owner: (h.owned != 0).then(|| Owner {
            pid: h.owner.tgid,
            comm: super::procrows::comm_str(&h.owner.comm),
            cgroup: h.owner.cgroup,
        }),
        name: name_str(q.name()),
        qtype: q.query_type().to_string(),
        rcode: rcode_name(msg.metadata.response_code.into()),
        addrs,
        cnames,
        ttl,
        resolver: SocketAddr::new(ip, h.sport),
        truncated: h.wire_len > h.len || msg.metadata.truncation,
        names_old: false,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::{
        op::{OpCode, Query},
        rr::{
            Name, Record, RecordType,
            rdata::{A, AAAA, CNAME},
        },
    };
    use tracer_common::dns::DnsOwner;

    use super::*;

    fn record(msg: &Message, owned: bool, saddr: [u8; 16]) -> Vec<u8> {
        let payload = msg.to_vec().unwrap();
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let h = DnsMsgHdr {
            ns: 5_000_000_000,
            cookie: 9,
            owner: DnsOwner {
                cgroup: 77,
                tgid: 4242,
                _pad: 0,
                comm,
            },
            saddr,
            sport: 53,
            owned: owned.into(),
            _pad: 0,
            len: payload.len() as u32,
            wire_len: payload.len() as u32,
            _pad2: 0,
        };
        // SAFETY: plain data, viewed as its bytes.
        let hb: [u8; DNS_HDR_LEN] = unsafe { std::mem::transmute(h) };
        let mut v = hb.to_vec();
        v.extend_from_slice(&payload);
        v
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        tracer_common::mapped_v4(a)
    }

    fn response(qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::response(7, OpCode::Query);
        m.queries
            .push(Query::query(Name::from_str(qname).unwrap(), qtype));
        m
    }

    #[test]
    fn decodes_a_cname_chain_with_addresses_and_the_smallest_ttl() {
        let mut m = response("Alias.Tracer.Test.", RecordType::A);
        let alias = Name::from_str("alias.tracer.test.").unwrap();
        let svc = Name::from_str("svc.tracer.test.").unwrap();
        m.answers.push(Record::from_rdata(
            alias,
            300,
            RData::CNAME(CNAME(svc.clone())),
        ));
        m.answers.push(Record::from_rdata(
            svc.clone(),
            42,
            RData::A(A::new(192, 0, 2, 10)),
        ));
        m.answers
            .push(Record::from_rdata(svc, 42, RData::A(A::new(192, 0, 2, 11))));
        let clock = Clock {
            wall_at_zero: SystemTime::UNIX_EPOCH,
        };
        let a = decode(&record(&m, true, v4([127, 53, 0, 1])), &clock).unwrap();
        assert_eq!(a.name, "alias.tracer.test");
        assert_eq!(a.qtype, "A");
        assert_eq!(a.rcode, "NOERROR");
        assert_eq!(a.cnames, vec!["svc.tracer.test".to_string()]);
        assert_eq!(
            a.addrs,
            vec![
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "192.0.2.11".parse().unwrap()
            ]
        );
        assert_eq!(a.ttl, Some(42));
        assert_eq!(a.resolver, "127.53.0.1:53".parse().unwrap());
        assert_eq!(a.at, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        let o = a.owner.unwrap();
        assert_eq!((o.pid, o.comm.as_str(), o.cgroup), (4242, "curl", 77));
        assert!(!a.truncated);
    }

    #[test]
    fn decodes_aaaa_from_a_v6_resolver_and_nxdomain_without_records() {
        let mut m = response("svc.tracer.test.", RecordType::AAAA);
        m.answers.push(Record::from_rdata(
            Name::from_str("svc.tracer.test.").unwrap(),
            60,
            RData::AAAA(AAAA::from_str("2001:db8::5").unwrap()),
        ));
        let clock = Clock::now();
        let ip6 = "fd00::53".parse::<Ipv6Addr>().unwrap().octets();
        let a = decode(&record(&m, false, ip6), &clock).unwrap();
        assert_eq!(a.addrs, vec!["2001:db8::5".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.resolver, "[fd00::53]:53".parse().unwrap());
        assert!(a.owner.is_none());

        let mut nx = response("gone.tracer.test.", RecordType::A);
        nx.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
        let a = decode(&record(&nx, true, v4([127, 0, 0, 53])), &clock).unwrap();
        assert_eq!(a.rcode, "NXDOMAIN");
        assert!(a.addrs.is_empty());
        assert_eq!(a.ttl, None);
    }

    #[test]
    fn queries_and_garbage_are_not_answers() {
        let clock = Clock::now();
        let mut q = Message::query();
        q.queries.push(Query::query(
            Name::from_str("svc.tracer.test.").unwrap(),
            RecordType::A,
        ));
        assert!(decode(&record(&q, true, v4([127, 0, 0, 1])), &clock).is_none());
        let mut junk = record(&response("x.test.", RecordType::A), true, v4([1, 2, 3, 4]));
        junk.truncate(DNS_HDR_LEN + 5);
        assert!(decode(&junk, &clock).is_none());
        assert!(decode(&[0u8; 10], &clock).is_none());
    }
}

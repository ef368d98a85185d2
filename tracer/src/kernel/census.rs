//! Census of TCP connections that exist when tracing starts, through netlink sock_diag (the
//! interface `ss` uses; no /proc parsing). These are the pooled, stuck connections an operator
//! cares about most, and they make no transition until they close.

use std::{collections::HashSet, net::IpAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;

/// One established connection found at start. `local`/`remote` as the socket sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    pub local: IpAddr,
    pub lport: u16,
    pub remote: IpAddr,
    pub rport: u16,
    /// Accepted by a local listener (inbound) rather than opened from here (outbound).
    pub inbound: bool,
    /// Socket inode: maps the connection to its owning process.
    pub inode: u32,
}

fn dump(family: u8) -> Result<Vec<InetResponse>, String> {
    let err = |what: &str, e: std::io::Error| format!("sock_diag {what}: {e}");
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
    socket.bind_auto().map_err(|e| err("bind", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| err("connect", e))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut packet = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::ESTABLISHED | StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0).map_err(|e| err("send", e))?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(|e| err("recv", e))?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size])
                .map_err(|e| format!("sock_diag: bad reply: {e}"))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(*r),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    let errno = e.code.map(|c| -c.get()).unwrap_or(0);
                    let err = std::io::Error::from_raw_os_error(errno);
                    let hint = if errno == libc::ENOENT {
                        " (the tcp_diag module is not loaded: modprobe tcp_diag)"
                    } else {
                        ""
                    };
                    return Err(format!("sock_diag dump failed: {err}{hint}"));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Sort established sockets into inbound (their local port has a listener on the same address
/// or on the wildcard address) and outbound.
pub fn classify(responses: &[InetResponse]) -> Vec<Conn> {
    let listeners: HashSet<(IpAddr, u16)> = responses
        .iter()
        .filter(|r| r.header.state == TCP_LISTEN)
        .map(|r| {
            let id = &r.header.socket_id;
            (id.source_address, id.source_port)
        })
        .collect();
    let listening = |addr: IpAddr, port: u16| {
        let any4: IpAddr = std::net::Ipv4Addr::UNSPECIFIED.into();
        let any6: IpAddr = std::net::Ipv6Addr::UNSPECIFIED.into();
        listeners.contains(&(addr, port))
            || listeners.contains(&(any4, port))
            || listeners.contains(&(any6, port))
            || listeners.contains(&(crate::model::addr::fold(addr), port))
    };
    responses
        .iter()
        .filter(|r| r.header.state == TCP_ESTABLISHED)
        .map(|r| {
            let id = &r.header.socket_id;
            Conn {
                local: crate::model::addr::fold(id.source_address),
                lport: id.source_port,
                remote: crate::model::addr::fold(id.destination_address),
                rport: id.destination_port,
                inbound: listening(id.source_address, id.source_port),
                inode: r.header.inode,
            }
        })
        .collect()
}

/// All established TCP connections of this network namespace, IPv4 and IPv6.
pub fn take() -> Result<Vec<Conn>, String> {
    let mut all = dump(AF_INET)?;
    all.extend(dump(AF_INET6)?);
    Ok(classify(&all))
}

/// Established connections of one network namespace (`--netns`), dumped from a helper thread
/// that joins it.
pub fn take_in(ns: &std::fs::File) -> Result<Vec<Conn>, String> {
    use std::os::fd::AsRawFd;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on an open namespace file; affects this helper thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "cannot join the --netns namespace: {} (needs CAP_SYS_ADMIN)",
                    std::io::Error::last_os_error()
                ));
            }
            take()
        })
        .join()
    })
    .map_err(|_| "census of the --netns namespace failed".to_string())?
}

/// Established connections of every network namespace: the tracepoint sees the sockets of all
/// of them (containers too), so the census it is matched with must as well. Namespaces are
/// found through processes (/proc/PID/ns/net) and `ip netns` names (/run/netns); each is
/// dumped from one helper thread that joins it (setns moves only the calling thread). A
/// namespace that goes away meanwhile is skipped.
pub fn take_all() -> Result<Vec<Conn>, String> {
    use std::os::unix::fs::MetadataExt;
    let ino = |f: &std::fs::File| f.metadata().map(|m| (m.dev(), m.ino())).ok();
    let own = std::fs::File::open("/proc/self/ns/net").ok();
    let mut seen: HashSet<(u64, u64)> = own.as_ref().and_then(ino).into_iter().collect();
    let mut others = vec![];
    let procs = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    let pids = procs
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for path in pids.chain(named) {
        if let Ok(f) = std::fs::File::open(&path)
            && let Some(id) = ino(&f)
            && seen.insert(id)
        {
            others.push(f);
        }
    }
    let mut all = take()?;
    let found = std::thread::scope(|s| {
        s.spawn(|| {
            let mut conns = vec![];
            for f in &others {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on an open namespace file; affects this helper thread only.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0
                    && let Ok(c) = take()
                {
                    conns.extend(c);
                }
            }
            conns
        })
        .join()
    })
    .map_err(|_| "census of other network namespaces failed".to_string())?;
    all.extend(found);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn sees_a_loopback_connection_in_both_directions() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_s, _) = l.accept().unwrap();
        let cport = c.local_addr().unwrap().port();
        let conns = take().unwrap();
        let out = conns
            .iter()
            .find(|c| c.rport == port && c.lport == cport)
            .expect("client side");
        assert!(!out.inbound);
        let inb = conns
            .iter()
            .find(|c| c.lport == port && c.rport == cport)
            .expect("server side");
        assert!(inb.inbound);
        let everywhere = take_all().unwrap();
        assert!(everywhere.contains(out) && everywhere.contains(inb));
        assert!(everywhere.len() >= conns.len());
    }
}

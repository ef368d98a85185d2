//! Addresses and prefixes in the one form the kernel maps use: IPv4 as `::ffff:a.b.c.d`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Fold an IPv4-mapped IPv6 address into IPv4; anything else unchanged.
pub fn fold(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The 16-byte map key of an address.
pub fn to_key(a: IpAddr) -> [u8; 16] {
    match fold(a) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address behind a 16-byte map key.
pub fn from_key(k: [u8; 16]) -> IpAddr {
    fold(IpAddr::V6(Ipv6Addr::from(k)))
}

/// An address prefix (CIDR). A single address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn host(addr: IpAddr) -> Self {
        let addr = fold(addr);
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix { addr, len }
    }

    /// Parse `a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::y/n`. Host bits are cleared.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR prefix"))?;
        let addr = fold(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0..={max}"))?,
        };
        Ok(Prefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// Prefix length in the 128-bit mapped key space of the LPM trie.
    pub fn key_len(&self) -> u32 {
        if self.addr.is_ipv4() {
            96 + self.len as u32
        } else {
            self.len as u32
        }
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        let a = fold(a);
        a.is_ipv4() == self.addr.is_ipv4() && mask(a, self.len) == self.addr
    }
}

fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v4) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_fold_mapped() {
        let v4: IpAddr = "127.10.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.10.0.1".parse().unwrap();
        assert_eq!(to_key(v4), to_key(mapped));
        assert_eq!(from_key(to_key(mapped)), v4);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(from_key(to_key(v6)), v6);
    }

    #[test]
    fn prefixes_parse_mask_and_match() {
        let p = Prefix::parse("127.10.3.4/16").unwrap();
        assert_eq!(p.to_string(), "127.10.0.0/16");
        assert_eq!(p.key_len(), 112);
        assert!(p.contains("127.10.200.1".parse().unwrap()));
        assert!(p.contains("::ffff:127.10.0.9".parse().unwrap()));
        assert!(!p.contains("127.11.0.1".parse().unwrap()));
        assert!(!p.contains("fd00::1".parse().unwrap()));
        let h = Prefix::parse("fd00:1::5").unwrap();
        assert_eq!((h.len, h.key_len()), (128, 128));
        let m = Prefix::parse("::ffff:10.0.0.1").unwrap();
        assert_eq!(m.to_string(), "10.0.0.1/32");
        assert!(Prefix::parse("10.0.0.0/33").is_err());
        assert!(Prefix::parse("300.1.1.1").is_err());
        assert!(
            Prefix::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}

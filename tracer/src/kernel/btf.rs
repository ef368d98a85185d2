//! A minimal reader of the kernel's BTF: just enough to find the byte offset of a struct member,
//! descending through anonymous unions and structs. aya does not expose member offsets, and the
//! `tcp_connect` hooks see only a `struct sock *`, so its field offsets must come from the running
//! kernel rather than from a header of another version.

use std::collections::HashMap;

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// Referenced type for typedef/const/volatile and the like.
    ty: u32,
    members: Vec<Member>,
}

/// Parsed type section with its string table.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, u32>,
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?))
}

impl Btf {
    /// Parse raw BTF (little endian, as on x86_64).
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let magic = data.get(0..2).ok_or("BTF too short")?;
        if magic != [0x9f, 0xeb] {
            return Err("not BTF (bad magic)".into());
        }
        let hdr_len = u32_at(data, 4).ok_or("BTF header truncated")? as usize;
        let type_off = u32_at(data, 8).ok_or("BTF header truncated")? as usize;
        let type_len = u32_at(data, 12).ok_or("BTF header truncated")? as usize;
        let str_off = u32_at(data, 16).ok_or("BTF header truncated")? as usize;
        let str_len = u32_at(data, 20).ok_or("BTF header truncated")? as usize;
        let tsec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("BTF type section out of bounds")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("BTF string section out of bounds")?
            .to_vec();
        // Type id 0 is `void`.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: vec![],
        }];
        let mut off = 0;
        while off + 12 <= tsec.len() {
            let name = u32_at(tsec, off).ok_or("truncated type")?;
            let info = u32_at(tsec, off + 4).ok_or("truncated type")?;
            let size_or_type = u32_at(tsec, off + 8).ok_or("truncated type")?;
            off += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = vec![];
            let extra = match kind {
                1 => 4,  // INT
                3 => 12, // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let raw = u32_at(tsec, m + 8).ok_or("truncated member")?;
                        members.push(Member {
                            name: u32_at(tsec, m).ok_or("truncated member")?,
                            ty: u32_at(tsec, m + 4).ok_or("truncated member")?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    vlen * 12
                }
                6 => vlen * 8,   // ENUM
                13 => vlen * 8,  // FUNC_PROTO
                14 => 4,         // VAR
                15 => vlen * 12, // DATASEC
                17 => 4,         // DECL_TAG
                19 => vlen * 12, // ENUM64
                2 | 7..=12 | 16 | 18 => 0,
                k => return Err(format!("unknown BTF kind {k}")),
            };
            off += extra;
            types.push(Type {
                name,
                kind,
                ty: size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.str_at(t.name).to_string();
                btf.by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follow typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset of `member` inside the struct or union `t`, searching anonymous members too.
    fn find_in(&self, t: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.str_at(m.name) == member {
                return Some(m.bit_offset);
            }
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            let inner = self.resolve(m.ty)?;
            if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(off) = self.find_in(inner, member, depth + 1)
            {
                return Some(m.bit_offset + off);
            }
        }
        None
    }

    /// Byte offset of a member path such as `["__sk_common", "skc_family"]` in `struct name`.
    pub fn member_offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut t = self.types.get(*self.by_name.get(name)? as usize)?;
        let mut bits = 0;
        for (i, part) in path.iter().enumerate() {
            let off = self.find_in(t, part, 0)?;
            bits += off;
            if i + 1 < path.len() {
                // Descend into the named member's type.
                let member_ty = self.member_type(t, part, 0)?;
                t = self.resolve(member_ty)?;
            }
        }
        (bits % 8 == 0).then_some(bits / 8)
    }

    fn member_type(&self, t: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.str_at(m.name) == member {
                return Some(m.ty);
            }
        }
        t.members.iter().filter(|m| m.name == 0).find_map(|m| {
            let inner = self.resolve(m.ty)?;
            self.member_type(inner, member, depth + 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF is the reference: these offsets are stable since 4.x on x86_64
    /// and what bpftrace/pahole report for `struct sock`.
    #[test]
    fn finds_sock_common_fields_in_running_kernel() {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF readable");
        let btf = Btf::parse(&data).expect("parses");
        assert_eq!(
            btf.member_offset("sock", &["__sk_common", "skc_daddr"]),
            Some(0)
        );
        assert_eq!(
            btf.member_offset("sock", &["__sk_common", "skc_dport"]),
            Some(12)
        );
        assert_eq!(
            btf.member_offset("sock", &["__sk_common", "skc_family"]),
            Some(16)
        );
        let v6 = btf.member_offset("sock", &["__sk_common", "skc_v6_daddr"]);
        assert!(matches!(v6, Some(o) if o > 16 && o < 128), "{v6:?}");
        assert_eq!(btf.member_offset("sock", &["no_such_field"]), None);
        // Fields of struct sock itself, past the embedded sock_common.
        let err = btf.member_offset("sock", &["sk_err"]);
        let soft = btf.member_offset("sock", &["sk_err_soft"]);
        assert!(matches!(err, Some(o) if o >= 128), "{err:?}");
        assert!(
            matches!(soft, Some(o) if o >= 128 && Some(o) != err),
            "{soft:?}"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"hello world, not btf").is_err());
        assert!(Btf::parse(&[]).is_err());
    }
}

//! The narrow, stable interface to `pfglue.c`: a few flat `#[repr(C)]`
//! structs (a rule, a state lookup, a state of the table) and a handful of
//! functions.
//!
//! Nothing here knows pf's own structures; the C file is compiled against
//! the system's `<net/pfvar.h>` and maps these flat values onto them. The
//! layout is pinned twice with the same numbers (const assertions below,
//! `_Static_assert` in the C file), so a change on one side only fails the
//! build instead of corrupting an ioctl. The mapping from the rule model is
//! plain Rust and tested on every OS.

use std::net::IpAddr;

use crate::core::rule::{Rule, RuleOptions};
use crate::firewall::Error;

/// Address family codes of the flat structs (not `AF_*`: `AF_INET6` differs
/// between the BSDs).
pub(crate) const AF_INET: u8 = 4;
pub(crate) const AF_INET6: u8 = 6;

/// TCP flag bits as on the wire (`TH_*`, asserted equal in the C file).
pub(crate) const TH_FIN: u8 = 0x01;
pub(crate) const TH_SYN: u8 = 0x02;
pub(crate) const TH_RST: u8 = 0x04;
pub(crate) const TH_ACK: u8 = 0x10;

/// Bytes of a tag or queue name field, NUL included (PF_TAG_NAME_SIZE,
/// PF_QNAME_SIZE).
pub(crate) const NAME_SIZE: usize = 64;

/// One filter rule in the shape `ftps_pf_add_rule` takes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlatRule {
    pub(crate) af: u8,
    pub(crate) log: u8,
    pub(crate) quick: u8,
    pub(crate) flags: u8,
    pub(crate) flagset: u8,
    pub(crate) pad: u8,
    /// Destination port in network byte order.
    pub(crate) port: u16,
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    /// NUL-terminated; all zero for none.
    pub(crate) tag: [u8; NAME_SIZE],
    pub(crate) queue: [u8; NAME_SIZE],
}

/// Direction of a state lookup (`PF_IN`, `PF_OUT`; pf takes no `PF_INOUT`
/// here).
#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Dir {
    In = 1,
    Out = 2,
}

/// A state lookup in the shape `ftps_pf_natlook` takes and fills.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlatNatlook {
    pub(crate) af: u8,
    pub(crate) dir: u8,
    /// Ports in network byte order.
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    /// Out: the real source port.
    pub(crate) rsport: u16,
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
    /// Out: the real (pre-NAT) source address.
    pub(crate) rsaddr: [u8; 16],
}

/// What a pf state knows of one side of a TCP connection, in host order
/// and in that side's own numbering (before any modulation the state adds
/// once its segments pass).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlatPeer {
    /// Highest sequence number sent, plus its length.
    pub(crate) seqlo: u32,
    /// Right edge of the window the other side granted (its ack + window).
    pub(crate) seqhi: u32,
    /// Added to this side's numbers once they pass the state (`modulate
    /// state`, `synproxy state`); 0 for none.
    pub(crate) seqdiff: u32,
    /// Largest window this side advertised, before scaling.
    pub(crate) max_win: u16,
    /// Window scale shift this side offered.
    pub(crate) wscale: u8,
    /// 1 when this side offered window scaling.
    pub(crate) scaled: u8,
}

/// One key of a state: its two endpoints (addresses left-aligned, ports in
/// network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlatKey {
    pub(crate) af: u8,
    pub(crate) pad: [u8; 3],
    pub(crate) port: [u16; 2],
    pub(crate) addr: [[u8; 16]; 2],
}

/// Index of the wire key (addresses as on the state's interface) and of the
/// stack key (as the host's stack sees them) in [`FlatState::key`]
/// (`PF_SK_WIRE`, `PF_SK_STACK`, asserted in the C file).
#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
pub(crate) const SK_WIRE: usize = 0;
#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
pub(crate) const SK_STACK: usize = 1;

/// One TCP state of pf's table, in the shape `ftps_pf_states` fills.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlatState {
    /// Direction of the packet that created the state (1 in, 2 out).
    pub(crate) dir: u8,
    /// 1 when the state does not follow windows (`keep state (sloppy)`).
    pub(crate) sloppy: u8,
    pub(crate) pad: [u8; 2],
    /// The wire key, then the stack key; they differ under NAT.
    pub(crate) key: [FlatKey; 2],
    /// The side that sent the packet creating the state.
    pub(crate) src: FlatPeer,
    pub(crate) dst: FlatPeer,
}

// The same numbers as the _Static_asserts in pfglue.c.
const _: () = {
    assert!(std::mem::size_of::<FlatRule>() == 168);
    assert!(std::mem::offset_of!(FlatRule, port) == 6);
    assert!(std::mem::offset_of!(FlatRule, src) == 8);
    assert!(std::mem::offset_of!(FlatRule, dst) == 24);
    assert!(std::mem::offset_of!(FlatRule, tag) == 40);
    assert!(std::mem::offset_of!(FlatRule, queue) == 104);
    assert!(std::mem::size_of::<FlatNatlook>() == 56);
    assert!(std::mem::offset_of!(FlatNatlook, saddr) == 8);
    assert!(std::mem::offset_of!(FlatNatlook, daddr) == 24);
    assert!(std::mem::offset_of!(FlatNatlook, rsaddr) == 40);
    assert!(std::mem::size_of::<FlatPeer>() == 16);
    assert!(std::mem::offset_of!(FlatPeer, max_win) == 12);
    assert!(std::mem::size_of::<FlatKey>() == 40);
    assert!(std::mem::offset_of!(FlatKey, port) == 4);
    assert!(std::mem::offset_of!(FlatKey, addr) == 8);
    assert!(std::mem::size_of::<FlatState>() == 116);
    assert!(std::mem::offset_of!(FlatState, key) == 4);
    assert!(std::mem::offset_of!(FlatState, src) == 84);
    assert!(std::mem::offset_of!(FlatState, dst) == 100);
};

/// Address bytes in network order, left-aligned in 16 bytes, and the af.
pub(crate) fn addr_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (AF_INET, out)
        }
        IpAddr::V6(a) => (AF_INET6, a.octets()),
    }
}

/// The address `addr_bytes` made, read back in family `af`.
pub(crate) fn addr_from(af: u8, bytes: &[u8; 16]) -> IpAddr {
    if af == AF_INET {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

fn name_field(what: &'static str, name: Option<&str>) -> Result<[u8; NAME_SIZE], Error> {
    let mut out = [0u8; NAME_SIZE];
    if let Some(name) = name {
        let why = if name.len() >= NAME_SIZE {
            "too long"
        } else if name.as_bytes().contains(&0) {
            "contains NUL"
        } else {
            ""
        };
        if !why.is_empty() {
            return Err(Error::BadName { what, why });
        }
        out[..name.len()].copy_from_slice(name.as_bytes());
    }
    Ok(out)
}

impl FlatRule {
    /// The manual's rule: `pass in log quick inet proto tcp from $src to
    /// $dst port $port flags S/SAFR keep state`, quick dropped and tag set
    /// with `-t`, queue set with `-q`, inet6 for IPv6.
    pub(crate) fn new(rule: &Rule, opts: &RuleOptions) -> Result<FlatRule, Error> {
        let (af, src) = addr_bytes(rule.src);
        let (daf, dst) = addr_bytes(rule.dst);
        if af != daf {
            return Err(Error::MixedFamilies {
                what: "rule",
                src: rule.src,
                dst: rule.dst,
            });
        }
        Ok(FlatRule {
            af,
            log: 1,
            quick: u8::from(opts.tag.is_none()),
            flags: TH_SYN,
            flagset: TH_SYN | TH_ACK | TH_FIN | TH_RST,
            pad: 0,
            port: rule.port.to_be(),
            src,
            dst,
            tag: name_field("tag", opts.tag.as_deref())?,
            queue: name_field("queue", opts.queue.as_deref())?,
        })
    }
}

#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
impl FlatNatlook {
    /// Look up the TCP connection `client -> server` as captured.
    pub(crate) fn query(
        client: std::net::SocketAddr,
        server: std::net::SocketAddr,
        dir: Dir,
    ) -> Result<FlatNatlook, Error> {
        let (af, saddr) = addr_bytes(client.ip());
        let (daf, daddr) = addr_bytes(server.ip());
        if af != daf {
            return Err(Error::MixedFamilies {
                what: "connection",
                src: client.ip(),
                dst: server.ip(),
            });
        }
        Ok(FlatNatlook {
            af,
            dir: dir as u8,
            sport: client.port().to_be(),
            dport: server.port().to_be(),
            rsport: 0,
            saddr,
            daddr,
            rsaddr: [0; 16],
        })
    }

    /// The real source address the kernel filled in, in the query's family.
    pub(crate) fn real_source(&self) -> IpAddr {
        addr_from(self.af, &self.rsaddr)
    }
}

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
unsafe extern "C" {
    pub fn ftps_rule_size() -> usize;
    pub fn ftps_natlook_size() -> usize;
    pub fn ftps_state_size() -> usize;
    pub fn ftps_pf_running(fd: libc::c_int) -> libc::c_int;
    pub fn ftps_pf_natlook(fd: libc::c_int, q: *mut FlatNatlook) -> libc::c_int;
    pub fn ftps_pf_states(
        fd: libc::c_int,
        q: *const FlatNatlook,
        max_bytes: usize,
        out: *mut FlatState,
        cap: u32,
        total: *mut u32,
    ) -> libc::c_int;
    pub fn ftps_pf_begin(
        fd: libc::c_int,
        anchor: *const libc::c_char,
        ticket: *mut u32,
        pool_ticket: *mut u32,
    ) -> libc::c_int;
    pub fn ftps_pf_add_rule(
        fd: libc::c_int,
        anchor: *const libc::c_char,
        ticket: u32,
        pool_ticket: u32,
        r: *const FlatRule,
    ) -> libc::c_int;
    pub fn ftps_pf_commit(fd: libc::c_int, anchor: *const libc::c_char, ticket: u32)
    -> libc::c_int;
    pub fn ftps_pf_rollback(
        fd: libc::c_int,
        anchor: *const libc::c_char,
        ticket: u32,
    ) -> libc::c_int;
    pub fn ftps_pf_anchor_count(
        fd: libc::c_int,
        parent: *const libc::c_char,
        count: *mut u32,
    ) -> libc::c_int;
    pub fn ftps_pf_anchor_name(
        fd: libc::c_int,
        parent: *const libc::c_char,
        nr: u32,
        out: *mut libc::c_char,
        outlen: usize,
    ) -> libc::c_int;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rule::rule;

    fn cstr(field: &[u8]) -> &str {
        let end = field.iter().position(|&b| b == 0).unwrap();
        std::str::from_utf8(&field[..end]).unwrap()
    }

    #[test]
    fn ipv4_rule_maps_addresses_port_and_flags() {
        let f = FlatRule::new(
            &rule("192.0.2.2", "198.51.100.2", 50012),
            &RuleOptions::default(),
        )
        .unwrap();
        assert_eq!(f.af, AF_INET);
        assert_eq!(&f.src[..4], &[192, 0, 2, 2]);
        assert_eq!(&f.src[4..], &[0; 12]);
        assert_eq!(&f.dst[..4], &[198, 51, 100, 2]);
        // 50012 = 0xc35c: the bytes in memory are big-endian.
        assert_eq!(f.port.to_ne_bytes(), [0xc3, 0x5c]);
        assert_eq!((f.log, f.quick), (1, 1));
        // flags S/SAFR
        assert_eq!(f.flags, 0x02);
        assert_eq!(f.flagset, 0x02 | 0x10 | 0x01 | 0x04);
        assert_eq!(cstr(&f.tag), "");
        assert_eq!(cstr(&f.queue), "");
    }

    #[test]
    fn ipv6_rule_with_tag_and_queue() {
        let opts = RuleOptions {
            tag: Some("ftpok".into()),
            queue: Some("ftp".into()),
        };
        let f = FlatRule::new(&rule("2001:db8::2", "2001:db8:1::2", 1024), &opts).unwrap();
        assert_eq!(f.af, AF_INET6);
        assert_eq!(
            f.src,
            "2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(f.dst[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(f.dst[5], 0x01);
        assert_eq!(f.port.to_ne_bytes(), [0x04, 0x00]);
        assert_eq!(f.quick, 0, "-t drops quick");
        assert_eq!(f.log, 1);
        assert_eq!(cstr(&f.tag), "ftpok");
        assert_eq!(cstr(&f.queue), "ftp");
    }

    #[test]
    fn names_must_leave_room_for_nul() {
        let ok = "a".repeat(63);
        let opts = RuleOptions {
            tag: Some(ok.clone()),
            queue: None,
        };
        let f = FlatRule::new(&rule("192.0.2.2", "198.51.100.2", 2000), &opts).unwrap();
        assert_eq!(cstr(&f.tag), ok);
        let opts = RuleOptions {
            tag: None,
            queue: Some("q".repeat(64)),
        };
        let e = FlatRule::new(&rule("192.0.2.2", "198.51.100.2", 2000), &opts).unwrap_err();
        assert_eq!(e.to_string(), "queue too long");
    }

    #[test]
    fn mixed_families_are_refused() {
        assert!(
            FlatRule::new(
                &rule("192.0.2.2", "2001:db8::1", 2000),
                &RuleOptions::default()
            )
            .is_err()
        );
    }

    #[test]
    fn natlook_query_and_answer() {
        use std::net::SocketAddr;
        let c: SocketAddr = "192.0.2.2:40594".parse().unwrap();
        let s: SocketAddr = "198.51.100.2:21".parse().unwrap();
        let mut q = FlatNatlook::query(c, s, Dir::Out).unwrap();
        assert_eq!(q.af, AF_INET);
        assert_eq!(q.dir, 2);
        assert_eq!(q.sport.to_ne_bytes(), 40594u16.to_be_bytes());
        assert_eq!(q.dport.to_ne_bytes(), [0, 21]);
        assert_eq!(&q.saddr[..4], &[192, 0, 2, 2]);
        assert_eq!(&q.daddr[..4], &[198, 51, 100, 2]);
        q.rsaddr[..4].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(q.real_source(), "10.0.0.7".parse::<IpAddr>().unwrap());

        let c6: SocketAddr = "[2001:db8::2]:40000".parse().unwrap();
        let s6: SocketAddr = "[2001:db8:1::2]:21".parse().unwrap();
        let mut q = FlatNatlook::query(c6, s6, Dir::In).unwrap();
        assert_eq!((q.af, q.dir), (AF_INET6, 1));
        q.rsaddr = q.saddr;
        assert_eq!(q.real_source(), c6.ip());
    }
}

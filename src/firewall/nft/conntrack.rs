//! Conntrack lookup: is this captured control connection tracked by the
//! kernel, and who is its client before NAT?
//!
//! One IPCTNL_MSG_CT_GET (ctnetlink, NFNL_SUBSYS_CTNETLINK) per question:
//!
//! ```text
//! nlmsghdr type=CTNETLINK<<8|CT_GET flags=REQUEST
//! nfgenmsg family=AF_INET|AF_INET6
//! CTA_TUPLE_ORIG or CTA_TUPLE_REPLY (nested)
//!     CTA_TUPLE_IP (nested)    CTA_IP_V4_SRC/DST or CTA_IP_V6_SRC/DST
//!     CTA_TUPLE_PROTO (nested) CTA_PROTO_NUM=6, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT (be16)
//! ```
//!
//! The kernel answers with an IPCTNL_MSG_CT_NEW describing the entry, whose
//! CTA_TUPLE_ORIG source is the real client, or with ENOENT.
//!
//! The capture may sit on either side of a NAT. Without NAT, or on the
//! inside, the captured client -> server is the entry's original tuple. When
//! the client was masqueraded before the capture point, the captured
//! packets match the entry's reply tuple read backwards (server -> client as
//! rewritten), so that is tried second.
//!
//! At start the backend also asks which control connections are open at
//! all: one IPCTNL_MSG_CT_GET with NLM_F_DUMP (family AF_UNSPEC: both) and
//! no tuple, answered by one CT_NEW per entry, of which only TCP entries in
//! state ESTABLISHED (CTA_PROTOINFO { CTA_PROTOINFO_TCP {
//! CTA_PROTOINFO_TCP_STATE = 3 } }) to a control port are kept.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::core::engine::ControlPorts;
use crate::os::netlink::{self, Attrs, MsgBuf, Socket};

const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_GET: u8 = 1;

pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
pub(crate) const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const TCP_CONNTRACK_ESTABLISHED: u8 = 3;

/// The hosts of an established control connection, as both of its tuples
/// name them: with NAT the original and the reply tuple differ, and a hole
/// may name either view of either host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ControlHosts {
    /// Original source, and reply destination (the client after SNAT).
    pub(crate) client: [IpAddr; 2],
    /// Original destination, and reply source (the server after DNAT).
    pub(crate) server: [IpAddr; 2],
}

impl ControlHosts {
    /// Every (source, destination) a hole of this connection may name:
    /// client and server in either order (passive holes run client to
    /// server, active ones server to client), each in any of its NAT views.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.client
            .iter()
            .flat_map(move |&c| self.server.iter().flat_map(move |&s| [(c, s), (s, c)]))
    }
}

/// One tuple of an entry: source, destination, protocol, ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
}

/// A ctnetlink socket for state lookups. Buffers are reused: a lookup
/// allocates nothing.
pub struct Conntrack {
    sock: Socket,
    msg: MsgBuf,
}

impl Conntrack {
    /// Open a netlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Conntrack> {
        Ok(Conntrack {
            sock: Socket::open()?,
            msg: MsgBuf::new(),
        })
    }

    /// Look the TCP connection `client -> server` (as captured) up.
    ///
    /// `Ok(Some(real_client))` when tracked, `real_client` being the
    /// address before any source NAT; `Ok(None)` when the kernel has no
    /// such entry (or the two addresses are of different families).
    ///
    /// The kernel finds an entry by either of its tuples, so the answer is
    /// checked: a connection the captured *server* opened (from port 21 to
    /// a service that echoes text) is not a control connection, and counts
    /// as untracked.
    pub fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> io::Result<Option<IpAddr>> {
        if client.is_ipv4() != server.is_ipv4() {
            return Ok(None);
        }
        let found = match self.get(CTA_TUPLE_ORIG, client, server)? {
            Some(entry) => entry,
            None => match self.get(CTA_TUPLE_REPLY, server, client)? {
                Some(entry) => entry,
                None => return Ok(None),
            },
        };
        Ok(opened_by(found, client, server).then_some(found.0.src))
    }

    /// Every TCP connection the kernel tracks as ESTABLISHED whose server
    /// port (original destination port, or reply source port after a
    /// DNAT) is one of `ports`: one dump of the whole table.
    pub(crate) fn established_controls(
        &mut self,
        ports: &ControlPorts,
    ) -> io::Result<Vec<ControlHosts>> {
        let seq = self.sock.next_seqs(1);
        self.msg.clear();
        write_dump(&mut self.msg, seq);
        let mut found = Vec::new();
        self.sock.dump(
            self.msg.as_bytes(),
            seq,
            netlink::nfnl_type(netlink::NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW),
            |attrs| found.extend(established_control(attrs, ports)),
        )?;
        Ok(found)
    }

    /// One CT_GET for the tuple `src -> dst` given as `which` (original or
    /// reply); returns the original and reply tuples of the entry found.
    fn get(
        &mut self,
        which: u16,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<Option<(Tuple, Tuple)>> {
        let seq = self.sock.next_seqs(1);
        self.msg.clear();
        write_get(&mut self.msg, seq, which, src, dst);
        self.sock.query(
            self.msg.as_bytes(),
            seq,
            netlink::nfnl_type(netlink::NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW),
            |attrs| {
                tuples(attrs).ok_or_else(|| io::Error::other("conntrack answer without its tuples"))
            },
        )
    }
}

/// Append the CT_GET request numbered `seq` for the tuple `src -> dst` as
/// `which` (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY), in `src`'s family (the
/// caller checked that `dst` has the same).
pub(crate) fn write_get(msg: &mut MsgBuf, seq: u32, which: u16, src: SocketAddr, dst: SocketAddr) {
    let family = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    let m = msg.begin(
        netlink::nfnl_type(netlink::NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET),
        netlink::NLM_F_REQUEST,
        seq,
        family,
        0,
    );
    let tuple = msg.nest_begin(which);
    let ip = msg.nest_begin(CTA_TUPLE_IP);
    for (addr, v4, v6) in [
        (src.ip(), CTA_IP_V4_SRC, CTA_IP_V6_SRC),
        (dst.ip(), CTA_IP_V4_DST, CTA_IP_V6_DST),
    ] {
        match addr {
            IpAddr::V4(a) => msg.attr(v4, &a.octets()),
            IpAddr::V6(a) => msg.attr(v6, &a.octets()),
        }
    }
    msg.nest_end(ip);
    let proto = msg.nest_begin(CTA_TUPLE_PROTO);
    msg.attr_u8(CTA_PROTO_NUM, libc::IPPROTO_TCP as u8);
    msg.attr_be16(CTA_PROTO_SRC_PORT, src.port());
    msg.attr_be16(CTA_PROTO_DST_PORT, dst.port());
    msg.nest_end(proto);
    msg.nest_end(tuple);
    msg.end(m);
}

/// Append the request numbered `seq` for the whole table, both families:
/// a CT_GET dump.
pub(crate) fn write_dump(msg: &mut MsgBuf, seq: u32) {
    let m = msg.begin(
        netlink::nfnl_type(netlink::NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET),
        netlink::NLM_F_REQUEST | netlink::NLM_F_DUMP,
        seq,
        libc::AF_UNSPEC as u8,
        0,
    );
    msg.end(m);
}

/// The hosts of the entry in a CT_NEW message when it is a TCP connection
/// in state ESTABLISHED to one of `ports`.
pub(crate) fn established_control(attrs: Attrs<'_>, ports: &ControlPorts) -> Option<ControlHosts> {
    let (mut orig, mut reply, mut state) = (None, None, None);
    for (ty, data) in attrs {
        match ty {
            CTA_TUPLE_ORIG => orig = tuple(data),
            CTA_TUPLE_REPLY => reply = tuple(data),
            CTA_PROTOINFO => state = tcp_state(data),
            _ => {}
        }
    }
    let (orig, reply) = (orig?, reply?);
    let tcp = libc::IPPROTO_TCP as u8;
    if orig.proto != tcp || state != Some(TCP_CONNTRACK_ESTABLISHED) {
        return None;
    }
    if !ports.contains(orig.dport) && !ports.contains(reply.sport) {
        return None;
    }
    Some(ControlHosts {
        client: [orig.src, reply.dst],
        server: [orig.dst, reply.src],
    })
}

/// A CTA_TUPLE_ORIG or CTA_TUPLE_REPLY payload.
fn tuple(data: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst) = (None, None);
    for (ty, a) in Attrs::new(Attrs::new(data).get(CTA_TUPLE_IP)?) {
        let addr = match a.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(a).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(a).ok()?),
            _ => return None,
        };
        match ty {
            CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr),
            CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(addr),
            _ => {}
        }
    }
    let (mut proto, mut sport, mut dport) = (None, None, None);
    for (ty, v) in Attrs::new(Attrs::new(data).get(CTA_TUPLE_PROTO)?) {
        match ty {
            CTA_PROTO_NUM => proto = v.first().copied(),
            CTA_PROTO_SRC_PORT => sport = be16(v),
            CTA_PROTO_DST_PORT => dport = be16(v),
            _ => {}
        }
    }
    Some(Tuple {
        src: src?,
        dst: dst?,
        proto: proto?,
        sport: sport.unwrap_or(0),
        dport: dport.unwrap_or(0),
    })
}

/// The TCP state in a CTA_PROTOINFO payload.
fn tcp_state(data: &[u8]) -> Option<u8> {
    let tcp = Attrs::new(data).get(CTA_PROTOINFO_TCP)?;
    Attrs::new(tcp)
        .get(CTA_PROTOINFO_TCP_STATE)?
        .first()
        .copied()
}

fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(0..2)?.try_into().ok()?))
}

/// The original and reply tuples of the entry in a CT_NEW message.
fn tuples(attrs: Attrs<'_>) -> Option<(Tuple, Tuple)> {
    let (mut orig, mut reply) = (None, None);
    for (ty, data) in attrs {
        match ty {
            CTA_TUPLE_ORIG => orig = tuple(data),
            CTA_TUPLE_REPLY => reply = tuple(data),
            _ => {}
        }
    }
    Some((orig?, reply?))
}

impl Tuple {
    fn is(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        (self.src, self.sport, self.dst, self.dport) == (src.ip(), src.port(), dst.ip(), dst.port())
    }
}

/// True when the entry `(orig, reply)` is a connection `client` opened to
/// `server` as captured: neither its original direction is server to
/// client, nor its reply direction client to server (whichever side of a
/// NAT the capture is on).
fn opened_by((orig, reply): (Tuple, Tuple), client: SocketAddr, server: SocketAddr) -> bool {
    !orig.is(server, client) && !reply.is(client, server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::netlink::MsgBuf;

    fn entry(orig: (&str, &str), reply: (&str, &str)) -> (Tuple, Tuple) {
        let t = |(a, b): (&str, &str)| {
            let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            Tuple {
                src: a.ip(),
                dst: b.ip(),
                proto: 6,
                sport: a.port(),
                dport: b.port(),
            }
        };
        (t(orig), t(reply))
    }

    #[test]
    fn only_connections_the_client_opened_count() {
        let c: SocketAddr = "192.0.2.2:40594".parse().unwrap();
        let s: SocketAddr = "198.51.100.2:21".parse().unwrap();
        let plain = entry(
            ("192.0.2.2:40594", "198.51.100.2:21"),
            ("198.51.100.2:21", "192.0.2.2:40594"),
        );
        assert!(opened_by(plain, c, s));
        // Masqueraded before the capture: the reply tuple is what we see.
        let masq = entry(
            ("10.0.0.2:5000", "198.51.100.2:21"),
            ("198.51.100.2:21", "192.0.2.2:40594"),
        );
        assert!(opened_by(masq, c, s));
        // Opened from port 21 by the captured "server", to a service that
        // echoes: found by its reply tuple, refused.
        let reversed = entry(
            ("198.51.100.2:21", "192.0.2.2:40594"),
            ("192.0.2.2:40594", "198.51.100.2:21"),
        );
        assert!(!opened_by(reversed, c, s));
        // The same, the opener masqueraded (its port kept).
        let nat = entry(
            ("10.0.0.9:21", "192.0.2.2:40594"),
            ("192.0.2.2:40594", "198.51.100.2:21"),
        );
        assert!(!opened_by(nat, c, s));
    }

    #[test]
    fn reads_both_tuples() {
        // A CT_NEW body as the kernel writes it: nfgenmsg then attributes.
        let mut b = MsgBuf::new();
        let m = b.begin(0x100, 0, 1, libc::AF_INET as u8, 0);
        for (which, src, dst, sport, dport) in [
            (CTA_TUPLE_ORIG, [10, 0, 0, 2], [198, 51, 100, 2], 5000, 21),
            (
                CTA_TUPLE_REPLY,
                [198, 51, 100, 2],
                [192, 0, 2, 2],
                21,
                40594,
            ),
        ] {
            let t = b.nest_begin(which);
            let ip = b.nest_begin(CTA_TUPLE_IP);
            b.attr(CTA_IP_V4_SRC, &src);
            b.attr(CTA_IP_V4_DST, &dst);
            b.nest_end(ip);
            let proto = b.nest_begin(CTA_TUPLE_PROTO);
            b.attr_u8(CTA_PROTO_NUM, 6);
            b.attr_be16(CTA_PROTO_SRC_PORT, sport);
            b.attr_be16(CTA_PROTO_DST_PORT, dport);
            b.nest_end(proto);
            b.nest_end(t);
        }
        b.end(m);
        let body = &b.as_bytes()[netlink::NLMSG_HDRLEN + netlink::NFGENMSG_LEN..];
        let (orig, reply) = tuples(Attrs::new(body)).unwrap();
        assert_eq!(orig.src, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert!(reply.is(
            "198.51.100.2:21".parse().unwrap(),
            "192.0.2.2:40594".parse().unwrap()
        ));
        assert_eq!(tuples(Attrs::new(&[])), None);
    }
}

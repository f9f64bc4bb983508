//! The messages this backend writes by hand, checked byte for byte against
//! an independent encoder: the `netlink-packet-netfilter` crate builds the
//! same requests from its own model of the kernel's attributes, and both
//! byte strings must be equal. The hand-written writer stays the hot path
//! (allocation-free, measured faster); this only proves it right.

use std::net::SocketAddr;

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol,
    Tuple,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetAttribute, SetElementAttribute,
    SetElementList, SetElementMessage, SetMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::conntrack::{self, CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, ControlHosts};
use super::*;
use crate::core::engine::ControlPorts;
use crate::core::rule::rule;
use crate::os::netlink::MsgBuf;
use crate::os::netlink::{Attrs, NFGENMSG_LEN, NLM_F_DUMP, NLMSG_HDRLEN};

const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// One message as the crate encodes it.
fn encode(
    family: NetfilterProtoFamily,
    res_id: u16,
    inner: impl Into<NetfilterMessageInner>,
    flags: u16,
    seq: u32,
) -> Vec<u8> {
    let mut msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, res_id),
            inner,
        )),
    );
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

/// A set element as the crate models it: key `src . dst . port`, and the
/// timeout when adding.
fn element(r: &Rule, timeout_ms: Option<u64>) -> ListAttribute<SetElementAttribute> {
    let mut key = Vec::new();
    for a in [r.src, r.dst] {
        match a {
            IpAddr::V4(a) => key.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => key.extend_from_slice(&a.octets()),
        }
    }
    key.extend_from_slice(&r.port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key))];
    attrs.extend(timeout_ms.map(SetElementAttribute::Timeout));
    ListAttribute::Element(attrs)
}

fn elements(
    table: &str,
    set: &str,
    elems: Vec<ListAttribute<SetElementAttribute>>,
) -> SetElementMessage {
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(table.into()),
            SetElementList::Set(set.into()),
            SetElementList::Elements(elems),
        ],
    }
}

fn table() -> Table {
    Table {
        family: 1,
        family_name: "inet",
        name: "filter".into(),
        timeout_ms: 180_000,
    }
}

#[test]
fn batch_matches_the_independent_encoder() {
    let t = table();
    let gone = rule("192.0.2.9", "198.51.100.2", 50000);
    let d4 = rule("192.0.2.2", "198.51.100.2", 50012);
    let d6 = rule("2001:db8::2", "2001:db8:1::2", 1024);
    let mut dels = vec![
        Del {
            rule: d4,
            seq: 0,
            gone: false,
        },
        Del {
            rule: gone,
            seq: 0,
            gone: true,
        },
        Del {
            rule: d6,
            seq: 0,
            gone: false,
        },
    ];
    let adds = [
        rule("192.0.2.2", "198.51.100.2", 50013),
        rule("2001:db8::2", "2001:db8:1::2", 1025),
        rule("192.0.2.3", "198.51.100.2", 50014),
    ];
    let first = u32::MAX - 2; // the numbering wraps inside the batch
    let mut ours = MsgBuf::new();
    write_batch(&mut ours, &t, first, &mut dels, &adds);

    let inet = NetfilterProtoFamily::Inet;
    let unspec = NetfilterProtoFamily::Unspec;
    let seq = |k: u32| first.wrapping_add(k);
    let mut theirs = Vec::new();
    theirs.extend(encode(
        unspec,
        NFNL_SUBSYS_NFTABLES,
        ControlMessage::BatchBegin,
        NLM_F_REQUEST,
        seq(0),
    ));
    theirs.extend(encode(
        inet,
        0,
        NfTablesMessage::DeleteSetElement(elements("filter", SET4, vec![element(&d4, None)])),
        NLM_F_REQUEST,
        seq(1),
    ));
    theirs.extend(encode(
        inet,
        0,
        NfTablesMessage::DeleteSetElement(elements("filter", SET6, vec![element(&d6, None)])),
        NLM_F_REQUEST,
        seq(2),
    ));
    theirs.extend(encode(
        inet,
        0,
        NfTablesMessage::NewSetElement(elements(
            "filter",
            SET4,
            vec![
                element(&adds[0], Some(180_000)),
                element(&adds[2], Some(180_000)),
            ],
        )),
        NLM_F_REQUEST | NLM_F_CREATE,
        seq(3),
    ));
    theirs.extend(encode(
        inet,
        0,
        NfTablesMessage::NewSetElement(elements(
            "filter",
            SET6,
            vec![element(&adds[1], Some(180_000))],
        )),
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        seq(4),
    ));
    theirs.extend(encode(
        unspec,
        NFNL_SUBSYS_NFTABLES,
        ControlMessage::BatchEnd,
        NLM_F_REQUEST,
        seq(5),
    ));

    assert_eq!(ours.as_bytes(), &theirs[..]);
    // Each live delete learnt the number its answer will carry.
    assert_eq!((dels[0].seq, dels[2].seq), (seq(1), seq(2)));
}

#[test]
fn delete_only_batch_acks_its_last_delete() {
    let t = Table {
        family: 10,
        family_name: "ip6",
        name: "fw".into(),
        timeout_ms: 0,
    };
    let r = rule("2001:db8::2", "2001:db8:1::2", 2121);
    let mut dels = vec![Del {
        rule: r,
        seq: 0,
        gone: false,
    }];
    let mut ours = MsgBuf::new();
    write_batch(&mut ours, &t, 7, &mut dels, &[]);

    let ip6 = NetfilterProtoFamily::IPv6;
    let unspec = NetfilterProtoFamily::Unspec;
    let mut theirs = encode(
        unspec,
        NFNL_SUBSYS_NFTABLES,
        ControlMessage::BatchBegin,
        NLM_F_REQUEST,
        7,
    );
    theirs.extend(encode(
        ip6,
        0,
        NfTablesMessage::DeleteSetElement(elements("fw", SET6, vec![element(&r, None)])),
        NLM_F_REQUEST | NLM_F_ACK,
        8,
    ));
    theirs.extend(encode(
        unspec,
        NFNL_SUBSYS_NFTABLES,
        ControlMessage::BatchEnd,
        NLM_F_REQUEST,
        9,
    ));
    assert_eq!(ours.as_bytes(), &theirs[..]);
}

#[test]
fn table_and_set_requests_match() {
    let mut ours = MsgBuf::new();
    write_get(&mut ours, 41, NFT_MSG_GETTABLE, 2, "fw", None);
    let theirs = encode(
        NetfilterProtoFamily::IPv4,
        0,
        NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name("fw".into())],
        }),
        NLM_F_REQUEST,
        41,
    );
    assert_eq!(ours.as_bytes(), &theirs[..]);

    ours.clear();
    write_get(&mut ours, 42, NFT_MSG_GETSET, 1, "filter", Some(SET6));
    let theirs = encode(
        NetfilterProtoFamily::Inet,
        0,
        NfTablesMessage::GetSet(SetMessage {
            attributes: vec![
                SetAttribute::Table("filter".into()),
                SetAttribute::Name(SET6.into()),
            ],
        }),
        NLM_F_REQUEST,
        42,
    );
    assert_eq!(ours.as_bytes(), &theirs[..]);
}

#[test]
fn conntrack_get_matches() {
    for (which, client, server) in [
        (CTA_TUPLE_ORIG, "192.0.2.2:40594", "198.51.100.2:21"),
        (CTA_TUPLE_REPLY, "[2001:db8:1::2]:21", "[2001:db8::2]:40000"),
    ] {
        let src: SocketAddr = client.parse().unwrap();
        let dst: SocketAddr = server.parse().unwrap();
        let mut ours = MsgBuf::new();
        conntrack::write_get(&mut ours, 99, which, src, dst);

        let tuple = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(src.ip()),
                IPTuple::DestinationAddress(dst.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::SourcePort(src.port()),
                ProtoTuple::DestinationPort(dst.port()),
            ]),
        ];
        let attr = if which == CTA_TUPLE_ORIG {
            ConntrackAttribute::CtaTupleOrig(tuple)
        } else {
            ConntrackAttribute::CtaTupleReply(tuple)
        };
        let family = if src.is_ipv4() {
            NetfilterProtoFamily::IPv4
        } else {
            NetfilterProtoFamily::IPv6
        };
        let theirs = encode(
            family,
            0,
            ConntrackMessage::Get(vec![attr]),
            NLM_F_REQUEST,
            99,
        );
        assert_eq!(ours.as_bytes(), &theirs[..], "{client} -> {server}");
    }
}

/// The attributes after the netlink and nfgenmsg headers of one encoded
/// message, as the kernel's answer would carry them.
fn body(msg: &[u8]) -> Attrs<'_> {
    Attrs::new(&msg[NLMSG_HDRLEN + NFGENMSG_LEN..])
}

#[test]
fn dump_requests_match() {
    let mut ours = MsgBuf::new();
    write_dump_elems(&mut ours, 43, &table(), SET4);
    let theirs = encode(
        NetfilterProtoFamily::Inet,
        0,
        NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table("filter".into()),
                SetElementList::Set(SET4.into()),
            ],
        }),
        NLM_F_REQUEST | NLM_F_DUMP,
        43,
    );
    assert_eq!(ours.as_bytes(), &theirs[..]);

    ours.clear();
    conntrack::write_dump(&mut ours, 44);
    let theirs = encode(
        NetfilterProtoFamily::Unspec,
        0,
        ConntrackMessage::Get(vec![]),
        NLM_F_REQUEST | NLM_F_DUMP,
        44,
    );
    assert_eq!(ours.as_bytes(), &theirs[..]);
}

#[test]
fn dumped_elements_read_back() {
    let a = rule("192.0.2.2", "198.51.100.2", 50012);
    let b = rule("2001:db8::2", "2001:db8:1::2", 1024);
    let with_expiry = |r: &Rule, timeout: u64, left: u64| {
        let ListAttribute::Element(mut attrs) = element(r, Some(timeout)) else {
            unreachable!()
        };
        attrs.push(SetElementAttribute::Expiration(left));
        ListAttribute::Element(attrs)
    };
    let answer = encode(
        NetfilterProtoFamily::Inet,
        0,
        NfTablesMessage::NewSetElement(elements(
            "filter",
            SET4,
            vec![
                with_expiry(&a, 180_000, 99_000),
                element(&b, None),
                // A key of another length: not one of ours, skipped.
                ListAttribute::Element(vec![SetElementAttribute::Key(DataAttribute::Value(vec![
                    1, 2, 3, 4,
                ]))]),
            ],
        )),
        0,
        1,
    );
    let mut out = Vec::new();
    read_elems(body(&answer), &mut out);
    assert_eq!(
        out,
        vec![
            Elem {
                rule: a,
                timeout_ms: 180_000,
                expires_ms: 99_000
            },
            Elem {
                rule: b,
                timeout_ms: 0,
                expires_ms: 0
            },
        ]
    );
}

/// A CT_NEW answer for `orig` and `reply` (src, dst, sport, dport) in TCP
/// state `state`, as the crate encodes it.
fn ct_entry(orig: (&str, &str, u16, u16), reply: (&str, &str, u16, u16), state: u8) -> Vec<u8> {
    let tuple = |(s, d, sp, dp): (&str, &str, u16, u16)| {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(s.parse().unwrap()),
                IPTuple::DestinationAddress(d.parse().unwrap()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::SourcePort(sp),
                ProtoTuple::DestinationPort(dp),
            ]),
        ]
    };
    encode(
        NetfilterProtoFamily::IPv4,
        0,
        ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple(orig)),
            ConntrackAttribute::CtaTupleReply(tuple(reply)),
            ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![
                ProtoInfoTCP::State(state),
                ProtoInfoTCP::OriginalWindowScale(7),
            ])]),
            ConntrackAttribute::CtaTimeout(600),
        ]),
        0,
        1,
    )
}

#[test]
fn dumped_control_connections_read_back() {
    let ports = ControlPorts::default();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    const ESTABLISHED: u8 = 3;
    const SYN_SENT: u8 = 1;

    // Masqueraded client 198.51.100.7 -> server, seen as 192.0.2.1.
    let e = ct_entry(
        ("198.51.100.7", "192.0.2.9", 40001, 21),
        ("192.0.2.9", "192.0.2.1", 21, 40001),
        ESTABLISHED,
    );
    let hosts = conntrack::established_control(body(&e), &ports).expect("control connection");
    assert_eq!(
        hosts,
        ControlHosts {
            client: [ip("198.51.100.7"), ip("192.0.2.1")],
            server: [ip("192.0.2.9"), ip("192.0.2.9")],
        }
    );
    let joins = |a: &str, b: &str| hosts.pairs().any(|p| p == (ip(a), ip(b)));
    assert!(joins("198.51.100.7", "192.0.2.9"), "passive/nat");
    assert!(joins("192.0.2.1", "192.0.2.9"), "passive");
    assert!(joins("192.0.2.9", "192.0.2.1"), "active");
    assert!(joins("192.0.2.9", "198.51.100.7"), "active, real client");
    assert!(!joins("192.0.2.9", "192.0.2.9"));
    assert!(!joins("198.51.100.7", "192.0.2.10"));
    assert!(
        !joins("198.51.100.7", "192.0.2.1"),
        "two views of the client"
    );

    // Port forwarded: the client asks 2121, the server listens on 21.
    let e = ct_entry(
        ("203.0.113.5", "192.0.2.1", 40002, 2121),
        ("198.51.100.2", "203.0.113.5", 21, 40002),
        ESTABLISHED,
    );
    assert!(conntrack::established_control(body(&e), &ports).is_some());

    for e in [
        ct_entry(
            ("192.0.2.3", "198.51.100.2", 40003, 21),
            ("198.51.100.2", "192.0.2.3", 21, 40003),
            SYN_SENT,
        ),
        ct_entry(
            ("192.0.2.4", "198.51.100.2", 40004, 80),
            ("198.51.100.2", "192.0.2.4", 80, 40004),
            ESTABLISHED,
        ),
    ] {
        assert_eq!(conntrack::established_control(body(&e), &ports), None);
    }
}

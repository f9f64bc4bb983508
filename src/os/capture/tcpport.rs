//! The default expression's program, run natively: when libpcap compiles
//! an expression to exactly the program of `tcp and port P` on Ethernet,
//! this test gives the same verdict in a few instructions.

/// DLT_EN10MB.
const DLT_EN10MB: i32 = 1;

/// The program libpcap (1.10) compiles, optimised, from `tcp and port P` on
/// Ethernet, as (code, jt, jf, k); `PORT` stands for P and `SNAP` for the
/// accepting return value (the file's snapshot length, any nonzero value).
const PORT: u32 = u32::MAX;
const SNAP: u32 = u32::MAX - 1;
const TCP_PORT_EN10MB: [(u16, u8, u8, u32); 20] = [
    (0x28, 0, 0, 12),      // ldh [12]             ethertype
    (0x15, 0, 9, 0x800),   // jeq #0x800           IPv4?
    (0x30, 0, 0, 23),      // ldb [23]             protocol
    (0x15, 0, 15, 6),      // jeq #6               TCP?
    (0x28, 0, 0, 20),      // ldh [20]             flags, fragment offset
    (0x45, 13, 0, 0x1fff), // jset #0x1fff         a later fragment: no
    (0xb1, 0, 0, 14),      // ldxb 4*([14]&0xf)    header length
    (0x48, 0, 0, 14),      // ldh [x + 14]         source port
    (0x15, 9, 0, PORT),    // jeq #P
    (0x48, 0, 0, 16),      // ldh [x + 16]         destination port
    (0x15, 7, 8, PORT),    // jeq #P
    (0x15, 0, 7, 0x86dd),  // jeq #0x86dd          IPv6?
    (0x30, 0, 0, 20),      // ldb [20]             next header
    (0x15, 0, 5, 6),       // jeq #6               TCP?
    (0x28, 0, 0, 54),      // ldh [54]             source port
    (0x15, 2, 0, PORT),    // jeq #P
    (0x28, 0, 0, 56),      // ldh [56]             destination port
    (0x15, 0, 1, PORT),    // jeq #P
    (0x06, 0, 0, SNAP),    // ret #snaplen         match
    (0x06, 0, 0, 0),       // ret #0               no match
];

/// `tcp and port P` on Ethernet, tested as its BPF program does: a load
/// past the captured bytes rejects the packet; VLAN-tagged frames, IPv4
/// fragments after the first and IPv6 with extension headers do not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TcpPort(u16);

impl TcpPort {
    /// The port P if `program`, compiled for `linktype`, is exactly the
    /// program of `tcp and port P` (checked instruction by instruction).
    pub(super) fn recognise(linktype: i32, program: &pcap::BpfProgram) -> Option<TcpPort> {
        let insns = program.get_instructions();
        if linktype != DLT_EN10MB || insns.len() != TCP_PORT_EN10MB.len() {
            return None;
        }
        let mut port = None;
        for (insn, &(code, jt, jf, k)) in insns.iter().zip(&TCP_PORT_EN10MB) {
            // The crate shows an instruction only as "code jt jf k".
            let text = insn.to_string();
            let mut f = text.split(' ').map(|w| w.parse::<u32>().ok());
            let (Some(c), Some(t), Some(e), Some(v), None) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next())
            else {
                return None;
            };
            if (c, t, e) != (u32::from(code), u32::from(jt), u32::from(jf)) {
                return None;
            }
            match k {
                PORT if v <= 0xffff && port.is_none_or(|p| p == v) => port = Some(v),
                SNAP if v > 0 => {}
                _ if k == v => {}
                _ => return None,
            }
        }
        port.map(|p| TcpPort(p as u16))
    }

    /// The program's verdict on a frame of which `frame` was captured.
    #[inline]
    pub(super) fn matches(self, frame: &[u8]) -> bool {
        let h = |at: usize| {
            frame
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let b = |at: usize| frame.get(at).copied();
        let port = Some(self.0);
        match h(12) {
            Some(0x0800) => {
                if b(23) != Some(6) || h(20).is_none_or(|f| f & 0x1fff != 0) {
                    return false;
                }
                let Some(x) = b(14).map(|v| 4 * usize::from(v & 0xf)) else {
                    return false;
                };
                h(x + 14) == port || h(x + 16) == port
            }
            Some(0x86dd) => b(20) == Some(6) && (h(54) == port || h(56) == port),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use pcap::Capture;

    use super::*;

    fn compiled(linktype: i32, expression: &str) -> pcap::BpfProgram {
        Capture::dead(pcap::Linktype(linktype))
            .unwrap()
            .compile(expression, true)
            .unwrap()
    }

    #[test]
    fn only_the_program_of_tcp_and_port_is_run_natively() {
        let native = |lt, e| TcpPort::recognise(lt, &compiled(lt, e));
        assert_eq!(native(1, "tcp and port 21"), Some(TcpPort(21)));
        assert_eq!(native(1, "tcp and port 2121"), Some(TcpPort(2121)));
        assert_eq!(native(1, "tcp and port 65535"), Some(TcpPort(65535)));
        for other in [
            "tcp and port 21 or port 22",
            "tcp and (port 21 or port 2121)",
            "tcp and port 21 and not host 192.0.2.9",
            "udp and port 21",
            "tcp and src port 21",
            "vlan and tcp and port 21",
            "port 21",
            "tcp",
            "",
        ] {
            assert_eq!(native(1, other), None, "{other}");
        }
        // A TCP/IPv4 SYN to port 21, then cut before its ports.
        let mut syn = vec![0u8; 54];
        syn[12..14].copy_from_slice(&[0x08, 0x00]);
        syn[14] = 0x45;
        syn[23] = 6;
        syn[36..38].copy_from_slice(&21u16.to_be_bytes());
        let (program, port) = (compiled(1, "tcp and port 21"), TcpPort(21));
        assert!(port.matches(&syn) && program.filter(&syn));
        assert!(!port.matches(&syn[..37]) && !program.filter(&syn[..37]));
        // Linux cooked capture: another program, left to libpcap.
        assert_eq!(native(113, "tcp and port 21"), None);
    }

    /// A frame that stresses each test of the program: family, protocol,
    /// fragment offset, header length, ports, VLAN tag, captured length.
    fn frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let ethertype = prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), any::<u16>()];
        let proto = prop_oneof![Just(6u8), Just(17), Just(44), any::<u8>()];
        let port = prop_oneof![Just(21u16), Just(20), Just(2121), any::<u16>()];
        let frag = prop_oneof![Just(0u16), Just(0x4000), Just(0x2000), any::<u16>()];
        let ihl = prop_oneof![Just(0x45u8), Just(0x46), Just(0x4f), any::<u8>()];
        (
            ethertype,
            proto,
            frag,
            ihl,
            (port.clone(), port),
            proptest::collection::vec(any::<u8>(), 80),
            0usize..90,
        )
            .prop_map(|(et, proto, frag, ihl, (sp, dp), mut f, len)| {
                f[12..14].copy_from_slice(&et.to_be_bytes());
                if et == 0x86dd {
                    f[20] = proto;
                    f[54..56].copy_from_slice(&sp.to_be_bytes());
                    f[56..58].copy_from_slice(&dp.to_be_bytes());
                } else {
                    f[14] = ihl;
                    f[20..22].copy_from_slice(&frag.to_be_bytes());
                    f[23] = proto;
                    let x = 14 + 4 * usize::from(ihl & 0xf);
                    if x + 4 <= f.len() {
                        f[x..x + 2].copy_from_slice(&sp.to_be_bytes());
                        f[x + 2..x + 4].copy_from_slice(&dp.to_be_bytes());
                    }
                }
                f.truncate(len);
                f
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4096))]
        /// The native test gives libpcap's verdict on every frame.
        #[test]
        fn native_test_agrees_with_libpcap(f in frame()) {
            let program = compiled(1, "tcp and port 21");
            let native = TcpPort::recognise(1, &program).unwrap();
            proptest::prop_assert_eq!(native.matches(&f), program.filter(&f));
        }
    }
}

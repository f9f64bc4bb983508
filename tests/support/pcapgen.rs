//! Test support: write real classic pcap files and build TCP conversations.
//!
//! Include it with `#[path = "support/pcapgen.rs"] mod pcapgen;`. It needs
//! only std and etherparse, so benchmarks can use it too. Output is the
//! classic libpcap format (magic a1b2c3d4 written little-endian, version
//! 2.4, microsecond timestamps, snaplen 262144) that tcpdump, libpcap and
//! Wireshark read.
//!
//! Frames are Ethernet + IPv4/IPv6 (picked by the address family) + TCP
//! with ttl/hop limit 64 and valid checksums; MAC addresses are derived from
//! the IP address so each host keeps one.
#![allow(dead_code)] // each includer uses a different part

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use etherparse::{PacketBuilder, TcpHeader};

/// TCP flag bits, as in header byte 13.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// LINKTYPE_ values for the file header.
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;

/// Snapshot length written into the file header; longer frames are cut.
pub const SNAPLEN: u32 = 262_144;

/// Writes one classic pcap file: the global header on `new`, then one
/// record per `packet`. Wrap files in a `BufWriter`.
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut w: W, linktype: u32) -> io::Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// One record captured at `ts_us` microseconds since the epoch.
    pub fn packet(&mut self, ts_us: u64, frame: &[u8]) -> io::Result<()> {
        let caplen = frame.len().min(SNAPLEN as usize);
        let secs = u32::try_from(ts_us / 1_000_000)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "timestamp beyond 2106"))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(&frame[..caplen])
    }

    /// Flush and hand back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Locally administered MAC 02:00:<last four address bytes>.
fn mac(ip: IpAddr) -> [u8; 6] {
    let tail = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x00, tail[0], tail[1], tail[2], tail[3]]
}

/// Ethernet + IPv4 or IPv6 (by address family) + TCP, ttl/hop limit 64,
/// window 65535, correct checksums. `flags` are TCP flag bits ([`SYN`] ...);
/// `ack` is written whatever the flags. Panics if the families differ.
pub fn ethernet_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let plain = TcpExtra {
        window: 65535,
        wscale: None,
        timestamp: None,
    };
    ethernet_tcp_extra(src, dst, seq, ack, flags, plain, payload)
}

/// One TCP connection as a stream of Ethernet frames. `cseq`/`sseq` are the
/// next sequence numbers client and server will send; each side acks what
/// the other has sent so far.
#[derive(Clone, Debug)]
pub struct Conversation {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub cseq: u32,
    pub sseq: u32,
}

impl Conversation {
    pub fn new(client: SocketAddr, server: SocketAddr, client_isn: u32, server_isn: u32) -> Self {
        Conversation {
            client,
            server,
            cseq: client_isn,
            sseq: server_isn,
        }
    }

    /// SYN, SYN/ACK, ACK. Afterwards both sequence numbers are ISN + 1.
    pub fn handshake(&mut self) -> Vec<Vec<u8>> {
        let syn = ethernet_tcp(self.client, self.server, self.cseq, 0, SYN, b"");
        self.cseq = self.cseq.wrapping_add(1);
        let synack = ethernet_tcp(
            self.server,
            self.client,
            self.sseq,
            self.cseq,
            SYN | ACK,
            b"",
        );
        self.sseq = self.sseq.wrapping_add(1);
        let ack = ethernet_tcp(self.client, self.server, self.cseq, self.sseq, ACK, b"");
        vec![syn, synack, ack]
    }

    /// The next in-sequence client->server segment (PSH|ACK).
    pub fn client(&mut self, data: &[u8]) -> Vec<u8> {
        let f = self.client_raw(self.cseq, data);
        self.cseq = self.cseq.wrapping_add(data.len() as u32);
        f
    }

    /// The next in-sequence server->client segment (PSH|ACK).
    pub fn server(&mut self, data: &[u8]) -> Vec<u8> {
        let f = self.server_raw(self.sseq, data);
        self.sseq = self.sseq.wrapping_add(data.len() as u32);
        f
    }

    /// A client->server PSH|ACK at any `seq`; state is left alone.
    pub fn client_raw(&self, seq: u32, data: &[u8]) -> Vec<u8> {
        ethernet_tcp(self.client, self.server, seq, self.sseq, PSH | ACK, data)
    }

    /// A server->client PSH|ACK at any `seq`; state is left alone.
    pub fn server_raw(&self, seq: u32, data: &[u8]) -> Vec<u8> {
        ethernet_tcp(self.server, self.client, seq, self.cseq, PSH | ACK, data)
    }

    /// Client FIN|ACK, server FIN|ACK, client ACK; each FIN uses one
    /// sequence number.
    pub fn fin(&mut self) -> Vec<Vec<u8>> {
        let cfin = ethernet_tcp(
            self.client,
            self.server,
            self.cseq,
            self.sseq,
            FIN | ACK,
            b"",
        );
        self.cseq = self.cseq.wrapping_add(1);
        let sfin = ethernet_tcp(
            self.server,
            self.client,
            self.sseq,
            self.cseq,
            FIN | ACK,
            b"",
        );
        self.sseq = self.sseq.wrapping_add(1);
        let ack = ethernet_tcp(self.client, self.server, self.cseq, self.sseq, ACK, b"");
        vec![cfin, sfin, ack]
    }
}

/// Where the IP header of an Ethernet frame from [`ethernet_tcp`] starts,
/// and the offset of the TCP checksum in the frame.
fn tcp_checksum_at(frame: &[u8]) -> usize {
    const ETH: usize = 14;
    match frame[ETH] >> 4 {
        4 => ETH + usize::from(frame[ETH] & 0x0f) * 4 + 16,
        6 => ETH + 40 + 16,
        v => panic!("not an IP frame (version {v})"),
    }
}

/// Ones' complement sum of big-endian 16-bit words, folded.
fn ones_sum(data: &[u8], mut acc: u32) -> u16 {
    for w in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Recompute the IPv4 header checksum of an Ethernet frame after its
/// header was edited (a receiver drops a frame whose checksum is wrong).
pub fn refresh_ipv4_checksum(frame: &mut [u8]) {
    const ETH: usize = 14;
    let hl = usize::from(frame[ETH] & 0x0f) * 4;
    frame[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let sum = !ones_sum(&frame[ETH..ETH + hl], 0);
    frame[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Make the TCP checksum of an Ethernet frame wrong (and not the value
/// checksum offload leaves), as a corrupted or forged segment has it.
pub fn break_tcp_checksum(frame: &mut [u8]) {
    let at = tcp_checksum_at(frame);
    frame[at] ^= 0x5a;
}

/// Write what a sender with checksum offload leaves in the TCP checksum
/// field: the folded pseudo-header sum, for the NIC to finish. Captures on
/// virtual links (veth, virtio) carry this on every packet.
pub fn offload_tcp_checksum(frame: &mut [u8]) {
    const ETH: usize = 14;
    let at = tcp_checksum_at(frame);
    let tcp_len = (frame.len() - (at - 16)) as u32;
    let addrs = match frame[ETH] >> 4 {
        4 => &frame[ETH + 12..ETH + 20],
        _ => &frame[ETH + 8..ETH + 40],
    };
    let partial = ones_sum(addrs, 6 + tcp_len);
    frame[at..at + 2].copy_from_slice(&partial.to_be_bytes());
}

/// The same packet as a Linux cooked capture (SLL) record: packet type
/// `PACKET_OUTGOING` (4) when `outgoing`, else `PACKET_HOST` (0). Write it
/// to a [`LINKTYPE_LINUX_SLL`] file.
pub fn ethernet_to_sll(frame: &[u8], outgoing: bool) -> Vec<u8> {
    let pkttype: u16 = if outgoing { 4 } else { 0 };
    let mut v = Vec::with_capacity(frame.len() + 2);
    v.extend_from_slice(&pkttype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
    v.extend_from_slice(&6u16.to_be_bytes()); // address length
    v.extend_from_slice(&frame[6..12]); // source MAC
    v.extend_from_slice(&[0, 0]); // address padded to 8
    v.extend_from_slice(&frame[12..]); // ethertype and the IP packet
    v
}

/// TCP header fields beyond flags: the window field and the options that
/// change how a receiver judges segments.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpExtra {
    pub window: u16,
    pub wscale: Option<u8>,
    /// (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
}

/// [`ethernet_tcp`] with the window field and options of `extra`.
pub fn ethernet_tcp_extra(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    extra: TcpExtra,
    payload: &[u8],
) -> Vec<u8> {
    use etherparse::TcpOptionElement;
    let mut tcp = TcpHeader::new(src.port(), dst.port(), seq, extra.window);
    tcp.acknowledgment_number = ack;
    tcp.fin = flags & FIN != 0;
    tcp.syn = flags & SYN != 0;
    tcp.rst = flags & RST != 0;
    tcp.psh = flags & PSH != 0;
    tcp.ack = flags & ACK != 0;
    tcp.urg = flags & URG != 0;
    let mut opts = Vec::new();
    if let Some(s) = extra.wscale {
        opts.push(TcpOptionElement::Noop);
        opts.push(TcpOptionElement::WindowScale(s));
    }
    if let Some((val, ecr)) = extra.timestamp {
        opts.push(TcpOptionElement::Noop);
        opts.push(TcpOptionElement::Noop);
        opts.push(TcpOptionElement::Timestamp(val, ecr));
    }
    tcp.set_options(&opts).expect("TCP options fit");
    let eth = PacketBuilder::ethernet2(mac(src.ip()), mac(dst.ip()));
    let mut frame = Vec::with_capacity(14 + 40 + 60 + payload.len());
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth
            .ipv4(s.octets(), d.octets(), 64)
            .tcp_header(tcp)
            .write(&mut frame, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth
            .ipv6(s.octets(), d.octets(), 64)
            .tcp_header(tcp)
            .write(&mut frame, payload),
        _ => panic!("TCP frame: {src} and {dst} are of different families"),
    }
    .expect("building a TCP frame");
    frame
}

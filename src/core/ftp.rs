//! FTP command/reply matching: complete lines in, negotiations out.
//!
//! Client lines are parsed as commands and queued in a bounded FIFO; each
//! final server reply (2xx-5xx) completes the oldest queued command, so
//! pipelined commands pair with their own replies. The server's greeting
//! completes nothing, 1xx replies are preliminary, and a multi-line reply
//! (`227-` ... `227 `) completes its command at its last line, judged by
//! its first line (as the original did). A data connection is negotiated
//! by PASV answered `227` and EPSV answered `229`. Active mode is decided
//! here too, in one place: at the command, since some servers connect
//! before they answer `200`; a refusal of it is reported so the hole can
//! close, and so is a PORT/EPRT that comes while the previous one still
//! waits for its reply (at most one active hole waits per connection).
//! Once `AUTH` is answered `234` the connection is encrypted and nothing
//! more is read from it.
//!
//! A line reassembly discarded as too long is still a command to the
//! server, which answers it: it is queued as a placeholder
//! ([`Matcher::client_discarded`]). After a capture gap the queue is
//! emptied ([`Matcher::realign`]) and the session decides which replies may
//! pair again.
//!
//! Addresses inside PORT/EPRT/227 are parsed (a malformed one is refused)
//! but not returned: policy uses the control connection's addresses.

use crate::core::reassembly::find_byte;

/// Pending commands kept per session; more are counted and dropped.
pub const MAX_PENDING: usize = 16;

/// The address family an active negotiation named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Af {
    /// `PORT`: its address is ignored, any control connection may use it.
    Unspecified,
    /// `EPRT |1|...`.
    Inet,
    /// `EPRT |2|...`.
    Inet6,
}

/// A client command, as far as data connections are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Command {
    /// `PORT h1,h2,h3,h4,p1,p2`: active, port.
    Port(u16),
    /// `EPRT |af|addr|port|`: active, port and address family.
    Eprt { port: u16, af: Af },
    /// `PASV`.
    Pasv,
    /// `EPSV` or `EPSV <af>`.
    Epsv,
    /// `AUTH ...`: a `234` reply means TLS follows.
    Auth,
    /// A PORT or EPRT whose argument does not parse.
    Malformed,
    /// Anything else.
    #[default]
    Other,
}

/// A data connection both sides agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// The server will connect to the client's `port` (PORT/EPRT).
    Active { port: u16, af: Af },
    /// The client will connect to the server's `port` (227/229).
    Passive { port: u16 },
}

/// What one server line produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyEvent {
    /// Nothing worth acting on.
    None,
    /// A passive negotiation completed.
    Negotiated(Negotiation),
    /// A 227/229 paired with PASV/EPSV whose port does not parse.
    ParseFailed,
    /// The connection switched to TLS; it is no longer readable.
    Encrypted,
    /// The server refused a PORT/EPRT (any final reply but 200).
    ActiveRefused { port: u16 },
}

/// What one client line produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandEvent {
    /// Queued (anything but a well-formed PORT/EPRT).
    Queued(Command),
    /// A well-formed PORT/EPRT, queued: open its hole now. `unanswered` is
    /// the port of the previous one if it still waits for its reply.
    Active {
        neg: Negotiation,
        unanswered: Option<u16>,
    },
    /// The FIFO was full; the command was dropped.
    Overflow,
    /// Ignored (connection encrypted).
    Ignored,
}

/// First line of a reply still in progress. Six bytes (the port and
/// whether there is one kept apart), so the matcher stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReplyStart {
    code: [u8; 3],
    /// A port was parsed from the first line (227/229 only).
    parsed: bool,
    port: u16,
}

impl ReplyStart {
    fn new(code: [u8; 3], port: Option<u16>) -> Self {
        ReplyStart {
            code,
            parsed: port.is_some(),
            port: port.unwrap_or(0),
        }
    }

    fn port(&self) -> Option<u16> {
        self.parsed.then_some(self.port)
    }
}

/// A queued [`Command`] in three bytes (every session has a queue of
/// them): a kind, then the port of a PORT/EPRT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Packed([u8; 3]);

impl Packed {
    fn new(cmd: Command) -> Self {
        let (kind, port) = match cmd {
            Command::Other => (0, 0),
            Command::Pasv => (1, 0),
            Command::Epsv => (2, 0),
            Command::Auth => (3, 0),
            Command::Malformed => (4, 0),
            Command::Port(port) => (5, port),
            Command::Eprt {
                port,
                af: Af::Unspecified,
            } => (6, port),
            Command::Eprt { port, af: Af::Inet } => (7, port),
            Command::Eprt {
                port,
                af: Af::Inet6,
            } => (8, port),
        };
        let [hi, lo] = port.to_be_bytes();
        Packed([kind, hi, lo])
    }

    fn get(self) -> Command {
        let port = u16::from_be_bytes([self.0[1], self.0[2]]);
        let eprt = |af| Command::Eprt { port, af };
        match self.0[0] {
            1 => Command::Pasv,
            2 => Command::Epsv,
            3 => Command::Auth,
            4 => Command::Malformed,
            5 => Command::Port(port),
            6 => eprt(Af::Unspecified),
            7 => eprt(Af::Inet),
            8 => eprt(Af::Inet6),
            _ => Command::Other,
        }
    }
}

/// Matching state of one control connection.
#[derive(Debug, Default)]
pub struct Matcher {
    pending: [Packed; MAX_PENDING],
    head: u8,
    len: u8,
    greeted: bool,
    encrypted: bool,
    multiline: Option<ReplyStart>,
    /// Port of the last PORT/EPRT whose reply has not come yet.
    awaiting: Option<u16>,
}

fn is_verb(line: &[u8], verb: &[u8]) -> bool {
    line.len() >= verb.len()
        && line[..verb.len()].eq_ignore_ascii_case(verb)
        && (line.len() == verb.len() || line[verb.len()] == b' ')
}

fn arg_of(line: &[u8], verb_len: usize) -> &[u8] {
    let rest = line.get(verb_len + 1..).unwrap_or(&[]);
    rest.trim_ascii()
}

/// Parse a decimal number of at most `max`, digits only.
fn number(s: &[u8], max: u32) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = s.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    (n <= max).then_some(n)
}

/// `h1,h2,h3,h4,p1,p2` (exactly six bytes) -> port.
pub fn parse_hostport(s: &[u8]) -> Option<u16> {
    // One pass, as `number` on each comma-separated field trimmed of ASCII
    // whitespace: 1 to 5 digits, at most 255, whitespace only around them.
    let mut parts = [0u32; 6];
    let (mut field, mut value, mut digits, mut after) = (0, 0u32, 0, false);
    for &b in s {
        match b {
            b',' => {
                if digits == 0 || value > 255 || field == 5 {
                    return None;
                }
                parts[field] = value;
                (field, value, digits, after) = (field + 1, 0, 0, false);
            }
            b'0'..=b'9' if !after && digits < 5 => {
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
            }
            _ if b.is_ascii_whitespace() => after = digits > 0,
            _ => return None,
        }
    }
    if field != 5 || digits == 0 || value > 255 {
        return None;
    }
    parts[5] = value;
    Some((parts[4] * 256 + parts[5]) as u16)
}

/// `<d>af<d>addr<d>port<d>` (RFC 2428) -> (port, family).
pub fn parse_eprt(s: &[u8]) -> Option<(u16, Af)> {
    let &d = s.first()?;
    if !(33..=126).contains(&d) || d.is_ascii_digit() {
        return None;
    }
    let mut f = s[1..].split(|&b| b == d);
    let (af, addr, port, end) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if !end.is_empty() || f.next().is_some() {
        return None;
    }
    let addr = std::str::from_utf8(addr).ok()?;
    let af = match af {
        b"1" => addr.parse::<std::net::Ipv4Addr>().map(|_| Af::Inet).ok()?,
        b"2" => addr.parse::<std::net::Ipv6Addr>().map(|_| Af::Inet6).ok()?,
        _ => return None,
    };
    let port = number(port, 65535)?;
    Some((port as u16, af))
}

/// The port in a 227 reply text: `(h1,...,p2)`, or without parentheses
/// the first run of six comma-separated numbers (RFC 1123 4.1.2.6).
pub fn parse_227(text: &[u8]) -> Option<u16> {
    if let Some(open) = find_byte(text, b'(') {
        let rest = &text[open + 1..];
        let close = find_byte(rest, b')')?;
        return parse_hostport(&rest[..close]);
    }
    // Scan: the first digit that starts a run of digits and commas.
    let start = text.iter().position(u8::is_ascii_digit)?;
    let run = &text[start..];
    let end = run
        .iter()
        .position(|&b| !(b.is_ascii_digit() || b == b','))
        .unwrap_or(run.len());
    parse_hostport(&run[..end])
}

/// The port in a 229 reply text: `(<d><d><d>port<d>)`.
pub fn parse_229(text: &[u8]) -> Option<u16> {
    let open = find_byte(text, b'(')?;
    let rest = &text[open + 1..];
    let close = find_byte(rest, b')')?;
    let inner = &rest[..close];
    let &d = inner.first()?;
    if inner.len() < 5
        || inner[1] != d
        || inner[2] != d
        || inner[inner.len() - 1] != d
        || d.is_ascii_digit()
    {
        return None;
    }
    number(&inner[3..inner.len() - 1], 65535).map(|p| p as u16)
}

/// Parse one client line.
pub fn parse_command(line: &[u8]) -> Command {
    if is_verb(line, b"PORT") {
        parse_hostport(arg_of(line, 4)).map_or(Command::Malformed, Command::Port)
    } else if is_verb(line, b"EPRT") {
        parse_eprt(arg_of(line, 4))
            .map_or(Command::Malformed, |(port, af)| Command::Eprt { port, af })
    } else if is_verb(line, b"PASV") {
        Command::Pasv
    } else if is_verb(line, b"EPSV") {
        // `EPSV ALL` is answered 200 and negotiates nothing.
        if arg_of(line, 4).eq_ignore_ascii_case(b"ALL") {
            Command::Other
        } else {
            Command::Epsv
        }
    } else if is_verb(line, b"AUTH") {
        Command::Auth
    } else {
        Command::Other
    }
}

/// `NNN ` or `NNN-` -> (code, is_last).
fn reply_code(line: &[u8]) -> Option<([u8; 3], bool)> {
    let code: [u8; 3] = line.get(..3)?.try_into().ok()?;
    if !code.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&code[0]) {
        return None;
    }
    match line.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        _ => None,
    }
}

impl Matcher {
    /// True once the connection switched to TLS.
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// A complete client line.
    pub fn client_line(&mut self, line: &[u8]) -> CommandEvent {
        self.queue(parse_command(line))
    }

    /// A client line too long to keep: the server still reads it as a
    /// command and answers it, so its reply must pair with it.
    pub fn client_discarded(&mut self) -> CommandEvent {
        self.queue(Command::Other)
    }

    fn queue(&mut self, cmd: Command) -> CommandEvent {
        if self.encrypted {
            return CommandEvent::Ignored;
        }
        if self.len as usize == MAX_PENDING {
            return CommandEvent::Overflow;
        }
        let slot = (self.head as usize + self.len as usize) % MAX_PENDING;
        self.pending[slot] = Packed::new(cmd);
        self.len += 1;
        let (port, af) = match cmd {
            Command::Port(port) => (port, Af::Unspecified),
            Command::Eprt { port, af } => (port, af),
            _ => return CommandEvent::Queued(cmd),
        };
        CommandEvent::Active {
            neg: Negotiation::Active { port, af },
            unanswered: self.awaiting.replace(port),
        }
    }

    /// Commands and replies were lost: forget what was pending. Replies
    /// that follow may answer commands we never saw; the caller decides
    /// when they pair again (`server_line`'s `pair`).
    pub fn realign(&mut self) {
        self.len = 0;
        self.head = 0;
        self.multiline = None;
        // Realigned replies answer commands read after this, never the
        // greeting (long past when a connection is picked up mid-stream).
        self.greeted = true;
    }

    fn pop(&mut self) -> Option<Command> {
        if self.len == 0 {
            return None;
        }
        let cmd = self.pending[self.head as usize].get();
        self.head = ((self.head as usize + 1) % MAX_PENDING) as u8;
        self.len -= 1;
        Some(cmd)
    }

    /// A complete server line. With `pair` false a final reply completes
    /// no command (it may answer one we never saw).
    pub fn server_line(&mut self, line: &[u8], pair: bool) -> ReplyEvent {
        if self.encrypted {
            return ReplyEvent::None;
        }
        let start = match self.multiline {
            Some(start) => {
                // Inside a multi-line reply only `NNN ` with the same code ends it.
                match reply_code(line) {
                    Some((code, true)) if code == start.code => {
                        self.multiline = None;
                        start
                    }
                    _ => return ReplyEvent::None,
                }
            }
            None => {
                let Some((code, last)) = reply_code(line) else {
                    return ReplyEvent::None;
                };
                let port = match &code {
                    b"227" => parse_227(&line[3..]),
                    b"229" => parse_229(&line[3..]),
                    _ => None,
                };
                let start = ReplyStart::new(code, port);
                if !last {
                    self.multiline = Some(start);
                    return ReplyEvent::None;
                }
                start
            }
        };
        if !pair && start.code[0] != b'1' {
            self.greeted = true;
            return ReplyEvent::None;
        }
        self.complete(start)
    }

    fn complete(&mut self, reply: ReplyStart) -> ReplyEvent {
        if reply.code[0] == b'1' {
            return ReplyEvent::None;
        }
        if !self.greeted {
            // The first final reply is the greeting (or a refusal): it
            // answers no command even if the client already sent some.
            self.greeted = true;
            return ReplyEvent::None;
        }
        let Some(cmd) = self.pop() else {
            return ReplyEvent::None; // unsolicited, e.g. 421
        };
        if let Command::Port(port) | Command::Eprt { port, .. } = cmd
            && self.awaiting == Some(port)
        {
            self.awaiting = None;
        }
        match (cmd, &reply.code) {
            (Command::Port(_) | Command::Eprt { .. }, b"200") => ReplyEvent::None,
            (Command::Pasv, b"227") | (Command::Epsv, b"229") => match reply.port() {
                Some(port) => ReplyEvent::Negotiated(Negotiation::Passive { port }),
                None => ReplyEvent::ParseFailed,
            },
            (Command::Port(port) | Command::Eprt { port, .. }, _) => {
                ReplyEvent::ActiveRefused { port }
            }
            (Command::Auth, b"234") => {
                self.encrypted = true;
                ReplyEvent::Encrypted
            }
            _ => ReplyEvent::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packed_commands_round_trip() {
        let afs = [Af::Unspecified, Af::Inet, Af::Inet6];
        let mut all = vec![
            Command::Other,
            Command::Pasv,
            Command::Epsv,
            Command::Auth,
            Command::Malformed,
        ];
        for port in [0, 1, 21, 256, 50000, 65535] {
            all.push(Command::Port(port));
            all.extend(afs.map(|af| Command::Eprt { port, af }));
        }
        for cmd in all {
            assert_eq!(Packed::new(cmd).get(), cmd);
        }
        assert!(std::mem::size_of::<Matcher>() <= 62);
    }

    fn greeted() -> Matcher {
        let mut m = Matcher::default();
        assert_eq!(m.server_line(b"220 ready", true), ReplyEvent::None);
        m
    }

    #[test]
    fn pasv_227_variants() {
        for reply in [
            &b"227 Entering Passive Mode (198,51,100,2,195,80)"[..],
            b"227 Entering Passive Mode (198,51,100,2,195,80).",
            b"227 =198,51,100,2,195,80",
            b"227 Entering Passive Mode 198,51,100,2,195,80",
        ] {
            let mut m = greeted();
            m.client_line(b"pasv");
            assert_eq!(
                m.server_line(reply, true),
                ReplyEvent::Negotiated(Negotiation::Passive { port: 50000 }),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn epsv_229() {
        let mut m = greeted();
        m.client_line(b"EPSV 2");
        assert_eq!(
            m.server_line(b"229 Entering Extended Passive Mode (|||50001|)", true),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50001 })
        );
        m.client_line(b"EPSV");
        assert_eq!(
            m.server_line(b"229 ok (!!!50002!)", true),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50002 })
        );
    }

    fn active(port: u16, af: Af, unanswered: Option<u16>) -> CommandEvent {
        CommandEvent::Active {
            neg: Negotiation::Active { port, af },
            unanswered,
        }
    }

    #[test]
    fn active_is_decided_at_the_command() {
        let mut m = greeted();
        assert_eq!(
            m.client_line(b"PORT 192,0,2,2,195,81"),
            active(50001, Af::Unspecified, None)
        );
        assert_eq!(
            m.server_line(b"500 no", true),
            ReplyEvent::ActiveRefused { port: 50001 }
        );
        assert_eq!(
            m.client_line(b"EPRT |2|2001:db8::2|50002|"),
            active(50002, Af::Inet6, None)
        );
        assert_eq!(m.server_line(b"200 EPRT ok", true), ReplyEvent::None);
        assert_eq!(
            m.client_line(b"eprt !1!192.0.2.2!50003!"),
            active(50003, Af::Inet, None)
        );
    }

    #[test]
    fn one_active_hole_waits_for_its_reply() {
        let mut m = greeted();
        m.client_line(b"PORT 192,0,2,2,195,81");
        assert_eq!(
            m.client_line(b"PORT 192,0,2,2,195,82"),
            active(50002, Af::Unspecified, Some(50001))
        );
        assert_eq!(m.server_line(b"200 ok", true), ReplyEvent::None);
        assert_eq!(m.server_line(b"200 ok", true), ReplyEvent::None);
        assert_eq!(
            m.client_line(b"PORT 192,0,2,2,195,83"),
            active(50003, Af::Unspecified, None)
        );
    }

    #[test]
    fn discarded_long_line_is_answered() {
        let mut m = greeted();
        assert_eq!(m.client_discarded(), CommandEvent::Queued(Command::Other));
        m.client_line(b"PORT 192,0,2,2,195,81");
        // The 500 answers the long line, not the PORT.
        assert_eq!(m.server_line(b"500 too long", true), ReplyEvent::None);
        assert_eq!(
            m.server_line(b"500 no", true),
            ReplyEvent::ActiveRefused { port: 50001 }
        );
    }

    #[test]
    fn unpaired_replies_after_realign() {
        let mut m = greeted();
        m.client_line(b"PASV");
        m.realign();
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,80)", false),
            ReplyEvent::None
        );
        m.client_line(b"PASV");
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,81)", true),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50001 })
        );
    }

    #[test]
    fn greeting_does_not_answer_an_early_command() {
        let mut m = Matcher::default();
        m.client_line(b"PASV");
        assert_eq!(
            m.server_line(b"227 looks like a greeting (198,51,100,2,195,80)", true),
            ReplyEvent::None
        );
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,81)", true),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50001 })
        );
    }

    #[test]
    fn pipelined_commands_pair_with_their_replies() {
        let mut m = greeted();
        m.client_line(b"TYPE I");
        m.client_line(b"PASV");
        m.client_line(b"RETR x");
        assert_eq!(
            m.server_line(b"227 wrong pairing (198,51,100,2,195,80)", true),
            ReplyEvent::None
        );
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,82)", true),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50002 })
        );
        assert_eq!(m.server_line(b"150 opening", true), ReplyEvent::None);
        assert_eq!(m.server_line(b"226 done", true), ReplyEvent::None);
    }

    #[test]
    fn multiline_reply_judged_by_first_line() {
        let mut m = greeted();
        m.client_line(b"PASV");
        assert_eq!(
            m.server_line(b"227-Entering Passive Mode (198,51,100,2,195,80)", true),
            ReplyEvent::None
        );
        assert_eq!(
            m.server_line(b"227 fake (1,2,3,4,0,80)", true),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50000 })
        );
        // A multi-line reply in which another code's line appears.
        m.client_line(b"NOOP");
        m.client_line(b"PASV");
        assert_eq!(m.server_line(b"200-hello", true), ReplyEvent::None);
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,0,21)", true),
            ReplyEvent::None
        );
        assert_eq!(m.server_line(b"200 end", true), ReplyEvent::None);
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,83)", true),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50003 })
        );
    }

    #[test]
    fn unpaired_227_opens_nothing() {
        let mut m = greeted();
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,80)", true),
            ReplyEvent::None
        );
        m.client_line(b"NOOP PASV");
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,80)", true),
            ReplyEvent::None
        );
    }

    #[test]
    fn malformed_numbers() {
        for bad in [
            &b"PORT 192,0,2,2,300,1"[..],
            b"PORT 1,2,3,4,5",
            b"PORT 1,2,3,4,5,6,7",
            b"PORT",
            b"PORT a,b,c,d,e,f",
        ] {
            assert_eq!(parse_command(bad), Command::Malformed, "{bad:?}");
        }
        for bad in [
            &b"EPRT |3|1.2.3.4|5|"[..],
            b"EPRT |1|1.2.3|5|",
            b"EPRT |1|1.2.3.4|70000|",
            b"EPRT |2|1.2.3.4|5|",
            b"EPRT |1|1.2.3.4|5",
        ] {
            assert_eq!(parse_command(bad), Command::Malformed, "{bad:?}");
        }
        let mut m = greeted();
        m.client_line(b"PASV");
        assert_eq!(
            m.server_line(b"227 Entering Passive Mode (1,2,3,4,999,1)", true),
            ReplyEvent::ParseFailed
        );
        m.client_line(b"EPSV");
        assert_eq!(m.server_line(b"229 (|||x|)", true), ReplyEvent::ParseFailed);
    }

    #[test]
    fn verbs_need_a_word_boundary() {
        assert_eq!(parse_command(b"PASVX"), Command::Other);
        assert_eq!(parse_command(b"EPSV ALL"), Command::Other);
        assert_eq!(parse_command(b"Pasv"), Command::Pasv);
    }

    #[test]
    fn tls_stops_reading() {
        let mut m = greeted();
        m.client_line(b"AUTH TLS");
        assert_eq!(m.server_line(b"234 go ahead", true), ReplyEvent::Encrypted);
        assert_eq!(m.client_line(b"PASV"), CommandEvent::Ignored);
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,80)", true),
            ReplyEvent::None
        );
    }

    #[test]
    fn fifo_is_bounded() {
        let mut m = greeted();
        for _ in 0..MAX_PENDING {
            assert!(matches!(m.client_line(b"NOOP"), CommandEvent::Queued(_)));
        }
        assert_eq!(m.client_discarded(), CommandEvent::Overflow);
        assert_eq!(m.client_line(b"PASV"), CommandEvent::Overflow);
    }

    /// `h1,...,p2` by splitting and trimming each field: what the parser
    /// must agree with.
    fn hostport_by_split(s: &[u8]) -> Option<u16> {
        let parts: Vec<&[u8]> = s.split(|&b| b == b',').collect();
        if parts.len() != 6 {
            return None;
        }
        let n: Vec<u32> = parts
            .iter()
            .map(|p| number(p.trim_ascii(), 255))
            .collect::<Option<_>>()?;
        Some((n[4] * 256 + n[5]) as u16)
    }

    proptest! {
        #[test]
        fn hostport_agrees_with_split(s in proptest::collection::vec(
            prop_oneof![Just(b','), Just(b' '), Just(b'\t'), Just(b'1'), Just(b'9'), Just(b'0'), Just(b'2'), Just(b'5'), any::<u8>()],
            0..40,
        )) {
            prop_assert_eq!(parse_hostport(&s), hostport_by_split(&s));
        }

        #[test]
        fn hostport_fields_agree_with_split(fields in proptest::collection::vec(
            prop_oneof![Just(""), Just("0"), Just(" 12"), Just("195 "), Just("255"), Just("256"), Just("00080"), Just("123456"), Just("1 2"), Just("\t7\r")],
            4..8,
        )) {
            let s = fields.join(",");
            prop_assert_eq!(parse_hostport(s.as_bytes()), hostport_by_split(s.as_bytes()));
        }

        #[test]
        fn parsers_never_panic(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_command(&line);
            let _ = parse_227(&line);
            let _ = parse_229(&line);
            let mut m = greeted();
            m.client_line(&line);
            let _ = m.server_line(&line, true);
        }
    }
}

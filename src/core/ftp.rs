//! FTP command/reply matching: complete lines in, negotiations out.
//!
//! Client lines are parsed as commands and queued in a bounded FIFO; each
//! final server reply (2xx-5xx) completes the oldest queued command, so
//! pipelined commands pair with their own replies. The server's greeting
//! completes nothing, 1xx replies are preliminary, and a multi-line reply
//! (`227-` ... `227 `) completes its command at its last line, judged by
//! its first line (as the original did). A data connection is negotiated
//! only by a *pair*: PORT/EPRT answered `200`, PASV answered `227`, EPSV
//! answered `229`. (Active mode is also reported when the command is seen,
//! see the engine, and a refusal of it is reported so the hole can close.) Once `AUTH` is answered `234` the connection is
//! encrypted and nothing more is read from it.
//!
//! Addresses inside PORT/EPRT/227 are parsed (a malformed one is refused)
//! but not returned: policy uses the control connection's addresses.

/// Pending commands kept per session; more are counted and dropped.
pub const MAX_PENDING: usize = 16;

/// A client command, as far as data connections are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Command {
    /// `PORT h1,h2,h3,h4,p1,p2`: active, port.
    Port(u16),
    /// `EPRT |af|addr|port|`: active, port; `v6` is the address family.
    Eprt { port: u16, v6: bool },
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
    /// The server will connect to the client's `port` (PORT/EPRT + 200).
    Active { port: u16, v6: Option<bool> },
    /// The client will connect to the server's `port` (227/229).
    Passive { port: u16 },
}

/// What one server line produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyEvent {
    /// Nothing worth acting on.
    None,
    /// A negotiation completed.
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
    /// Queued.
    Queued(Command),
    /// The FIFO was full; the command was dropped.
    Overflow,
    /// Ignored (connection encrypted).
    Ignored,
}

/// First line of a reply still in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReplyStart {
    code: [u8; 3],
    /// Port parsed from the first line (227/229 only).
    port: Option<u16>,
}

/// Matching state of one control connection.
#[derive(Debug, Default)]
pub struct Matcher {
    pending: [Command; MAX_PENDING],
    head: u8,
    len: u8,
    greeted: bool,
    encrypted: bool,
    multiline: Option<ReplyStart>,
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
    let mut parts = [0u32; 6];
    let mut it = s.split(|&b| b == b',');
    for p in parts.iter_mut() {
        *p = number(it.next()?.trim_ascii(), 255)?;
    }
    if it.next().is_some() {
        return None;
    }
    Some((parts[4] * 256 + parts[5]) as u16)
}

/// `<d>af<d>addr<d>port<d>` (RFC 2428) -> (port, v6).
pub fn parse_eprt(s: &[u8]) -> Option<(u16, bool)> {
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
    let v6 = match af {
        b"1" => addr.parse::<std::net::Ipv4Addr>().map(|_| false).ok()?,
        b"2" => addr.parse::<std::net::Ipv6Addr>().map(|_| true).ok()?,
        _ => return None,
    };
    let port = number(port, 65535)?;
    Some((port as u16, v6))
}

/// The port in a 227 reply text: `(h1,...,p2)`, or without parentheses
/// the first run of six comma-separated numbers (RFC 1123 4.1.2.6).
pub fn parse_227(text: &[u8]) -> Option<u16> {
    if let Some(open) = text.iter().position(|&b| b == b'(') {
        let rest = &text[open + 1..];
        let close = rest.iter().position(|&b| b == b')')?;
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
    let open = text.iter().position(|&b| b == b'(')?;
    let rest = &text[open + 1..];
    let close = rest.iter().position(|&b| b == b')')?;
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
            .map_or(Command::Malformed, |(port, v6)| Command::Eprt { port, v6 })
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
        if self.encrypted {
            return CommandEvent::Ignored;
        }
        if self.len as usize == MAX_PENDING {
            return CommandEvent::Overflow;
        }
        let cmd = parse_command(line);
        let slot = (self.head as usize + self.len as usize) % MAX_PENDING;
        self.pending[slot] = cmd;
        self.len += 1;
        CommandEvent::Queued(cmd)
    }

    fn pop(&mut self) -> Option<Command> {
        if self.len == 0 {
            return None;
        }
        let cmd = self.pending[self.head as usize];
        self.head = ((self.head as usize + 1) % MAX_PENDING) as u8;
        self.len -= 1;
        Some(cmd)
    }

    /// A complete server line.
    pub fn server_line(&mut self, line: &[u8]) -> ReplyEvent {
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
                let start = ReplyStart { code, port };
                if !last {
                    self.multiline = Some(start);
                    return ReplyEvent::None;
                }
                start
            }
        };
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
        match (cmd, &reply.code) {
            (Command::Port(port), b"200") => {
                ReplyEvent::Negotiated(Negotiation::Active { port, v6: None })
            }
            (Command::Eprt { port, v6 }, b"200") => {
                ReplyEvent::Negotiated(Negotiation::Active { port, v6: Some(v6) })
            }
            (Command::Pasv, b"227") | (Command::Epsv, b"229") => match reply.port {
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

    fn greeted() -> Matcher {
        let mut m = Matcher::default();
        assert_eq!(m.server_line(b"220 ready"), ReplyEvent::None);
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
                m.server_line(reply),
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
            m.server_line(b"229 Entering Extended Passive Mode (|||50001|)"),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50001 })
        );
        m.client_line(b"EPSV");
        assert_eq!(
            m.server_line(b"229 ok (!!!50002!)"),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50002 })
        );
    }

    #[test]
    fn port_and_eprt_need_200() {
        let mut m = greeted();
        m.client_line(b"PORT 192,0,2,2,195,81");
        assert_eq!(
            m.server_line(b"500 no"),
            ReplyEvent::ActiveRefused { port: 50001 }
        );
        m.client_line(b"PORT 192,0,2,2,195,81");
        assert_eq!(
            m.server_line(b"200 PORT ok"),
            ReplyEvent::Negotiated(Negotiation::Active {
                port: 50001,
                v6: None
            })
        );
        m.client_line(b"EPRT |2|2001:db8::2|50002|");
        assert_eq!(
            m.server_line(b"200 EPRT ok"),
            ReplyEvent::Negotiated(Negotiation::Active {
                port: 50002,
                v6: Some(true)
            })
        );
        m.client_line(b"eprt !1!192.0.2.2!50003!");
        assert_eq!(
            m.server_line(b"200 EPRT ok"),
            ReplyEvent::Negotiated(Negotiation::Active {
                port: 50003,
                v6: Some(false)
            })
        );
    }

    #[test]
    fn greeting_does_not_answer_an_early_command() {
        let mut m = Matcher::default();
        m.client_line(b"PORT 192,0,2,2,195,81");
        assert_eq!(
            m.server_line(b"200 looks like a greeting"),
            ReplyEvent::None
        );
        assert_eq!(
            m.server_line(b"200 PORT ok"),
            ReplyEvent::Negotiated(Negotiation::Active {
                port: 50001,
                v6: None
            })
        );
    }

    #[test]
    fn pipelined_commands_pair_with_their_replies() {
        let mut m = greeted();
        m.client_line(b"TYPE I");
        m.client_line(b"PASV");
        m.client_line(b"RETR x");
        assert_eq!(
            m.server_line(b"227 wrong pairing (198,51,100,2,195,80)"),
            ReplyEvent::None
        );
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,82)"),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50002 })
        );
        assert_eq!(m.server_line(b"150 opening"), ReplyEvent::None);
        assert_eq!(m.server_line(b"226 done"), ReplyEvent::None);
    }

    #[test]
    fn multiline_reply_judged_by_first_line() {
        let mut m = greeted();
        m.client_line(b"PASV");
        assert_eq!(
            m.server_line(b"227-Entering Passive Mode (198,51,100,2,195,80)"),
            ReplyEvent::None
        );
        assert_eq!(
            m.server_line(b"227 fake (1,2,3,4,0,80)"),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50000 })
        );
        // A multi-line reply in which another code's line appears.
        m.client_line(b"NOOP");
        m.client_line(b"PASV");
        assert_eq!(m.server_line(b"200-hello"), ReplyEvent::None);
        assert_eq!(m.server_line(b"227 (198,51,100,2,0,21)"), ReplyEvent::None);
        assert_eq!(m.server_line(b"200 end"), ReplyEvent::None);
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,83)"),
            ReplyEvent::Negotiated(Negotiation::Passive { port: 50003 })
        );
    }

    #[test]
    fn unpaired_227_opens_nothing() {
        let mut m = greeted();
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,80)"),
            ReplyEvent::None
        );
        m.client_line(b"NOOP PASV");
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,80)"),
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
            m.server_line(b"227 Entering Passive Mode (1,2,3,4,999,1)"),
            ReplyEvent::ParseFailed
        );
        m.client_line(b"EPSV");
        assert_eq!(m.server_line(b"229 (|||x|)"), ReplyEvent::ParseFailed);
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
        assert_eq!(m.server_line(b"234 go ahead"), ReplyEvent::Encrypted);
        assert_eq!(m.client_line(b"PASV"), CommandEvent::Ignored);
        assert_eq!(
            m.server_line(b"227 (198,51,100,2,195,80)"),
            ReplyEvent::None
        );
    }

    #[test]
    fn fifo_is_bounded() {
        let mut m = greeted();
        for _ in 0..MAX_PENDING {
            assert!(matches!(m.client_line(b"NOOP"), CommandEvent::Queued(_)));
        }
        assert_eq!(m.client_line(b"PASV"), CommandEvent::Overflow);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_command(&line);
            let _ = parse_227(&line);
            let _ = parse_229(&line);
            let mut m = greeted();
            m.client_line(&line);
            let _ = m.server_line(&line);
        }
    }
}

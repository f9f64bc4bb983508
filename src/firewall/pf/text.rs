//! pf in its own words: rule text as pf.conf and the manual write it.
//!
//! The text is rendered from the [`FlatRule`] handed to the kernel, so what
//! the debug log and the dry-run print is what pf is asked to do, not a
//! second description of it. Every OS uses this module: the dry-run backend
//! prints it on Linux too.

use std::fmt::Write as _;

use super::ffi::{self, FlatRule};
use crate::core::rule::{Rule, RuleOptions};
use crate::firewall::Error;

/// The rule pf gets for `rule` under `-t`/`-q`, as pf.conf text:
/// `pass in log quick inet proto tcp from $src to $dst port $port flags
/// S/SAFR keep state`, quick dropped and `tag` appended with `-t`, `queue`
/// appended with `-q`.
pub(crate) fn rule_text(rule: &Rule, opts: &RuleOptions) -> Result<String, Error> {
    Ok(render(&FlatRule::new(rule, opts)?))
}

/// A flat rule rendered back as pf.conf text.
pub(crate) fn render(r: &FlatRule) -> String {
    let flags = |bits: u8| -> String {
        [
            (ffi::TH_SYN, 'S'),
            (ffi::TH_ACK, 'A'),
            (ffi::TH_FIN, 'F'),
            (ffi::TH_RST, 'R'),
        ]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, c)| *c)
        .collect()
    };
    let name = |f: &[u8; ffi::NAME_SIZE]| -> String {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let mut s = String::from("pass in");
    if r.log != 0 {
        s.push_str(" log");
    }
    if r.quick != 0 {
        s.push_str(" quick");
    }
    let af = if r.af == ffi::AF_INET {
        "inet"
    } else {
        "inet6"
    };
    let _ = write!(
        s,
        " {af} proto tcp from {} to {} port {} flags {}/{} keep state",
        ffi::addr_from(r.af, &r.src),
        ffi::addr_from(r.af, &r.dst),
        u16::from_be(r.port),
        flags(r.flags),
        flags(r.flagset)
    );
    let tag = name(&r.tag);
    if !tag.is_empty() {
        let _ = write!(s, " tag {tag}");
    }
    let queue = name(&r.queue);
    if !queue.is_empty() {
        let _ = write!(s, " queue {queue}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rule::rule;

    #[test]
    fn renders_the_manuals_text() {
        let opts = RuleOptions::default();
        for (r, manual) in [
            (
                rule("192.0.2.2", "198.51.100.2", 50012),
                "pass in log quick inet proto tcp from 192.0.2.2 to 198.51.100.2 port 50012 flags S/SAFR keep state",
            ),
            (
                rule("2001:db8::2", "2001:db8:1::2", 49152),
                "pass in log quick inet6 proto tcp from 2001:db8::2 to 2001:db8:1::2 port 49152 flags S/SAFR keep state",
            ),
        ] {
            assert_eq!(rule_text(&r, &opts).unwrap(), manual);
        }
    }

    #[test]
    fn tag_drops_quick_and_queue_appends() {
        let tagged = RuleOptions {
            tag: Some("ftpok".into()),
            queue: None,
        };
        assert_eq!(
            rule_text(&rule("192.0.2.2", "198.51.100.2", 50012), &tagged).unwrap(),
            "pass in log inet proto tcp from 192.0.2.2 to 198.51.100.2 port 50012 flags S/SAFR keep state tag ftpok"
        );
        let both = RuleOptions {
            tag: Some("ftpok".into()),
            queue: Some("ftp".into()),
        };
        assert_eq!(
            rule_text(&rule("2001:db8::2", "2001:db8:1::2", 1024), &both).unwrap(),
            "pass in log inet6 proto tcp from 2001:db8::2 to 2001:db8:1::2 port 1024 flags S/SAFR keep state tag ftpok queue ftp"
        );
    }

    #[test]
    fn mixed_families_have_no_text() {
        let e = rule_text(
            &rule("192.0.2.2", "2001:db8::1", 21),
            &RuleOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rule mixes address families: 192.0.2.2 to 2001:db8::1"
        );
    }
}

//! The firewall rule model: one hole for one data connection.
//!
//! A [`Rule`] says "let a new TCP connection from `src` to `dst` port `port`
//! in". Every backend maps the same value: pf renders it as the manual's
//! `pass in log quick ... flags S/SAFR keep state`, nftables turns it into a
//! `saddr . daddr . dport` set element. Keeping the model this small is what
//! lets the policy stay independent of the firewall.

use std::net::IpAddr;

/// Name of the parent anchor; each session gets `ftpsesame/<pid>.<id>`.
pub const ANCHOR_PARENT: &str = "ftpsesame";

/// Longest tag or queue name pf accepts (PF_TAG_NAME_SIZE / PF_QNAME_SIZE
/// are 64 including the terminating NUL).
pub const NAME_MAX: usize = 63;

/// One data-connection hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Address that opens the data connection.
    pub src: IpAddr,
    /// Address that accepts it.
    pub dst: IpAddr,
    /// Destination port of the data connection.
    pub port: u16,
}

/// Options that apply to every rule the daemon makes (`-t`, `-q`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleOptions {
    /// `-t tag`: tag approved connections and drop `quick`.
    pub tag: Option<String>,
    /// `-q queue`: append `queue <name>`.
    pub queue: Option<String>,
}

impl Rule {
    /// True for an IPv6 rule (`inet6`), false for IPv4 (`inet`).
    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The rule as pf.conf text, exactly as the manual shows it.
    pub fn to_pf(&self, opts: &RuleOptions) -> String {
        let quick = if opts.tag.is_some() { "" } else { "quick " };
        let af = if self.is_ipv6() { "inet6" } else { "inet" };
        let mut s = format!(
            "pass in log {quick}{af} proto tcp from {} to {} port {} flags S/SAFR keep state",
            self.src, self.dst, self.port
        );
        if let Some(tag) = &opts.tag {
            s.push_str(" tag ");
            s.push_str(tag);
        }
        if let Some(queue) = &opts.queue {
            s.push_str(" queue ");
            s.push_str(queue);
        }
        s
    }
}

/// The anchor of one session: `ftpsesame/<pid>.<id>`.
pub fn anchor_name(pid: u32, session: u32) -> String {
    format!("{ANCHOR_PARENT}/{pid}.{session}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: &str, dst: &str, port: u16) -> Rule {
        Rule {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn renders_manual_text() {
        let r = rule("192.0.2.2", "198.51.100.2", 50012);
        assert_eq!(
            r.to_pf(&RuleOptions::default()),
            "pass in log quick inet proto tcp from 192.0.2.2 to 198.51.100.2 port 50012 flags S/SAFR keep state"
        );
    }

    #[test]
    fn tag_drops_quick_and_queue_appends() {
        let r = rule("2001:db8::2", "2001:db8:1::2", 1024);
        let opts = RuleOptions {
            tag: Some("ftpok".into()),
            queue: Some("ftp".into()),
        };
        assert_eq!(
            r.to_pf(&opts),
            "pass in log inet6 proto tcp from 2001:db8::2 to 2001:db8:1::2 port 1024 flags S/SAFR keep state tag ftpok queue ftp"
        );
    }

    #[test]
    fn anchor() {
        assert_eq!(anchor_name(4242, 7), "ftpsesame/4242.7");
    }
}

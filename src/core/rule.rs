//! The firewall rule model: one hole for one data connection.
//!
//! A [`Rule`] says "let a new TCP connection from `src` to `dst` port `port`
//! in". Every backend maps the same value: pf renders it as the manual's
//! `pass in log quick ... flags S/SAFR keep state` (`firewall::pf::text`),
//! nftables turns it into a `saddr . daddr . dport` set element. Keeping
//! the model this small is what lets the policy stay independent of the
//! firewall.

use std::net::IpAddr;

/// Longest tag or queue name pf accepts (PF_TAG_NAME_SIZE / PF_QNAME_SIZE
/// are 64 including the terminating NUL).
pub(crate) const NAME_MAX: usize = 63;

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
}

/// `src -> dst port`, parsed: the rule tests everywhere write.
#[cfg(test)]
pub(crate) fn rule(src: &str, dst: &str, port: u16) -> Rule {
    Rule {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        port,
    }
}

//! Policy: which rules a negotiation earns.
//!
//! The security checks of the original, kept: no data port below 1024, and
//! the address a client or server names in PORT/EPRT/227 is ignored in
//! favour of the control connection's own addresses (no third-party
//! transfers). Passive mode through NAT earns a second rule for the
//! client's real, pre-NAT address.

use std::net::IpAddr;

use crate::core::ftp::{Af, Negotiation};
use crate::core::rule::Rule;

/// Lowest data port allowed.
pub const MIN_PORT: u16 = 1024;

/// The rules of one negotiation: one, or two with NAT. Copy, no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSet {
    rules: [Rule; 2],
    len: u8,
}

/// Filler for unused places.
const NONE: Rule = Rule {
    src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    port: 0,
};

impl RuleSet {
    /// No rules.
    pub const EMPTY: RuleSet = RuleSet {
        rules: [NONE; 2],
        len: 0,
    };

    fn one(r: Rule) -> Self {
        RuleSet {
            rules: [r, NONE],
            len: 1,
        }
    }

    fn two(a: Rule, b: Rule) -> Self {
        RuleSet {
            rules: [a, b],
            len: 2,
        }
    }

    /// The rules, for the firewall's `&[Rule]`.
    pub fn as_slice(&self) -> &[Rule] {
        &self.rules[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Why a negotiation earns nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Port below [`MIN_PORT`].
    LowPort(u16),
    /// EPRT named another address family than the control connection's.
    WrongFamily,
}

/// Rules for `neg` on the control connection `client -> server`, where
/// `real_client` is the client's address before NAT (equal to `client`
/// without NAT).
pub fn rules(
    neg: Negotiation,
    client: IpAddr,
    server: IpAddr,
    real_client: IpAddr,
) -> Result<RuleSet, Denied> {
    match neg {
        Negotiation::Active { port, af } => {
            if port < MIN_PORT {
                return Err(Denied::LowPort(port));
            }
            let wrong = match af {
                Af::Unspecified => false,
                Af::Inet => client.is_ipv6(),
                Af::Inet6 => !client.is_ipv6(),
            };
            if wrong {
                return Err(Denied::WrongFamily);
            }
            Ok(RuleSet::one(Rule {
                src: server,
                dst: client,
                port,
            }))
        }
        Negotiation::Passive { port } => {
            if port < MIN_PORT {
                return Err(Denied::LowPort(port));
            }
            let direct = Rule {
                src: client,
                dst: server,
                port,
            };
            if real_client != client && real_client.is_ipv6() == client.is_ipv6() {
                Ok(RuleSet::two(
                    direct,
                    Rule {
                        src: real_client,
                        dst: server,
                        port,
                    },
                ))
            } else {
                Ok(RuleSet::one(direct))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn passive_is_client_to_server() {
        let r = rules(
            Negotiation::Passive { port: 50000 },
            ip("192.0.2.2"),
            ip("198.51.100.2"),
            ip("192.0.2.2"),
        )
        .unwrap();
        assert_eq!(
            r.as_slice().to_vec(),
            vec![Rule {
                src: ip("192.0.2.2"),
                dst: ip("198.51.100.2"),
                port: 50000
            }]
        );
    }

    #[test]
    fn passive_nat_adds_real_client() {
        let r = rules(
            Negotiation::Passive { port: 50000 },
            ip("198.51.100.1"),
            ip("198.51.100.2"),
            ip("192.0.2.2"),
        )
        .unwrap();
        let v = r.as_slice();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1],
            Rule {
                src: ip("192.0.2.2"),
                dst: ip("198.51.100.2"),
                port: 50000
            }
        );
    }

    #[test]
    fn active_is_server_to_client() {
        let r = rules(
            Negotiation::Active {
                port: 40000,
                af: Af::Inet,
            },
            ip("192.0.2.2"),
            ip("198.51.100.2"),
            ip("10.0.0.1"),
        )
        .unwrap();
        assert_eq!(
            r.as_slice().to_vec(),
            vec![Rule {
                src: ip("198.51.100.2"),
                dst: ip("192.0.2.2"),
                port: 40000
            }]
        );
    }

    #[test]
    fn low_ports_and_wrong_family_denied() {
        let c = ip("192.0.2.2");
        let s = ip("198.51.100.2");
        assert_eq!(
            rules(Negotiation::Passive { port: 80 }, c, s, c),
            Err(Denied::LowPort(80))
        );
        assert_eq!(
            rules(
                Negotiation::Active {
                    port: 1023,
                    af: Af::Unspecified
                },
                c,
                s,
                c
            ),
            Err(Denied::LowPort(1023))
        );
        assert_eq!(
            rules(
                Negotiation::Active {
                    port: 2000,
                    af: Af::Inet6
                },
                c,
                s,
                c
            ),
            Err(Denied::WrongFamily)
        );
        assert!(rules(Negotiation::Passive { port: 1024 }, c, s, c).is_ok());
    }
}

//! The `-n` backend: trusts every control connection and only logs the
//! rules it would have committed, as pf text (the manual's words, the same
//! on every OS).

use std::net::SocketAddr;

use super::pf::text::rule_text;
use super::{Error, Firewall, State};
use crate::core::log::{self, Level};
use crate::core::rule::{Rule, RuleOptions};

/// Logs rule text at debug level; never touches the kernel.
pub struct DryRun {
    opts: RuleOptions,
}

impl DryRun {
    pub fn new(opts: RuleOptions) -> Self {
        DryRun { opts }
    }
}

impl Firewall for DryRun {
    fn lookup(&mut self, client: SocketAddr, _server: SocketAddr) -> Result<State, Error> {
        Ok(State::Tracked {
            real_client: client.ip(),
        })
    }

    fn replace(&mut self, session: u32, _old: &[Rule], new: &[Rule]) -> Result<(), Error> {
        if log::enabled(Level::Debug) {
            for r in new {
                let text = rule_text(r, &self.opts)?;
                log::log(Level::Debug, format_args!("#{session} rule: {text}"));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

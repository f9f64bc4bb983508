//! A recording firewall for engine tests: every call is written to a
//! shared log as text, `lookup` answers what the test scripted, and
//! `replace` fails on demand.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::core::firewall::{Error, Firewall, Seqs, State};
use crate::core::rule::Rule;

/// What the test sees and scripts.
#[derive(Debug)]
pub(crate) struct Script {
    /// One line per call, e.g. `replace(1, [], [192.0.2.2>198.51.100.2:50000])`.
    pub calls: Vec<String>,
    /// The state table's answer.
    pub lookup: Result<State, &'static str>,
    /// Fail the next `replace` calls with this message.
    pub fail_replace: Option<&'static str>,
    /// The clock of each `expire` call (kept apart: every tick makes one).
    pub expired: Vec<u64>,
    /// The state table's sequence windows.
    pub seqs: Option<Seqs>,
}

/// The firewall half: hand it to the engine, keep the `Rc` to look.
pub(crate) struct Recorder(pub Rc<RefCell<Script>>);

impl Recorder {
    /// A recorder whose state table tracks every connection without NAT.
    pub fn new() -> (Self, Rc<RefCell<Script>>) {
        let script = Rc::new(RefCell::new(Script {
            calls: Vec::new(),
            lookup: Err("unscripted"),
            fail_replace: None,
            expired: Vec::new(),
            seqs: None,
        }));
        (Recorder(script.clone()), script)
    }
}

fn rules(rs: &[Rule]) -> String {
    let v: Vec<String> = rs
        .iter()
        .map(|r| format!("{}>{}:{}", r.src, r.dst, r.port))
        .collect();
    format!("[{}]", v.join(", "))
}

impl Firewall for Recorder {
    fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> Result<State, Error> {
        let mut s = self.0.borrow_mut();
        s.calls.push(format!("lookup({client}, {server})"));
        s.lookup.map_err(|e| Error::Lookup(io::Error::other(e)))
    }

    fn replace(&mut self, session: u32, old: &[Rule], new: &[Rule]) -> Result<(), Error> {
        let mut s = self.0.borrow_mut();
        s.calls.push(format!(
            "replace({session}, {}, {})",
            rules(old),
            rules(new)
        ));
        match s.fail_replace {
            Some(e) => Err(Error::Netlink {
                step: "cannot add elements to",
                target: "the fake".into(),
                source: io::Error::other(e),
            }),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.0.borrow_mut().calls.push("flush".into());
        Ok(())
    }

    fn expire(&mut self, now: u64) {
        self.0.borrow_mut().expired.push(now);
    }

    fn seqs(&mut self, _client: SocketAddr, _server: SocketAddr) -> Result<Option<Seqs>, Error> {
        Ok(self.0.borrow().seqs)
    }
}

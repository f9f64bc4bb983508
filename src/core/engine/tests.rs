//! The engine against a recording firewall: which calls each decision
//! makes, in which order, and what a failure leaves behind.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use super::fake::{Recorder, Script};
use super::*;
use crate::core::firewall::State;

#[path = "../../../tests/support/pcapgen.rs"]
mod pcapgen;

use pcapgen::{Conversation, PSH, SYN, ethernet_tcp};

const C: &str = "192.0.2.2:40594";
const S: &str = "198.51.100.2:21";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn engine(ports: &str) -> (Engine, Rc<RefCell<Script>>) {
    let (fw, script) = Recorder::new();
    script.borrow_mut().lookup = Ok(State::Tracked {
        real_client: sa(C).ip(),
    });
    let cfg = Config {
        link: Link::Ethernet,
        max_sessions: 16,
        timeouts: Timeouts::default(),
        live: false,
        recheck_state: false,
        control_ports: ControlPorts::from_expression(ports),
    };
    (Engine::new(cfg, Box::new(fw)), script)
}

/// Run frames through the engine, 1 ms apart.
fn run(e: &mut Engine, frames: &[Vec<u8>]) {
    for (i, f) in frames.iter().enumerate() {
        e.packet(1_700_000_000_000_000 + i as u64 * 1000, f);
    }
}

fn calls(s: &Rc<RefCell<Script>>) -> Vec<String> {
    std::mem::take(&mut s.borrow_mut().calls)
}

fn handshake(e: &mut Engine, c: &mut Conversation) {
    let hs = c.handshake();
    run(e, &hs);
    let greeting = c.server(b"220 ready\r\n");
    run(e, &[greeting]);
}

#[test]
fn passive_commits_then_end_removes() {
    let (mut e, script) = engine("tcp and port 21");
    let mut c = Conversation::new(sa(C), sa(S), 1, 2);
    handshake(&mut e, &mut c);
    assert_eq!(calls(&script), ["lookup(192.0.2.2:40594, 198.51.100.2:21)"]);
    let f = [
        c.client(b"PASV\r\n"),
        c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"),
    ];
    run(&mut e, &f);
    assert_eq!(
        calls(&script),
        ["replace(1, [], [192.0.2.2>198.51.100.2:50000])"]
    );
    run(&mut e, &c.fin());
    assert_eq!(
        calls(&script),
        ["replace(1, [192.0.2.2>198.51.100.2:50000], [])"]
    );
    assert_eq!(e.sessions(), 0);
}

#[test]
fn renegotiation_replaces_and_refusal_withdraws() {
    let (mut e, script) = engine("port 21");
    let mut c = Conversation::new(sa(C), sa(S), 1, 2);
    handshake(&mut e, &mut c);
    calls(&script);
    let f = [
        c.client(b"PORT 192,0,2,2,195,81\r\n"),
        c.server(b"200 ok\r\n"),
        c.client(b"PORT 192,0,2,2,195,82\r\n"),
        c.client(b"PORT 192,0,2,2,195,83\r\n"),
        c.server(b"200 ok\r\n500 no\r\n"),
    ];
    run(&mut e, &f);
    assert_eq!(
        calls(&script),
        [
            "replace(1, [], [198.51.100.2>192.0.2.2:50001])",
            "replace(1, [198.51.100.2>192.0.2.2:50001], [198.51.100.2>192.0.2.2:50002])",
            // The 82 got no reply before the 83: withdrawn, then 83 opens.
            "replace(1, [198.51.100.2>192.0.2.2:50002], [])",
            "replace(1, [], [198.51.100.2>192.0.2.2:50003])",
            // 200 answers 82 (gone already), 500 refuses 83.
            "replace(1, [198.51.100.2>192.0.2.2:50003], [])",
        ]
    );
}

#[test]
fn failed_commit_keeps_old_rules() {
    let (mut e, script) = engine("port 21");
    let mut c = Conversation::new(sa(C), sa(S), 1, 2);
    handshake(&mut e, &mut c);
    let f = [
        c.client(b"PASV\r\n"),
        c.server(b"227 (198,51,100,2,195,80)\r\n"),
    ];
    run(&mut e, &f);
    calls(&script);
    script.borrow_mut().fail_replace = Some("no room");
    let f = [
        c.client(b"PASV\r\n"),
        c.server(b"227 (198,51,100,2,195,81)\r\n"),
    ];
    run(&mut e, &f);
    assert_eq!(
        calls(&script),
        ["replace(1, [192.0.2.2>198.51.100.2:50000], [192.0.2.2>198.51.100.2:50001])"]
    );
    assert_eq!(e.stats.failed, 1);
    script.borrow_mut().fail_replace = None;
    // What is removed at the end is what is really committed.
    run(&mut e, &c.fin());
    assert_eq!(
        calls(&script),
        ["replace(1, [192.0.2.2>198.51.100.2:50000], [])"]
    );
}

#[test]
fn untracked_connection_is_dropped() {
    let (mut e, script) = engine("port 21");
    script.borrow_mut().lookup = Ok(State::NotTracked);
    let mut c = Conversation::new(sa(C), sa(S), 1, 2);
    handshake(&mut e, &mut c);
    assert_eq!(e.stats.untracked, 1);
    // The greeting starts a pickup (the state table may know the
    // connection later); the client's next line agrees with it, the state
    // table is asked again and the pickup goes too.
    assert_eq!(e.sessions(), 1);
    run(&mut e, &[c.client(b"USER ftp\r\n")]);
    assert_eq!(e.sessions(), 0);
    assert_eq!(e.stats.untracked, 2);
    assert_eq!(e.stats.picked_up, 0);
    script.borrow_mut().lookup = Err("broken");
    let mut c = Conversation::new(sa("192.0.2.2:40595"), sa(S), 1, 2);
    handshake(&mut e, &mut c);
    run(&mut e, &[c.client(b"USER ftp\r\n")]);
    assert_eq!(e.sessions(), 0);
    assert_eq!(e.stats.untracked, 4);
}

#[test]
fn sessions_start_only_from_a_syn_to_a_control_port() {
    let (mut e, _) = engine("tcp and (port 21 or port 2121)");
    // From port 21 to a web server: not an FTP client.
    run(
        &mut e,
        &[ethernet_tcp(
            sa("192.0.2.2:21"),
            sa("198.51.100.2:80"),
            1,
            0,
            SYN,
            b"",
        )],
    );
    assert_eq!(e.sessions(), 0);
    // From 21 to 21: the sender is not a client either.
    run(
        &mut e,
        &[ethernet_tcp(sa("192.0.2.2:21"), sa(S), 1, 0, SYN, b"")],
    );
    assert_eq!(e.sessions(), 0);
    run(
        &mut e,
        &[ethernet_tcp(sa(C), sa("198.51.100.2:2121"), 1, 0, SYN, b"")],
    );
    run(&mut e, &[ethernet_tcp(sa(C), sa(S), 1, 0, SYN | PSH, b"")]);
    assert_eq!(e.sessions(), 2);
}

#[test]
fn control_ports_from_the_expression() {
    let ports = |e: &str| {
        (1..=65535u16)
            .filter(|&p| ControlPorts::from_expression(e).contains(p))
            .collect::<Vec<_>>()
    };
    assert_eq!(ports("tcp and port 21"), [21]);
    assert_eq!(ports("host 192.0.2.1"), [21]);
    assert_eq!(ports("tcp port 2121 or dst port 990"), [990, 2121]);
    assert_eq!(ports("(port 21) and not port 22 and not tcp port 23"), [21]);
    assert_eq!(ports("src port 2121"), [21]);
    assert_eq!(ports("port ftp or port 2121"), [21, 2121]);
}

#[test]
fn every_tick_lets_the_backend_expire_what_it_holds() {
    let (mut e, script) = engine("port 21");
    let t0 = 1_700_000_000_000_000;
    e.tick(t0);
    e.tick(t0 + 1); // before the next purge: nothing
    e.tick(t0 + 60 * SECOND);
    assert_eq!(script.borrow().expired, [t0, t0 + 60 * SECOND]);
}

#[test]
fn a_restart_picks_up_the_control_connection_from_both_sides() {
    // The daemon starts while a control connection is open: it never sees
    // the handshake, only what follows.
    let (mut e, script) = engine("port 21");
    let mut c = Conversation::new(sa(C), sa(S), 1, 2);
    let _ = c.handshake();
    let _ = c.server(b"220 ready\r\n");
    let f = [
        c.client(b"TYPE I\r\n"),
        c.server(b"200 Switching to Binary mode.\r\n"),
        c.client(b"PASV\r\n"),
        c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"),
    ];
    run(&mut e, &f);
    assert_eq!(
        calls(&script),
        [
            "lookup(192.0.2.2:40594, 198.51.100.2:21)",
            "replace(1, [], [192.0.2.2>198.51.100.2:50000])"
        ]
    );
    assert_eq!((e.stats.picked_up, e.stats.sessions_total), (1, 0));
    run(&mut e, &c.fin());
    assert_eq!(
        calls(&script),
        ["replace(1, [192.0.2.2>198.51.100.2:50000], [])"]
    );
    assert_eq!(e.sessions(), 0);
}

#[test]
fn a_pickup_the_state_table_does_not_know_opens_nothing() {
    let (mut e, script) = engine("port 21");
    script.borrow_mut().lookup = Ok(State::NotTracked);
    let mut c = Conversation::new(sa(C), sa(S), 1, 2);
    let _ = c.handshake();
    let f = [
        c.client(b"PASV\r\n"),
        c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"),
        c.client(b"PASV\r\n"),
        c.server(b"227 Entering Passive Mode (198,51,100,2,195,81)\r\n"),
    ];
    run(&mut e, &f);
    let made = calls(&script);
    assert!(made.iter().all(|c| c.starts_with("lookup(")), "{made:?}");
    assert_eq!(e.stats.picked_up, 0);
    assert_eq!(e.stats.committed, 0);
}

#[test]
fn a_pickup_outside_the_tables_sequence_windows_is_refused() {
    use crate::core::firewall::{SeqRange, Seqs};
    let far = SeqRange {
        lo: 0x8000_0000,
        hi: 0x8001_0000,
    };
    for (client, refused) in [(far, true), (SeqRange { lo: 1, hi: 70_000 }, false)] {
        let (mut e, script) = engine("port 21");
        script.borrow_mut().seqs = Some(Seqs {
            client,
            server: SeqRange { lo: 2, hi: 70_000 },
        });
        let mut c = Conversation::new(sa(C), sa(S), 1, 2);
        let _ = c.handshake();
        let f = [
            c.client(b"TYPE I\r\n"),
            c.server(b"200 ok\r\n"),
            c.client(b"PASV\r\n"),
            c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"),
        ];
        run(&mut e, &f);
        assert_eq!(e.stats.picked_up, u64::from(!refused), "{client:?}");
        assert_eq!(e.stats.committed, u64::from(!refused), "{client:?}");
    }
}

#[test]
fn a_contested_pickup_loses_what_it_opened() {
    use pcapgen::ACK;
    let (mut e, script) = engine("port 21");
    let (c, s) = (sa(C), sa(S));
    let pa = PSH | ACK;
    // A pair spoofed on both sides, then a PASV and 227 in its numbers.
    let forged = [
        ethernet_tcp(c, s, 70_000, 90_000, pa, b"NOOP\r\n"),
        ethernet_tcp(s, c, 90_000, 70_006, pa, b"200 ok\r\n"),
        ethernet_tcp(c, s, 70_006, 90_008, pa, b"PASV\r\n"),
        ethernet_tcp(
            s,
            c,
            90_008,
            70_012,
            pa,
            b"227 Entering Passive Mode (198,51,100,2,12,234)\r\n",
        ),
    ];
    run(&mut e, &forged);
    assert_eq!(
        calls(&script),
        [
            "lookup(192.0.2.2:40594, 198.51.100.2:21)",
            "replace(1, [], [192.0.2.2>198.51.100.2:3306])"
        ]
    );
    // The real endpoints, in their own numbers: contested, the hole goes.
    let mut conv = Conversation::new(c, s, 1, 2);
    let _ = conv.handshake();
    let real = [conv.client(b"TYPE I\r\n"), conv.server(b"200 ok\r\n")];
    run(&mut e, &real);
    assert_eq!(
        calls(&script),
        ["replace(1, [192.0.2.2>198.51.100.2:3306], [])"]
    );
    assert_eq!(e.stats.contested, 1);
}

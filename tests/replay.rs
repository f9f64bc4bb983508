//! Regression replays of real traffic: tests/captures holds control
//! connections recorded in the namespace lab (tests/lab/record.sh) between
//! real servers (vsftpd, proftpd, pyftpdlib) and a real client, with the
//! `allowing` lines the live daemon logged. Replaying each capture offline
//! must give exactly the same lines.
//!
//! The `-nflog` captures are what the firewall's NFLOG rule logged (DLT_NFLOG)
//! during a transfer the daemon followed on the interface. libpcap has no
//! filter for NFLOG, so they replay with the empty expression: the log rule
//! already chose the control packets.

use std::path::Path;
use std::process::Command;

#[test]
fn recorded_lab_captures_replay_to_the_same_rules() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
    let mut checked = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for pcap in names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
    {
        let want = std::fs::read_to_string(pcap.with_extension("allowing")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ftpsesame"))
            .args(["-d", "-n", "-D", "6", "-r"])
            .arg(pcap)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {log}", pcap.display());
        let got: Vec<&str> = log.lines().filter(|l| l.contains(" allowing ")).collect();
        let want: Vec<&str> = want.lines().collect();
        assert_eq!(got, want, "{}:\n{log}", pcap.display());
        assert!(
            log.lines().any(|l| l == "#1 session finish"),
            "{}:\n{log}",
            pcap.display()
        );
        checked += 1;
    }
    // Three servers, six negotiations each, and two NFLOG recordings.
    assert_eq!(checked, 20);
}

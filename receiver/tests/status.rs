//! `anamon-receiver status`: the systems as a terminal table, from the log
//! directory alone, by the live view's rules; nothing from a log reaches
//! the terminal as a control sequence.

mod common;

use common::Receiver;
use std::process::Command;

fn status(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anamon-receiver"))
        .arg("status")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_table_shows_state_stage_and_why() {
    let r = Receiver::start("status", &[]);
    assert!(r.upload(
        "rack1-node01",
        "anaconda.log",
        0,
        b"INF installation: Task started: Install the payload (10/40)\nINF packaging: Installing bash (12/345)\n"
    ));
    assert!(r.upload(
        "rack1-node02",
        "anaconda-tb-x1y2z3",
        0,
        b"anaconda 34.25 exception report\nTraceback (most recent call last): \x1b[2J\x1b]0;owned\x07\n"
    ));
    assert!(r.upload(
        "rack1-node03",
        "anaconda.log",
        0,
        b"INF core.util: Reporting the IPMI event: 8\n"
    ));
    let dir = r.logs();
    let dir = dir.to_str().unwrap();
    let (code, out, err) = status(&["--dir", dir]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("SYSTEM") && lines[0].contains("STAGE"),
        "{out}"
    );
    // Failed first, then installing (fresh uploads), then finished.
    let cells = |l: &str| {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let failed = cells(lines[1]);
    assert_eq!(&failed[..2], ["rack1-node02", "failed"], "{out}");
    assert!(
        failed
            .last()
            .unwrap()
            .starts_with("anaconda-tb-x1y2z3:2 an Anaconda crash dump arrived: Traceback (most recent call last): "),
        "{out}"
    );
    let installing = cells(lines[2]);
    assert_eq!(&installing[..2], ["rack1-node01", "installing"], "{out}");
    assert!(installing[2].starts_with("packages 12/345 ("), "{out}");
    let finished = cells(lines[3]);
    assert_eq!(&finished[..2], ["rack1-node03", "finished"], "{out}");
    assert!(
        lines[3].ends_with("anaconda.log:1 Anaconda reported the install finished (IPMI 0x8): INF core.util: Reporting the IPMI event: 8"),
        "{out}"
    );
    // No control character from the log reached the output.
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");

    let (code, out, _) = status(&["--dir", dir, "--state", "finished"]);
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
    let (code, _, err) = status(&["--dir", dir, "--state", "bogus"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "--state \"bogus\": expected one of installing, stalled, idle, finished, failed"
        ),
        "{err}"
    );
    let (code, _, err) = status(&["--dir", "/nonexistent/anamon"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/anamon: cannot open the log directory"),
        "{err}"
    );
}

//! `--on-state-change`: the command runs exactly once per change (failed,
//! stalled, finished), with what happened in its environment and never in
//! its command line, even when two receivers share the log directory.

mod common;

use common::Receiver;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, 30, f)
}

/// A second receiver on the same log directory, with the same hook.
struct Twin(Child);

impl Drop for Twin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_command_runs_once_per_change_from_one_receiver() {
    let scratch = anamon_testkit::Scratch::new("hooks-calls");
    let calls = scratch.path("calls");
    let reasons = scratch.path("reasons");
    let pwned = scratch.path("PWNED");
    let command = format!(
        "printf '%s %s %s %s\\n' \"$ANAMON_SYSTEM\" \"$ANAMON_STATE\" \"$ANAMON_STAGE\" \"$ANAMON_LINK\" >> {}; \
         printf '%s\\n' \"$ANAMON_REASON\" >> {}",
        calls.display(),
        reasons.display()
    );
    let hook_args = [
        "--view",
        "127.0.0.1:0",
        "--view-window",
        "2",
        "--view-url",
        "https://cobbler.example/anamon/",
        "--on-state-change",
        &command,
    ];
    let r = Receiver::start("hooks", &hook_args);
    let twin = Twin(
        Command::new(env!("CARGO_BIN_EXE_anamon-receiver"))
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(r.logs())
            .args(hook_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let has = |want: &str| {
        let l = lines();
        l.iter().any(|x| x.starts_with(want)).then_some(l)
    };

    // A crash dump whose line tries to run a command.
    assert!(r.upload("s1", "anaconda.log", 0, b"INFO anaconda: started\n"));
    let dump = format!(
        "anaconda 34.25 exception report\nTraceback (most recent call last): $(touch {})\n",
        pwned.display()
    );
    assert!(r.upload("s1", "anaconda-tb-x1y2z3", 0, dump.as_bytes()));
    // At the packages stage, then quiet: stalled; then its end: finished.
    let payload = b"INF installation: Task started: Install the payload (10/40)\n";
    assert!(r.upload("s2", "anaconda.log", 0, payload));
    wait_for("s2 stalled", || has("s2 stalled packages "));
    let end = b"INF core.util: Reporting the IPMI event: 8\n";
    assert!(r.upload("s2", "anaconda.log", payload.len() as i64, end));
    assert!(r.upload("s3", "anaconda.log", 0, end));
    wait_for("every change", || {
        ["s1 failed", "s2 finished", "s3 finished"]
            .iter()
            .all(|w| has(w).is_some())
            .then_some(())
    });
    // Both receivers go on looking for a few passes: nothing more runs.
    std::thread::sleep(Duration::from_secs(4));
    let mut got = lines();
    got.sort();
    assert_eq!(
        got,
        [
            "s1 failed  https://cobbler.example/anamon/s/s1",
            "s2 finished packages https://cobbler.example/anamon/s/s2",
            "s2 stalled packages https://cobbler.example/anamon/s/s2",
            "s3 finished  https://cobbler.example/anamon/s/s3",
        ]
    );
    // The reason came as data: the line is there, its $(...) never ran.
    let reasons = std::fs::read_to_string(&reasons).unwrap();
    assert!(
        reasons.contains(&format!(
            "anaconda-tb-x1y2z3:2 an Anaconda crash dump arrived: Traceback (most recent call last): $(touch {})",
            pwned.display()
        )),
        "{reasons}"
    );
    assert!(!pwned.exists());
    // The markers sit where no upload can reach: not a system of the view.
    let j = r.get("/api/systems").text();
    assert!(!j.contains("anamon%state"), "{j}");
    assert!(r.logs().join(".anamon%state").is_dir());
    drop(twin);
}

#[test]
fn the_hook_needs_the_view() {
    let out = Command::new(env!("CARGO_BIN_EXE_anamon-receiver"))
        .args(["--dir", "/nonexistent", "--on-state-change", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--on-state-change and --view-url need --view"),
        "{err}"
    );
}

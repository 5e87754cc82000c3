//! The agent against the real Cobbler 4.0.0b7 `upload_log_data`: whatever
//! happens to the files, the server's copy ends byte-identical to the disk.

use anamon_testkit::*;
use std::time::Duration;

const CURRENT: &str = "4.0.0b7";
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn growing_file_with_binary_content_arrives_byte_identical() {
    let dir = Scratch::new("grow");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("anaconda.log");
    append(&log, b"first line\n");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    for i in 0..200u32 {
        append(&log, format!("line {i}: ").as_bytes());
        append(&log, &binary_bytes(37 + i as usize, i)); // NUL, 0xff, invalid UTF-8
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    // Larger than one chunk, so the 256 KiB split is exercised too.
    append(&log, &binary_bytes(700 * 1024, 99));
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
    // Only new bytes travel: far fewer requests than appends, and the bytes
    // uploaded add up to the file's size (no resends from offset 0). The
    // server logs a call just after storing its bytes, so the last line may
    // trail the stored copy by a moment.
    let uploaded = || -> u64 {
        std::fs::read_to_string(&peer.calls)
            .unwrap()
            .lines()
            .filter(|l| l.contains("upload_log_data"))
            .map(|l| json_u64(l, "data_len"))
            .sum()
    };
    let written = std::fs::metadata(&log).unwrap().len();
    wait_until(Duration::from_secs(5), || uploaded() >= written);
    assert_eq!(uploaded(), written, "bytes uploaded != bytes written");
}

#[test]
fn a_log_written_line_by_line_costs_one_request_per_min_interval() {
    // 400 lines, one every 5 ms (2 s): with --min-interval 250 the server
    // sees at most one request per 250 ms, plus the first, whatever the
    // machine's speed; the copy is byte-identical all the same.
    let dir = Scratch::new("pace");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("packaging.log");
    append(&log, b"first line\n");
    let mut agent = Agent::start(
        peer.port,
        &dir,
        &[
            "--watchfile",
            log.to_str().unwrap(),
            "--min-interval",
            "250",
        ],
    );
    peer.assert_mirrors("packaging.log", &log, LIMIT);
    let start = std::time::Instant::now();
    for i in 0..400u32 {
        append(
            &log,
            format!("{i:04} Installed: package-{i}.x86_64\n").as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    peer.assert_mirrors("packaging.log", &log, LIMIT);
    let elapsed = start.elapsed();
    let calls = peer.upload_calls();
    let bound = 1 + (elapsed.as_millis() / 250) as usize + 1;
    assert!(
        calls <= bound,
        "{calls} requests in {elapsed:?}: more than one per 250 ms ({bound})"
    );
    agent.assert_running();
}

/// The value of a numeric field in one JSON line of the peer's call log.
fn json_u64(line: &str, key: &str) -> u64 {
    let at = line
        .find(&format!("\"{key}\""))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len() + 2..]
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn several_files_and_default_names() {
    let dir = Scratch::new("several");
    let peer = Peer::start(CURRENT, &dir);
    std::fs::create_dir_all(dir.path("a")).unwrap();
    std::fs::create_dir_all(dir.path("b")).unwrap();
    let files = [
        dir.path("a/x.log"),
        dir.path("b/x.log"),
        dir.path("program.log"),
    ];
    let spec = files
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    for round in 0..30u32 {
        for (i, f) in files.iter().enumerate() {
            append(
                f,
                format!("{round}:{i} {}\n", "x".repeat(round as usize * 7)).as_bytes(),
            );
        }
    }
    peer.assert_mirrors("x.log", &files[0], LIMIT);
    peer.assert_mirrors("b_x.log", &files[1], LIMIT);
    peer.assert_mirrors("program.log", &files[2], LIMIT);
    agent.assert_running();
}

#[test]
fn truncation_rewrite_rename_and_recreate_are_mirrored() {
    let dir = Scratch::new("rewrite");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("storage.log");
    append(&log, b"version one of the storage log\n");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("storage.log", &log, LIMIT);

    // Truncated in place, regrown beyond the old length.
    std::fs::write(
        &log,
        b"VERSION TWO, rewritten in place and longer than before\n",
    )
    .unwrap();
    peer.assert_mirrors("storage.log", &log, LIMIT);

    // Shrunk.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(7)
        .unwrap();
    peer.assert_mirrors("storage.log", &log, LIMIT);

    // Replaced by rename (a new inode).
    let tmp = dir.path("storage.log.new");
    std::fs::write(&tmp, b"three\n").unwrap();
    std::fs::rename(&tmp, &log).unwrap();
    peer.assert_mirrors("storage.log", &log, LIMIT);

    // Deleted: what the server has stays; recreated: shipped anew.
    std::fs::remove_file(&log).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(peer.stored("storage.log").as_deref(), Some(&b"three\n"[..]));
    append(&log, b"four, after a delete\n");
    peer.assert_mirrors("storage.log", &log, LIMIT);
    agent.assert_running();
}

#[test]
fn a_file_that_appears_later_is_picked_up() {
    let dir = Scratch::new("later");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("ks-pre.log");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(peer.stored("ks-pre.log"), None);
    append(&log, b"");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(peer.stored("ks-pre.log"), None, "empty files are not sent");
    append(&log, b"created late\n");
    peer.assert_mirrors("ks-pre.log", &log, LIMIT);
    agent.assert_running();
}

#[test]
fn poll_mode_ships_the_same_bytes() {
    let dir = Scratch::new("poll");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("syslog");
    append(&log, &binary_bytes(5000, 3));
    let mut agent = Agent::start(
        peer.port,
        &dir,
        &["--poll", "--watchfile", log.to_str().unwrap()],
    );
    peer.assert_mirrors("syslog", &log, LIMIT);
    append(&log, &binary_bytes(3000, 4));
    peer.assert_mirrors("syslog", &log, LIMIT);
    assert!(
        agent
            .log_text()
            .contains("polling every 1 s (--poll given)"),
        "{}",
        agent.log_text()
    );
    agent.assert_running();
}

/// The inotify watch limit (per user namespace since Linux 5.11) runs out
/// when a file that appears later needs a watch: the agent says so once,
/// polls from then on, and loses nothing. The agent runs in a user
/// namespace of its own whose limit is the two watches it needs at the
/// start: the directory and the one file there.
#[test]
fn out_of_inotify_watches_the_agent_polls_and_loses_nothing() {
    let userns = std::process::Command::new("unshare")
        .args(["-Ur", "true"])
        .status();
    if !userns.is_ok_and(|s| s.success()) {
        eprintln!("skipped: this machine gives no user namespaces (unshare -Ur)");
        return;
    }
    let dir = Scratch::new("watch-limit");
    let peer = Peer::start(CURRENT, &dir);
    let (first, later) = (dir.path("anaconda.log"), dir.path("program.log"));
    append(&first, b"watched from the start\n");
    let bin = agent_bin();
    let limited = "echo 2 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"";
    let argv = ["unshare", "-Ur", "sh", "-c", limited].map(std::path::Path::new);
    let argv: Vec<&std::path::Path> = argv.into_iter().chain([bin.as_path()]).collect();
    let files = format!("{} {}", first.display(), later.display());
    let mut agent = Agent::start_named(
        &argv,
        "127.0.0.1",
        peer.port,
        &dir,
        &["--watchfile", &files],
    );
    peer.assert_mirrors("anaconda.log", &first, LIMIT);
    append(&later, b"a third watch is one too many\n");
    peer.assert_mirrors("program.log", &later, LIMIT);
    // Writes to the file with no watch, and to no other: only the poll can
    // find them.
    std::thread::sleep(Duration::from_millis(500));
    append(&later, &binary_bytes(4000, 6));
    peer.assert_mirrors("program.log", &later, LIMIT);
    agent.assert_logs("polling every 1 s from now on");
    append(&first, &binary_bytes(3000, 5));
    peer.assert_mirrors("anaconda.log", &first, LIMIT);
    agent.assert_running();
}

#[test]
fn special_and_unreadable_files_are_reported_and_skipped() {
    let dir = Scratch::new("special");
    let peer = Peer::start(CURRENT, &dir);
    let fifo = dir.path("fifo");
    sys::mkfifo(&fifo);
    let subdir = dir.path("subdir");
    std::fs::create_dir(&subdir).unwrap();
    let loop_link = dir.path("loop");
    std::os::unix::fs::symlink(&loop_link, &loop_link).unwrap();
    let good = dir.path("good.log");
    append(&good, b"still shipped\n");
    let spec = format!(
        "{} {} /dev/zero {} {}",
        fifo.display(),
        subdir.display(),
        loop_link.display(),
        good.display()
    );
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    peer.assert_mirrors("good.log", &good, LIMIT);
    let text = agent.log_text();
    assert!(text.contains("is a FIFO, not a regular file"), "{text}");
    assert!(
        text.contains("is a directory, not a regular file"),
        "{text}"
    );
    assert!(
        text.contains("is a character device, not a regular file"),
        "{text}"
    );
    assert!(text.contains("loop: cannot be read"), "{text}");
    append(&good, b"and more\n");
    peer.assert_mirrors("good.log", &good, LIMIT);
    agent.assert_running();
}

//! Every refusal is one line on stderr, a non-zero exit, and no file left at
//! the output name (nor a temporary beside it).

mod util;

use std::fs;

use util::*;

fn refuse(name: &str, args: &[&str], needle: &str) {
    let d = scratch(&format!("err-{name}"));
    write_file(&d.join("agent"), &fake_elf(2, 62, 4096, 1), 0o755);
    write_file(&d.join("script"), b"#!/bin/sh\n", 0o755);
    fs::create_dir(d.join("adir")).unwrap();
    let before: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = run_in(&d, args, None);
    fails_with(&out, needle);
    let after: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "{name}: files left behind: {after:?}"
    );
}

#[test]
fn usage_errors() {
    let long = "n".repeat(256);
    let long_dest = format!("script=dir/{long}");
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "bad-arch",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--agent",
                "sparc64=agent",
            ],
            "unknown ARCH \"sparc64\"",
        ),
        (
            "agent-no-eq",
            &["--format", "ext2", "--out", "o.img", "--agent", "agent"],
            "expected ARCH=PATH",
        ),
        (
            "add-no-eq",
            &["--format", "cpio", "--out", "o.img", "--add", "script"],
            "expected SRC=DEST",
        ),
        (
            "add-dotdot",
            &[
                "--format",
                "cpio",
                "--out",
                "o.img",
                "--add",
                "script=../etc/x",
            ],
            "\"..\"",
        ),
        (
            "add-empty-dest",
            &["--format", "ext2", "--out", "o.img", "--add", "script="],
            "non-empty",
        ),
        (
            "name-too-long",
            &["--format", "ext2", "--out", "o.img", "--add", &long_dest],
            "names are at most 255",
        ),
        (
            "missing-agent",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--agent",
                "x86_64=nope",
            ],
            "input nope: No such file",
        ),
        (
            "missing-add",
            &["--format", "cpio", "--out", "o.img", "--add", "nope=x"],
            "input nope: No such file",
        ),
        (
            "add-a-dir",
            &["--format", "cpio", "--out", "o.img", "--add", "adir=x"],
            "not a regular file",
        ),
        (
            "not-elf",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--agent",
                "x86_64=script",
            ],
            "not an ELF",
        ),
        (
            "wrong-machine",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--agent",
                "aarch64=agent",
            ],
            "does not match aarch64",
        ),
        (
            "dup-arch",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--agent",
                "x86_64=agent",
                "--agent",
                "x86_64=agent",
            ],
            "given twice",
        ),
        (
            "dup-dest",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--add",
                "script=a",
                "--add",
                "script=/a",
            ],
            "given twice",
        ),
        (
            "dest-under-file",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--add",
                "script=a",
                "--add",
                "script=a/b",
            ],
            "already a file",
        ),
        (
            "lost-found",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--add",
                "script=lost+found/x",
            ],
            "reserved",
        ),
        (
            "nothing",
            &["--format", "ext2", "--out", "o.img"],
            "nothing to put in the image",
        ),
        (
            "size-on-cpio",
            &[
                "--format",
                "cpio",
                "--out",
                "o.img",
                "--add",
                "script=x",
                "--size-kib",
                "100",
            ],
            "ext2 only",
        ),
        (
            "too-small",
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--add",
                "agent=x",
                "--size-kib",
                "20",
            ],
            "image too small",
        ),
        (
            "no-out-dir",
            &[
                "--format",
                "ext2",
                "--out",
                "no/such/dir/o.img",
                "--add",
                "script=x",
            ],
            "cannot create",
        ),
        (
            "bad-format",
            &["--format", "iso9660", "--out", "o.img", "--add", "script=x"],
            "ext2 or cpio",
        ),
    ];
    for (name, args, needle) in cases {
        refuse(name, args, needle);
    }
}

#[test]
fn bad_source_date_epoch() {
    let d = scratch("err-epoch");
    write_file(&d.join("f"), b"x", 0o644);
    let out = run_in(
        &d,
        &["--format", "cpio", "--out", "o.img", "--add", "f=f"],
        Some("yesterday"),
    );
    fails_with(&out, "SOURCE_DATE_EPOCH");
    assert!(!d.join("o.img").exists());
}

#[test]
fn failed_build_keeps_previous_image() {
    let d = scratch("err-keep");
    write_file(&d.join("f"), b"x", 0o644);
    ok(&run_in(
        &d,
        &["--format", "ext2", "--out", "o.img", "--add", "f=f"],
        None,
    ));
    let before = fs::read(d.join("o.img")).unwrap();
    fails_with(
        &run_in(
            &d,
            &[
                "--format",
                "ext2",
                "--out",
                "o.img",
                "--add",
                "f=f",
                "--size-kib",
                "10",
            ],
            None,
        ),
        "too small",
    );
    assert!(fs::read(d.join("o.img")).unwrap() == before);
    assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
}

#[test]
fn help_documents_the_paths() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let h = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--format",
        "--out",
        "--agent",
        "--add",
        "--size-kib",
        "/tmp/updates/anamon/anamon.ARCH",
        "usr/libexec/anamon/anamon.ARCH",
        "SOURCE_DATE_EPOCH",
    ] {
        assert!(h.contains(want), "--help lacks {want:?}:\n{h}");
    }
}

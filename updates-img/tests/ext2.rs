//! The ext2 image, judged by e2fsprogs: e2fsck must find nothing to fix,
//! debugfs must see the geometry old loaders need and every file intact.

mod util;

use std::fs;
use std::path::Path;

use util::*;

/// `Mode:`, `User:`, `Group:`, `Type:` and `Size:` from `debugfs -R "stat P"`.
fn stat(img: &Path, path: &str) -> (String, String, String, String, u64) {
    let s = debugfs(img, &format!("stat {path}"));
    let tokens: Vec<&str> = s.split_whitespace().collect();
    let after = |key: &str| -> String {
        let i = tokens
            .iter()
            .position(|t| *t == key)
            .unwrap_or_else(|| panic!("no {key} in stat {path}:\n{s}"));
        tokens[i + 1].to_string()
    };
    (
        after("Type:"),
        after("Mode:"),
        after("User:"),
        after("Group:"),
        after("Size:").parse().unwrap(),
    )
}

fn dump(img: &Path, path: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("dumped");
    let _ = fs::remove_file(&out);
    debugfs(img, &format!("dump {path} {}", out.display()));
    fs::read(&out).unwrap_or_else(|e| panic!("debugfs dump {path}: {e}"))
}

#[test]
fn ext2_geometry_modes_and_bytes() {
    let d = scratch("ext2-full");
    let agent = fake_elf(2, 62, 700 * 1024, 1);
    let agent32 = fake_elf(1, 3, 650 * 1024 + 17, 2);
    let big = noise(1024 * 1024, 3); // 1024 blocks: needs the double indirect block
    let mid = noise(200 * 1024 + 5, 4); // single indirect only
    write_file(&d.join("in/anamon"), &agent, 0o644); // mode forced to 0755
    write_file(&d.join("in/anamon32"), &agent32, 0o700);
    write_file(&d.join("in/big.bin"), &big, 0o644);
    write_file(&d.join("in/mid.bin"), &mid, 0o640);
    write_file(&d.join("in/run.sh"), b"#!/bin/sh\necho hi\n", 0o750);
    write_file(&d.join("in/empty"), b"", 0o600);
    let so = ok(&run_in(
        &d,
        &[
            "--format",
            "ext2",
            "--out",
            "u.img",
            "--agent",
            "x86_64=in/anamon",
            "--agent",
            "i686=in/anamon32",
            "--add",
            "in/big.bin=data/big.bin",
            "--add",
            "in/mid.bin=/data/deeper/mid.bin",
            "--add",
            "in/run.sh=anamon/run.sh",
            "--add",
            "in/empty=empty",
        ],
        None,
    ));
    assert!(so.contains("/tmp/updates/anamon/anamon.x86_64"), "{so}");
    let img = d.join("u.img");
    e2fsck_clean(&img);

    let stats = debugfs(&img, "stats");
    for want in [
        "Filesystem revision #:    1 (dynamic)",
        "Filesystem features:      filetype sparse_super\n",
        "Block size:               1024",
        "Inode size:\t          128",
        "Filesystem state:         clean",
    ] {
        assert!(stats.contains(want), "stats lack {want:?}:\n{stats}");
    }
    // The auto size is the content plus modest slack.
    let kib = fs::metadata(&img).unwrap().len() / 1024;
    let content_kib = (agent.len() + agent32.len() + big.len() + mid.len()) as u64 / 1024;
    assert!(
        kib > content_kib && kib < content_kib * 112 / 100,
        "{kib} KiB for {content_kib} KiB of content"
    );

    let files: [(&str, &[u8], &str); 6] = [
        ("/anamon/anamon.x86_64", &agent, "0755"),
        ("/anamon/anamon.i686", &agent32, "0755"),
        ("/anamon/run.sh", b"#!/bin/sh\necho hi\n", "0750"),
        ("/data/big.bin", &big, "0644"),
        ("/data/deeper/mid.bin", &mid, "0640"),
        ("/empty", b"", "0600"),
    ];
    for (path, bytes, mode) in files {
        let (ty, m, uid, gid, size) = stat(&img, path);
        assert_eq!(
            (ty.as_str(), m.as_str(), uid.as_str(), gid.as_str()),
            ("regular", mode, "0", "0"),
            "{path}"
        );
        assert_eq!(size, bytes.len() as u64, "{path}");
        assert!(
            dump(&img, path, &d) == bytes,
            "{path}: dumped bytes differ from the input"
        );
    }
    for dir in ["/", "/anamon", "/data", "/data/deeper"] {
        let (ty, m, uid, gid, _) = stat(&img, dir);
        assert_eq!(
            (ty.as_str(), m.as_str(), uid.as_str(), gid.as_str()),
            ("directory", "0755", "0", "0"),
            "{dir}"
        );
    }
    let ls = debugfs(&img, "ls -l /data");
    assert!(
        ls.contains(" .\n") && ls.contains(" ..\n") && ls.contains("deeper"),
        "{ls}"
    );
}

#[test]
fn ext2_spanning_block_groups() {
    // 20 MB of data crosses into the third 8 MiB block group, with backups of
    // the superblock in groups 1 and (if present) 3.
    let d = scratch("ext2-groups");
    let files: Vec<Vec<u8>> = (0..5)
        .map(|i| noise(4_000_000 + i * 1000, 10 + i as u64))
        .collect();
    let mut adds = Vec::new();
    for (i, f) in files.iter().enumerate() {
        write_file(&d.join(format!("f{i}")), f, 0o644);
        adds.push("--add".to_string());
        adds.push(format!("f{i}=dir{}/f{i}", i % 2));
    }
    let build = |out: &str, extra: &[&str]| {
        let mut args = vec!["--format", "ext2", "--out", out];
        args.extend(adds.iter().map(|s| s.as_str()));
        args.extend_from_slice(extra);
        ok(&run_in(&d, &args, None));
        d.join(out)
    };
    let img = build("g.img", &[]);
    e2fsck_clean(&img);
    let stats = debugfs(&img, "stats");
    assert!(
        stats.contains(" Group  2:"),
        "expected at least 3 groups:\n{stats}"
    );
    for (i, f) in files.iter().enumerate() {
        assert!(
            dump(&img, &format!("/dir{}/f{i}", i % 2), &d) == *f,
            "f{i} differs"
        );
    }

    // A fixed, larger size: more (empty) groups, still clean.
    let h = build("h.img", &["--size-kib", "60000"]);
    assert_eq!(fs::metadata(&h).unwrap().len(), 60000 * 1024);
    e2fsck_clean(&h);
    assert!(debugfs(&h, "stats").contains(" Group  7:"));
}

#[test]
fn ext2_size_kib_exact_and_minimum() {
    let d = scratch("ext2-size");
    write_file(&d.join("a"), &fake_elf(2, 62, 300 * 1024, 5), 0o755);
    // Too small: one-line error naming the minimum, nothing written.
    let out = run_in(
        &d,
        &[
            "--format",
            "ext2",
            "--out",
            "s.img",
            "--agent",
            "x86_64=a",
            "--size-kib",
            "200",
        ],
        None,
    );
    fails_with(&out, "image too small: --size-kib 200");
    let err = String::from_utf8_lossy(&out.stderr);
    let need: u64 = err
        .split("at least ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        fs::read_dir(&d).unwrap().count(),
        1,
        "a failed build left files behind"
    );
    // The minimum it names works, and is exactly the image size.
    ok(&run_in(
        &d,
        &[
            "--format",
            "ext2",
            "--out",
            "s.img",
            "--agent",
            "x86_64=a",
            "--size-kib",
            &need.to_string(),
        ],
        None,
    ));
    assert_eq!(fs::metadata(d.join("s.img")).unwrap().len(), need * 1024);
    e2fsck_clean(&d.join("s.img"));
    // One less does not.
    let out = run_in(
        &d,
        &[
            "--format",
            "ext2",
            "--out",
            "t.img",
            "--agent",
            "x86_64=a",
            "--size-kib",
            &(need - 1).to_string(),
        ],
        None,
    );
    fails_with(&out, "image too small");
}

#[test]
fn ext2_timestamps_follow_source_date_epoch() {
    let d = scratch("ext2-epoch");
    write_file(&d.join("f"), b"x", 0o644);
    ok(&run_in(
        &d,
        &["--format", "ext2", "--out", "e.img", "--add", "f=f"],
        Some("1700000000"),
    ));
    let s = debugfs(&d.join("e.img"), "stat /f");
    assert!(s.contains("mtime: 0x6553f100"), "{s}");
    ok(&run_in(
        &d,
        &["--format", "ext2", "--out", "z.img", "--add", "f=f"],
        None,
    ));
    assert!(debugfs(&d.join("z.img"), "stat /f").contains("mtime: 0x00000000"));
}

#[test]
fn ext2_directories_spanning_blocks() {
    // 150 long names in one directory need several directory blocks.
    let d = scratch("ext2-bigdir");
    write_file(&d.join("f"), b"same bytes\n", 0o644);
    let mut args: Vec<String> = ["--format", "ext2", "--out", "m.img"]
        .map(String::from)
        .to_vec();
    for i in 0..150 {
        args.push("--add".into());
        args.push(format!("f=many/file-with-a-rather-long-name-{i:04}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&run_in(&d, &args, None));
    let img = d.join("m.img");
    e2fsck_clean(&img);
    let (_, _, _, _, size) = stat(&img, "/many");
    assert!(size >= 5 * 1024, "directory is {size} bytes");
    let ls = debugfs(&img, "ls /many");
    assert_eq!(ls.matches("file-with-a-rather-long-name-").count(), 150);
    assert!(dump(&img, "/many/file-with-a-rather-long-name-0149", &d) == b"same bytes\n");
}

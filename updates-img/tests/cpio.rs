//! The gzip newc cpio, judged by GNU cpio; and reproducibility of both formats.

mod util;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use util::*;

#[test]
fn cpio_lists_root_owned_and_unpacks_identical() {
    let d = scratch("cpio-full");
    let agent = fake_elf(2, 183, 700 * 1024, 7);
    let big = noise(1024 * 1024 + 3, 8);
    write_file(&d.join("in/anamon"), &agent, 0o600); // forced to 0755
    write_file(&d.join("in/big"), &big, 0o640);
    write_file(&d.join("in/odd"), b"12345", 0o644); // exercises 4-byte padding
    let so = ok(&run_in(
        &d,
        &[
            "--format",
            "cpio",
            "--out",
            "u.img",
            "--agent",
            "aarch64=in/anamon",
            "--add",
            "in/big=/etc/x/big",
            "--add",
            "in/odd=odd",
        ],
        None,
    ));
    assert!(so.contains("/usr/libexec/anamon/anamon.aarch64"), "{so}");
    let gz = fs::read(d.join("u.img")).unwrap();
    assert_eq!(
        &gz[..8],
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0],
        "gzip header must carry no name and mtime 0"
    );
    let mut raw = Vec::new();
    flate2_free_gunzip(&d.join("u.img"), &mut raw);
    assert!(raw.starts_with(b"070701"), "not newc");
    assert_eq!(raw.len() % 4, 0);
    fs::write(d.join("u.cpio"), &raw).unwrap();

    // cpio -itv: every entry root-owned, directories before their contents.
    let cpio = tool("cpio");
    let out = std::process::Command::new(&cpio)
        .args(["-itv", "--numeric-uid-gid", "-F", "u.cpio"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "etc",
            "etc/x",
            "etc/x/big",
            "odd",
            "usr",
            "usr/libexec",
            "usr/libexec/anamon",
            "usr/libexec/anamon/anamon.aarch64"
        ]
    );
    for l in listing.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "not root-owned: {l}");
        if l.starts_with('d') {
            assert!(l.starts_with("drwxr-xr-x"), "{l}");
        }
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("anamon.aarch64")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw-r-----") && l.ends_with("etc/x/big")),
        "{listing}"
    );

    // cpio -idm unpacks the same bytes and modes.
    let into = d.join("unpacked");
    fs::create_dir(&into).unwrap();
    let st = std::process::Command::new(&cpio)
        .args([
            OsStr::new("-idm"),
            OsStr::new("--no-absolute-filenames"),
            OsStr::new("-F"),
            d.join("u.cpio").as_os_str(),
        ])
        .current_dir(&into)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(fs::read(into.join("usr/libexec/anamon/anamon.aarch64")).unwrap() == agent);
    assert!(fs::read(into.join("etc/x/big")).unwrap() == big);
    assert_eq!(fs::read(into.join("odd")).unwrap(), b"12345");
    let mode = |p: &str| fs::metadata(into.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("usr/libexec/anamon/anamon.aarch64"), 0o755);
    assert_eq!(mode("etc/x/big"), 0o640);
    assert_eq!(mode("etc/x"), 0o755);
}

/// gunzip with the system `gzip -dc`, so the check does not trust our own
/// compression library to read what it wrote.
fn flate2_free_gunzip(path: &std::path::Path, out: &mut Vec<u8>) {
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdout.take().unwrap().read_to_end(out).unwrap();
    assert!(child.wait().unwrap().success(), "gzip -dc failed");
}

#[test]
fn same_inputs_same_bytes() {
    let d = scratch("repro");
    write_file(&d.join("agent"), &fake_elf(2, 62, 400 * 1024, 9), 0o755);
    write_file(&d.join("extra"), &noise(5000, 10), 0o644);
    for format in ["ext2", "cpio"] {
        let build = |out: &str, epoch: Option<&str>| {
            let args = [
                "--format",
                format,
                "--out",
                out,
                "--add",
                "extra=z/extra",
                "--agent",
                "x86_64=agent",
            ];
            ok(&run_in(&d, &args, epoch));
            fs::read(d.join(out)).unwrap()
        };
        let a = build("a.img", Some("1700000000"));
        // Different output name and a moment later: same bytes.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = build("b.img", Some("1700000000"));
        assert!(a == b, "{format}: two builds differ");
        // Without SOURCE_DATE_EPOCH times are 0: still reproducible, and different.
        let c = build("c.img", None);
        let c2 = build("c2.img", None);
        assert!(c == c2, "{format}: builds without SOURCE_DATE_EPOCH differ");
        assert!(a != c, "{format}: SOURCE_DATE_EPOCH had no effect");
    }
}

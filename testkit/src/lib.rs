//! Test support shared by the agent's and the receiver's integration tests:
//! scratch directories, the real Cobbler peer (`ci/peer/serve`) or
//! anamon-receiver as the server, the agent binary, and one scriptable fault
//! proxy. Everything listens on 127.0.0.1 only.

mod peer;
mod proxy;
pub mod sys;

pub use peer::{agent_bin, receiver_bin, Agent, Peer, SYSTEM};
pub use proxy::{
    always, first, forward, read_head, read_request, Act, Answer, FaultProxy, Listener, Router,
    Schedule,
};
/// The canned answers and raw bytes for [`Act`].
pub mod answers {
    pub use crate::proxy::{
        GARBAGE, HTML_200, HTML_500, HTML_502, HUGE_LENGTH, SHORT_BODY, TRUNCATED_XML, XMLRPC_FAULT,
    };
}

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A scratch directory, removed on drop (kept with `ANAMON_KEEP` set).
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("anamon-test-{tag}-"))
            .tempdir()
            .unwrap();
        Scratch(dir)
    }

    pub fn root(&self) -> &Path {
        self.0.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("ANAMON_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.0, tempfile::tempdir().unwrap());
            eprintln!("kept {}", kept.keep().display());
        }
    }
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for `child` to exit; its status code, if it did.
pub fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let mut code = None;
    wait_until(limit, || match child.try_wait().unwrap() {
        Some(st) => {
            code = st.code();
            true
        }
        None => false,
    });
    code
}

/// Appends `data` to `path`.
pub fn append(path: &Path, data: &[u8]) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// Deterministic bytes covering every value, NUL and invalid UTF-8 included.
pub fn binary_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// xorshift64*, for fault and write schedules that are the same on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

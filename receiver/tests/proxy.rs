//! Behind a load balancer (`--trusted-proxy`): the client of a request is
//! the address the proxy forwards for, so the per-client rate cap and the
//! session log lines count each agent, not the proxy; from anyone else the
//! header means nothing.

mod common;

use common::{b64, is_fault, is_true, upload, Receiver};

/// An upload as a proxy sends it on, with `forwarded` headers.
fn via(r: &Receiver, forwarded: &[&str], file: &str) -> String {
    let body = upload("web01", file, 2, 0, &b64(b"x\n"));
    let headers: String = forwarded
        .iter()
        .map(|f| format!("X-Forwarded-For: {f}\r\n"))
        .collect();
    r.raw(
        format!(
            "POST /cobbler_api HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn a_trusted_proxys_clients_each_have_their_own_rate() {
    let r = Receiver::start(
        "proxy-trusted",
        &[
            "--rate",
            "1",
            "--burst",
            "1",
            "--trusted-proxy",
            "127.0.0.1",
            "--session-idle",
            "1",
        ],
    );
    assert!(is_true(&via(&r, &["10.0.0.1"], "a.log")));
    assert!(
        is_fault(&via(&r, &["10.0.0.1"], "a.log")),
        "10.0.0.1 is over its rate"
    );
    assert!(is_true(&via(&r, &["10.0.0.2"], "b.log")));
    // What a client wrote itself comes first; the proxy's entry is last.
    assert!(is_true(&via(&r, &["10.0.0.1", "10.0.0.3"], "c.log")));
    assert!(is_true(&via(&r, &["10.0.0.1, 10.0.0.4"], "d.log")));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let log = r.log_text();
    for (file, from) in [
        ("a.log", "10.0.0.1"),
        ("b.log", "10.0.0.2"),
        ("c.log", "10.0.0.3"),
        ("d.log", "10.0.0.4"),
    ] {
        assert!(
            log.contains(&format!("web01/{file} from {from}:")),
            "{file} {from}: {log}"
        );
    }
}

#[test]
fn the_header_means_nothing_from_anyone_else() {
    let r = Receiver::start(
        "proxy-untrusted",
        &["--rate", "1", "--burst", "1", "--trusted-proxy", "10.9.9.9"],
    );
    assert!(is_true(&via(&r, &["10.0.0.1"], "a.log")));
    // Another claimed address from the same peer: the same client, capped.
    assert!(is_fault(&via(&r, &["10.0.0.2"], "b.log")));
}

//! Feeds arbitrary bytes to the agent's XML-RPC response parser: whatever a
//! server, a proxy or an attacker on the path answers, parsing must return
//! Ok or Err — never panic, overflow the stack, or run away in time/memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match anamon_xmlrpc::parse_response(data) {
        // What the agent does with an answer: describe it for a log line.
        Ok(anamon_xmlrpc::Response::Value(v)) => {
            let _ = v.describe();
        }
        Ok(_) => {}
        // An error goes into a log line: one line of printable ASCII,
        // whatever the server sent.
        Err(e) => assert!(e.to_string().chars().all(|c| (' '..='~').contains(&c))),
    }
});

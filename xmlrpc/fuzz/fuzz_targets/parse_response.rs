//! Feeds arbitrary bytes to the agent's XML-RPC response parser: whatever a
//! server, a proxy or an attacker on the path answers, parsing must return
//! Ok or Err — never panic, overflow the stack, or run away in time/memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = anamon_xmlrpc::parse_response(data) {
        // What the agent does with an answer: describe it for a log line.
        if let anamon_xmlrpc::Response::Value(v) = r {
            let _ = v.describe();
        }
    }
});

//! Feeds arbitrary bytes to anamon-receiver's XML-RPC call parser and base64
//! decoder: whatever a client sends, parsing must return Ok or Err, never
//! panic, overflow the stack, or run away in time or memory.
#![no_main]

use anamon_xmlrpc::server::{base64_decode, encode_response, parse_call};
use anamon_xmlrpc::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An error goes into a log line and a fault: one line of printable
    // ASCII, whatever the client sent.
    if let Err(e) = parse_call(data) {
        assert!(e.to_string().chars().all(|c| (' '..='~').contains(&c)));
    }
    if let Ok(call) = parse_call(data) {
        for p in &call.params {
            if let Value::Base64(text) | Value::Str(text) = p {
                let _ = base64_decode(text);
            }
            // The receiver echoes nothing back, but encoding any parsed
            // value must not panic either.
            let _ = encode_response(p);
        }
    }
});

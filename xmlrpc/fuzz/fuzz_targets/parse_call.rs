//! Feeds arbitrary bytes to anamon-receiver's XML-RPC call parser and base64
//! decoder: whatever a client sends, parsing must return Ok or Err, never
//! panic, overflow the stack, or run away in time or memory.
#![no_main]

use anamon_xmlrpc::server::{base64_decode, encode_response, parse_call};
use anamon_xmlrpc::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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

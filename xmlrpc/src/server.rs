//! The server half: parse a `methodCall`, encode a `methodResponse` or a
//! fault, decode `<base64>` data. Used by anamon-receiver only.

use crate::{push_escaped, unexpected, ParseError, Parser, Value};
use quick_xml::events::Event;

/// A parsed `methodCall`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// Parses a `methodCall` document as strictly as [`crate::parse_response`]
/// parses answers: one root, known types, bounded nesting, nothing after it.
pub fn parse_call(doc: &[u8]) -> Result<Call, ParseError> {
    let mut p = Parser::new(doc);
    let root = p.expect_start()?;
    if root != "methodCall" {
        return Err(ParseError::new(format!(
            "expected <methodCall>, found <{root}>"
        )));
    }
    p.expect_named_start("methodName")?;
    let method = p.text_until("methodName")?.trim().to_string();
    if method.is_empty() {
        return Err(ParseError::new("empty <methodName>".into()));
    }
    let mut params = Vec::new();
    // <params> is optional, and may be empty (`<params/>`).
    match p.next_significant()? {
        Event::Start(s) if s.name().as_ref() == b"params" => loop {
            match p.next_significant()? {
                Event::Start(s) if s.name().as_ref() == b"param" => {
                    p.expect_named_start("value")?;
                    params.push(p.value_body(0)?);
                    p.expect_end("param")?;
                }
                Event::End(e) if e.name().as_ref() == b"params" => {
                    p.expect_end("methodCall")?;
                    break;
                }
                ev => return Err(unexpected(&ev, "<param> or </params>")),
            }
        },
        Event::Empty(s) if s.name().as_ref() == b"params" => p.expect_end("methodCall")?,
        Event::End(e) if e.name().as_ref() == b"methodCall" => {}
        ev => return Err(unexpected(&ev, "<params> or </methodCall>")),
    }
    p.expect_eof("methodCall")?;
    Ok(Call { method, params })
}

/// A `methodResponse` carrying `value`, as Python's marshaller writes it.
pub fn encode_response(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"<?xml version=\"1.0\"?>\n<methodResponse><params><param>");
    push_value(&mut out, value);
    out.extend_from_slice(b"</param></params></methodResponse>\n");
    out
}

/// A fault `methodResponse`.
pub fn encode_fault(code: i64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + message.len());
    out.extend_from_slice(b"<?xml version=\"1.0\"?>\n<methodResponse><fault>");
    push_value(
        &mut out,
        &Value::Struct(vec![
            ("faultCode".into(), Value::Int(code)),
            ("faultString".into(), Value::Str(message.into())),
        ]),
    );
    out.extend_from_slice(b"</fault></methodResponse>\n");
    out
}

fn push_value(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"<value>");
    match v {
        Value::Bool(b) => out.extend_from_slice(if *b {
            b"<boolean>1</boolean>"
        } else {
            b"<boolean>0</boolean>"
        }),
        Value::Int(i) if i32::try_from(*i).is_ok() => {
            out.extend_from_slice(format!("<int>{i}</int>").as_bytes())
        }
        Value::Int(i) => out.extend_from_slice(format!("<i8>{i}</i8>").as_bytes()),
        Value::Double(d) => tagged(out, "double", d),
        Value::Str(s) => tagged(out, "string", s),
        Value::Base64(s) => tagged(out, "base64", s),
        Value::DateTime(s) => tagged(out, "dateTime.iso8601", s),
        Value::Nil => out.extend_from_slice(b"<nil/>"),
        Value::Array(items) => {
            out.extend_from_slice(b"<array><data>");
            for item in items {
                push_value(out, item);
            }
            out.extend_from_slice(b"</data></array>");
        }
        Value::Struct(members) => {
            out.extend_from_slice(b"<struct>");
            for (name, value) in members {
                out.extend_from_slice(b"<member><name>");
                push_escaped(out, name);
                out.extend_from_slice(b"</name>");
                push_value(out, value);
                out.extend_from_slice(b"</member>");
            }
            out.extend_from_slice(b"</struct>");
        }
    }
    out.extend_from_slice(b"</value>");
}

fn tagged(out: &mut Vec<u8>, tag: &str, text: &str) {
    out.extend_from_slice(format!("<{tag}>").as_bytes());
    push_escaped(out, text);
    out.extend_from_slice(format!("</{tag}>").as_bytes());
}

/// Decodes standard padded base64, skipping ASCII whitespace (Python's
/// encoder breaks lines every 76 characters). Anything else outside the
/// alphabet, or misplaced padding, is an error: the caller answers a fault
/// rather than store bytes it had to guess.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut quad = [0u8; 4];
    let mut n = 0;
    let mut padding = 0;
    for (i, c) in text.bytes().enumerate() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                // Padding may only fill the last one or two places of the
                // final quad.
                if n < 2 {
                    return Err(ParseError::new(format!("base64: '=' out of place at {i}")));
                }
                padding += 1;
                0
            }
            c if c.is_ascii_whitespace() => continue,
            c => {
                return Err(ParseError::new(format!(
                    "base64: byte 0x{c:02x} at {i} is not in the alphabet"
                )))
            }
        };
        if padding > 0 && c != b'=' {
            return Err(ParseError::new(format!("base64: data after '=' at {i}")));
        }
        quad[n] = sextet;
        n += 1;
        if n == 4 {
            let v = (u32::from(quad[0]) << 18)
                | (u32::from(quad[1]) << 12)
                | (u32::from(quad[2]) << 6)
                | u32::from(quad[3]);
            let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
            if padding > 2 {
                return Err(ParseError::new("base64: too much padding".into()));
            }
            out.extend_from_slice(&bytes[..3 - padding]);
            n = 0;
            if padding > 0 {
                // Only whitespace may follow the final quad.
                padding = 3;
            }
        }
    }
    if n != 0 {
        return Err(ParseError::new(
            "base64: length is not a multiple of 4".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{base64_encode_into, encode_call, parse_response, Param, Response};

    #[test]
    fn parses_what_the_agent_encodes() {
        let doc = encode_call(
            "upload_log_data",
            &[
                Param::Str("web01"),
                Param::Str("anaconda.log"),
                Param::Int(3),
                Param::Int(5 << 30),
                Param::Base64(b"a\0\xff"),
                Param::Base64Text(b"hi"),
            ],
        );
        let call = parse_call(&doc).unwrap();
        assert_eq!(call.method, "upload_log_data");
        assert_eq!(
            call.params,
            vec![
                Value::Str("web01".into()),
                Value::Str("anaconda.log".into()),
                Value::Int(3),
                Value::Int(5 << 30),
                Value::Base64("YQD/".into()),
                Value::Str("aGk=".into()),
            ]
        );
    }

    #[test]
    fn parses_python_xmlrpc_client_calls() {
        // What xmlrpc.client.dumps((...), "upload_log_data") writes.
        let doc = b"<?xml version='1.0'?>\n<methodCall>\n<methodName>upload_log_data</methodName>\n<params>\n<param>\n<value><string>web01</string></value>\n</param>\n<param>\n<value><int>0</int></value>\n</param>\n<param>\n<value><base64>\naGVsbG8=\n</base64></value>\n</param>\n</params>\n</methodCall>\n";
        let call = parse_call(doc).unwrap();
        assert_eq!(call.params.len(), 3);
        let Value::Base64(text) = &call.params[2] else {
            panic!("not base64: {:?}", call.params[2])
        };
        assert_eq!(base64_decode(text).unwrap(), b"hello");
        for empty in [
            &b"<methodCall><methodName>version</methodName></methodCall>"[..],
            b"<methodCall><methodName>version</methodName><params/></methodCall>",
            b"<methodCall><methodName>version</methodName><params></params></methodCall>",
        ] {
            assert_eq!(parse_call(empty).unwrap().params, vec![]);
        }
    }

    #[test]
    fn rejects_what_is_not_a_method_call() {
        let cases: &[&[u8]] = &[
            b"",
            b"GET / HTTP/1.0",
            b"<methodResponse><params/></methodResponse>",
            b"<methodCall><methodName></methodName></methodCall>",
            b"<methodCall><methodName>x</methodName>",
            b"<methodCall><methodName>x</methodName><params><param><value><int>1</int></value></param></params></methodCall><x/>",
            b"<methodCall><methodName>x</methodName><params><value/></params></methodCall>",
            b"<methodCall><methodName>x</methodName><params><param><value><i4>9x</i4></value></param></params></methodCall>",
            b"<!DOCTYPE x [<!ENTITY a \"b\">]><methodCall><methodName>x</methodName></methodCall>",
        ];
        for c in cases {
            assert!(
                parse_call(c).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn responses_round_trip_through_the_agent_parser() {
        let v = Value::Struct(vec![
            ("version".into(), Value::Str("anamon-receiver <1>".into())),
            ("n".into(), Value::Int(-7)),
            ("big".into(), Value::Int(1 << 40)),
            ("ok".into(), Value::Bool(true)),
            (
                "list".into(),
                Value::Array(vec![Value::Nil, Value::Double("1.5".into())]),
            ),
        ]);
        assert_eq!(parse_response(&encode_response(&v)), Ok(Response::Value(v)));
        assert_eq!(
            parse_response(&encode_fault(1, "size cap: a & b")),
            Ok(Response::Fault {
                code: 1,
                message: "size cap: a & b".into()
            })
        );
    }

    #[test]
    fn base64_decode_inverts_the_encoder() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in [0, 1, 2, 3, 4, 5, 999, 1000] {
            let mut enc = Vec::new();
            base64_encode_into(&data[..len], &mut enc);
            let text = String::from_utf8(enc).unwrap();
            assert_eq!(base64_decode(&text).unwrap(), &data[..len]);
            // Python's line breaks are skipped.
            let wrapped: String = text
                .as_bytes()
                .chunks(76)
                .map(|l| String::from_utf8_lossy(l).into_owned() + "\n")
                .collect();
            assert_eq!(base64_decode(&wrapped).unwrap(), &data[..len]);
        }
    }

    #[test]
    fn base64_decode_refuses_guesswork() {
        for bad in [
            "Zg", "Zg=", "Z===", "=Zg=", "Zg==Zg==", "Zm9v!", "Zm9vYg=a", "Zm\09v",
        ] {
            assert!(base64_decode(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(base64_decode("Zg==\n").unwrap(), b"f");
    }
}

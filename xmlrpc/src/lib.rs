//! XML-RPC codec: builds `methodCall` documents and parses `methodResponse`
//! documents strictly. No I/O here, so every case is unit-testable.
//!
//! Only what Cobbler's `upload_log_data` needs is encoded (strings, integers,
//! base64), but responses are parsed for every XML-RPC type, because an
//! unexpected but well-formed answer deserves a precise message rather than a
//! parse error.
//!
//! The server half (parsing calls, encoding responses) is behind the `server`
//! feature, which only anamon-receiver enables: the agent never carries it.

#[cfg(feature = "server")]
pub mod server;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::fmt;

/// A parameter of a call.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Str(&'a str),
    Int(i64),
    /// Bytes sent as `<base64>`, which Python's server hands over as `Binary`.
    Base64(&'a [u8]),
    /// Bytes sent as base64 *text* in `<string>`: the Cobbler 2.x contract.
    Base64Text(&'a [u8]),
}

/// A value in a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Double(String),
    Str(String),
    Base64(String),
    DateTime(String),
    Nil,
    Array(Vec<Value>),
    Struct(Vec<(String, Value)>),
}

impl Value {
    /// A short human description for log lines, e.g. `string "3.3.10"`.
    pub fn describe(&self) -> String {
        match self {
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Double(d) => format!("double {d}"),
            Value::Str(s) => format!("string {s:?}"),
            Value::Base64(_) => "base64 data".into(),
            Value::DateTime(d) => format!("dateTime {d}"),
            Value::Nil => "nil".into(),
            Value::Array(a) => format!("array of {}", a.len()),
            Value::Struct(m) => format!("struct of {}", m.len()),
        }
    }
}

/// A parsed `methodResponse`.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Value(Value),
    Fault { code: i64, message: String },
}

/// Why a document could not be parsed. Its message may quote the peer's
/// element names and text: it is shown through [`Escaped`], so a hostile
/// document cannot put a line break or a terminal escape into a log line
/// or a fault string.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(String);

impl ParseError {
    pub(crate) fn new(message: String) -> ParseError {
        ParseError(message)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&self.0).fmt(f)
    }
}

impl std::error::Error for ParseError {}

/// Text the other end chose, shown so that it stays on one line and shows
/// what it is: a backslash becomes `\\`, an ASCII control `\xNN` and
/// anything outside ASCII (C1 controls, bidirectional overrides such as
/// U+202E, look-alike letters) `\u{NNNN}`. The one escaping used wherever
/// a peer's text enters a log line or a fault string, by the agent and by
/// anamon-receiver.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(|c: char| c == '\\' || !(' '..='~').contains(&c)) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().expect("found at i");
            match c {
                '\\' => f.write_str("\\\\")?,
                c if c.is_ascii() => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:04x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Nesting deeper than this is refused: the agent only ever expects a boolean
/// or a fault struct, and recursion must stay bounded on hostile input.
const MAX_DEPTH: usize = 16;

/// Builds a complete `methodCall` document.
pub fn encode_call(method: &str, params: &[Param<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_call_into(&mut out, method, params);
    out
}

/// [`encode_call`] into `out`, which is cleared first: a caller that sends
/// many calls keeps one buffer instead of allocating (and, for a 256 KiB
/// chunk, mapping and unmapping) a new one per call.
pub fn encode_call_into(out: &mut Vec<u8>, method: &str, params: &[Param<'_>]) {
    out.clear();
    let payload: usize = params
        .iter()
        .map(|p| match p {
            Param::Str(s) => s.len() + 40,
            Param::Int(_) => 60,
            Param::Base64(b) | Param::Base64Text(b) => b.len().div_ceil(3) * 4 + 40,
        })
        .sum();
    out.reserve(payload + 120);
    // Only what a parser needs: no XML declaration (optional in XML 1.0),
    // no line breaks, names as untyped values (XML-RPC's default type is
    // string). Every upload carries this envelope, so each byte of it
    // counts once per request.
    out.extend_from_slice(b"<methodCall><methodName>");
    push_escaped(out, method);
    out.extend_from_slice(b"</methodName><params>");
    for p in params {
        out.extend_from_slice(b"<param><value>");
        match *p {
            Param::Str(s) => push_escaped(out, s),
            // Python's marshaller writes <int> and its parser reads <int>,
            // <i4> and <i8> of any size; <i8> marks what does not fit 32 bits
            // for stricter servers.
            Param::Int(i) if i32::try_from(i).is_ok() => {
                out.extend_from_slice(format!("<int>{i}</int>").as_bytes())
            }
            Param::Int(i) => out.extend_from_slice(format!("<i8>{i}</i8>").as_bytes()),
            Param::Base64(b) => {
                out.extend_from_slice(b"<base64>");
                base64_encode_into(b, out);
                out.extend_from_slice(b"</base64>");
            }
            Param::Base64Text(b) => {
                out.extend_from_slice(b"<string>");
                base64_encode_into(b, out);
                out.extend_from_slice(b"</string>");
            }
        }
        out.extend_from_slice(b"</value></param>");
    }
    out.extend_from_slice(b"</params></methodCall>");
}

pub(crate) fn push_escaped(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(quick_xml::escape::escape(s).as_bytes());
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, appended to `out` (no line breaks: Python's
/// decoder does not need them and they only cost wire bytes). The output is
/// sized once and filled by index: this runs over every byte shipped. It is
/// sized with zeros, which is a `memset`; a fill with `=` was a byte loop,
/// about half of this function's samples (`perf record -g` of the agent on
/// `ci/bench/run --only dense`: 7.2 % of its samples, of 14.0 % here).
pub fn base64_encode_into(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + data.len().div_ceil(3) * 4, 0);
    let dst = &mut out[start..];
    let sym = |n: u32, shift: u32| B64[(n >> shift) as usize & 63];
    let mut chunks = data.chunks_exact(3);
    for (src, d) in (&mut chunks).zip(dst.chunks_exact_mut(4)) {
        let n = (u32::from(src[0]) << 16) | (u32::from(src[1]) << 8) | u32::from(src[2]);
        d.copy_from_slice(&[sym(n, 18), sym(n, 12), sym(n, 6), sym(n, 0)]);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let n = (u32::from(rest[0]) << 16) | (u32::from(rest.get(1).copied().unwrap_or(0)) << 8);
        let tail = dst.len() - 4;
        dst[tail] = sym(n, 18);
        dst[tail + 1] = sym(n, 12);
        dst[tail + 2] = if rest.len() == 2 { sym(n, 6) } else { b'=' };
        dst[tail + 3] = b'=';
    }
}

/// Parses a `methodResponse` document. Anything else — an HTML page, a
/// truncated document, trailing elements — is an error naming what was found.
pub fn parse_response(doc: &[u8]) -> Result<Response, ParseError> {
    let mut p = Parser::new(doc);
    let root = p.expect_start()?;
    if root != "methodResponse" {
        return Err(ParseError::new(format!(
            "expected <methodResponse>, found <{root}>"
        )));
    }
    let response = match p.expect_start()?.as_str() {
        "params" => {
            p.expect_named_start("param")?;
            p.expect_named_start("value")?;
            let v = p.value_body(0)?;
            p.expect_end("param")?;
            p.expect_end("params")?;
            Response::Value(v)
        }
        "fault" => {
            p.expect_named_start("value")?;
            let v = p.value_body(0)?;
            p.expect_end("fault")?;
            fault_from(v)?
        }
        other => {
            return Err(ParseError::new(format!(
                "expected <params> or <fault>, found <{other}>"
            )))
        }
    };
    p.expect_end("methodResponse")?;
    p.expect_eof("methodResponse")?;
    Ok(response)
}

fn fault_from(v: Value) -> Result<Response, ParseError> {
    let Value::Struct(members) = v else {
        return Err(ParseError::new(format!(
            "fault value is {} rather than a struct",
            v.describe()
        )));
    };
    let mut code = None;
    let mut message = None;
    for (name, value) in members {
        match (name.as_str(), value) {
            ("faultCode", Value::Int(c)) => code = Some(c),
            ("faultString", Value::Str(s)) => message = Some(s),
            _ => {}
        }
    }
    match (code, message) {
        (Some(code), Some(message)) => Ok(Response::Fault { code, message }),
        _ => Err(ParseError::new(
            "fault without an int faultCode and a string faultString".into(),
        )),
    }
}

pub(crate) struct Parser<'a> {
    reader: Reader<&'a [u8]>,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(doc: &'a [u8]) -> Parser<'a> {
        let mut reader = Reader::from_reader(doc);
        reader.config_mut().check_end_names = true;
        Parser { reader }
    }

    pub(crate) fn expect_eof(&mut self, root: &str) -> Result<(), ParseError> {
        match self.next_significant()? {
            Event::Eof => Ok(()),
            _ => Err(ParseError::new(format!("content after </{root}>"))),
        }
    }

    /// The next event that is not whitespace, a comment, a declaration or a
    /// processing instruction.
    pub(crate) fn next_significant(&mut self) -> Result<Event<'a>, ParseError> {
        loop {
            let ev = self.reader.read_event().map_err(|e| self.err(e))?;
            match ev {
                Event::Text(ref t) if t.iter().all(u8::is_ascii_whitespace) => continue,
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => continue,
                Event::DocType(_) => {
                    return Err(ParseError::new(
                        "a DOCTYPE is not XML-RPC (an HTML page?)".into(),
                    ))
                }
                ev => return Ok(ev),
            }
        }
    }

    fn err(&self, e: impl fmt::Display) -> ParseError {
        ParseError::new(format!(
            "malformed XML at byte {}: {e}",
            self.reader.buffer_position()
        ))
    }

    pub(crate) fn expect_start(&mut self) -> Result<String, ParseError> {
        match self.next_significant()? {
            Event::Start(s) => Ok(name_of(&s)),
            ev => Err(unexpected(&ev, "an element")),
        }
    }

    pub(crate) fn expect_named_start(&mut self, want: &str) -> Result<(), ParseError> {
        let got = self.expect_start()?;
        if got == want {
            Ok(())
        } else {
            Err(ParseError::new(format!("expected <{want}>, found <{got}>")))
        }
    }

    pub(crate) fn expect_end(&mut self, want: &str) -> Result<(), ParseError> {
        match self.next_significant()? {
            Event::End(e) if e.name().as_ref() == want.as_bytes() => Ok(()),
            ev => Err(unexpected(&ev, &format!("</{want}>"))),
        }
    }

    /// Text content up to the end tag `tag`, with entity and character
    /// references resolved.
    pub(crate) fn text_until(&mut self, tag: &str) -> Result<String, ParseError> {
        let mut s = String::new();
        loop {
            match self.reader.read_event().map_err(|e| self.err(e))? {
                Event::Text(t) => s.push_str(&t.decode().map_err(|e| self.err(e))?),
                Event::CData(t) => s.push_str(&t.decode().map_err(|e| self.err(e))?),
                Event::GeneralRef(r) => s.push(self.resolve(&r)?),
                Event::Comment(_) => {}
                Event::End(e) if e.name().as_ref() == tag.as_bytes() => return Ok(s),
                ev => return Err(unexpected(&ev, &format!("text in <{tag}>"))),
            }
        }
    }

    /// An entity or character reference: the five XML predefined entities
    /// and `&#N;`, nothing else (there is no DTD to define more).
    fn resolve(&self, r: &quick_xml::events::BytesRef<'_>) -> Result<char, ParseError> {
        if let Some(c) = r.resolve_char_ref().map_err(|e| self.err(e))? {
            return Ok(c);
        }
        Ok(match r.as_ref() {
            b"amp" => '&',
            b"lt" => '<',
            b"gt" => '>',
            b"quot" => '"',
            b"apos" => '\'',
            other => {
                return Err(ParseError::new(format!(
                    "unknown entity &{};",
                    String::from_utf8_lossy(other)
                )))
            }
        })
    }

    /// Parses what follows a `<value>` start tag, through its end tag.
    pub(crate) fn value_body(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(ParseError::new(format!(
                "values nested deeper than {MAX_DEPTH}"
            )));
        }
        // An untyped value is a string, and may be empty or whitespace-only,
        // so this first read must not skip whitespace.
        let ev = loop {
            match self.reader.read_event().map_err(|e| self.err(e))? {
                Event::Comment(_) => continue,
                ev => break ev,
            }
        };
        let v = match ev {
            Event::End(e) if e.name().as_ref() == b"value" => return Ok(Value::Str(String::new())),
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => {
                let first = match ev {
                    Event::Text(t) => t.decode().map_err(|e| self.err(e))?.into_owned(),
                    Event::CData(t) => t.decode().map_err(|e| self.err(e))?.into_owned(),
                    Event::GeneralRef(r) => self.resolve(&r)?.to_string(),
                    _ => unreachable!("matched above"),
                };
                if first.trim().is_empty() {
                    // Whitespace before a typed element, or an all-space string.
                    match self.reader.read_event().map_err(|e| self.err(e))? {
                        Event::End(e) if e.name().as_ref() == b"value" => {
                            return Ok(Value::Str(first))
                        }
                        Event::Start(s) => {
                            let v = self.typed(&name_of(&s), depth)?;
                            self.expect_end("value")?;
                            return Ok(v);
                        }
                        Event::Empty(s) => {
                            let v = empty_typed(&name_of(&s))?;
                            self.expect_end("value")?;
                            return Ok(v);
                        }
                        other => return Err(unexpected(&other, "a typed value")),
                    }
                }
                let rest = self.text_until("value")?;
                return Ok(Value::Str(first + &rest));
            }
            Event::Start(s) => self.typed(&name_of(&s), depth)?,
            Event::Empty(s) => empty_typed(&name_of(&s))?,
            other => return Err(unexpected(&other, "a value")),
        };
        self.expect_end("value")?;
        Ok(v)
    }

    fn typed(&mut self, tag: &str, depth: usize) -> Result<Value, ParseError> {
        Ok(match tag {
            "boolean" => match self.text_until(tag)?.trim() {
                "0" => Value::Bool(false),
                "1" => Value::Bool(true),
                other => return Err(ParseError::new(format!("bad boolean {other:?}"))),
            },
            "int" | "i4" | "i8" => {
                let t = self.text_until(tag)?;
                Value::Int(
                    t.trim()
                        .parse()
                        .map_err(|_| ParseError::new(format!("bad <{tag}> {t:?}")))?,
                )
            }
            "string" => Value::Str(self.text_until(tag)?),
            "double" => Value::Double(self.text_until(tag)?),
            "base64" => Value::Base64(self.text_until(tag)?),
            "dateTime.iso8601" => Value::DateTime(self.text_until(tag)?),
            "nil" => {
                self.expect_end("nil")?;
                Value::Nil
            }
            "array" => {
                self.expect_named_start("data")?;
                let mut items = Vec::new();
                loop {
                    match self.next_significant()? {
                        Event::Start(s) if s.name().as_ref() == b"value" => {
                            items.push(self.value_body(depth + 1)?)
                        }
                        Event::End(e) if e.name().as_ref() == b"data" => break,
                        ev => return Err(unexpected(&ev, "<value> or </data>")),
                    }
                }
                self.expect_end("array")?;
                Value::Array(items)
            }
            "struct" => {
                let mut members = Vec::new();
                loop {
                    match self.next_significant()? {
                        Event::Start(s) if s.name().as_ref() == b"member" => {
                            self.expect_named_start("name")?;
                            let name = self.text_until("name")?;
                            self.expect_named_start("value")?;
                            let v = self.value_body(depth + 1)?;
                            self.expect_end("member")?;
                            members.push((name, v));
                        }
                        Event::End(e) if e.name().as_ref() == b"struct" => break,
                        ev => return Err(unexpected(&ev, "<member> or </struct>")),
                    }
                }
                Value::Struct(members)
            }
            other => return Err(ParseError::new(format!("unknown XML-RPC type <{other}>"))),
        })
    }
}

fn empty_typed(tag: &str) -> Result<Value, ParseError> {
    Ok(match tag {
        "nil" => Value::Nil,
        "string" => Value::Str(String::new()),
        "base64" => Value::Base64(String::new()),
        "struct" => Value::Struct(Vec::new()),
        other => return Err(ParseError::new(format!("empty <{other}/> is not a value"))),
    })
}

fn name_of(s: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(s.name().as_ref()).into_owned()
}

pub(crate) fn unexpected(ev: &Event<'_>, wanted: &str) -> ParseError {
    let found = match ev {
        Event::Start(s) | Event::Empty(s) => format!("<{}>", name_of(s)),
        Event::End(e) => format!("</{}>", String::from_utf8_lossy(e.name().as_ref())),
        Event::Text(t) => format!(
            "text \"{}\"",
            String::from_utf8_lossy(&t[..t.len().min(40)])
        ),
        Event::Eof => "the end of the document".into(),
        _ => "other markup".into(),
    };
    ParseError::new(format!("expected {wanted}, found {found}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_escaped_in_errors() {
        assert_eq!(
            Escaped("a\nb\x1b[2J\u{202e}\\é").to_string(),
            "a\\x0ab\\x1b[2J\\u{202e}\\\\\\u{00e9}"
        );
        // An element name and text the server chose, with LF, ESC, BEL and
        // a right-to-left override: the message stays one plain line.
        for doc in [
            "<methodResponse><ev\u{202e}il/></methodResponse>".to_string(),
            "<methodResponse>\n<params>x\n\x1b]0;owned\x07 \u{202e}</params></methodResponse>"
                .into(),
            "<methodResponse><a\u{202e}></b></methodResponse>".into(),
        ] {
            let e = parse_response(doc.as_bytes()).unwrap_err().to_string();
            assert!(
                e.chars().all(|c| (' '..='~').contains(&c)),
                "{doc:?} gave {e:?}"
            );
            assert!(e.contains("\\u{202e}") || e.contains("\\x1b"), "{e:?}");
        }
    }

    fn b64(data: &[u8]) -> String {
        let mut v = Vec::new();
        base64_encode_into(data, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(raw.as_bytes()), enc);
        }
        assert_eq!(b64(&[0, 0xff, 0xfe, 0x80]), "AP/+gA==");
    }

    #[test]
    fn call_encodes_every_param_kind() {
        let doc = encode_call(
            "upload_log_data",
            &[
                Param::Str("a&b<c"),
                Param::Int(-1),
                Param::Int(5 << 30),
                Param::Base64(b"\0\xff"),
                Param::Base64Text(b"hi"),
            ],
        );
        let s = String::from_utf8(doc).unwrap();
        assert!(s.contains("<methodName>upload_log_data</methodName>"));
        assert!(s.starts_with("<methodCall>"), "{s}");
        assert!(s.contains("<value>a&amp;b&lt;c</value>"));
        assert!(s.contains("<int>-1</int>"));
        assert!(s.contains("<i8>5368709120</i8>"));
        assert!(s.contains("<base64>AP8=</base64>"));
        assert!(s.contains("<string>aGk=</string>"));
    }

    #[test]
    fn parses_python_boolean_response() {
        let doc = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><boolean>1</boolean></value>\n</param>\n</params>\n</methodResponse>\n";
        assert_eq!(parse_response(doc), Ok(Response::Value(Value::Bool(true))));
    }

    #[test]
    fn parses_python_fault() {
        let doc = b"<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>1</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>&lt;class 'AttributeError'&gt;:'str' object has no attribute 'data'</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n";
        assert_eq!(
            parse_response(doc),
            Ok(Response::Fault {
                code: 1,
                message: "<class 'AttributeError'>:'str' object has no attribute 'data'".into()
            })
        );
    }

    #[test]
    fn parses_untyped_and_nested_values() {
        let doc = b"<methodResponse><params><param><value><array><data><value>x &#65;</value><value><i8>8589934592</i8></value><value><nil/></value><value><struct><member><name>k</name><value><double>1.5</double></value></member></struct></value></data></array></value></param></params></methodResponse>";
        assert_eq!(
            parse_response(doc),
            Ok(Response::Value(Value::Array(vec![
                Value::Str("x A".into()),
                Value::Int(8589934592),
                Value::Nil,
                Value::Struct(vec![("k".into(), Value::Double("1.5".into()))]),
            ])))
        );
        let empty =
            b"<methodResponse><params><param><value></value></param></params></methodResponse>";
        assert_eq!(
            parse_response(empty),
            Ok(Response::Value(Value::Str(String::new())))
        );
    }

    #[test]
    fn rejects_what_is_not_a_method_response() {
        let cases: &[&[u8]] = &[
            b"",
            b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
            b"<html><head><title>502</title></head></html>",
            b"<methodResponse><params><param><value><boolean>1</boolean></value></param></params>",
            b"<methodResponse><params><param><value><boolean>2</boolean></value></param></params></methodResponse>",
            b"<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
            b"<methodResponse><params><param><value><boolean>1</value></param></params></methodResponse>",
            b"<methodResponse><params></params></methodResponse>",
            b"<methodResponse><fault><value><string>no</string></value></fault></methodResponse>",
            b"<methodResponse><params><param><value><boolean>1</boolean></value></param></params></methodResponse><extra/>",
            b"<methodResponse><params><param><value><foo>1</foo></value></param></params></methodResponse>",
            b"<methodResponse><params><param><value>&bogus;</value></param></params></methodResponse>",
        ];
        for c in cases {
            assert!(
                parse_response(c).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut doc = String::from("<methodResponse><params><param><value>");
        for _ in 0..10_000 {
            doc.push_str("<array><data><value>");
        }
        assert!(parse_response(doc.as_bytes()).is_err());
    }
}

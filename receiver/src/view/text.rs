//! Log bytes made safe to show. Logs hold anything: `<` and `&`, ANSI colour
//! escapes, NULs, carriage returns, invalid UTF-8, bidirectional overrides
//! that reorder what a reader sees. What is shown is always valid UTF-8
//! with no control character but newline and tab: colour escapes (CSI
//! sequences) are dropped, carriage returns too, other C0 controls become
//! their visible Control Pictures (NUL is ␀, ESC is ␛), and C1 controls,
//! invalid bytes and bidi controls become U+FFFD. For HTML, `& < > " '`
//! are escaped as well.

/// Appends `bytes` to `out`, made safe; `html` also escapes markup.
pub fn push(out: &mut String, bytes: &[u8], html: bool) {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => {}
            '\u{1b}' if chars.peek() == Some(&'[') => {
                // CSI: ESC [ parameters intermediates final.
                chars.next();
                while chars
                    .next_if(|c| ('\u{30}'..='\u{3f}').contains(c))
                    .is_some()
                {}
                while chars
                    .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
                    .is_some()
                {}
                chars.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
            }
            '\0'..='\u{1f}' => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
            '\u{7f}' => out.push('\u{2421}'),
            '\u{80}'..='\u{9f}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => out.push('\u{fffd}'),
            '&' if html => out.push_str("&amp;"),
            '<' if html => out.push_str("&lt;"),
            '>' if html => out.push_str("&gt;"),
            '"' if html => out.push_str("&quot;"),
            '\'' if html => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `bytes` made safe for HTML.
pub fn html(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    push(&mut s, bytes, true);
    s
}

/// `bytes` made safe to show as text (for JSON and event streams).
pub fn plain(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    push(&mut s, bytes, false);
    s
}

/// The length of the longest prefix of `bytes` that does not end inside a
/// UTF-8 sequence which more bytes could complete: where to cut a stream.
pub fn utf8_cut(bytes: &[u8]) -> usize {
    let n = bytes.len();
    // A sequence is at most 4 bytes: look back at most 3 for its lead.
    for back in 1..=3.min(n) {
        let b = bytes[n - back];
        if b & 0xc0 == 0x80 {
            continue; // a continuation byte: its lead is further back
        }
        let need = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return n, // ASCII or a byte no sequence starts with
        };
        return if back < need { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bytes_are_shown_not_obeyed() {
        let hostile =
            b"<script>alert('x')</script>&amp;\"\x00\x07\x1b[31mred\x1b[0m\x1b]0;title\x07\r\n\
                        \xff\xfe ok\xc3\xa9 \xe2\x80\xae reversed \xc2\x9b\x7f\tend";
        let h = html(hostile);
        assert_eq!(
            h,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp;&quot;\u{2400}\u{2407}red\u{241b}]0;title\u{2407}\n\
             \u{fffd}\u{fffd} oké \u{fffd} reversed \u{fffd}\u{2421}\tend"
        );
        for bad in [
            '<', '>', '"', '\'', '\0', '\u{1b}', '\r', '\u{202e}', '\u{9b}',
        ] {
            assert!(!h.contains(bad), "{bad:?} in {h}");
        }
        let p = plain(hostile);
        assert!(p.starts_with("<script>alert('x')</script>&amp;\"\u{2400}"));
        assert!(!p.contains(['\0', '\u{1b}', '\r', '\u{202e}']));
        // A lone ESC at the end, and an unfinished CSI, lose nothing else.
        assert_eq!(html(b"a\x1b"), "a\u{241b}");
        assert_eq!(html(b"a\x1b[12"), "a");
    }

    #[test]
    fn streams_are_cut_between_characters() {
        assert_eq!(utf8_cut(b"abc"), 3);
        assert_eq!(utf8_cut("é".as_bytes()), 2);
        assert_eq!(utf8_cut(&"é".as_bytes()[..1]), 0);
        assert_eq!(utf8_cut(&"a€".as_bytes()[..3]), 1);
        assert_eq!(utf8_cut(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(utf8_cut("a😀".as_bytes()), 5);
        // Bytes that can never complete are not held back.
        assert_eq!(utf8_cut(b"a\xff"), 2);
        assert_eq!(utf8_cut(b"a\x80\x80\x80"), 4);
    }
}

//! Escaping for the two places data lands in a page: HTML text (and attribute values), and
//! JSON inside a `<script type="application/json">` element.
//!
//! Every value from DevRev or the CSV goes through one of these: a display name can hold
//! `<script>`, `</script>`, quotes or `&`.

use std::borrow::Cow;
use std::io::{self, Write};

/// `s` safe as HTML text and as a quoted attribute value: `& < > " '` become entities.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\''))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes `s` escaped as HTML text.
pub fn write_text(w: &mut dyn Write, s: &str) -> io::Result<()> {
    w.write_all(text(s).as_bytes())
}

/// Writes `value` as JSON that can sit inside a `<script>` element: `<`, `>` and `&` are
/// written as `\u003c`, `\u003e`, `\u0026` (so `</script>` or `<!--` in the data can never
/// end the element or open a comment), and U+2028/U+2029 as `\u2028`/`\u2029`. These
/// characters can only occur inside JSON strings, where the escapes mean the same
/// characters: `JSON.parse` gives back exactly `value`.
pub fn write_script_json<T: serde::Serialize + ?Sized>(
    w: &mut dyn Write,
    value: &T,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.clear();
    serde_json::to_writer(&mut *buf, value).map_err(io::Error::other)?;
    script_safe(w, buf)
}

/// Copies serialized JSON `json` to `w` with the replacements of [`write_script_json`].
fn script_safe(w: &mut dyn Write, json: &[u8]) -> io::Result<()> {
    let mut start = 0;
    let mut i = 0;
    while i < json.len() {
        let rep: Option<(&[u8], usize)> = match json[i] {
            b'<' => Some((b"\\u003c", 1)),
            b'>' => Some((b"\\u003e", 1)),
            b'&' => Some((b"\\u0026", 1)),
            0xE2 if json.get(i + 1) == Some(&0x80) && json.get(i + 2) == Some(&0xA8) => {
                Some((b"\\u2028", 3))
            }
            0xE2 if json.get(i + 1) == Some(&0x80) && json.get(i + 2) == Some(&0xA9) => {
                Some((b"\\u2029", 3))
            }
            _ => None,
        };
        match rep {
            Some((with, len)) => {
                w.write_all(&json[start..i])?;
                w.write_all(with)?;
                i += len;
                start = i;
            }
            None => i += 1,
        }
    }
    w.write_all(&json[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn html_text_escapes_the_five_characters() {
        assert_eq!(
            text(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert!(matches!(text("plain Ünïcode"), Cow::Borrowed(_)));
        assert_eq!(text("&amp;"), "&amp;amp;", "entities in data stay text");
        let mut out = Vec::new();
        write_text(&mut out, "a<b").unwrap();
        assert_eq!(out, b"a&lt;b");
    }

    #[test]
    fn json_in_a_script_cannot_close_it_and_parses_back_to_the_same_value() {
        let v = json!({
            "name": "</script><script>window.pwned=1</script>",
            "other": "<!-- a & b > c \u{2028}\u{2029} \" \\ \u{1} é",
            "</script>": ["<", ">", "&"],
        });
        let mut out = Vec::new();
        write_script_json(&mut out, &v, &mut Vec::new()).unwrap();
        let s = String::from_utf8(out).unwrap();
        for bad in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
            assert!(!s.contains(bad), "{bad:?} left in {s}");
        }
        assert!(s.contains(r"\u003c/script\u003e"), "{s}");
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_two_byte_neighbour_of_the_line_separators_is_left_alone() {
        // U+2027 and U+202A share the first two bytes with U+2028/U+2029.
        let v = json!("\u{2027}\u{202A}");
        let mut out = Vec::new();
        write_script_json(&mut out, &v, &mut Vec::new()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\"\u{2027}\u{202A}\"");
    }
}

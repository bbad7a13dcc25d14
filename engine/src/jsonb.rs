//! jsonb's text form: JSON as Postgres prints a jsonb. Object keys are sorted (shorter
//! first, then bytewise), the last of duplicate keys wins, `: ` and `, ` separate, and
//! numbers are written as Postgres's `numeric` writes them (`1e2` is `100`).
//!
//! A jsonb value is an Arrow string in a field marked with Arrow's canonical JSON
//! extension (`ARROW:extension:name = arrow.json`). The JSON decoder fills such a column
//! with its field's value, whatever its kind; `weir_sql`'s jsonb functions read it.

use std::collections::HashMap;

use arrow::datatypes::{DataType, Field};

/// The field metadata key and value that mark a string column as jsonb.
pub const EXTENSION_KEY: &str = "ARROW:extension:name";
pub const EXTENSION_NAME: &str = "arrow.json";

/// Deepest nesting read, as Postgres limits its own parser's stack.
const MAX_DEPTH: usize = 512;

/// Whether `field` holds jsonb values.
pub fn is_jsonb(field: &Field) -> bool {
    field.metadata().get(EXTENSION_KEY).map(String::as_str) == Some(EXTENSION_NAME)
}

/// A string field named `name` marked as jsonb.
pub fn jsonb_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable).with_metadata(HashMap::from([(
        EXTENSION_KEY.to_string(),
        EXTENSION_NAME.to_string(),
    )]))
}

/// A parsed JSON value; numbers keep their text (normalized), as numeric does.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Keys sorted as jsonb sorts them, without duplicates.
    Object(Vec<(String, Json)>),
}

/// `text` as Postgres prints it read as a jsonb; an error names what is wrong.
pub fn normalize(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 8);
    parse(text)?.write(&mut out);
    Ok(out)
}

/// `text` read as one JSON value.
pub fn parse(text: &str) -> Result<Json, String> {
    let mut p = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    let value = p.value(0)?;
    p.skip_space();
    if p.at != p.bytes.len() {
        return Err(p.unexpected());
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn unexpected(&self) -> String {
        match self.bytes.get(self.at) {
            None => "The input string ended unexpectedly.".into(),
            Some(_) => {
                let rest = String::from_utf8_lossy(&self.bytes[self.at..]);
                let token: String = rest.chars().take(20).collect();
                format!("Token \"{token}\" is invalid.")
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.skip_space();
        match self.bytes.get(self.at) {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => {
                for (word, value) in [
                    ("true", Json::Bool(true)),
                    ("false", Json::Bool(false)),
                    ("null", Json::Null),
                ] {
                    if self.bytes[self.at..].starts_with(word.as_bytes()) {
                        self.at += word.len();
                        return Ok(value);
                    }
                }
                Err(self.unexpected())
            }
            None => Err(self.unexpected()),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.at += 1;
        let mut members: Vec<(String, Json)> = Vec::new();
        self.skip_space();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_space();
            if self.bytes.get(self.at) != Some(&b'"') {
                return Err(self.unexpected());
            }
            let key = self.string()?;
            self.skip_space();
            if self.bytes.get(self.at) != Some(&b':') {
                return Err(self.unexpected());
            }
            self.at += 1;
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_space();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.unexpected()),
            }
        }
        // Sorted as jsonb keeps keys; of equal keys the last one written stays (the sort
        // is stable, so it is the last of its run).
        members.sort_by(|(a, _), (b, _)| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
        let mut unique: Vec<(String, Json)> = Vec::with_capacity(members.len());
        for (key, value) in members {
            match unique.last_mut() {
                Some((last, v)) if *last == key => *v = value,
                _ => unique.push((key, value)),
            }
        }
        Ok(Json::Object(unique))
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while self
                .bytes
                .get(self.at)
                .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
            {
                self.at += 1;
            }
            out.push_str(
                std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?,
            );
            match self.bytes.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = match self.bytes.get(self.at) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err(self.unexpected()),
                    };
                    self.at += 1;
                    out.push(escaped);
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    /// The four hex digits after `\u` (and a low surrogate's, after a high one).
    fn unicode_escape(&mut self) -> Result<char, String> {
        let unit = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&unit) {
            if !self.bytes[self.at..].starts_with(b"\\u") {
                return Err("Unicode high surrogate must not follow a high surrogate.".into());
            }
            self.at += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err("Unicode low surrogate must follow a high surrogate.".into());
            }
            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
        } else {
            unit
        };
        if code == 0 {
            return Err("\\u0000 cannot be converted to text.".into());
        }
        char::from_u32(code)
            .ok_or_else(|| "Unicode low surrogate must follow a high surrogate.".into())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| "\"\\u\" must be followed by four hexadecimal digits.".to_string())?;
        self.at += 4;
        Ok(digits)
    }

    /// A JSON number, written as Postgres's numeric writes it: no exponent, the scale the
    /// digits after the point had less the exponent, and no sign on zero.
    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        let take_digits = |p: &mut Self| {
            let from = p.at;
            while p.bytes.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            std::str::from_utf8(&p.bytes[from..p.at])
                .unwrap_or_default()
                .to_string()
        };
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let int = take_digits(self);
        if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
            self.at = start;
            return Err(self.unexpected());
        }
        let mut frac = String::new();
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            frac = take_digits(self);
            if frac.is_empty() {
                self.at = start;
                return Err(self.unexpected());
            }
        }
        let mut exp: i64 = 0;
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match self.bytes.get(self.at) {
                Some(b'-') => {
                    self.at += 1;
                    -1
                }
                Some(b'+') => {
                    self.at += 1;
                    1
                }
                _ => 1,
            };
            let digits = take_digits(self);
            exp = sign
                * digits
                    .parse::<i64>()
                    .ok()
                    .filter(|e| *e <= 100_000)
                    .ok_or_else(|| "number out of range".to_string())?;
        }
        let digits = format!("{int}{frac}");
        // The point sits `point` digits into `digits` (before it when negative).
        let point = int.len() as i64 + exp;
        let (whole, fraction) = if point <= 0 {
            (
                String::new(),
                format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            let (w, f) = digits.split_at(point as usize);
            (w.to_string(), f.to_string())
        };
        let whole = whole.trim_start_matches('0');
        let whole = if whole.is_empty() { "0" } else { whole };
        let zero = whole == "0" && fraction.bytes().all(|b| b == b'0');
        let mut text = String::with_capacity(whole.len() + fraction.len() + 2);
        if negative && !zero {
            text.push('-');
        }
        text.push_str(whole);
        if !fraction.is_empty() {
            text.push('.');
            text.push_str(&fraction);
        }
        Ok(Json::Number(text))
    }
}

impl Json {
    /// The value as Postgres prints a jsonb.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_string(key, out);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// `->`: an object's member by key, or an array's item by index (negative from the end).
    pub fn get(&self, key: &Key) -> Option<&Json> {
        match (self, key) {
            (Json::Object(members), Key::Name(name)) => members
                .binary_search_by(|(k, _)| {
                    (k.len(), k.as_bytes()).cmp(&(name.len(), name.as_bytes()))
                })
                .ok()
                .map(|i| &members[i].1),
            (Json::Array(items), Key::Index(i)) => {
                let i = if *i < 0 { items.len() as i64 + i } else { *i };
                usize::try_from(i).ok().and_then(|i| items.get(i))
            }
            _ => None,
        }
    }
}

/// A string as Postgres's jsonb output escapes it.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What `->` and `->>` look up: a member's name or an item's index.
pub enum Key {
    Name(String),
    Index(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_sort_keys_and_keep_the_last_duplicate() {
        assert_eq!(
            normalize(r#"{"bb":1,"a":[1,2,{}],"c":{"y":null,"x":true},"a":"last"}"#).unwrap(),
            r#"{"a": "last", "c": {"x": true, "y": null}, "bb": 1}"#
        );
        assert_eq!(normalize(" [ ] ").unwrap(), "[]");
        assert_eq!(normalize("{}").unwrap(), "{}");
    }

    #[test]
    fn numbers_print_as_numeric() {
        for (input, expected) in [
            ("1e2", "100"),
            ("1.5e1", "15"),
            ("1.50e1", "15.0"),
            ("1e-2", "0.01"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("12.340", "12.340"),
            ("-1.5E+3", "-1500"),
            ("0.001e2", "0.1"),
        ] {
            assert_eq!(normalize(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn strings_are_unescaped_and_escaped_as_postgres_does() {
        assert_eq!(
            normalize(r#""a\u00e9\/\ud83d\ude00\t\u0001""#).unwrap(),
            "\"aé/😀\\t\\u0001\""
        );
    }

    #[test]
    fn malformed_text_is_an_error() {
        for bad in [
            "",
            "{",
            "[1,]",
            "01",
            "1.",
            "tru",
            "{\"a\" 1}",
            "\"\\u0000\"",
            "1 2",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn get_reads_members_and_items() {
        let json = parse(r#"{"a": [10, 20, 30], "bb": {"c": "x"}}"#).unwrap();
        let items = json.get(&Key::Name("a".into())).unwrap();
        assert_eq!(items.get(&Key::Index(-1)), Some(&Json::Number("30".into())));
        assert_eq!(items.get(&Key::Index(3)), None);
        assert_eq!(json.get(&Key::Name("zz".into())), None);
    }
}

//! JSON output in the plugin's key order and layout. serde_json's maps sort
//! their keys, so answers and the file are built from this small ordered
//! tree instead, and printed the way cJSON prints: compact for answers,
//! tab-indented (`cJSON_Print`) for the file.

/// An ordered JSON value (only the kinds the plugin emits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json {
    Obj(Vec<(&'static str, Json)>),
    Arr(Vec<Json>),
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Json {
    pub fn str(s: &str) -> Json {
        Json::Str(s.to_string())
    }

    /// Appends `key` to an object (no effect on other kinds).
    pub fn push(&mut self, key: &'static str, value: Json) {
        if let Json::Obj(fields) = self {
            fields.push((key, value));
        }
    }

    /// Appends `key` when `value` is Some.
    pub fn push_opt(&mut self, key: &'static str, value: Option<&String>) {
        if let Some(v) = value {
            self.push(key, Json::str(v));
        }
    }

    /// One line, no spaces: what the plugin publishes.
    pub fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None);
        out
    }

    /// Tabs and newlines as `cJSON_Print`: what the plugin writes to its file.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(0));
        out
    }

    /// `depth` is None for compact output, else cJSON's nesting depth.
    fn write(&self, out: &mut String, depth: Option<usize>) {
        match self {
            Json::Str(s) => write_str(out, s),
            Json::Int(n) => out.push_str(&n.to_string()),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Arr(items) => {
                let inner = depth.map(|d| d + 1);
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if depth.is_some() { ", " } else { "," });
                    }
                    item.write(out, inner);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                let inner = depth.map(|d| d + 1);
                out.push('{');
                if depth.is_some() {
                    out.push('\n');
                }
                for (i, (k, v)) in fields.iter().enumerate() {
                    if let Some(d) = inner {
                        push_tabs(out, d);
                    }
                    write_str(out, k);
                    out.push(':');
                    if depth.is_some() {
                        out.push('\t');
                    }
                    v.write(out, inner);
                    if i + 1 < fields.len() {
                        out.push(',');
                    }
                    if depth.is_some() {
                        out.push('\n');
                    }
                }
                if let Some(d) = depth {
                    push_tabs(out, d);
                }
                out.push('}');
            }
        }
    }
}

fn push_tabs(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n('\t', n));
}

/// A JSON string as cJSON escapes it: quote, backslash and control
/// characters; everything else (including non-ASCII) as is.
fn write_str(out: &mut String, s: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_cjson() {
        let v = Json::Obj(vec![
            ("a", Json::Arr(vec![Json::Obj(vec![("k", Json::Int(1)), ("b", Json::Bool(true))]), Json::Obj(vec![])])),
            ("e", Json::Arr(vec![])),
            ("s", Json::str("q\"\\\n\u{1}é/")),
        ]);
        assert_eq!(v.compact(), r#"{"a":[{"k":1,"b":true},{}],"e":[],"s":"q\"\\\n\u0001é/"}"#);
        assert_eq!(
            v.pretty(),
            "{\n\t\"a\":\t[{\n\t\t\t\"k\":\t1,\n\t\t\t\"b\":\ttrue\n\t\t}, {\n\t\t}],\n\t\"e\":\t[],\n\t\"s\":\t\"q\\\"\\\\\\n\\u0001é/\"\n}"
        );
        // Whatever it prints, serde_json reads back.
        let back: serde_json::Value = serde_json::from_str(&v.pretty()).unwrap();
        assert_eq!(back["s"], "q\"\\\n\u{1}é/");
    }
}

//! Reading request and file JSON the way the plugin's cJSON helpers do:
//! object keys match case-insensitively (`cJSON_GetObjectItem`), numbers
//! become `int` by cJSON's saturating cast, and an optional field of the
//! wrong type either fails (strings) or falls back to its default (numbers
//! and booleans, whose errors the plugin ignores).

use serde_json::Value;

/// `obj[key]`, exact match first, else the first key equal ignoring ASCII
/// case. None when `obj` is not an object.
pub fn get<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// `json_get_string`: Err when the field is present but not a string, or
/// missing and not optional.
pub fn get_str<'a>(obj: &'a Value, key: &str, optional: bool) -> Result<Option<&'a str>, ()> {
    match get(obj, key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
        None if optional => Ok(None),
        None => Err(()),
    }
}

/// A present string field, else None (wrong types are ignored, as where the
/// plugin calls `json_get_string(.., false) == MOSQ_ERR_SUCCESS`).
pub fn get_str_if<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    get(obj, key).and_then(Value::as_str)
}

/// `json_get_int(.., optional, default)` with its error ignored.
pub fn get_int_or(obj: &Value, key: &str, default: i32) -> i32 {
    get(obj, key).and_then(Value::as_f64).map(cjson_int).unwrap_or(default)
}

/// `json_get_bool(.., optional, default)` with its error ignored.
pub fn get_bool_or(obj: &Value, key: &str, default: bool) -> bool {
    get(obj, key).and_then(Value::as_bool).unwrap_or(default)
}

/// cJSON's `valueint`: saturating at the `int` range, truncating toward 0.
pub fn cjson_int(n: f64) -> i32 {
    if n >= f64::from(i32::MAX) {
        i32::MAX
    } else if n <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        n as i32
    }
}

/// `mosquitto_validate_utf8`: at most 65536 bytes, no U+0000, no control
/// characters (U+0001..U+001F, U+007F..U+009F), no non-characters. Rust
/// strings are already well-formed UTF-8 without surrogates.
pub fn valid_utf8(s: &str) -> bool {
    s.len() <= 65_536
        && s.chars().all(|c| {
            let cp = c as u32;
            !(cp <= 0x1F
                || (0x7F..=0x9F).contains(&cp)
                || (0xFDD0..=0xFDEF).contains(&cp)
                || (cp & 0xFFFF) == 0xFFFE
                || (cp & 0xFFFF) == 0xFFFF)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_match_case_insensitively_exact_first() {
        let v = json!({"textName": "a", "USERNAME": "u", "username2": 1});
        assert_eq!(get_str(&v, "textname", false), Ok(Some("a")));
        assert_eq!(get_str(&v, "username", false), Ok(Some("u")));
        let v = json!({"Topic": "x", "topic": "y"});
        assert_eq!(get_str_if(&v, "topic"), Some("y"));
        assert_eq!(get(&json!([1]), "a"), None);
    }

    #[test]
    fn strings_numbers_and_bools_like_the_plugin_helpers() {
        let v = json!({"s": "x", "n": 3.9, "neg": -3.9, "big": 1e20, "small": -1e20, "b": true, "bad": "1"});
        assert_eq!(get_str(&v, "n", true), Err(()));
        assert_eq!(get_str(&v, "missing", true), Ok(None));
        assert_eq!(get_str(&v, "missing", false), Err(()));
        assert_eq!(get_int_or(&v, "n", -1), 3);
        assert_eq!(get_int_or(&v, "neg", -1), -3);
        assert_eq!(get_int_or(&v, "big", -1), i32::MAX);
        assert_eq!(get_int_or(&v, "small", -1), i32::MIN);
        assert_eq!(get_int_or(&v, "bad", -1), -1);
        assert!(get_bool_or(&v, "b", false));
        assert!(get_bool_or(&v, "bad", true));
    }

    #[test]
    fn utf8_rules_of_mosquitto() {
        assert!(valid_utf8("sensor-1 ü ℞ 😀"));
        assert!(valid_utf8(""));
        for bad in ["a\0b", "a\u{1}", "\u{7f}", "\u{9f}", "\u{fdd0}", "\u{fffe}", "\u{1ffff}"] {
            assert!(!valid_utf8(bad), "{bad:?}");
        }
        assert!(valid_utf8(&"x".repeat(65_536)));
        assert!(!valid_utf8(&"x".repeat(65_537)));
    }
}

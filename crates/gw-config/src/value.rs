//! Small value types shared by the file format: durations, byte sizes and secrets.
//!
//! Each keeps the text it was written with, so that `gatehouse config export` writes back what
//! the operator wrote (`"90s"` stays `"90s"`, not `"1m 30s"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

// === Dur ===

/// A duration written with a unit: `"250ms"`, `"5s"`, `"1m30s"`, `"2h"`.
#[derive(Clone)]
pub struct Dur {
    value: Duration,
    text: String,
}

impl Dur {
    /// A duration from a value; its text is the humantime rendering.
    pub fn new(value: Duration) -> Self {
        Dur { value, text: humantime::format_duration(value).to_string().replace(' ', "") }
    }

    /// From whole seconds.
    pub fn secs(s: u64) -> Self {
        Dur::new(Duration::from_secs(s))
    }

    /// From milliseconds.
    pub fn millis(ms: u64) -> Self {
        Dur::new(Duration::from_millis(ms))
    }

    /// The duration.
    pub fn get(&self) -> Duration {
        self.value
    }

    /// Parse `"5s"`-style text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration; write e.g. \"5s\" or \"250ms\"".into());
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("duration {t:?} has no unit; write e.g. \"{t}s\" or \"{t}ms\""));
        }
        humantime::parse_duration(t)
            .map(|value| Dur { value, text: t.to_string() })
            .map_err(|e| format!("invalid duration {t:?}: {e}; write e.g. \"5s\" or \"250ms\""))
    }
}

impl PartialEq for Dur {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like \"5s\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!("duration {v} has no unit; write e.g. \"{v}s\" or \"{v}ms\"")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!("duration {v} has no unit; write e.g. \"{v}s\" or \"{v}ms\"")))
            }
        }
        d.deserialize_any(V)
    }
}

// === ByteSize ===

/// A size in bytes: an integer, or text with a unit (`"16KiB"`, `"10MiB"`, `"1GiB"`, `"500kB"`).
#[derive(Clone)]
pub struct ByteSize {
    value: u64,
    text: Option<String>,
}

impl ByteSize {
    /// A size from a byte count.
    pub fn bytes(value: u64) -> Self {
        ByteSize { value, text: None }
    }

    /// The size in bytes.
    pub fn get(&self) -> u64 {
        self.value
    }

    /// Parse `"10MiB"`-style text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 =
            num.parse().map_err(|_| format!("invalid size {t:?}; write e.g. 1048576, \"64KiB\" or \"10MiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!("unknown size unit {other:?} in {t:?}; use B, KiB, MiB, GiB, kB, MB or GB"));
            }
        };
        let value = n.checked_mul(mult).ok_or_else(|| format!("size {t:?} is too large"))?;
        Ok(ByteSize { value, text: Some(t.to_string()) })
    }
}

impl PartialEq for ByteSize {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(t) => f.write_str(t),
            None => write!(f, "{}", self.value),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(t) => s.serialize_str(t),
            None => s.serialize_u64(self.value),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, like 1048576 or \"10MiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize::bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize::bytes).map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

// === Secret ===

/// A string that must never be logged: `Debug` prints `"<redacted>"`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret text. Call only where the secret is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations need a unit and keep their text for export.
    #[test]
    fn durations_parse_and_keep_text() {
        let d = Dur::parse("1m30s").unwrap();
        assert_eq!(d.get(), Duration::from_secs(90));
        assert_eq!(d.to_string(), "1m30s");
        assert!(Dur::parse("30").unwrap_err().contains("no unit"));
        assert!(Dur::parse("3 parsecs").is_err());
        assert_eq!(Dur::millis(1500).to_string(), "1s500ms");
    }

    /// Sizes accept integers and binary/decimal units.
    #[test]
    fn sizes_parse_units() {
        assert_eq!(ByteSize::parse("16KiB").unwrap().get(), 16 * 1024);
        assert_eq!(ByteSize::parse("10MB").unwrap().get(), 10_000_000);
        assert_eq!(ByteSize::parse("1GiB").unwrap().get(), 1 << 30);
        assert!(ByteSize::parse("5 furlongs").is_err());
        assert!(ByteSize::parse("99999999999999GiB").unwrap_err().contains("too large"));
    }

    /// Secrets never show in Debug output.
    #[test]
    fn secrets_are_redacted() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "\"<redacted>\"");
    }
}

#[cfg(feature = "schema")]
mod schema {
    use std::borrow::Cow;

    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    impl JsonSchema for super::Dur {
        fn schema_name() -> Cow<'static, str> {
            "Duration".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({ "type": "string", "description": "a duration: 500ms, 2s, 1m, 1h30m", "examples": ["2s"] })
        }
    }

    impl JsonSchema for super::ByteSize {
        fn schema_name() -> Cow<'static, str> {
            "ByteSize".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "a size in bytes: 1048576 or \"10MiB\"",
                "anyOf": [{ "type": "integer", "minimum": 0 }, { "type": "string", "examples": ["1MiB"] }]
            })
        }
    }
}

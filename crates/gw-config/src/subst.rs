//! `${VAR}` references in configuration values, in every scalar style.
//!
//! Substitution happens while the document is deserialized: [`Subst`] wraps any serde
//! deserializer (YAML or JSON) and rewrites every string value it produces, whether it was
//! written plain, single- or double-quoted, as a block scalar, or as a JSON string. Keys are
//! never substituted. The rules (also in `docs/configuration.md`):
//!
//! * `${NAME}` is the environment variable `NAME`; unset is an error.
//! * `${NAME:-default}` (unset or empty) and `${NAME-default}` (unset) give a default, which may
//!   itself hold references; `${NAME:?message}` and `${NAME?message}` fail with `message`.
//! * `$${` is a literal `${`; any other `$` is literal (`$argon2id$...` needs no escape).
//! * Any other `${` (unclosed, no valid name, unknown operator) is an error, so no value can
//!   keep an unresolved `${` after loading.
//! * A variable's value is inserted as it is, never scanned again.
//!
//! Documents of the Admin API and the configuration store ([`Mode::Document`]) are not
//! substituted: the store is shared by nodes with different environments and an Admin API
//! client must not read the gateway's environment. There a reference is an error and `$${`
//! still means a literal `${`; [`escape`] writes values in that form.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, Expected, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How string values are read.
#[derive(Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// A configuration file: `${VAR}` is replaced from the map.
    Env(&'a HashMap<String, String>),
    /// An Admin API or stored document: references are refused, `$${` is a literal `${`.
    Document,
    /// A mapping key: never substituted; `${` must be escaped.
    Key,
}

/// Deepest nesting of references in defaults (`${A:-${B:-${C}}}`).
const MAX_DEPTH: usize = 8;

/// Expand the references in `text`.
pub(crate) fn expand<'t>(text: &'t str, mode: Mode<'_>) -> Result<Cow<'t, str>, String> {
    if !text.contains('$') {
        return Ok(Cow::Borrowed(text));
    }
    expand_at(text, mode, 0).map(Cow::Owned)
}

fn expand_at(text: &str, mode: Mode<'_>, depth: usize) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if tail.starts_with("${") {
            let (value, len) = reference(tail, mode, depth)?;
            out.push_str(&value);
            rest = &tail[len..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolve the reference at the start of `tail` (which starts with `${`): its value and length.
fn reference(tail: &str, mode: Mode<'_>, depth: usize) -> Result<(String, usize), String> {
    // The closing brace, counting nested braces (defaults may hold references).
    let mut open = 0usize;
    let mut close = None;
    for (i, b) in tail.bytes().enumerate().skip(1) {
        match b {
            b'{' => open += 1,
            b'}' => {
                open -= 1;
                if open == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return Err(format!("unclosed `${{` in {tail:?}; write `$${{` for a literal `${{`"));
    };
    let whole = &tail[..=close];
    let body = &tail[2..close];
    let name_len = body
        .bytes()
        .enumerate()
        .take_while(|&(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()))
        .count();
    let (name, op) = body.split_at(name_len);
    if name.is_empty() {
        return Err(format!("invalid reference `{whole}`: expected `${{NAME}}`; write `$${{` for a literal `${{`"));
    }
    let env = match mode {
        Mode::Env(env) => env,
        Mode::Document => {
            return Err(format!(
                "`{whole}`: environment variables are substituted only in configuration files the gateway \
                 reads (--config, `gatehouse config import`), not in Admin API or stored documents; give the \
                 value itself, or `$${{` for a literal `${{`"
            ));
        }
        Mode::Key => {
            return Err(format!("`{whole}` in a key: only values are substituted; write `$${{` for a literal `${{`"));
        }
    };
    let value = env.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let default = |text: &str| {
        if depth >= MAX_DEPTH {
            return Err(format!("`{whole}`: references nested too deeply"));
        }
        expand_at(text, mode, depth + 1)
    };
    let out = if op.is_empty() {
        match value {
            Some(v) => v.clone(),
            None => return Err(format!("environment variable {name} is not set")),
        }
    } else if let Some(d) = op.strip_prefix(":-") {
        if set_nonempty { value.cloned().unwrap_or_default() } else { default(d)? }
    } else if let Some(d) = op.strip_prefix('-') {
        match value {
            Some(v) => v.clone(),
            None => default(d)?,
        }
    } else if let Some(m) = op.strip_prefix(":?") {
        match value {
            Some(v) if !v.is_empty() => v.clone(),
            Some(_) => return Err(format!("environment variable {name} is empty: {m}")),
            None => return Err(format!("environment variable {name} is not set: {m}")),
        }
    } else if let Some(m) = op.strip_prefix('?') {
        match value {
            Some(v) => v.clone(),
            None => return Err(format!("environment variable {name} is not set: {m}")),
        }
    } else {
        return Err(format!(
            "invalid reference `{whole}`: use `${{NAME}}`, `${{NAME:-default}}` or `${{NAME:?message}}`; \
             write `$${{` for a literal `${{`"
        ));
    };
    Ok((out, close + 1))
}

/// `text` written so that reading it back (in any mode) gives `text`: each `${` becomes `$${`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.contains("${") { Cow::Owned(text.replace("${", "$${")) } else { Cow::Borrowed(text) }
}

/// A string value of an Admin API or stored document as the loader reads it: `$${` is a
/// literal `${`, and a `${VAR}` reference is an error (documents are not substituted).
pub fn unescape(text: &str) -> Result<Cow<'_, str>, String> {
    expand(text, Mode::Document)
}

/// Escape every string value (not keys) of a JSON document in place; see [`escape`].
pub(crate) fn escape_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(e) = escape(s) {
                *s = e;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(escape_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(escape_json),
        _ => {}
    }
}

// === the deserializer wrapper ===

/// A deserializer whose string values are expanded by [`expand`].
pub(crate) struct Subst<'m, D> {
    de: D,
    mode: Mode<'m>,
}

impl<'m, D> Subst<'m, D> {
    pub(crate) fn new(de: D, mode: Mode<'m>) -> Self {
        Subst { de, mode }
    }
}

/// What a typed scalar hint expects when a string arrives instead.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Float,
}

macro_rules! forward {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.de.$method(Wrap { v: visitor, mode: self.mode })
            }
        )*
    };
}

macro_rules! typed {
    ($($method:ident => $kind:expr,)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                match self.mode {
                    // `port: ${PORT}` is text until substituted: read the scalar as it comes and
                    // convert a string after substitution.
                    Mode::Env(_) => self.de.deserialize_any(Typed { v: visitor, mode: self.mode, kind: $kind }),
                    Mode::Document | Mode::Key => self.de.$method(Wrap { v: visitor, mode: self.mode }),
                }
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Subst<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    typed! {
        deserialize_bool => Kind::Bool,
        deserialize_i8 => Kind::Int,
        deserialize_i16 => Kind::Int,
        deserialize_i32 => Kind::Int,
        deserialize_i64 => Kind::Int,
        deserialize_i128 => Kind::Int,
        deserialize_u8 => Kind::Int,
        deserialize_u16 => Kind::Int,
        deserialize_u32 => Kind::Int,
        deserialize_u64 => Kind::Int,
        deserialize_u128 => Kind::Int,
        deserialize_f32 => Kind::Float,
        deserialize_f64 => Kind::Float,
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_unit_struct(name, Wrap { v: visitor, mode: self.mode })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_newtype_struct(name, Wrap { v: visitor, mode: self.mode })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_tuple(len, Wrap { v: visitor, mode: self.mode })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de.deserialize_tuple_struct(name, len, Wrap { v: visitor, mode: self.mode })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de.deserialize_struct(name, fields, Wrap { v: visitor, mode: self.mode })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de.deserialize_enum(name, variants, Wrap { v: visitor, mode: self.mode })
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// A seed whose deserializer is wrapped in [`Subst`].
struct Seed<'m, S> {
    seed: S,
    mode: Mode<'m>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Subst { de: d, mode: self.mode })
    }
}

/// A visitor that expands strings and wraps nested maps, sequences and enums.
struct Wrap<'m, V> {
    v: V,
    mode: Mode<'m>,
}

macro_rules! pass {
    ($($method:ident($ty:ty))*) => {
        $(
            fn $method<E: de::Error>(self, x: $ty) -> Result<Self::Value, E> {
                self.v.$method(x)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    pass! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64) visit_i128(i128)
        visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64) visit_u128(u128) visit_f32(f32)
        visit_f64(f64) visit_char(char) visit_bytes(&[u8]) visit_borrowed_bytes(&'de [u8])
        visit_byte_buf(Vec<u8>)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        match expand(s, self.mode).map_err(E::custom)? {
            Cow::Borrowed(s) => self.v.visit_str(s),
            Cow::Owned(s) => self.v.visit_string(s),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        match expand(s, self.mode).map_err(E::custom)? {
            Cow::Borrowed(s) => self.v.visit_borrowed_str(s),
            Cow::Owned(s) => self.v.visit_string(s),
        }
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        match expand(&s, self.mode).map_err(E::custom)? {
            Cow::Borrowed(_) => self.v.visit_string(s),
            Cow::Owned(e) => self.v.visit_string(e),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_some(Subst { de: d, mode: self.mode })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_newtype_struct(Subst { de: d, mode: self.mode })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_seq(Access { a, mode: self.mode })
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_map(Access { a, mode: self.mode })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_enum(Access { a, mode: self.mode })
    }
}

/// A visitor for a bool or number hint that also takes a string (quoted or substituted).
struct Typed<'m, V> {
    v: V,
    mode: Mode<'m>,
    kind: Kind,
}

impl<'de, V: Visitor<'de>> Typed<'_, V> {
    fn string<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        let t = expand(s, self.mode).map_err(E::custom)?;
        let t = t.as_ref();
        match self.kind {
            Kind::Bool => {
                if let Some(b) = parse_bool(t) {
                    return self.v.visit_bool(b);
                }
            }
            Kind::Int => {
                if let Some(n) = parse_int(t) {
                    return match (u64::try_from(n), i64::try_from(n)) {
                        (Ok(u), _) => self.v.visit_u64(u),
                        (_, Ok(i)) => self.v.visit_i64(i),
                        _ => self.v.visit_i128(n),
                    };
                }
            }
            Kind::Float => {
                if let Ok(f) = t.trim().parse::<f64>() {
                    return self.v.visit_f64(f);
                }
            }
        }
        if t == s {
            return self.v.visit_str(s);
        }
        // Never echo a substituted value: it may be a secret.
        Err(E::custom(format!("{s:?} (after substitution) is not {}", &self.v as &dyn Expected)))
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Typed<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    pass! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64) visit_i128(i128)
        visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64) visit_u128(u128) visit_f32(f32)
        visit_f64(f64) visit_char(char) visit_bytes(&[u8]) visit_borrowed_bytes(&'de [u8])
        visit_byte_buf(Vec<u8>)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        self.string(s)
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        self.string(&s)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_some(Subst { de: d, mode: self.mode })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_newtype_struct(Subst { de: d, mode: self.mode })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_seq(Access { a, mode: self.mode })
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_map(Access { a, mode: self.mode })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_enum(Access { a, mode: self.mode })
    }
}

/// YAML booleans (1.2 core schema and the 1.1 words the YAML reader also accepts).
fn parse_bool(t: &str) -> Option<bool> {
    match t.trim() {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// A decimal, `0x` hexadecimal or `0o` octal integer with an optional sign.
fn parse_int(t: &str) -> Option<i128> {
    let t = t.trim();
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let n = if let Some(h) = digits.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = digits.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -n } else { n })
}

/// Map, sequence and enum access whose values are wrapped (keys are read in [`Mode::Key`]).
struct Access<'m, A> {
    a: A,
    mode: Mode<'m>,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        self.a.next_element_seed(Seed { seed, mode: self.mode })
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.a.next_key_seed(Seed { seed, mode: Mode::Key })
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.a.next_value_seed(Seed { seed, mode: self.mode })
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

impl<'de, 'm, A: EnumAccess<'de>> EnumAccess<'de> for Access<'m, A> {
    type Error = A::Error;
    type Variant = Access<'m, A::Variant>;
    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, a) = self.a.variant_seed(seed)?;
        Ok((value, Access { a, mode: self.mode }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.a.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.a.newtype_variant_seed(Seed { seed, mode: self.mode })
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.a.tuple_variant(len, Wrap { v: visitor, mode: self.mode })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.a.struct_variant(fields, Wrap { v: visitor, mode: self.mode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("SET".to_string(), "value".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("TRICKY".to_string(), "a${SET}b".to_string()),
        ])
    }

    fn x(text: &str) -> Result<String, String> {
        let e = env();
        expand(text, Mode::Env(&e)).map(Cow::into_owned)
    }

    /// The forms and their results.
    #[test]
    fn forms() {
        assert_eq!(x("plain").unwrap(), "plain");
        assert_eq!(x("${SET}").unwrap(), "value");
        assert_eq!(x("a-${SET}-${SET}-b").unwrap(), "a-value-value-b");
        assert_eq!(x("${UNSET:-d}").unwrap(), "d");
        assert_eq!(x("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(x("${EMPTY-d}").unwrap(), "");
        assert_eq!(x("${UNSET-d}").unwrap(), "d");
        assert_eq!(x("${UNSET:-${SET}}").unwrap(), "value");
        assert_eq!(x("${UNSET:-}").unwrap(), "");
        assert_eq!(x("${EMPTY?m}").unwrap(), "");
        // Values are inserted as they are, never scanned again.
        assert_eq!(x("${TRICKY}").unwrap(), "a${SET}b");
    }

    /// `$${` is a literal `${`; other dollars are literal.
    #[test]
    fn escapes_and_literal_dollars() {
        assert_eq!(x("$${SET}").unwrap(), "${SET}");
        assert_eq!(x("$$${SET}").unwrap(), "$${SET}");
        assert_eq!(x("$argon2id$v=19$m=19456").unwrap(), "$argon2id$v=19$m=19456");
        assert_eq!(x("pa$$word$").unwrap(), "pa$$word$");
        assert_eq!(x("${UNSET:-$${X}}").unwrap(), "${X}");
        for s in ["${SET}", "$${SET}", "a$${", "$$", "x${y", "${"] {
            assert_eq!(x(&escape(s)).unwrap(), s, "{s}");
        }
    }

    /// Unset variables and malformed references are errors naming the variable.
    #[test]
    fn errors() {
        assert_eq!(x("${NOPE}").unwrap_err(), "environment variable NOPE is not set");
        assert!(x("${EMPTY:?give it}").unwrap_err().contains("EMPTY is empty: give it"));
        assert!(x("${NOPE?give it}").unwrap_err().contains("NOPE is not set: give it"));
        for bad in ["${", "a${b", "${}", "${1X}", "${A B}", "${A:+x}", "${A*}"] {
            let e = x(bad).unwrap_err();
            assert!(e.contains("$${"), "{bad}: {e}");
        }
        let e = HashMap::new();
        assert!(expand("${SET}", Mode::Document).unwrap_err().contains("not in Admin API"));
        assert_eq!(expand("$${SET}", Mode::Document).unwrap(), "${SET}");
        assert!(expand("${SET}", Mode::Key).unwrap_err().contains("in a key"));
        assert_eq!(expand("${X:-${Y:-${Z:-d}}}", Mode::Env(&e)).unwrap(), "d");
        let deep = format!("{}d{}", "${X:-".repeat(12), "}".repeat(12));
        assert!(expand(&deep, Mode::Env(&e)).unwrap_err().contains("too deeply"));
    }

    /// Numbers and booleans written as strings.
    #[test]
    fn typed_strings() {
        assert_eq!(parse_int("8080"), Some(8080));
        assert_eq!(parse_int("-5"), Some(-5));
        assert_eq!(parse_int("0x1f"), Some(31));
        assert_eq!(parse_int("0o17"), Some(15));
        assert_eq!(parse_int("12a"), None);
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_bool("yes"), Some(true));
        assert_eq!(parse_bool("Off"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}

//! The path-tracking decoder: turns a `serde_yaml::Value` tree into typed config values while
//! collecting every error (unknown key, wrong type, missing key, bad value) with its path.
//!
//! Not on the hot path: runs once per config load; cost is linear in the tree size.
//!
//! Why not `#[derive(Deserialize)]`: serde stops at the first error and `deny_unknown_fields`
//! reports one unknown key, while operators need every problem at once. Here each struct's
//! decoder opens its mapping with [`Fields::open`], asks for each key once through
//! [`Fields::req`] / [`Fields::opt`] / [`Fields::or`] / [`Fields::pos`], and calls
//! [`Fields::finish`], which reports the keys nobody asked for. A decoder returns `None` when
//! it (or anything below it) reported an error; siblings are still decoded, so all errors
//! surface in one pass.
//!
//! Rules shared by every key:
//! - `null` (or `key:` with nothing) is the same as an absent key.
//! - For required keys an empty string is also "missing"; for optional keys it means absent,
//!   so `${VAR:-}` switches an optional setting off.
//! - Integers and booleans accept a string that parses (`"60000"`, `"true"`), because
//!   `${VAR}` always produces a string.
//! - Error messages quote the offending value, except for values that came from the
//!   environment or go into a [`Secret`].

use std::collections::HashSet;
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use super::env::Substitution;
use super::{ConfigError, Secret};

/// Appends a mapping key to a path: `""` + `server` = `server`, `server` + `listen` =
/// `server.listen`.
pub(super) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a list index to a path: `buckets` + 1 = `buckets[1]`.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A readable rendering of a non-string mapping key, for paths.
pub(super) fn describe_key(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        _ => "<complex key>".into(),
    }
}

/// Collects errors while a config tree is decoded.
pub(super) struct Decoder {
    errors: Vec<ConfigError>,
    failed: HashSet<String>,
    from_env: HashSet<String>,
}

impl Decoder {
    /// Starts with the substitution outcome: its errors come first, its failed paths are
    /// skipped, its environment-sourced paths are never echoed.
    pub(super) fn new(subst: Substitution) -> Self {
        Decoder {
            errors: subst.errors,
            failed: subst.failed,
            from_env: subst.from_env,
        }
    }

    /// Records an error at `path`.
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// All errors recorded so far, in discovery order.
    pub(super) fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// Number of errors so far (lets a decoder tell whether a sub-step added any).
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// True when substitution already failed at `path` or anywhere below it.
    pub(super) fn failed_at_or_under(&self, path: &str) -> bool {
        self.failed.iter().any(|p| {
            p == path
                || p.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    /// The value as quoted in an error: `"abc"`, `42`, `a list`; `a value from the
    /// environment` when it was substituted (it might be a secret under the wrong key).
    pub(super) fn got(&self, path: &str, v: &Value) -> String {
        if self.from_env.contains(path) {
            return "a value from the environment".into();
        }
        describe(v)
    }

    /// Decodes `v` at `path` as `T`, unless substitution already failed there.
    pub(super) fn decode<T: Decode>(&mut self, v: &Value, path: &str) -> Option<T> {
        if self.failed.contains(path) {
            return None;
        }
        T::decode(v, path, self)
    }
}

/// Short description of a value for error messages.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            const MAX: usize = 64;
            if s.chars().count() > MAX {
                let cut: String = s.chars().take(MAX).collect();
                format!("{cut:?}...")
            } else {
                format!("{s:?}")
            }
        }
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// A config value decodable from a YAML node. Implementations report their own errors
/// (at `path`) and return `None` when they reported any.
pub(super) trait Decode: Sized {
    /// Decodes `v`, found at `path`.
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self>;
}

fn is_absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn is_empty_string(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.is_empty())
}

/// The keys of one YAML mapping, consumed one by one by a struct decoder.
pub(super) struct Fields<'a> {
    map: Option<&'a Mapping>,
    path: String,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Opens `v` (at `path`) as a mapping; `null` opens as an empty mapping, so an omitted
    /// section takes every default. Anything else is an error and `None`.
    pub(super) fn open(v: &'a Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let map = match v {
            Value::Mapping(m) => Some(m),
            Value::Null => None,
            other => {
                let got = d.got(path, other);
                d.error(path, format!("expected a mapping, got {got}"));
                return None;
            }
        };
        Some(Fields {
            map,
            path: path.to_string(),
            known: Vec::new(),
        })
    }

    /// Path of `key` in this mapping.
    pub(super) fn key_path(&self, key: &str) -> String {
        child(&self.path, key)
    }

    /// Marks `key` as known and returns its value (`None` when absent; `null` is returned
    /// as-is for the caller to interpret).
    pub(super) fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.and_then(|m| m.get(key))
    }

    /// The value of `key` without marking it known (`None` when absent).
    pub(super) fn peek(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    /// True when `key` is present with a non-null value (does not mark it known).
    pub(super) fn has_value(&self, key: &str) -> bool {
        !is_absent(self.peek(key))
    }

    /// A required key: absent, `null` or `""` is `required`.
    pub(super) fn req<T: Decode>(&mut self, d: &mut Decoder, key: &'static str) -> Option<T> {
        self.req_with(d, key, |v, p, d| d.decode::<T>(v, p))
    }

    /// A required key decoded by `dec` instead of a [`Decode`] impl.
    pub(super) fn req_with<T>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        dec: impl FnOnce(&Value, &str, &mut Decoder) -> Option<T>,
    ) -> Option<T> {
        let path = self.key_path(key);
        let v = self.raw(key);
        if d.failed.contains(&path) {
            return None;
        }
        match v {
            None | Some(Value::Null) => {
                d.error(&path, "required");
                None
            }
            Some(v) if is_empty_string(v) => {
                d.error(&path, "required (empty)");
                None
            }
            Some(v) => dec(v, &path, d),
        }
    }

    /// A section (mapping) that takes all its defaults when absent or `null`.
    pub(super) fn or_section<T: Decode>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
    ) -> Option<T> {
        let path = self.key_path(key);
        let v = self.raw(key).unwrap_or(&Value::Null);
        d.decode(v, &path)
    }

    /// An optional key: absent, `null` or `""` is `Some(None)`; a bad value is `None`.
    pub(super) fn opt<T: Decode>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
    ) -> Option<Option<T>> {
        let path = self.key_path(key);
        match self.raw(key) {
            Some(v) if !matches!(v, Value::Null) && !is_empty_string(v) => {
                d.decode(v, &path).map(Some)
            }
            _ if d.failed.contains(&path) => None,
            _ => Some(None),
        }
    }

    /// A key with a default: absent or `null` gives `default`. An empty string is decoded
    /// as written (valid for strings, an error for numbers).
    pub(super) fn or<T: Decode>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        default: T,
    ) -> Option<T> {
        let path = self.key_path(key);
        match self.raw(key) {
            Some(v) if !matches!(v, Value::Null) => d.decode(v, &path),
            _ if d.failed.contains(&path) => None,
            _ => Some(default),
        }
    }

    /// A positive integer key with a default: 0 is an error (`expected a positive integer`).
    pub(super) fn pos<T: UInt>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        default: T,
    ) -> Option<T> {
        let path = self.key_path(key);
        match self.raw(key) {
            Some(v) if !matches!(v, Value::Null) => {
                if d.failed.contains(&path) {
                    return None;
                }
                uint(v, &path, d, 1, T::MAX).map(T::from_u64)
            }
            _ if d.failed.contains(&path) => None,
            _ => Some(default),
        }
    }

    /// Reports every key of the mapping that no decoder asked for, and non-string keys.
    pub(super) fn finish(self, d: &mut Decoder) {
        let Some(map) = self.map else { return };
        for k in map.keys() {
            match k {
                Value::String(s) if self.known.contains(&s.as_str()) => {}
                Value::String(s) => {
                    let expected = self.known.join(", ");
                    d.error(
                        &child(&self.path, s),
                        format!("unknown key (expected one of: {expected})"),
                    );
                }
                other => d.error(
                    &child(&self.path, &describe_key(other)),
                    "mapping keys must be strings",
                ),
            }
        }
    }
}

/// Unsigned integer types a config key may have.
pub(super) trait UInt: Copy {
    /// Largest value representable.
    const MAX: u64;
    /// Converts a value already checked against [`UInt::MAX`].
    fn from_u64(v: u64) -> Self;
}

macro_rules! uint_impl {
    ($($t:ty),*) => {$(
        impl UInt for $t {
            const MAX: u64 = <$t>::MAX as u64;
            fn from_u64(v: u64) -> Self {
                debug_assert!(v <= Self::MAX as u64);
                v as $t
            }
        }
        impl Decode for $t {
            fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
                uint(v, path, d, 0, <$t as UInt>::MAX).map(<$t as UInt>::from_u64)
            }
        }
    )*};
}
uint_impl!(u16, u32, u64, usize);

/// Reads an integer in `min..=max` from a number or a numeric string.
pub(super) fn uint(v: &Value, path: &str, d: &mut Decoder, min: u64, max: u64) -> Option<u64> {
    let parsed = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n >= min && n <= max => Some(n),
        Some(n) if n > max => {
            d.error(path, format!("must be at most {max}, got {n}"));
            None
        }
        _ => {
            let kind = if min >= 1 {
                "a positive integer"
            } else {
                "a non-negative integer"
            };
            let got = d.got(path, v);
            d.error(path, format!("expected {kind}, got {got}"));
            None
        }
    }
}

impl Decode for bool {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            other => {
                let got = d.got(path, other);
                d.error(path, format!("expected true or false, got {got}"));
                None
            }
        }
    }
}

impl Decode for String {
    /// Strings; numbers are taken as their text (`name: 2024`).
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                let got = d.got(path, other);
                d.error(path, format!("expected a string, got {got}"));
                None
            }
        }
    }
}

impl Decode for Secret {
    /// Like `String`, but the error never shows the value.
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        match v {
            Value::String(s) => Some(Secret(s.clone())),
            Value::Number(n) => Some(Secret(n.to_string())),
            _ => {
                d.error(path, "expected a string (value not shown: secret)");
                None
            }
        }
    }
}

impl Decode for PathBuf {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let s: String = String::decode(v, path, d)?;
        if s.is_empty() {
            d.error(path, "must not be empty");
            return None;
        }
        Some(PathBuf::from(s))
    }
}

impl Decode for std::net::SocketAddr {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let s: String = String::decode(v, path, d)?;
        match s.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let got = d.got(path, v);
                d.error(
                    path,
                    format!("expected an IP:port socket address such as \"0.0.0.0:8080\" or \"[::1]:8080\", got {got}"),
                );
                None
            }
        }
    }
}

impl Decode for ipnet::IpNet {
    /// A CIDR block (`10.0.0.0/8`, `2001:db8::/32`) or a single address (a /32 or /128).
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let s: String = String::decode(v, path, d)?;
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Some(net.trunc());
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Some(ipnet::IpNet::from(ip));
        }
        let got = d.got(path, v);
        d.error(
            path,
            format!("expected a CIDR block such as \"10.0.0.0/8\" or an IP address, got {got}"),
        );
        None
    }
}

impl<T: Decode> Decode for Vec<T> {
    /// A YAML sequence; every element is decoded, so each bad element reports.
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let Value::Sequence(seq) = v else {
            let got = d.got(path, v);
            d.error(path, format!("expected a list, got {got}"));
            return None;
        };
        let items: Vec<Option<T>> = seq
            .iter()
            .enumerate()
            .map(|(i, item)| d.decode(item, &index(path, i)))
            .collect();
        items.into_iter().collect()
    }
}

/// Decodes a string keyword from `choices` (`(spelling, value)`, compared ASCII
/// case-insensitively); the error lists the spellings.
pub(super) fn keyword<T: Copy>(
    v: &Value,
    path: &str,
    d: &mut Decoder,
    choices: &[(&str, T)],
) -> Option<T> {
    if let Value::String(s) = v {
        let s = s.trim();
        if let Some((_, t)) = choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
        {
            return Some(*t);
        }
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let got = d.got(path, v);
    d.error(
        path,
        format!("expected one of {}, got {got}", names.join(", ")),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(Substitution::default())
    }

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn integers_accept_numeric_strings_and_report_bad_ones() {
        let mut d = decoder();
        assert_eq!(d.decode::<u64>(&yaml("42"), "a"), Some(42));
        assert_eq!(d.decode::<u64>(&yaml("'42'"), "a"), Some(42));
        assert_eq!(d.decode::<u16>(&yaml("70000"), "p"), None);
        assert_eq!(d.decode::<u64>(&yaml("-1"), "n"), None);
        assert_eq!(d.decode::<u64>(&yaml("1.5"), "f"), None);
        let errs = d.into_errors();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].to_string(), "p: must be at most 65535, got 70000");
        assert_eq!(
            errs[1].to_string(),
            "n: expected a non-negative integer, got -1"
        );
        assert_eq!(errs[2].path, "f");
    }

    #[test]
    fn booleans_accept_strings() {
        let mut d = decoder();
        assert_eq!(d.decode::<bool>(&yaml("'true'"), "b"), Some(true));
        assert_eq!(d.decode::<bool>(&yaml("FALSE"), "b"), Some(false));
        assert_eq!(d.decode::<bool>(&yaml("yes"), "b"), None);
        assert_eq!(
            d.into_errors()[0].message,
            "expected true or false, got \"yes\""
        );
    }

    #[test]
    fn secret_type_errors_do_not_show_the_value() {
        let mut d = decoder();
        assert!(d.decode::<Secret>(&yaml("[hunter2]"), "s").is_none());
        assert!(!d.into_errors()[0].message.contains("hunter2"));
    }

    #[test]
    fn env_sourced_values_are_not_echoed() {
        let mut subst = Substitution::default();
        subst.from_env.insert("port".into());
        let mut d = Decoder::new(subst);
        assert!(d.decode::<u16>(&yaml("'s3cr3t'"), "port").is_none());
        let msg = &d.into_errors()[0].message;
        assert!(
            !msg.contains("s3cr3t") && msg.contains("environment"),
            "{msg}"
        );
    }

    #[test]
    fn vec_reports_every_bad_element() {
        let mut d = decoder();
        assert_eq!(d.decode::<Vec<u32>>(&yaml("[1, x, 3, y]"), "l"), None);
        let paths: Vec<String> = d.into_errors().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["l[1]", "l[3]"]);
    }

    #[test]
    fn fields_report_unknown_and_missing_keys() {
        let mut d = decoder();
        let v = yaml("a: 1\nb: ''\nzz: 3\n4: x\n");
        let mut f = Fields::open(&v, "top", &mut d).unwrap();
        assert_eq!(f.req::<u64>(&mut d, "a"), Some(1));
        assert_eq!(f.req::<String>(&mut d, "b"), None);
        assert_eq!(f.req::<String>(&mut d, "c"), None);
        assert_eq!(f.opt::<String>(&mut d, "b"), Some(None));
        assert_eq!(f.or::<u64>(&mut d, "e", 7), Some(7));
        f.finish(&mut d);
        let errs: Vec<String> = d.into_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(errs[0], "top.b: required (empty)");
        assert_eq!(errs[1], "top.c: required");
        assert!(errs[2].starts_with("top.zz: unknown key (expected one of: a, b, c"));
        assert_eq!(errs[3], "top.4: mapping keys must be strings");
        assert_eq!(errs.len(), 4);
    }

    #[test]
    fn failed_paths_suppress_follow_on_errors() {
        let mut subst = Substitution::default();
        subst.failed.insert("m.k".into());
        subst.failed.insert("m.list[2].x".into());
        let mut d = Decoder::new(subst);
        let v = yaml("k: '${X}'");
        let mut f = Fields::open(&v, "m", &mut d).unwrap();
        assert_eq!(f.req::<u64>(&mut d, "k"), None);
        f.finish(&mut d);
        assert!(d.failed_at_or_under("m.list"));
        assert!(!d.failed_at_or_under("m.lis"));
        assert_eq!(d.error_count(), 0);
    }

    #[test]
    fn keyword_lists_choices() {
        let mut d = decoder();
        let c = [("path", 1), ("virtual", 2)];
        assert_eq!(keyword(&yaml("Virtual"), "a", &mut d, &c), Some(2));
        assert_eq!(keyword(&yaml("dns"), "a", &mut d, &c), None);
        assert_eq!(
            d.into_errors()[0].to_string(),
            "a: expected one of path, virtual, got \"dns\""
        );
    }
}

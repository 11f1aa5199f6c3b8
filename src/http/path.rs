//! Request path handling: split the request-target, normalise the path, reject `..` segments,
//! percent-decode keys and read query parameters (DESIGN section 5 routing rules,
//! RFC 3986 sections 2.1, 3.3 and 6.2.2).
//!
//! Hot path: every request goes through [`split_target`] and [`normalize_path`], and
//! [`decode_path`] when the key is built. Each is one linear scan that allocates only when the
//! output differs from the input (repeated slashes, escapes to rewrite, escapes to decode), so a
//! typical path costs a few ns per byte and no allocation.

use std::borrow::Cow;
use std::fmt;

use crate::error::ErrorKind;

/// Why a request path was rejected; every case is answered 400.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `..` segment, raw or after percent-decoding (`%2e%2e`, `.%2E`, `..%2F`).
    DotDotSegment,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// The path does not start with `/`.
    NotAbsolute,
}

impl PathError {
    /// The error kind answered: always [`ErrorKind::BadRequest`] (400, DESIGN section 5).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadRequest
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::DotDotSegment => "path contains a '..' segment",
            PathError::BadPercentEncoding => "path contains an invalid percent-encoding",
            PathError::NotAbsolute => "path does not start with '/'",
        })
    }
}

impl std::error::Error for PathError {}

/// Split a request-target into `(path, query)` at the first `?` (RFC 3986 section 3.4).
/// `"/a?x=1"` gives `("/a", Some("x=1"))`; `"/a?"` gives `("/a", Some(""))`; `"/a"` gives
/// `("/a", None)`.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode the escape starting at `bytes[i]` (which is `%`): the octet it encodes.
fn escape_at(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    debug_assert_eq!(bytes.get(i), Some(&b'%'));
    let hi = bytes.get(i + 1).copied().and_then(hex_value);
    let lo = bytes.get(i + 2).copied().and_then(hex_value);
    match (hi, lo) {
        (Some(hi), Some(lo)) => Ok((hi << 4) | lo),
        _ => Err(PathError::BadPercentEncoding),
    }
}

/// RFC 3986 section 2.3 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Tracks the current path segment as decoded octets to spot `..` segments.
struct SegmentCheck {
    len: usize,
    all_dots: bool,
}

impl SegmentCheck {
    fn new() -> Self {
        SegmentCheck {
            len: 0,
            all_dots: true,
        }
    }

    /// Feed one decoded octet; fails when a `..` segment ends.
    fn push(&mut self, octet: u8) -> Result<(), PathError> {
        if octet == b'/' {
            self.end()?;
            *self = SegmentCheck::new();
        } else {
            self.len += 1;
            self.all_dots &= octet == b'.';
        }
        Ok(())
    }

    fn end(&self) -> Result<(), PathError> {
        if self.len == 2 && self.all_dots {
            Err(PathError::DotDotSegment)
        } else {
            Ok(())
        }
    }
}

/// Normalise a request path (the part of the target before `?`).
///
/// - Repeated slashes collapse: `"//a///b"` becomes `"/a/b"`; a trailing slash is kept.
/// - Escapes of unreserved characters are decoded and other escapes get uppercase hex
///   (RFC 3986 section 6.2.2: `"/%7Euser/%2f"` becomes `"/~user/%2F"`), so equivalent paths route
///   and cache alike. An encoded `/` (`%2F`) stays encoded and never collapses.
/// - A `..` segment, raw or after percent-decoding (where `%2F` also separates segments), is
///   rejected: `"/a/../b"`, `"/a/%2e%2E/b"`, `"/a/..%2Fb"`, `"/a/.%2E"` all fail with
///   [`PathError::DotDotSegment`]. `"."` segments and names like `"..."` or `"..b"` are kept.
///
/// Returns the normalised, still percent-encoded path, starting with `/`, borrowed when nothing
/// changed. Errors: [`PathError::NotAbsolute`] without a leading `/`,
/// [`PathError::BadPercentEncoding`] on `%` not followed by two hex digits.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out: Option<String> = None;
    // Input before this index is already in `out` (or unchanged when `out` is None).
    let mut copied = 0;
    let mut segment = SegmentCheck::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                segment.push(b'/')?;
                if i > 0 && bytes[i - 1] == b'/' {
                    // Every change point is an ASCII byte, so these slices are char boundaries.
                    out.get_or_insert_with(|| String::with_capacity(path.len()))
                        .push_str(&path[copied..i]);
                    copied = i + 1;
                }
                i += 1;
            }
            b'%' => {
                let octet = escape_at(bytes, i)?;
                segment.push(octet)?;
                let lowercase_hex = bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase);
                if is_unreserved(octet) || lowercase_hex {
                    let o = out.get_or_insert_with(|| String::with_capacity(path.len()));
                    o.push_str(&path[copied..i]);
                    if is_unreserved(octet) {
                        o.push(char::from(octet));
                    } else {
                        o.push('%');
                        o.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                        o.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                    }
                    copied = i + 3;
                }
                i += 3;
            }
            _ => {
                segment.push(b)?;
                i += 1;
            }
        }
    }
    segment.end()?;
    Ok(match out {
        None => Cow::Borrowed(path),
        Some(mut o) => {
            o.push_str(&path[copied..]);
            debug_assert!(o.starts_with('/') && !o.contains("//"));
            Cow::Owned(o)
        }
    })
}

/// Percent-decode a path to raw octets (RFC 3986 section 2.1), e.g. to form the S3 key.
/// `+` stays `+` (form encoding does not apply to paths) and `%2F` becomes `/`. The result may
/// not be UTF-8. Borrowed when `path` has no `%`.
///
/// Errors: [`PathError::BadPercentEncoding`] on `"%zz"` or a truncated `"%4"`.
pub fn decode_path(path: &str) -> Result<Cow<'_, [u8]>, PathError> {
    let bytes = path.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%') else {
        return Ok(Cow::Borrowed(bytes));
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(escape_at(bytes, i)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(Cow::Owned(out))
}

/// Decode one `application/x-www-form-urlencoded` name or value: `+` is a space, escapes are
/// decoded leniently (an invalid `%` stays literal), invalid UTF-8 is replaced with U+FFFD.
fn form_decode(s: &str) -> Cow<'_, str> {
    if s.as_bytes().contains(&b'+') {
        let spaced: Vec<u8> = s
            .bytes()
            .map(|b| if b == b'+' { b' ' } else { b })
            .collect();
        Cow::Owned(
            percent_encoding::percent_decode(&spaced)
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        percent_encoding::percent_decode_str(s).decode_utf8_lossy()
    }
}

/// Iterate the `(name, value)` pairs of a query string (the part after `?`), decoded as
/// `application/x-www-form-urlencoded` (WHATWG URL standard, section 5.1): pairs split on `&`,
/// empty pairs skipped, name and value split at the first `=` (a missing `=` gives an empty
/// value), `+` decodes to a space, escapes are decoded leniently and invalid UTF-8 is replaced
/// with U+FFFD. Each item borrows from `query` when nothing needed decoding.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(name), form_decode(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_target_cases() {
        assert_eq!(split_target("/a/b?x=1&y"), ("/a/b", Some("x=1&y")));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
        assert_eq!(split_target("/a"), ("/a", None));
        assert_eq!(split_target("/a?b?c"), ("/a", Some("b?c")));
        assert_eq!(split_target("/"), ("/", None));
    }

    #[test]
    fn normalize_collapses_slashes() {
        assert_eq!(normalize_path("//a///b").unwrap(), "/a/b");
        assert_eq!(normalize_path("/a//").unwrap(), "/a/");
        assert_eq!(normalize_path("//").unwrap(), "/");
        assert_eq!(normalize_path("/a/b/").unwrap(), "/a/b/");
        // %2F is data, not a separator to collapse.
        assert_eq!(normalize_path("/a/%2F%2F/b").unwrap(), "/a/%2F%2F/b");
    }

    #[test]
    fn normalize_borrows_when_unchanged() {
        for p in [
            "/",
            "/a/b",
            "/bucket/dir/file.txt",
            "/a/%2F/%20%E2%82%AC",
            "/a/./b",
            "/caf\u{e9}",
        ] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(s)) if s == p),
                "{p}"
            );
        }
        assert!(matches!(normalize_path("/a//b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn normalize_rewrites_escapes() {
        assert_eq!(normalize_path("/%7Euser/%41%62c").unwrap(), "/~user/Abc");
        assert_eq!(
            normalize_path("/a/%2f%e2%82%ac").unwrap(),
            "/a/%2F%E2%82%AC"
        );
        assert_eq!(normalize_path("/a/%2e/b").unwrap(), "/a/./b");
        assert_eq!(normalize_path("//%70ublic//x").unwrap(), "/public/x");
    }

    #[test]
    fn normalize_rejects_dot_dot() {
        for p in [
            "/a/../b",
            "/..",
            "/a/..",
            "/a/../",
            "/../a",
            "/a/%2e%2E/b",
            "/a/%2E%2e",
            "/a/.%2E/b",
            "/a/%2e./b",
            "/a/..%2fb",
            "/a/..%2Fb",
            "/a%2F..%2Fb",
            "/a%2f..",
            "//..//a",
        ] {
            assert_eq!(normalize_path(p), Err(PathError::DotDotSegment), "{p}");
        }
    }

    #[test]
    fn normalize_allows_dot_names() {
        for p in [
            "/a/...",
            "/a/..b",
            "/a/b..",
            "/a/.",
            "/.a/..../c",
            "/a/%2e%2e%2e",
            "/a/..%20",
        ] {
            assert!(normalize_path(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn normalize_errors() {
        assert_eq!(normalize_path("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/a/%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a/%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a/%"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a/%g1"), Err(PathError::BadPercentEncoding));
        assert_eq!(PathError::DotDotSegment.kind().status(), 400);
    }

    #[test]
    fn decode_path_cases() {
        assert!(matches!(
            decode_path("/a/b+c"),
            Ok(Cow::Borrowed(b"/a/b+c"))
        ));
        assert_eq!(decode_path("/a%2Fb").unwrap().as_ref(), b"/a/b");
        assert_eq!(decode_path("/a%2fb").unwrap().as_ref(), b"/a/b");
        assert_eq!(decode_path("/a%20b+c").unwrap().as_ref(), b"/a b+c");
        assert_eq!(
            decode_path("/%E2%82%AC").unwrap().as_ref(),
            "/\u{20ac}".as_bytes()
        );
        assert_eq!(
            decode_path("/\u{20ac}%21").unwrap().as_ref(),
            "/\u{20ac}!".as_bytes()
        );
        assert_eq!(decode_path("/%ff%00").unwrap().as_ref(), b"/\xff\x00");
        assert_eq!(decode_path("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(decode_path("/a%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(decode_path("%"), Err(PathError::BadPercentEncoding));
    }

    #[test]
    fn query_pairs_cases() {
        let pairs: Vec<(String, String)> =
            query_pairs("a=1&b=x+y&&c&d=&e=%41%zz&f=a=b&%E2%82%AC=%ff")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let want: Vec<(String, String)> = [
            ("a", "1"),
            ("b", "x y"),
            ("c", ""),
            ("d", ""),
            ("e", "A%zz"),
            ("f", "a=b"),
            ("\u{20ac}", "\u{fffd}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs, want);
        assert_eq!(query_pairs("").count(), 0);
        let (k, v) = query_pairs("token=abc").next().unwrap();
        assert!(matches!(
            (k, v),
            (Cow::Borrowed("token"), Cow::Borrowed("abc"))
        ));
        let (_, v) = query_pairs("q=a%2Bb+c").next().unwrap();
        assert_eq!(v, "a+b c");
    }
}

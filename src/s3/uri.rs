//! SigV4 `UriEncode`: the canonical encoding of S3 object keys (canonical URI) and of query
//! parameters (canonical query string), following AWS "Create a canonical request for Signature
//! Version 4" (the `UriEncode` rules) and the S3 note that object keys are encoded once.
//!
//! Hot path: `encode_key_path` runs on every upstream request (cache miss). Cost: one table lookup
//! and one `String::push` per key byte, no allocation beyond growing `out` (reserve it; the worst
//! case is 3 output bytes per key byte). `canonical_query` allocates per parameter; S3 GETs rarely
//! carry more than one (`versionId`), most carry none and return an empty `String` without
//! allocating.
//!
//! The same bytes that are signed must be sent: the caller puts the output of `encode_key_path`
//! both in the request line and in the canonical request, never a re-encoding of the client's
//! original path. Keys with `+`, space, `()`, `'`, `!*`, `%2F` and non-ASCII are where SigV4
//! proxies have had bugs; the tests check them against botocore.

/// `true` for the bytes `UriEncode` keeps as they are: the RFC 3986 unreserved set
/// `A-Z a-z 0-9 - . _ ~`. Every other byte is written as `%XX`.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_' || c == b'~';
        b += 1;
    }
    table
};

/// Uppercase hex digits: `UriEncode` requires `%2F`, never `%2f`.
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `%XX` (uppercase hex) for one byte.
#[inline]
fn push_percent(byte: u8, out: &mut String) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
}

/// Appends `raw` with the `UriEncode` rules; `keep_slash` chooses whether `/` stays literal.
#[inline]
fn encode_into(raw: &[u8], keep_slash: bool, out: &mut String) {
    out.reserve(raw.len());
    for &byte in raw {
        if UNRESERVED[usize::from(byte)] || (keep_slash && byte == b'/') {
            out.push(char::from(byte));
        } else {
            push_percent(byte, out);
        }
    }
}

/// Appends the canonical URI encoding of an S3 object key to `out`.
///
/// `key` is the raw key: the bytes of the object name, already percent-decoded from the client's
/// request path (so a client path `a%2Bb` arrives here as `a+b`, and `literal%252F` as
/// `literal%2F`). Unreserved bytes `A-Z a-z 0-9 - . _ ~` and `/` are kept; every other byte,
/// including each byte of a multi-byte UTF-8 character, becomes `%XX` with uppercase hex. S3
/// keys are encoded exactly once (no double encoding, unlike other services' canonical URIs), and
/// `/` separators, including repeated ones, are kept verbatim. No leading `/` is added.
///
/// Source: AWS SigV4 docs, "Create a canonical request", `CanonicalURI` and `UriEncode()`.
/// Example: `unicode-日本語 (1)+.txt` -> `unicode-%E6%97%A5%E6%9C%AC%E8%AA%9E%20%281%29%2B.txt`.
pub fn encode_key_path(key: &[u8], out: &mut String) {
    encode_into(key, true, out);
}

/// Appends the `UriEncode` encoding of a query parameter name or value to `out`.
///
/// Same rules as [`encode_key_path`] except that `/` is encoded as `%2F` too. `raw` is the
/// decoded name or value (for example a `versionId` such as `3/L4kq+...` -> `3%2FL4kq%2B...`).
///
/// Source: AWS SigV4 docs, "Create a canonical request", `CanonicalQueryString`.
pub fn encode_query_component(raw: &[u8], out: &mut String) {
    encode_into(raw, false, out);
}

/// Builds the SigV4 canonical query string from decoded `(name, value)` pairs.
///
/// Each name and value is encoded with [`encode_query_component`]; the pairs are sorted by
/// encoded name, then by encoded value (byte order), and joined as `name=value` with `&`. The `=`
/// is always present, also for empty values (`?acl` signs as `acl=`). The same pairs, encoded the
/// same way, must be what is sent on the request line. An empty slice gives an empty string
/// (no allocation).
///
/// Source: AWS SigV4 docs, "Create a canonical request", `CanonicalQueryString`.
#[must_use]
pub fn canonical_query(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| {
            let mut n = String::with_capacity(name.len());
            encode_query_component(name.as_bytes(), &mut n);
            let mut v = String::with_capacity(value.len());
            encode_query_component(value.as_bytes(), &mut v);
            (n, v)
        })
        .collect();
    encoded.sort_unstable();
    let total: usize = encoded.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut out = String::with_capacity(total);
    for (i, (name, value)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> String {
        let mut out = String::new();
        encode_key_path(raw.as_bytes(), &mut out);
        out
    }

    fn component(raw: &str) -> String {
        let mut out = String::new();
        encode_query_component(raw.as_bytes(), &mut out);
        out
    }

    #[test]
    fn key_unreserved_and_slash_are_kept() {
        let raw = "AZaz09-._~/dir//x";
        assert_eq!(key(raw), raw);
    }

    #[test]
    fn key_awkward_bytes_are_encoded_once_uppercase() {
        assert_eq!(key("a+b.txt"), "a%2Bb.txt");
        assert_eq!(key("space key.txt"), "space%20key.txt");
        assert_eq!(key("paren(1).txt"), "paren%281%29.txt");
        assert_eq!(key("quote'.txt"), "quote%27.txt");
        assert_eq!(key("bang!star*.txt"), "bang%21star%2A.txt");
        assert_eq!(
            key("tilde~eq=amp&dollar$at@.txt"),
            "tilde~eq%3Damp%26dollar%24at%40.txt"
        );
        assert_eq!(
            key("unicode-日本語-ß.txt"),
            "unicode-%E6%97%A5%E6%9C%AC%E8%AA%9E-%C3%9F.txt"
        );
        // A literal percent sign is data: encoded once, not treated as an escape.
        assert_eq!(key("literal%2Fpercent.txt"), "literal%252Fpercent.txt");
        assert_eq!(key("colon:semi;comma,.txt"), "colon%3Asemi%3Bcomma%2C.txt");
        assert_eq!(key("q?hash#.txt"), "q%3Fhash%23.txt");
    }

    #[test]
    fn key_non_utf8_and_control_bytes_are_encoded() {
        let mut out = String::new();
        encode_key_path(&[0x00, 0x7f, 0xff, b'a', 0x0a], &mut out);
        assert_eq!(out, "%00%7F%FFa%0A");
    }

    #[test]
    fn key_appends_to_existing_content() {
        let mut out = String::from("/bucket/");
        encode_key_path(b"a b", &mut out);
        assert_eq!(out, "/bucket/a%20b");
    }

    #[test]
    fn every_byte_round_trips_through_percent_decoding() {
        for byte in 0u8..=255 {
            let mut out = String::new();
            encode_query_component(&[byte], &mut out);
            let decoded = if out.len() == 3 {
                assert!(out.starts_with('%'));
                assert_eq!(out, out.to_ascii_uppercase());
                u8::from_str_radix(&out[1..], 16).expect("two hex digits")
            } else {
                assert_eq!(out.len(), 1);
                assert!(UNRESERVED[usize::from(byte)]);
                out.as_bytes()[0]
            };
            assert_eq!(decoded, byte);
        }
    }

    #[test]
    fn query_component_encodes_slash() {
        assert_eq!(
            component("3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"),
            "3%2FL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY"
        );
        assert_eq!(component("a b=c&d"), "a%20b%3Dc%26d");
    }

    #[test]
    fn canonical_query_empty_is_empty() {
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn canonical_query_sorts_by_encoded_name_then_value() {
        let q = canonical_query(&[
            ("response-content-type", "text/plain; charset=utf-8"),
            ("partNumber", "1"),
            ("b", "2"),
            ("b", "10"),
            ("acl", ""),
        ]);
        assert_eq!(
            q,
            "acl=&b=10&b=2&partNumber=1&response-content-type=text%2Fplain%3B%20charset%3Dutf-8"
        );
    }

    #[test]
    fn canonical_query_sorts_uppercase_before_lowercase() {
        // Byte order, as SigV4 requires: 'Z' (0x5A) < 'a' (0x61).
        assert_eq!(canonical_query(&[("a", "1"), ("Z", "2")]), "Z=2&a=1");
    }

    #[test]
    fn canonical_query_version_id() {
        assert_eq!(
            canonical_query(&[("versionId", "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")]),
            "versionId=3%2FL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY"
        );
    }
}

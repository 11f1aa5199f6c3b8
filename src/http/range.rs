//! Range request header parsing and resolution (RFC 9110 section 14).
//!
//! Hot path: parsed once per request that carries `Range`. No allocation when parsing or
//! resolving; one `String` per `Content-Range` value built. Only a single byte range is
//! supported, as S3 does: multi-range and syntactically invalid values are ignored, so the
//! representation is served 200 in full (DESIGN section 5).

/// One byte-range-spec (RFC 9110 section 14.1.1), not yet resolved against a length.
/// Positions are byte offsets; values too large for u64 saturate to `u64::MAX` (they are past
/// any representation length, so the outcome is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `a-b`: bytes `a` through `b` inclusive, `a <= b`.
    FromTo(u64, u64),
    /// `a-`: bytes from `a` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// Parse a `Range` field value (RFC 9110 section 14.2).
///
/// Returns `Some` only for a syntactically valid single range: `bytes=a-b`, `bytes=a-` or
/// `bytes=-n`. The range unit is case-insensitive; optional whitespace is allowed around the
/// value, around `=` and around list commas, and empty list elements are ignored
/// (`"bytes=0-1,"` is one range). Returns `None` for invalid syntax, `a-b` with `b < a`, other
/// units, an empty range set and multiple ranges; the caller then serves the full
/// representation with 200. `bytes=-0` parses to `Suffix(0)`, which [`ByteRange::resolve`]
/// reports as unsatisfiable (416).
pub fn parse_range(value: &[u8]) -> Option<ByteRange> {
    let value = value.trim_ascii();
    let eq = value.iter().position(|&b| b == b'=')?;
    if !value[..eq].trim_ascii_end().eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut specs = value[eq + 1..]
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => Some(ByteRange::Suffix(parse_pos(last)?)),
        (false, true) => Some(ByteRange::From(parse_pos(first)?)),
        (false, false) => {
            let (a, b) = (parse_pos(first)?, parse_pos(last)?);
            (a <= b).then_some(ByteRange::FromTo(a, b))
        }
    }
}

/// `1*DIGIT` saturating at `u64::MAX`; None on any non-digit.
fn parse_pos(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.saturating_mul(10).saturating_add(u64::from(b - b'0')))
    })
}

impl ByteRange {
    /// Resolve against a representation of `len` bytes (RFC 9110 section 14.1.2).
    ///
    /// Returns `Ok((first, last))`, inclusive byte offsets with `first <= last < len`: `last`
    /// is clamped to `len - 1`, and a suffix longer than the representation selects all of it.
    /// Returns `Err(())` when unsatisfiable (416): `first >= len`, a suffix of 0, or `len == 0`.
    #[allow(clippy::result_unit_err)]
    pub fn resolve(self, len: u64) -> Result<(u64, u64), ()> {
        if len == 0 {
            return Err(());
        }
        let (first, last) = match self {
            ByteRange::FromTo(a, b) => (a, b.min(len - 1)),
            ByteRange::From(a) => (a, len - 1),
            ByteRange::Suffix(0) => return Err(()),
            ByteRange::Suffix(n) => (len - n.min(len), len - 1),
        };
        if first >= len {
            return Err(());
        }
        debug_assert!(first <= last && last < len);
        Ok((first, last))
    }
}

/// `Content-Range` value for a 416 response (RFC 9110 section 14.4): `"bytes */100"`.
pub fn content_range_unsatisfied(len: u64) -> String {
    format!("bytes */{len}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_forms() {
        let cases: &[(&str, ByteRange)] = &[
            ("bytes=0-9", ByteRange::FromTo(0, 9)),
            ("bytes=5-5", ByteRange::FromTo(5, 5)),
            ("bytes=0-", ByteRange::From(0)),
            ("bytes=100-", ByteRange::From(100)),
            ("bytes=-500", ByteRange::Suffix(500)),
            ("bytes=-0", ByteRange::Suffix(0)),
            ("Bytes=1-2", ByteRange::FromTo(1, 2)),
            ("BYTES=1-2", ByteRange::FromTo(1, 2)),
            ("  bytes = 1-2  ", ByteRange::FromTo(1, 2)),
            ("bytes=\t1-2", ByteRange::FromTo(1, 2)),
            ("bytes=1-2,", ByteRange::FromTo(1, 2)),
            ("bytes=, 1-2 ,,", ByteRange::FromTo(1, 2)),
            ("bytes=007-010", ByteRange::FromTo(7, 10)),
        ];
        for (value, want) in cases {
            assert_eq!(parse_range(value.as_bytes()), Some(*want), "{value}");
        }
    }

    #[test]
    fn huge_positions_saturate() {
        assert_eq!(
            parse_range(b"bytes=0-99999999999999999999999"),
            Some(ByteRange::FromTo(0, u64::MAX))
        );
        assert_eq!(
            parse_range(b"bytes=99999999999999999999999-"),
            Some(ByteRange::From(u64::MAX))
        );
        assert_eq!(
            parse_range(b"bytes=-99999999999999999999999"),
            Some(ByteRange::Suffix(u64::MAX))
        );
    }

    #[test]
    fn invalid_forms() {
        for value in [
            "",
            "bytes",
            "bytes=",
            "bytes= ",
            "bytes=,",
            "bytes=-",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "bytes=0-1, -5",
            "items=0-1",
            "bytesx=0-1",
            "=0-1",
            "bytes=a-1",
            "bytes=1-b",
            "bytes=1 -2",
            "bytes=1- 2",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=0x1-2",
            "bytes=1",
            "bytes 0-1",
        ] {
            assert_eq!(parse_range(value.as_bytes()), None, "{value:?}");
        }
        assert_eq!(parse_range(b"bytes=0-1\xff"), None);
    }

    #[test]
    fn resolve_edge_cases() {
        // In range.
        assert_eq!(ByteRange::FromTo(0, 9).resolve(100), Ok((0, 9)));
        assert_eq!(ByteRange::FromTo(99, 99).resolve(100), Ok((99, 99)));
        // last clamped to len - 1.
        assert_eq!(ByteRange::FromTo(10, 1000).resolve(100), Ok((10, 99)));
        assert_eq!(ByteRange::FromTo(0, u64::MAX).resolve(100), Ok((0, 99)));
        // first at or beyond len.
        assert_eq!(ByteRange::FromTo(100, 200).resolve(100), Err(()));
        assert_eq!(ByteRange::From(100).resolve(100), Err(()));
        assert_eq!(ByteRange::From(u64::MAX).resolve(100), Err(()));
        assert_eq!(ByteRange::From(0).resolve(100), Ok((0, 99)));
        assert_eq!(ByteRange::From(99).resolve(100), Ok((99, 99)));
        // Suffixes.
        assert_eq!(ByteRange::Suffix(10).resolve(100), Ok((90, 99)));
        assert_eq!(ByteRange::Suffix(100).resolve(100), Ok((0, 99)));
        assert_eq!(ByteRange::Suffix(1000).resolve(100), Ok((0, 99)));
        assert_eq!(ByteRange::Suffix(u64::MAX).resolve(1), Ok((0, 0)));
        assert_eq!(ByteRange::Suffix(0).resolve(100), Err(()));
        // Empty representation: nothing is satisfiable.
        assert_eq!(ByteRange::From(0).resolve(0), Err(()));
        assert_eq!(ByteRange::FromTo(0, 0).resolve(0), Err(()));
        assert_eq!(ByteRange::Suffix(5).resolve(0), Err(()));
        // Largest representation.
        assert_eq!(ByteRange::From(0).resolve(u64::MAX), Ok((0, u64::MAX - 1)));
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range_unsatisfied(100), "bytes */100");
        assert_eq!(content_range_unsatisfied(0), "bytes */0");
    }

    #[test]
    fn parse_then_resolve() {
        let resolved = parse_range(b"bytes=-0").map(|r| r.resolve(10));
        assert_eq!(resolved, Some(Err(())));
        let resolved = parse_range(b"bytes=0-").map(|r| r.resolve(10));
        assert_eq!(resolved, Some(Ok((0, 9))));
    }
}

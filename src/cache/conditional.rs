//! Preconditions (RFC 9110 section 13) and Range selection (section 14) evaluated by the proxy
//! against a representation it holds: a cached entry on a hit, or S3's response headers on a
//! miss when S3 ignored a condition (no S3 backend honours `If-Range`).
//!
//! Hot path: once per cache hit. A few header probes; entity-tag lists are scanned in place and
//! HTTP-dates parsed only when the field is present. No allocation.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};

use super::entry::http_date;
use crate::http::range::parse_range;

/// Outcome of [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// 304 Not Modified: send ETag, Last-Modified, Cache-Control (and the other stored
    /// validator-related fields) with no body (RFC 9110 section 15.4.5).
    NotModified,
    /// 412 Precondition Failed (`If-Match` or `If-Unmodified-Since` false).
    Failed,
    /// Serve the representation. `apply_range` is false when an `If-Range` was present and did
    /// not match: the `Range` header must then be ignored and the full body sent with 200.
    Proceed {
        /// Pass to [`select_range`].
        apply_range: bool,
    },
}

/// Range outcome of [`select_range`] for a body of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeResult {
    /// 200 with the whole body: no `Range`, an invalid or multi-range value (served in full, as
    /// S3 does; DESIGN section 5), or a non-matching `If-Range`.
    Full,
    /// 206 with bytes `first..=last` and `Content-Range: bytes first-last/len`.
    Partial(u64, u64),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluate the request's preconditions against the representation's `etag` (as stored, quotes
/// and `W/` included) and `last_modified`, in the order of RFC 9110 section 13.2.2:
///
/// 1. `If-Match` present: false -> [`Precondition::Failed`]. Strong comparison; `*` matches
///    (the representation exists); a weak or absent ETag never matches a tag.
/// 2. else `If-Unmodified-Since` (a valid HTTP-date, and `last_modified` known): modified after
///    it -> `Failed`.
/// 3. `If-None-Match` present: any tag matches by weak comparison, or `*` ->
///    [`Precondition::NotModified`]; no match skips step 4.
/// 4. else `If-Modified-Since` (valid date, `last_modified` known): not modified since ->
///    `NotModified`.
/// 5. `If-Range` with `Range`: decides `apply_range` (section 13.1.5): an entity-tag must match
///    strongly (a `W/` tag never does); an HTTP-date must equal `last_modified` exactly;
///    anything else is false.
///
/// For GET and HEAD only (the only methods served); 304 is correct for both. Lists may span
/// several field lines and contain spaces; an element that is not a valid entity-tag ends the
/// list (what came before still counts). Invalid dates make their field ignored, as the RFC
/// requires.
pub fn evaluate(
    req: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<SystemTime>,
) -> Precondition {
    let current = etag.and_then(|v| entity_tag(v.as_bytes()));

    if req.contains_key(header::IF_MATCH) {
        if !list_matches(req, header::IF_MATCH, current, strong_eq) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(lm)) =
        (date_field(req, header::IF_UNMODIFIED_SINCE), last_modified)
    {
        if lm > since {
            return Precondition::Failed;
        }
    }

    if req.contains_key(header::IF_NONE_MATCH) {
        if list_matches(req, header::IF_NONE_MATCH, current, weak_eq) {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(lm)) =
        (date_field(req, header::IF_MODIFIED_SINCE), last_modified)
    {
        if lm <= since {
            return Precondition::NotModified;
        }
    }

    let apply_range = match (req.contains_key(header::RANGE), req.get(header::IF_RANGE)) {
        (true, Some(v)) => if_range_matches(v.as_bytes(), current, last_modified),
        _ => true,
    };
    Precondition::Proceed { apply_range }
}

/// Choose what to send for a body of `len` bytes given the request's `Range` (RFC 9110 section
/// 14.2, parsed by `crate::http::range`). `apply_range` comes from [`evaluate`] (false: a stale
/// `If-Range`, answer [`RangeResult::Full`]). Several `Range` field lines are a multi-range
/// request and served in full. `bytes=0-` is `Partial(0, len - 1)` (a 206), and every range
/// of an empty body is `Unsatisfiable`. HEAD answers the headers GET would, so pass the same
/// inputs for HEAD.
pub fn select_range(req: &HeaderMap, len: u64, apply_range: bool) -> RangeResult {
    if !apply_range {
        return RangeResult::Full;
    }
    let mut lines = req.get_all(header::RANGE).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return RangeResult::Full;
    };
    match parse_range(value.as_bytes()) {
        None => RangeResult::Full,
        Some(range) => match range.resolve(len) {
            Ok((first, last)) => RangeResult::Partial(first, last),
            Err(()) => RangeResult::Unsatisfiable,
        },
    }
}

/// An entity-tag (RFC 9110 section 8.8.3): `weak` and the opaque-tag's content (no quotes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// Strong comparison (section 8.8.3.2): both strong and the same opaque-tag.
fn strong_eq(a: EntityTag<'_>, b: EntityTag<'_>) -> bool {
    !a.weak && !b.weak && a.opaque == b.opaque
}

/// Weak comparison: the same opaque-tag, whatever the weakness.
fn weak_eq(a: EntityTag<'_>, b: EntityTag<'_>) -> bool {
    a.opaque == b.opaque
}

/// Parse one whole entity-tag value (surrounding whitespace allowed).
fn entity_tag(v: &[u8]) -> Option<EntityTag<'_>> {
    match next_entity_tag(v.trim_ascii()) {
        Some((tag, rest)) if rest.trim_ascii().is_empty() => Some(tag),
        _ => None,
    }
}

/// Parse `[ W/ ] DQUOTE *etagc DQUOTE` at the start of `s`; returns the tag and what follows.
/// etagc excludes DQUOTE, so the tag ends at the next quote (commas inside are part of it).
fn next_entity_tag(s: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let body = s.strip_prefix(b"\"")?;
    let end = body.iter().position(|&b| b == b'"')?;
    Some((
        EntityTag {
            weak,
            opaque: &body[..end],
        },
        &body[end + 1..],
    ))
}

/// Whether any field line of `name` (`"*" / #entity-tag`) matches `current` with `eq`. `*`
/// matches any existing representation, which the caller has.
fn list_matches(
    req: &HeaderMap,
    name: header::HeaderName,
    current: Option<EntityTag<'_>>,
    eq: fn(EntityTag<'_>, EntityTag<'_>) -> bool,
) -> bool {
    for line in req.get_all(name) {
        let mut rest = line.as_bytes();
        loop {
            rest = skip_list_separators(rest);
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix(b"*") {
                if skip_list_separators(after).len() == after.len() && !after.is_empty() {
                    break; // `*x`: malformed
                }
                return true;
            }
            let Some((tag, after)) = next_entity_tag(rest) else {
                break; // malformed element: ignore the rest of this line
            };
            if current.is_some_and(|c| eq(tag, c)) {
                return true;
            }
            rest = after;
        }
    }
    false
}

fn skip_list_separators(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .position(|&b| !matches!(b, b',' | b' ' | b'\t'))
        .unwrap_or(s.len());
    &s[n..]
}

/// The first line of a date field, parsed; `None` if absent or not an HTTP-date.
fn date_field(req: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    req.get(name).and_then(http_date)
}

/// `If-Range` (RFC 9110 section 13.1.5): an entity-tag matches only strongly; a date only when
/// it equals `Last-Modified` exactly; anything unparsable is false.
fn if_range_matches(v: &[u8], current: Option<EntityTag<'_>>, lm: Option<SystemTime>) -> bool {
    let v = v.trim_ascii();
    if v.starts_with(b"W/") || v.starts_with(b"\"") {
        return match (entity_tag(v), current) {
            (Some(tag), Some(c)) => strong_eq(tag, c),
            _ => false,
        };
    }
    let date = std::str::from_utf8(v)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok());
    matches!((date, lm), (Some(d), Some(lm)) if d == lm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LM: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
    const BEFORE: &str = "Wed, 21 Oct 2015 07:27:59 GMT";
    const AFTER: &str = "Wed, 21 Oct 2015 07:28:01 GMT";

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn lm() -> Option<SystemTime> {
        httpdate::parse_http_date(LM).ok()
    }

    fn eval(pairs: &[(&'static str, &'static str)], etag: &'static str) -> Precondition {
        let etag = HeaderValue::from_static(etag);
        evaluate(&map(pairs), Some(&etag), lm())
    }

    const GO: Precondition = Precondition::Proceed { apply_range: true };
    const FULL: Precondition = Precondition::Proceed { apply_range: false };
    use Precondition::{Failed, NotModified};

    #[test]
    fn no_conditionals_proceed() {
        assert_eq!(eval(&[], "\"a\""), GO);
        assert_eq!(evaluate(&HeaderMap::new(), None, None), GO);
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        assert_eq!(eval(&[("if-match", "\"a\"")], "\"a\""), GO);
        assert_eq!(eval(&[("if-match", "\"b\"")], "\"a\""), Failed);
        assert_eq!(eval(&[("if-match", "W/\"a\"")], "\"a\""), Failed);
        assert_eq!(eval(&[("if-match", "\"a\"")], "W/\"a\""), Failed);
        assert_eq!(eval(&[("if-match", "*")], "\"a\""), GO);
        assert_eq!(eval(&[("if-match", "\"x\", \"a\"")], "\"a\""), GO);
        assert_eq!(
            eval(&[("if-match", "\"x\""), ("if-match", "\"a\"")], "\"a\""),
            GO
        );
        assert_eq!(
            eval(&[("if-match", "a")], "\"a\""),
            Failed,
            "unquoted is not a tag"
        );
        assert_eq!(eval(&[("if-match", "")], "\"a\""), Failed);
        assert_eq!(
            evaluate(&map(&[("if-match", "\"a\"")]), None, lm()),
            Failed,
            "no ETag: no tag matches"
        );
        assert_eq!(evaluate(&map(&[("if-match", "*")]), None, None), GO);
    }

    #[test]
    fn if_unmodified_since() {
        assert_eq!(eval(&[("if-unmodified-since", LM)], "\"a\""), GO);
        assert_eq!(eval(&[("if-unmodified-since", AFTER)], "\"a\""), GO);
        assert_eq!(eval(&[("if-unmodified-since", BEFORE)], "\"a\""), Failed);
        // Ignored: invalid date, unknown Last-Modified, or If-Match present.
        assert_eq!(eval(&[("if-unmodified-since", "yesterday")], "\"a\""), GO);
        let h = map(&[("if-unmodified-since", BEFORE)]);
        assert_eq!(evaluate(&h, None, None), GO);
        assert_eq!(
            eval(
                &[("if-match", "\"a\""), ("if-unmodified-since", BEFORE)],
                "\"a\""
            ),
            GO
        );
        // Obsolete date forms parse too (RFC 850, asctime).
        assert_eq!(
            eval(
                &[("if-unmodified-since", "Wednesday, 21-Oct-15 07:27:59 GMT")],
                "\"a\""
            ),
            Failed
        );
        assert_eq!(
            eval(
                &[("if-unmodified-since", "Wed Oct 21 07:27:59 2015")],
                "\"a\""
            ),
            Failed
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert_eq!(eval(&[("if-none-match", "\"a\"")], "\"a\""), NotModified);
        assert_eq!(eval(&[("if-none-match", "W/\"a\"")], "\"a\""), NotModified);
        assert_eq!(eval(&[("if-none-match", "\"a\"")], "W/\"a\""), NotModified);
        assert_eq!(eval(&[("if-none-match", "\"b\"")], "\"a\""), GO);
        assert_eq!(eval(&[("if-none-match", "*")], "\"a\""), NotModified);
        assert_eq!(eval(&[("if-none-match", " * ")], "\"a\""), NotModified);
        assert_eq!(
            eval(&[("if-none-match", "\"x\",\"a\"")], "\"a\""),
            NotModified
        );
        assert_eq!(
            eval(&[("if-none-match", "  \"x\" ,\t W/\"a\" , ")], "\"a\""),
            NotModified
        );
        assert_eq!(
            eval(
                &[("if-none-match", "\"x\""), ("if-none-match", "\"a\"")],
                "\"a\""
            ),
            NotModified
        );
        // A comma inside an opaque-tag is part of it.
        assert_eq!(
            eval(&[("if-none-match", "\"a,b\"")], "\"a,b\""),
            NotModified
        );
        assert_eq!(eval(&[("if-none-match", "\"a,b\"")], "\"a\""), GO);
        // Quotes are significant; a malformed element ends the list.
        assert_eq!(eval(&[("if-none-match", "a")], "\"a\""), GO);
        assert_eq!(eval(&[("if-none-match", "junk, \"a\"")], "\"a\""), GO);
        assert_eq!(eval(&[("if-none-match", "\"x\" junk")], "\"a\""), GO);
        assert_eq!(
            evaluate(&map(&[("if-none-match", "\"a\"")]), None, None),
            GO
        );
    }

    #[test]
    fn if_match_is_checked_before_if_none_match() {
        assert_eq!(
            eval(
                &[("if-match", "\"b\""), ("if-none-match", "\"a\"")],
                "\"a\""
            ),
            Failed
        );
        assert_eq!(
            eval(
                &[("if-unmodified-since", BEFORE), ("if-none-match", "\"a\"")],
                "\"a\""
            ),
            Failed
        );
    }

    #[test]
    fn if_modified_since() {
        assert_eq!(eval(&[("if-modified-since", LM)], "\"a\""), NotModified);
        assert_eq!(eval(&[("if-modified-since", AFTER)], "\"a\""), NotModified);
        assert_eq!(eval(&[("if-modified-since", BEFORE)], "\"a\""), GO);
        assert_eq!(eval(&[("if-modified-since", "not a date")], "\"a\""), GO);
        assert_eq!(evaluate(&map(&[("if-modified-since", LM)]), None, None), GO);
        // Ignored when If-None-Match is present, matching or not.
        assert_eq!(
            eval(
                &[("if-none-match", "\"b\""), ("if-modified-since", AFTER)],
                "\"a\""
            ),
            GO
        );
    }

    #[test]
    fn if_range_decides_whether_range_applies() {
        let r = ("range", "bytes=0-1");
        assert_eq!(eval(&[r, ("if-range", "\"a\"")], "\"a\""), GO);
        assert_eq!(eval(&[r, ("if-range", "\"b\"")], "\"a\""), FULL);
        assert_eq!(
            eval(&[r, ("if-range", "W/\"a\"")], "\"a\""),
            FULL,
            "weak never"
        );
        assert_eq!(
            eval(&[r, ("if-range", "\"a\"")], "W/\"a\""),
            FULL,
            "weak never"
        );
        assert_eq!(eval(&[r, ("if-range", LM)], "\"a\""), GO);
        assert_eq!(
            eval(&[r, ("if-range", AFTER)], "\"a\""),
            FULL,
            "exact date only"
        );
        assert_eq!(eval(&[r, ("if-range", BEFORE)], "\"a\""), FULL);
        assert_eq!(eval(&[r, ("if-range", "garbage")], "\"a\""), FULL);
        assert_eq!(eval(&[r, ("if-range", "*")], "\"a\""), FULL);
        let h = map(&[r, ("if-range", LM)]);
        assert_eq!(evaluate(&h, None, None), FULL, "no Last-Modified");
        // If-Range without Range is ignored.
        assert_eq!(eval(&[("if-range", "\"b\"")], "\"a\""), GO);
        // 304 wins over If-Range.
        assert_eq!(
            eval(
                &[r, ("if-range", "\"b\""), ("if-none-match", "\"a\"")],
                "\"a\""
            ),
            NotModified
        );
    }

    fn sel(pairs: &[(&'static str, &'static str)], len: u64) -> RangeResult {
        select_range(&map(pairs), len, true)
    }

    #[test]
    fn range_forms() {
        use RangeResult::{Full, Partial, Unsatisfiable};
        assert_eq!(sel(&[], 100), Full);
        assert_eq!(sel(&[("range", "bytes=0-9")], 100), Partial(0, 9));
        assert_eq!(sel(&[("range", "bytes=90-200")], 100), Partial(90, 99));
        assert_eq!(sel(&[("range", "bytes=0-")], 100), Partial(0, 99));
        assert_eq!(sel(&[("range", "bytes=95-")], 100), Partial(95, 99));
        assert_eq!(sel(&[("range", "bytes=-10")], 100), Partial(90, 99));
        assert_eq!(sel(&[("range", "bytes=-1000")], 100), Partial(0, 99));
        assert_eq!(sel(&[("range", "bytes=100-")], 100), Unsatisfiable);
        assert_eq!(sel(&[("range", "bytes=100-200")], 100), Unsatisfiable);
        assert_eq!(sel(&[("range", "bytes=-0")], 100), Unsatisfiable);
        assert_eq!(sel(&[("range", "bytes=0-")], 0), Unsatisfiable);
        // Invalid and multi-range: full body.
        assert_eq!(sel(&[("range", "bytes=5-1")], 100), Full);
        assert_eq!(sel(&[("range", "bytes=0-1,5-6")], 100), Full);
        assert_eq!(sel(&[("range", "items=0-1")], 100), Full);
        assert_eq!(
            sel(&[("range", "bytes=0-1"), ("range", "bytes=5-6")], 100),
            Full
        );
        // Stale If-Range: full body.
        assert_eq!(
            select_range(&map(&[("range", "bytes=0-9")]), 100, false),
            Full
        );
    }

    #[test]
    fn evaluate_then_select() {
        let h = map(&[("range", "bytes=0-9"), ("if-range", "\"old\"")]);
        let etag = HeaderValue::from_static("\"new\"");
        let Precondition::Proceed { apply_range } = evaluate(&h, Some(&etag), None) else {
            panic!("must proceed");
        };
        assert_eq!(select_range(&h, 100, apply_range), RangeResult::Full);
        let lm = lm().map(|t| t + Duration::from_secs(0));
        let h = map(&[("range", "bytes=0-9"), ("if-range", LM)]);
        let Precondition::Proceed { apply_range } = evaluate(&h, None, lm) else {
            panic!("must proceed");
        };
        assert_eq!(
            select_range(&h, 100, apply_range),
            RangeResult::Partial(0, 9)
        );
    }
}

//! AWS Signature Version 4 (header-based, `AWS4-HMAC-SHA256`) for S3 GET/HEAD requests with an
//! empty payload, following the AWS docs "Signature Version 4 signing process" and the S3 API
//! reference "Authenticating Requests (AWS Signature Version 4)".
//!
//! Hot path: `Signer::sign` runs once per upstream request (every cache miss and revalidation).
//! Cost per call: the canonical request is streamed straight into a SHA-256 hasher (no buffer),
//! the string to sign straight into an HMAC whose key schedule (the ipad/opad blocks of the cached
//! signing key) is cloned, not recomputed: about 6 SHA-256 compressions, ~1-2 us. Allocations: the
//! `Authorization` and `x-amz-date` strings (plus a copy of the session token when one is set,
//! and a sorted copy of `extra_signed_headers` only if the caller passed them unsorted).
//! Key derivation (4 HMACs) happens once per UTC day per `Signer`, not per request.
//!
//! A `Signer` belongs to one bucket on one shard: it caches the day's key in a `RefCell`, so it
//! is `Send` but not `Sync`. Each core builds its own from the config snapshot.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Hex SHA-256 of the empty payload: the `x-amz-content-sha256` value and the last line of the
/// canonical request for GET/HEAD.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The SigV4 algorithm name: first token of `Authorization` and first line of the string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The service name in the credential scope.
pub const SERVICE_S3: &str = "s3";

/// Latest instant `x-amz-date` can express with a 4-digit year: 9999-12-31T23:59:59Z, in seconds
/// since the Unix epoch. Later clocks are clamped to it.
const MAX_EPOCH_SECONDS: u64 = 253_402_300_799;

const SECONDS_PER_DAY: u64 = 86_400;

type HmacSha256 = Hmac<Sha256>;

/// Access key, secret key and optional STS session token of one bucket.
///
/// `Debug` prints the access key (an identifier, not a secret) and redacts `secret_key` and
/// `session_token`, so credentials can sit in structs that are logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id, e.g. `AKIAIOSFODNN7EXAMPLE`; appears in the credential scope.
    pub access_key: String,
    /// Secret access key; only used to derive the signing key.
    pub secret_key: String,
    /// STS session token; when set it is sent as `x-amz-security-token` and signed.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The headers a signed request must carry, produced by [`Signer::sign`].
///
/// Send them with exactly the `Host`, path and query that were signed: `Authorization`,
/// `x-amz-date`, `x-amz-content-sha256` and, when present, `x-amz-security-token`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `AWS4-HMAC-SHA256 Credential=<access key>/<yyyymmdd>/<region>/s3/aws4_request,
    /// SignedHeaders=<names;...>, Signature=<64 lowercase hex>` (comma + space separated, as
    /// botocore writes it).
    pub authorization: String,
    /// Request time in ISO 8601 basic format, UTC: `YYYYMMDD'T'HHMMSS'Z'`, e.g. `20130524T000000Z`.
    pub x_amz_date: String,
    /// Always [`EMPTY_PAYLOAD_SHA256`]: the signer only signs empty payloads.
    pub x_amz_content_sha256: &'static str,
    /// The session token to send as `x-amz-security-token`, if the credentials have one.
    pub x_amz_security_token: Option<String>,
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("authorization", &self.authorization)
            .field("x_amz_date", &self.x_amz_date)
            .field("x_amz_content_sha256", &self.x_amz_content_sha256)
            .field(
                "x_amz_security_token",
                &self.x_amz_security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC is defined for keys of every length (long keys are hashed first); hmac 0.13's own
    // `KeyInit::new` relies on the same fact, so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Derives the SigV4 signing key `kSigning` for one day, region and service.
///
/// `kDate = HMAC("AWS4" + secret_key, yyyymmdd)`, `kRegion = HMAC(kDate, region)`,
/// `kService = HMAC(kRegion, service)`, `kSigning = HMAC(kService, "aws4_request")`, all
/// HMAC-SHA256. `yyyymmdd` is the UTC date of the request (`20120215`). Returns the 32 raw bytes.
///
/// Source: AWS SigV4 docs, "Calculate the signature", derivation of the signing key. Cost: four
/// HMACs (~1 us); [`Signer`] caches the result per day.
#[must_use]
pub fn derive_signing_key(
    secret_key: &str,
    yyyymmdd: &str,
    region: &str,
    service: &str,
) -> [u8; 32] {
    let mut first_key = Vec::with_capacity(4 + secret_key.len());
    first_key.extend_from_slice(b"AWS4");
    first_key.extend_from_slice(secret_key.as_bytes());
    let k_date = hmac_sha256(&first_key, &[yyyymmdd.as_bytes()]);
    let k_region = hmac_sha256(&k_date, &[region.as_bytes()]);
    let k_service = hmac_sha256(&k_region, &[service.as_bytes()]);
    hmac_sha256(&k_service, &[b"aws4_request"])
}

/// A UTC instant formatted for SigV4: `YYYYMMDDTHHMMSSZ` as ASCII, plus its day number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AmzDate {
    /// Days since 1970-01-01 (UTC); the signing-key cache key.
    day: u64,
    /// `YYYYMMDDTHHMMSSZ`; the first 8 bytes are the credential-scope date.
    text: [u8; 16],
}

impl AmzDate {
    /// Formats `now` (clamped to 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z; sub-second part
    /// dropped) with the proleptic Gregorian calendar.
    fn from_system_time(now: SystemTime) -> AmzDate {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .min(MAX_EPOCH_SECONDS);
        let day = secs / SECONDS_PER_DAY;
        let second_of_day = secs % SECONDS_PER_DAY;
        let (year, month, day_of_month) = civil_from_days(day);
        debug_assert!((1970..=9999).contains(&year));
        let mut text = *b"00000000T000000Z";
        write_digits(&mut text[0..4], year);
        write_digits(&mut text[4..6], month);
        write_digits(&mut text[6..8], day_of_month);
        write_digits(&mut text[9..11], second_of_day / 3600);
        write_digits(&mut text[11..13], second_of_day % 3600 / 60);
        write_digits(&mut text[13..15], second_of_day % 60);
        AmzDate { day, text }
    }

    /// The full `YYYYMMDDTHHMMSSZ`.
    fn as_str(&self) -> &str {
        // Only ASCII digits, 'T' and 'Z' are ever written into `text`.
        std::str::from_utf8(&self.text).unwrap_or("19700101T000000Z")
    }

    /// The `YYYYMMDD` of the credential scope.
    fn date(&self) -> &str {
        &self.as_str()[..8]
    }
}

/// Writes `value` as zero-padded decimal filling `out` exactly.
fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        // `value % 10` < 10, so the cast is lossless.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    debug_assert_eq!(value, 0, "value wider than its field");
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, proleptic Gregorian.
///
/// Howard Hinnant's `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms"), restricted
/// to non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based month
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends lowercase hex of `bytes` to `out`.
fn push_hex(bytes: &[u8], out: &mut String) {
    let mut buf = [0u8; 64];
    let hex_len = bytes.len() * 2;
    debug_assert!(hex_len <= buf.len());
    if hex::encode_to_slice(bytes, &mut buf[..hex_len]).is_ok() {
        out.extend(buf[..hex_len].iter().map(|&b| char::from(b)));
    }
}

/// Where a canonical request is written: the SHA-256 hasher when signing, a `String` when the
/// caller wants the text (debug logs, tests).
trait CanonicalSink {
    fn put(&mut self, s: &str);
}

impl CanonicalSink for Sha256 {
    #[inline]
    fn put(&mut self, s: &str) {
        Digest::update(self, s.as_bytes());
    }
}

impl CanonicalSink for String {
    #[inline]
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

/// Writes a header value in canonical form (`Trimall`): leading and trailing spaces and tabs
/// removed, each inner run of them collapsed to one space.
fn put_trimmed_value<S: CanonicalSink>(sink: &mut S, value: &str) {
    let mut first = true;
    for word in value.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if !first {
            sink.put(" ");
        }
        sink.put(word);
        first = false;
    }
}

/// Calls `f(name, value)` for the always-signed headers and the extra headers merged in name
/// order. Both inputs must be sorted by name.
fn for_each_header<'a>(
    fixed: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
    mut f: impl FnMut(&'a str, &'a str),
) {
    let (mut i, mut j) = (0, 0);
    while i < fixed.len() || j < extra.len() {
        let take_fixed = match (fixed.get(i), extra.get(j)) {
            (Some(a), Some(b)) => a.0 <= b.0,
            (Some(_), None) => true,
            _ => false,
        };
        if take_fixed {
            f(fixed[i].0, fixed[i].1);
            i += 1;
        } else {
            f(extra[j].0, extra[j].1);
            j += 1;
        }
    }
}

/// The signing key of one UTC day, kept as a keyed HMAC state so a request clones the
/// precomputed ipad/opad blocks instead of re-keying.
struct DayKey {
    day: u64,
    mac: HmacSha256,
}

/// SigV4 signer for one bucket (credentials + region) on one shard.
///
/// Caches the day's signing key (`kSigning` for `<yyyymmdd>/<region>/s3/aws4_request`) and
/// re-derives it on the first request of a new UTC day. `Send`, not `Sync`: one per shard.
pub struct Signer {
    credentials: Credentials,
    region: String,
    cache: RefCell<Option<DayKey>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `credentials` in `region` (e.g. `us-east-1`; for RGW/Garage whatever region
    /// the server is configured with). No key is derived until the first `sign`.
    #[must_use]
    pub fn new(credentials: Credentials, region: &str) -> Signer {
        Signer {
            credentials,
            region: region.to_owned(),
            cache: RefCell::new(None),
        }
    }

    /// The credentials this signer was built with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The region in the credential scope.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Signs a request whose payload is empty (GET/HEAD) and returns the headers to send.
    ///
    /// - `method`: `GET` or `HEAD` (uppercase, as sent).
    /// - `host`: exactly the `Host` header value that will be sent (`host[:port]`, IPv6 in
    ///   brackets), e.g. from [`crate::s3::addressing::object_target`].
    /// - `canonical_uri`: the path as sent, already encoded by
    ///   [`crate::s3::uri::encode_key_path`] (`/bucket/a%2Bb.txt`).
    /// - `canonical_query`: from [`crate::s3::uri::canonical_query`] (empty when no query).
    /// - `extra_signed_headers`: additional `(lowercase-name, value)` pairs that will be sent and
    ///   must be signed, usually empty or `[("range", "bytes=0-9")]`. Names must be lowercase
    ///   and must not repeat `host`, `x-amz-content-sha256`, `x-amz-date` or
    ///   `x-amz-security-token`, which are always signed. Values are trimmed and inner runs of
    ///   whitespace collapsed, as SigV4 requires; send them as given.
    /// - `now`: the request time; clamped to 1970..=9999, sub-seconds dropped.
    ///
    /// Source: AWS SigV4 docs ("Create a canonical request", "Create a string to sign",
    /// "Calculate the signature", "Add the signature to the request"). The result is
    /// byte-identical to botocore's `S3SigV4Auth` (see tests/fixtures/sigv4/gen_vectors.py).
    #[must_use]
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        canonical_uri: &str,
        canonical_query: &str,
        extra_signed_headers: &[(&str, &str)],
        now: SystemTime,
    ) -> SignedHeaders {
        let amz_date = AmzDate::from_system_time(now);
        let sorted_owned;
        let extra = if extra_signed_headers.is_sorted_by_key(|h| h.0) {
            extra_signed_headers
        } else {
            let mut copy = extra_signed_headers.to_vec();
            copy.sort_unstable_by_key(|h| h.0);
            sorted_owned = copy;
            &sorted_owned[..]
        };
        debug_assert_extra_headers(extra);

        // Authorization: prefix, signed header list (also hashed), then the signature.
        let access_key = &self.credentials.access_key;
        let mut authorization = String::with_capacity(
            ALGORITHM.len()
                + " Credential=".len()
                + access_key.len()
                + 1
                + 8
                + 1
                + self.region.len()
                + "/s3/aws4_request, SignedHeaders=".len()
                + 80
                + extra.iter().map(|h| h.0.len() + 1).sum::<usize>()
                + ", Signature=".len()
                + 64,
        );
        authorization.push_str(ALGORITHM);
        authorization.push_str(" Credential=");
        authorization.push_str(access_key);
        authorization.push('/');
        authorization.push_str(amz_date.date());
        authorization.push('/');
        authorization.push_str(&self.region);
        authorization.push('/');
        authorization.push_str(SERVICE_S3);
        authorization.push_str("/aws4_request, SignedHeaders=");
        let signed_start = authorization.len();
        let token = self.credentials.session_token.as_deref();
        let fixed = fixed_headers(host, amz_date.as_str(), token);
        let mut first = true;
        for_each_header(&fixed[..fixed_len(token)], extra, |name, _| {
            if !first {
                authorization.push(';');
            }
            authorization.push_str(name);
            first = false;
        });
        let signed_end = authorization.len();

        let mut hasher = Sha256::new();
        write_canonical_request(
            &mut hasher,
            method,
            canonical_uri,
            canonical_query,
            &fixed[..fixed_len(token)],
            extra,
            &authorization[signed_start..signed_end],
        );
        let canonical_hash: [u8; 32] = hasher.finalize().into();

        let mut mac = self.day_mac(&amz_date);
        mac.update(ALGORITHM.as_bytes());
        mac.update(b"\n");
        mac.update(&amz_date.text);
        mac.update(b"\n");
        mac.update(amz_date.date().as_bytes());
        mac.update(b"/");
        mac.update(self.region.as_bytes());
        mac.update(b"/");
        mac.update(SERVICE_S3.as_bytes());
        mac.update(b"/aws4_request\n");
        let mut hash_hex = [0u8; 64];
        if hex::encode_to_slice(canonical_hash, &mut hash_hex).is_ok() {
            mac.update(&hash_hex);
        }
        let signature: [u8; 32] = mac.finalize().into_bytes().into();

        authorization.push_str(", Signature=");
        push_hex(&signature, &mut authorization);

        SignedHeaders {
            authorization,
            x_amz_date: amz_date.as_str().to_owned(),
            x_amz_content_sha256: EMPTY_PAYLOAD_SHA256,
            x_amz_security_token: self.credentials.session_token.clone(),
        }
    }

    /// The canonical request text [`Signer::sign`] hashes for the same arguments, so tests can
    /// compare it with botocore's. Test-only: it would contain the session token, so it is never
    /// logged.
    #[cfg(test)]
    #[must_use]
    pub fn canonical_request(
        &self,
        method: &str,
        host: &str,
        canonical_uri: &str,
        canonical_query: &str,
        extra_signed_headers: &[(&str, &str)],
        now: SystemTime,
    ) -> String {
        let amz_date = AmzDate::from_system_time(now);
        let mut extra = extra_signed_headers.to_vec();
        extra.sort_unstable_by_key(|h| h.0);
        let token = self.credentials.session_token.as_deref();
        let fixed = fixed_headers(host, amz_date.as_str(), token);
        let fixed = &fixed[..fixed_len(token)];
        let mut signed = String::new();
        for_each_header(fixed, &extra, |name, _| {
            if !signed.is_empty() {
                signed.push(';');
            }
            signed.push_str(name);
        });
        let mut out = String::with_capacity(256);
        write_canonical_request(
            &mut out,
            method,
            canonical_uri,
            canonical_query,
            fixed,
            &extra,
            &signed,
        );
        out
    }

    /// A clone of the keyed HMAC for `date`'s day, deriving and caching it if the day changed.
    fn day_mac(&self, date: &AmzDate) -> HmacSha256 {
        let derive = || {
            let key = derive_signing_key(
                &self.credentials.secret_key,
                date.date(),
                &self.region,
                SERVICE_S3,
            );
            DayKey {
                day: date.day,
                mac: <HmacSha256 as KeyInit>::new_from_slice(&key)
                    .expect("HMAC accepts any key length"),
            }
        };
        match self.cache.try_borrow_mut() {
            Ok(mut slot) => {
                if slot.as_ref().is_none_or(|k| k.day != date.day) {
                    *slot = Some(derive());
                }
                match slot.as_ref() {
                    Some(k) => k.mac.clone(),
                    None => derive().mac,
                }
            }
            // Not reachable (sign does not re-enter), but never panic for it.
            Err(_) => derive().mac,
        }
    }
}

/// Number of always-signed headers: 3, or 4 with a session token.
fn fixed_len(token: Option<&str>) -> usize {
    if token.is_some() {
        4
    } else {
        3
    }
}

/// The always-signed headers in name order; the 4th entry is valid only with a token.
fn fixed_headers<'a>(
    host: &'a str,
    amz_date: &'a str,
    token: Option<&'a str>,
) -> [(&'a str, &'a str); 4] {
    [
        ("host", host),
        ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
        ("x-amz-date", amz_date),
        ("x-amz-security-token", token.unwrap_or("")),
    ]
}

/// Checks the caller's contract on `extra_signed_headers` in debug builds.
fn debug_assert_extra_headers(extra: &[(&str, &str)]) {
    for (name, _) in extra {
        debug_assert!(
            !name.bytes().any(|b| b.is_ascii_uppercase()),
            "extra signed header names must be lowercase: {name}"
        );
        debug_assert!(
            !matches!(
                *name,
                "host" | "x-amz-content-sha256" | "x-amz-date" | "x-amz-security-token"
            ),
            "{name} is always signed; do not pass it as an extra header"
        );
    }
}

/// Writes the canonical request:
/// `METHOD\nURI\nQUERY\n<name:value\n>...\n<signed;names>\n<payload hash>`.
fn write_canonical_request<S: CanonicalSink>(
    sink: &mut S,
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    fixed: &[(&str, &str)],
    extra: &[(&str, &str)],
    signed_headers: &str,
) {
    sink.put(method);
    sink.put("\n");
    sink.put(canonical_uri);
    sink.put("\n");
    sink.put(canonical_query);
    sink.put("\n");
    for_each_header(fixed, extra, |name, value| {
        sink.put(name);
        sink.put(":");
        put_trimmed_value(sink, value);
        sink.put("\n");
    });
    sink.put("\n");
    sink.put(signed_headers);
    sink.put("\n");
    sink.put(EMPTY_PAYLOAD_SHA256);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DOC_ACCESS: &str = "AKIAIOSFODNN7EXAMPLE";
    const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn at(epoch_seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(epoch_seconds)
    }

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key: DOC_ACCESS.to_owned(),
            secret_key: DOC_SECRET.to_owned(),
            session_token: token.map(str::to_owned),
        }
    }

    #[test]
    fn empty_payload_constant_is_sha256_of_nothing() {
        assert_eq!(hex::encode(Sha256::digest(b"")), EMPTY_PAYLOAD_SHA256);
    }

    #[test]
    fn signing_key_matches_aws_documented_example() {
        // AWS SigV4 docs, "Examples of how to derive a signing key".
        let key = derive_signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn s3_get_object_documented_example() {
        // S3 API reference, "Authenticating Requests: Using the Authorization Header",
        // example "GET Object": GET /test.txt on examplebucket, Range bytes=0-9.
        let signer = Signer::new(creds(None), "us-east-1");
        let now = at(1_369_353_600); // 2013-05-24T00:00:00Z
        let host = "examplebucket.s3.amazonaws.com";
        let range = [("range", "bytes=0-9")];
        let canonical = signer.canonical_request("GET", host, "/test.txt", "", &range, now);
        assert_eq!(
            canonical,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        let signed = signer.sign("GET", host, "/test.txt", "", &range, now);
        assert_eq!(
            signed.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(signed.x_amz_date, "20130524T000000Z");
        assert_eq!(signed.x_amz_content_sha256, EMPTY_PAYLOAD_SHA256);
        assert_eq!(signed.x_amz_security_token, None);
    }

    /// One vector from tests/fixtures/sigv4/vectors.json (botocore S3SigV4Auth output).
    struct Vector {
        name: String,
        json: serde_json::Value,
    }

    impl Vector {
        fn str(&self, field: &str) -> &str {
            self.json[field]
                .as_str()
                .unwrap_or_else(|| panic!("{}: missing string field {field}", self.name))
        }
        fn pairs(&self, field: &str) -> Vec<(&str, &str)> {
            self.json[field]
                .as_array()
                .unwrap_or_else(|| panic!("{}: missing array {field}", self.name))
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().expect("pair name"),
                        p[1].as_str().expect("pair value"),
                    )
                })
                .collect()
        }
    }

    fn vectors() -> Vec<Vector> {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/sigv4/vectors.json"))
                .expect("vectors.json parses");
        all.as_array()
            .expect("vectors.json is a list")
            .iter()
            .map(|v| Vector {
                name: v["name"].as_str().expect("name").to_owned(),
                json: v.clone(),
            })
            .collect()
    }

    #[test]
    fn matches_botocore_vectors() {
        use crate::s3::addressing::{object_target, Addressing};
        use crate::s3::uri::canonical_query;

        let vectors = vectors();
        assert!(vectors.len() >= 21, "expected the full vector set");
        for v in &vectors {
            let addressing = match v.str("addressing") {
                "path" => Addressing::Path,
                "virtual" => Addressing::Virtual,
                other => panic!("{}: unknown addressing {other}", v.name),
            };
            let port = u16::try_from(v.json["port"].as_u64().expect("port")).expect("u16 port");
            let explicit_port = v.json["explicit_port"].as_bool().expect("explicit_port");
            let (host, uri) = object_target(
                addressing,
                v.str("endpoint_host"),
                port,
                explicit_port,
                v.str("bucket"),
                v.str("key").as_bytes(),
            );
            assert_eq!(host, v.str("host_header"), "{}: host", v.name);
            assert_eq!(uri, v.str("canonical_uri"), "{}: canonical URI", v.name);
            let query = canonical_query(&v.pairs("query"));
            assert_eq!(query, v.str("canonical_query"), "{}: query", v.name);

            let credentials = Credentials {
                access_key: v.str("access_key").to_owned(),
                secret_key: v.str("secret_key").to_owned(),
                session_token: v.json["session_token"].as_str().map(str::to_owned),
            };
            let signer = Signer::new(credentials.clone(), v.str("region"));
            let now = at(v.json["epoch_seconds"].as_u64().expect("epoch_seconds"));
            let extra = v.pairs("extra_headers");
            let canonical = signer.canonical_request("GET", &host, &uri, &query, &extra, now);
            assert_eq!(
                canonical,
                v.str("canonical_request"),
                "{}: canonical request",
                v.name
            );
            let signed = signer.sign("GET", &host, &uri, &query, &extra, now);
            assert_eq!(signed.authorization, v.str("authorization"), "{}", v.name);
            assert_eq!(signed.x_amz_date, v.str("amz_date"), "{}: date", v.name);
            assert_eq!(
                signed.x_amz_security_token, credentials.session_token,
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn vectors_cover_the_awkward_keys() {
        let keys: Vec<String> = vectors().iter().map(|v| v.str("key").to_owned()).collect();
        for k in [
            "a+b.txt",
            "space key.txt",
            "paren(1).txt",
            "quote'.txt",
            "bang!star*.txt",
            "tilde~eq=amp&dollar$at@.txt",
            "unicode-日本語-ß.txt",
            "dir/nested/deep.txt",
            "literal%2Fpercent.txt",
            "colon:semi;comma,.txt",
        ] {
            assert!(keys.iter().any(|x| x == k), "no vector for {k}");
        }
    }

    #[test]
    fn cached_key_is_rederived_when_the_utc_day_changes() {
        let signer = Signer::new(creds(None), "us-east-1");
        let end_of_day = at(1_709_251_199); // 2024-02-29T23:59:59Z
        let next_day = at(1_709_251_200); // 2024-03-01T00:00:00Z
        let a = signer.sign("GET", "h", "/b/k", "", &[], end_of_day);
        let b = signer.sign("GET", "h", "/b/k", "", &[], next_day);
        assert!(a
            .authorization
            .contains("/20240229/us-east-1/s3/aws4_request"));
        assert!(b
            .authorization
            .contains("/20240301/us-east-1/s3/aws4_request"));
        // Each must equal what a fresh signer (no cache) produces for that instant.
        let fresh_b =
            Signer::new(creds(None), "us-east-1").sign("GET", "h", "/b/k", "", &[], next_day);
        assert_eq!(b, fresh_b);
        let again_a = signer.sign("GET", "h", "/b/k", "", &[], end_of_day);
        assert_eq!(a, again_a);
    }

    #[test]
    fn unsorted_extra_headers_sign_like_sorted_ones() {
        let signer = Signer::new(creds(Some("tok")), "us-east-1");
        let now = at(1_768_465_800);
        let sorted = [("if-match", "\"abc\""), ("range", "bytes=0-9")];
        let unsorted = [("range", "bytes=0-9"), ("if-match", "\"abc\"")];
        let a = signer.sign("GET", "h:1", "/b/k", "", &sorted, now);
        let b = signer.sign("GET", "h:1", "/b/k", "", &unsorted, now);
        assert_eq!(a, b);
        assert!(a.authorization.contains(
            "SignedHeaders=host;if-match;range;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        ));
        assert_eq!(a.x_amz_security_token.as_deref(), Some("tok"));
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let signer = Signer::new(creds(None), "us-east-1");
        let now = at(0);
        let c =
            signer.canonical_request("HEAD", "h", "/k", "", &[("x-custom", "  a   b \t c ")], now);
        assert!(c.contains("\nx-custom:a b c\n"), "{c}");
        assert!(c.starts_with("HEAD\n/k\n\n"));
        assert!(c.contains("x-amz-date:19700101T000000Z\n"));
    }

    #[test]
    fn amz_date_formats_utc_civil_dates() {
        let cases = [
            (0, "19700101T000000Z"),
            (951_782_400, "20000229T000000Z"),
            (1_369_353_600, "20130524T000000Z"),
            (1_709_251_199, "20240229T235959Z"),
            (1_893_456_000, "20300101T000000Z"),
            (4_107_542_399, "21000228T235959Z"),
            (4_107_542_400, "21000301T000000Z"),
            (253_402_300_799, "99991231T235959Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(AmzDate::from_system_time(at(secs)).as_str(), text, "{secs}");
        }
        // Clamped at both ends; sub-seconds dropped.
        assert_eq!(
            AmzDate::from_system_time(UNIX_EPOCH - Duration::from_secs(5)).as_str(),
            "19700101T000000Z"
        );
        assert_eq!(
            AmzDate::from_system_time(at(u64::from(u32::MAX) * 100)).as_str(),
            "99991231T235959Z"
        );
        assert_eq!(
            AmzDate::from_system_time(at(1_369_353_600) + Duration::from_millis(999)).as_str(),
            "20130524T000000Z"
        );
    }

    #[test]
    fn civil_from_days_agrees_with_day_counting() {
        // Walk 1970-01-01 .. 2400-12-31 day by day and compare with a naive calendar.
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for day in 0..157_054u64 {
            assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = creds(Some("SESSION-TOKEN-VALUE"));
        let shown = format!("{c:?}");
        assert!(shown.contains(DOC_ACCESS));
        assert!(!shown.contains(DOC_SECRET));
        assert!(!shown.contains("SESSION-TOKEN-VALUE"));
        let signer = Signer::new(c, "us-east-1");
        let shown = format!("{signer:?}");
        assert!(!shown.contains(DOC_SECRET) && !shown.contains("SESSION-TOKEN-VALUE"));
        let signed = signer.sign("GET", "h", "/", "", &[], at(0));
        assert!(!format!("{signed:?}").contains("SESSION-TOKEN-VALUE"));
    }
}

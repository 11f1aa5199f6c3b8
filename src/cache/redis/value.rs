//! The Redis tier's key names and values: what one cached response looks like in Redis. Pure
//! functions over byte slices: no I/O, fuzzable.
//!
//! Hot path of Redis hits (decode: one XXH3 pass over the value, ~20 GB/s, and one bincode
//! pass over ~200-500 bytes of metadata; the body is a slice of the reply, not a copy) and of
//! Redis fills (encode: one copy of the body into the value).
//!
//! # Key layout
//!
//! `<key_prefix>obj:<bucket>:<object key>` for an object, with `\0v:<versionId>` appended for
//! a versioned request (`\0` never occurs in a bucket name and S3 keys are UTF-8 without NUL
//! in practice, so the two cannot collide). Bucket is the config bucket's `name` (replicas of
//! one bucket share its keys); the object key is its decoded bytes. No hash tag: keys spread
//! over every master of a Redis Cluster, and a bucket or all-purge scans every master
//! (`SCAN MATCH <key_prefix>obj:<bucket>:*`, glob characters escaped).
//!
//! # Value layout (little endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `YATARDS1` (the `1` is the format version: another is a miss, then deleted) |
//! | 8..10 | HTTP status (always 200: only complete 200 responses are stored) |
//! | 10..14 | metadata length, bytes |
//! | 14..22 | body length, bytes |
//! | 22..30 | XXH3-64 of bytes 0..22, the metadata and the body |
//! | 30.. | metadata (bincode 2: key, pass-through headers, stored_at, expires_at; the disk tier's [`EntryMeta`]), then the body |
//!
//! A value whose magic, length, checksum or key does not match is corrupt: a miss, deleted.

use bytes::Bytes;
use xxhash_rust::xxh3::Xxh3;

use crate::cache::disk::format::{decode_entry_meta, entry_meta_bytes, EntryMeta};
use crate::cache::{CacheKey, CacheKeyRef, CachedObject};

const MAGIC: [u8; 8] = *b"YATARDS1";
/// Bytes before the metadata.
pub const HEADER_BYTES: usize = 30;

/// The Redis key of `key` under `prefix` (layout in the module doc).
pub fn redis_key(prefix: &str, key: &CacheKeyRef<'_>) -> Vec<u8> {
    let version = key.version_id.map_or(0, |v| v.len() + 3);
    let mut k = Vec::with_capacity(prefix.len() + 6 + key.bucket.len() + key.key.len() + version);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(b"obj:");
    k.extend_from_slice(key.bucket);
    k.push(b':');
    k.extend_from_slice(key.key);
    if let Some(v) = key.version_id {
        k.extend_from_slice(b"\0v:");
        k.extend_from_slice(v);
    }
    k
}

/// The prefix every key of config bucket `bucket` starts with.
pub fn bucket_prefix(prefix: &str, bucket: &str) -> String {
    format!("{prefix}obj:{bucket}:")
}

/// `SCAN MATCH` pattern for every key starting with `literal` (glob characters escaped).
pub fn match_prefix(literal: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(literal.len() + 2);
    for &b in literal {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            p.push(b'\\');
        }
        p.push(b);
    }
    p.push(b'*');
    p
}

/// The value stored for (`key`, `obj`): header, metadata, body (layout in the module doc).
/// `obj` must hold its body in memory (not a disk-backed entry).
pub fn encode(key: &CacheKey, obj: &CachedObject) -> Vec<u8> {
    let meta = entry_meta_bytes(key, obj);
    let body = &obj.body[..];
    let mut v = Vec::with_capacity(HEADER_BYTES + meta.len() + body.len());
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&200u16.to_le_bytes());
    v.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    v.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let sum = checksum(&v[..22], &meta, body);
    v.extend_from_slice(&sum.to_le_bytes());
    v.extend_from_slice(&meta);
    v.extend_from_slice(body);
    v
}

/// Why a value was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// Another magic or format version.
    Format,
    /// Lengths that do not add up (truncated or padded value).
    Length,
    /// Checksum mismatch.
    Checksum,
    /// Metadata that does not decode, or a header that no longer parses.
    Meta,
    /// The value is another key's (a key layout bug, or a foreign writer).
    Key,
}

/// The entry a value holds for `key`: its body is a slice of `value` (no copy).
pub fn decode(value: Bytes, key: &CacheKeyRef<'_>) -> Result<CachedObject, Corrupt> {
    let v = &value[..];
    if v.len() < HEADER_BYTES || v[0..8] != MAGIC || v[8..10] != 200u16.to_le_bytes() {
        return Err(Corrupt::Format);
    }
    let meta_len = u32::from_le_bytes(v[10..14].try_into().unwrap_or_default()) as usize;
    let body_len = u64::from_le_bytes(v[14..22].try_into().unwrap_or_default());
    let body_at = HEADER_BYTES.checked_add(meta_len).ok_or(Corrupt::Length)?;
    let declared = (meta_len as u64)
        .checked_add(body_len)
        .ok_or(Corrupt::Length)?;
    if (v.len() - HEADER_BYTES) as u64 != declared || body_at > v.len() {
        return Err(Corrupt::Length);
    }
    let stored = u64::from_le_bytes(v[22..30].try_into().unwrap_or_default());
    if checksum(&v[..22], &v[HEADER_BYTES..body_at], &v[body_at..]) != stored {
        return Err(Corrupt::Checksum);
    }
    let meta: EntryMeta = decode_entry_meta(&v[HEADER_BYTES..body_at]).ok_or(Corrupt::Meta)?;
    if meta.bucket.as_bytes() != key.bucket
        || meta.key != key.key
        || meta.version_id.as_deref().map(str::as_bytes) != key.version_id
    {
        return Err(Corrupt::Key);
    }
    meta.to_object(value.slice(body_at..)).ok_or(Corrupt::Meta)
}

fn checksum(head: &[u8], meta: &[u8], body: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(head);
    h.update(meta);
    h.update(body);
    h.digest()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::HeaderValue;

    use super::*;

    fn sample(len: usize) -> (CacheKey, CachedObject) {
        let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let headers = vec![(http::header::ETAG, HeaderValue::from_static("\"e1\""))];
        (
            CacheKey::new("media", b"dir/a*b.png", None),
            CachedObject::new(
                body.into(),
                headers,
                SystemTime::now(),
                Duration::from_secs(60),
            ),
        )
    }

    #[test]
    fn a_value_round_trips_with_its_headers_and_freshness() {
        for len in [0, 1, 1000, 70_000] {
            let (key, obj) = sample(len);
            let v = encode(&key, &obj);
            let back = decode(Bytes::from(v), &key.as_ref_key()).expect("decodes");
            assert_eq!(back.body, obj.body);
            assert_eq!(back.etag, obj.etag);
            assert_eq!(back.headers, obj.headers);
            assert_eq!(
                back.expires_at
                    .duration_since(obj.expires_at)
                    .unwrap_or_default(),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn any_flipped_byte_truncation_or_foreign_key_is_corrupt() {
        let (key, obj) = sample(300);
        let v = encode(&key, &obj);
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(Bytes::from(bad), &key.as_ref_key()).is_err(),
                "byte {i}"
            );
        }
        for cut in [0, 10, HEADER_BYTES, v.len() - 1] {
            let bad = v[..cut].to_vec();
            assert!(
                decode(Bytes::from(bad), &key.as_ref_key()).is_err(),
                "cut {cut}"
            );
        }
        let other = CacheKey::new("media", b"dir/other", None);
        assert_eq!(
            decode(Bytes::from(v.clone()), &other.as_ref_key()).err(),
            Some(Corrupt::Key)
        );
        assert_eq!(
            decode(Bytes::from_static(b"garbage"), &key.as_ref_key()).err(),
            Some(Corrupt::Format)
        );
        // Lengths chosen to overflow: refused, not a panic.
        let mut huge = v.clone();
        huge[14..22].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            decode(Bytes::from(huge), &key.as_ref_key()).err(),
            Some(Corrupt::Length)
        );
    }

    #[test]
    fn keys_carry_bucket_key_and_version_and_patterns_escape_globs() {
        let k = CacheKeyRef::new("b", b"a*b", Some("v9"));
        assert_eq!(redis_key("p:", &k), b"p:obj:b:a*b\0v:v9".to_vec());
        assert_eq!(
            match_prefix(b"p:obj:b:a*[x]"),
            b"p:obj:b:a\\*\\[x\\]*".to_vec()
        );
    }
}

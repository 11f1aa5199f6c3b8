//! The on-disk format of a disk shard: region headers, records (entries and the fillers of
//! streamed entries not yet sealed), each checked by XXH3-64 checksums over its header and over
//! every 64 KiB block of its body, and the slots of the purge journal. Pure functions over byte slices: no I/O, `Send`, fuzzable.
//!
//! Cost: encoding copies the body once into an aligned buffer and hashes it (XXH3 ~20 GB/s);
//! decoding a header is one bincode pass over ~200-500 bytes of metadata; verifying a block is
//! one XXH3 pass over it. Hot path of disk hits (decode + verify) and of disk fills (encode).
//!
//! # Layout (little endian)
//!
//! A region starts with one [`ALIGN`]-byte region header:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `YATAREG1` |
//! | 8..16 | region generation (bumped each time the region is reused) |
//! | 16..24 | region index |
//! | 24..32 | XXH3-64 of bytes 0..24 |
//!
//! Records follow it, each starting at an [`ALIGN`]-aligned offset:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `YATADSK1` |
//! | 8..16 | sequence number (per shard, increasing: later records win) |
//! | 16..24 | the region generation the record was written in |
//! | 24..32 | record length, bytes (a multiple of [`ALIGN`]) |
//! | 32..40 | body length, bytes |
//! | 40..44 | metadata length, bytes |
//! | 44..48 | body blocks (`ceil(body / BLOCK)`) |
//! | 48..52 | body offset from the record start |
//! | 52 | kind: 0 entry, 2 filler (space of a streamed entry not sealed); 1 is unused |
//! | 56..64 | XXH3-64 of bytes 0..56, the metadata and the block table |
//! | 64.. | metadata (bincode 2, standard config), then one XXH3-64 per body block, then the body |
//!
//! A record is valid only if its magic, header checksum and region generation match; a body
//! block is served only if its checksum matches. So a torn write, a record of the region's
//! previous use, a flipped byte or a truncated file is a miss, never a wrong byte.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

pub use super::aligned::{align_up, AlignedBuf, ALIGN};
use crate::cache::{CacheKey, CachedObject, PurgeScope};

/// Body bytes covered by one checksum, bytes. A Range read verifies whole blocks, so it reads
/// at most one block more than asked on each side.
pub const BLOCK: usize = 64 * 1024;

/// Bytes of the fixed part of a record header.
pub const FIXED_BYTES: usize = 64;

const RECORD_MAGIC: [u8; 8] = *b"YATADSK1";
const PURGE_MAGIC: [u8; 8] = *b"YATAPRG1";
const REGION_MAGIC: [u8; 8] = *b"YATAREG1";

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A cached response.
    Entry,
    /// Space reserved for a streamed entry not (yet) sealed: the scan steps over it.
    Filler,
}

/// The fixed part of a record header, as read (checksum not yet verified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixed {
    /// Sequence number.
    pub seq: u64,
    /// Region generation when written.
    pub region_gen: u64,
    /// Whole record, bytes (multiple of [`ALIGN`]).
    pub record_len: u64,
    /// Body, bytes.
    pub body_len: u64,
    /// Metadata, bytes.
    pub meta_len: u32,
    /// Body blocks.
    pub blocks: u32,
    /// Where the body starts, from the record start.
    pub body_offset: u32,
    /// Entry or filler.
    pub kind: Kind,
}

/// Stored metadata of an entry: its key and the response it replays.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Config bucket name.
    pub bucket: String,
    /// Object key bytes.
    pub key: Vec<u8>,
    /// versionId, if any.
    pub version_id: Option<String>,
    /// Pass-through headers, in stored order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `stored_at`, nanoseconds since the Unix epoch.
    pub stored_at_ns: u64,
    /// `expires_at`, nanoseconds since the Unix epoch.
    pub expires_at_ns: u64,
}

/// What a purge removed (a purge journal slot's scope).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum TombScope {
    /// Everything.
    All,
    /// One config bucket.
    Bucket(String),
    /// Every version of one object key of one bucket.
    Object(String, Vec<u8>),
}

impl From<&PurgeScope> for TombScope {
    fn from(s: &PurgeScope) -> Self {
        match s {
            PurgeScope::All => TombScope::All,
            PurgeScope::Bucket(b) => TombScope::Bucket(b.clone()),
            PurgeScope::Object(b, k) => TombScope::Object(b.clone(), k.clone()),
        }
    }
}

impl TombScope {
    /// Whether the purge covers `key`.
    pub fn covers(&self, key: &CacheKey) -> bool {
        match self {
            TombScope::All => true,
            TombScope::Bucket(b) => key.bucket_bytes() == b.as_bytes(),
            TombScope::Object(b, k) => key.bucket_bytes() == b.as_bytes() && key.key() == &k[..],
        }
    }
}

/// A record's decoded, checksum-verified header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The fixed part.
    pub fixed: Fixed,
    /// Entry metadata (kind Entry), or nothing (a filler).
    pub meta: Meta,
    /// One XXH3-64 per body block.
    pub table: Vec<u64>,
}

/// The metadata of either kind of record.
#[derive(Debug, Clone)]
pub enum Meta {
    /// An entry.
    Entry(EntryMeta),
    /// Reserved space to step over.
    Filler,
}

/// Why a header or block did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    /// No record here (wrong magic: never written, or overwritten).
    #[error("no record magic")]
    NoRecord,
    /// The buffer ends before the header does (read more).
    #[error("header longer than the bytes read")]
    Short,
    /// A checksum, a length or the metadata does not verify.
    #[error("checksum or length mismatch")]
    Checksum,
}

fn ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// `SystemTime` from nanoseconds since the epoch.
pub fn from_ns(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The region header of region `index` at generation `gen` (one [`ALIGN`]-byte buffer).
pub fn encode_region_header(gen: u64, index: u64) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(ALIGN);
    let b = buf.as_mut_full();
    b[0..8].copy_from_slice(&REGION_MAGIC);
    b[8..16].copy_from_slice(&gen.to_le_bytes());
    b[16..24].copy_from_slice(&index.to_le_bytes());
    let sum = xxh3_64(&b[0..24]);
    b[24..32].copy_from_slice(&sum.to_le_bytes());
    buf.set_len(ALIGN);
    buf
}

/// The generation in a region header for region `index`, or `None` (never written, torn,
/// another region's).
pub fn decode_region_header(b: &[u8], index: u64) -> Option<u64> {
    if b.len() < 32 || b[0..8] != REGION_MAGIC {
        return None;
    }
    let sum = u64::from_le_bytes(b[24..32].try_into().ok()?);
    if sum != xxh3_64(&b[0..24]) || u64::from_le_bytes(b[16..24].try_into().ok()?) != index {
        return None;
    }
    Some(u64::from_le_bytes(b[8..16].try_into().ok()?))
}

/// Bytes an entry for `key` and `obj` takes on disk (what [`encode_entry`] allocates).
pub fn entry_record_len(key: &CacheKey, obj: &CachedObject) -> usize {
    record_len_for(entry_meta_bytes(key, obj).len(), obj.body.len())
}

/// Bytes a compact record (body right after its header) takes for `meta_len` bytes of
/// metadata and a `body_len`-byte body.
pub fn record_len_for(meta_len: usize, body_len: usize) -> usize {
    align_up(FIXED_BYTES + meta_len + 8 * body_len.div_ceil(BLOCK) + body_len)
}

fn meta_of(key: &CacheKey, obj: &CachedObject) -> EntryMeta {
    EntryMeta {
        bucket: key.bucket().to_owned(),
        key: key.key().to_vec(),
        version_id: key.version_id().map(str::to_owned),
        headers: obj
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        stored_at_ns: ns(obj.stored_at),
        expires_at_ns: ns(obj.expires_at),
    }
}

/// The record of entry (`key`, `obj`) with sequence `seq` in a region at generation `gen`: one
/// aligned buffer of the whole record (its length is the record length).
pub fn encode_entry(seq: u64, gen: u64, key: &CacheKey, obj: &CachedObject) -> AlignedBuf {
    encode_entry_with(seq, gen, &entry_meta_bytes(key, obj), &obj.body)
}

/// [`encode_entry`] from metadata already encoded ([`entry_meta_bytes`]; its length sized the
/// reservation, [`record_len_for`]).
pub fn encode_entry_with(seq: u64, gen: u64, meta: &[u8], body: &[u8]) -> AlignedBuf {
    let blocks = body.len().div_ceil(BLOCK);
    let body_offset = FIXED_BYTES + meta.len() + 8 * blocks;
    let record_len = record_len_for(meta.len(), body.len());
    let mut buf = AlignedBuf::zeroed(record_len);
    let b = buf.as_mut_full();
    b[body_offset..body_offset + body.len()].copy_from_slice(body);
    let table: Vec<u64> = body.chunks(BLOCK).map(xxh3_64).collect();
    let fixed = Fixed {
        seq,
        region_gen: gen,
        record_len: record_len as u64,
        body_len: body.len() as u64,
        meta_len: meta.len() as u32,
        blocks: blocks as u32,
        body_offset: body_offset as u32,
        kind: Kind::Entry,
    };
    put_header(b, &fixed, meta, &table);
    buf.set_len(record_len);
    buf
}

/// Write a record header into `b`: the fixed part, `meta`, the block `table`, and the header
/// checksum over them (the one layout every kind of record shares).
fn put_header(b: &mut [u8], f: &Fixed, meta: &[u8], table: &[u64]) {
    b[0..8].copy_from_slice(&RECORD_MAGIC);
    b[8..16].copy_from_slice(&f.seq.to_le_bytes());
    b[16..24].copy_from_slice(&f.region_gen.to_le_bytes());
    b[24..32].copy_from_slice(&f.record_len.to_le_bytes());
    b[32..40].copy_from_slice(&f.body_len.to_le_bytes());
    b[40..44].copy_from_slice(&f.meta_len.to_le_bytes());
    b[44..48].copy_from_slice(&f.blocks.to_le_bytes());
    b[48..52].copy_from_slice(&f.body_offset.to_le_bytes());
    b[52] = match f.kind {
        Kind::Entry => 0,
        Kind::Filler => 2,
    };
    b[FIXED_BYTES..FIXED_BYTES + meta.len()].copy_from_slice(meta);
    let table_at = FIXED_BYTES + meta.len();
    for (i, sum) in table.iter().enumerate() {
        let at = table_at + 8 * i;
        b[at..at + 8].copy_from_slice(&sum.to_le_bytes());
    }
    let sum = header_sum(b, f.body_offset as usize);
    b[56..64].copy_from_slice(&sum.to_le_bytes());
}

/// The bincode metadata of entry (`key`, `obj`) (what a streamed record's header carries).
pub fn entry_meta_bytes(key: &CacheKey, obj: &CachedObject) -> Vec<u8> {
    bincode::serde::encode_to_vec(meta_of(key, obj), bincode_cfg()).unwrap_or_default()
}

/// Decode bincode metadata written by [`entry_meta_bytes`] (the Redis tier stores the same
/// metadata in its values); `None` when it does not decode or has bytes left over.
pub fn decode_entry_meta(b: &[u8]) -> Option<EntryMeta> {
    match bincode::serde::decode_from_slice::<EntryMeta, _>(b, bincode_cfg()) {
        Ok((meta, used)) if used == b.len() => Some(meta),
        _ => None,
    }
}

/// Layout of a streamed record (its body written in aligned pieces as it arrives, its header
/// last): (body offset, record length), bytes, for `meta_len` bytes of metadata and a body of
/// `body_len`. The body starts at an [`ALIGN`]-aligned offset.
pub fn streamed_layout(meta_len: usize, body_len: u64) -> (usize, u64) {
    let blocks = body_len.div_ceil(BLOCK as u64) as usize;
    let body_offset = align_up(FIXED_BYTES + meta_len + 8 * blocks);
    (
        body_offset,
        align_up(body_offset + body_len as usize) as u64,
    )
}

/// The header of a streamed entry record: `body_offset` bytes (from [`streamed_layout`]) holding
/// the fixed part, `meta` and the block `table` of a body of `body_len` bytes.
pub fn encode_streamed_header(
    seq: u64,
    gen: u64,
    meta: &[u8],
    table: &[u64],
    body_len: u64,
) -> AlignedBuf {
    let (body_offset, record_len) = streamed_layout(meta.len(), body_len);
    let mut buf = AlignedBuf::zeroed(body_offset);
    let fixed = Fixed {
        seq,
        region_gen: gen,
        record_len,
        body_len,
        meta_len: meta.len() as u32,
        blocks: table.len() as u32,
        body_offset: body_offset as u32,
        kind: Kind::Entry,
    };
    put_header(buf.as_mut_full(), &fixed, meta, table);
    buf.set_len(body_offset);
    buf
}

/// A filler record header for `record_len` reserved bytes (one [`ALIGN`] block): written
/// when a streamed entry's space is reserved, replaced by the entry's header when it is sealed,
/// so the start-up scan can step over an entry a crash or an abandoned stream left unsealed.
pub fn encode_filler(seq: u64, gen: u64, record_len: u64) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(ALIGN);
    let fixed = Fixed {
        seq,
        region_gen: gen,
        record_len,
        body_len: 0,
        meta_len: 0,
        blocks: 0,
        body_offset: FIXED_BYTES as u32,
        kind: Kind::Filler,
    };
    put_header(buf.as_mut_full(), &fixed, &[], &[]);
    buf.set_len(ALIGN);
    buf
}

/// One entry of a shard's purge journal (`purges`, one [`ALIGN`]-byte slot per purge): magic
/// `YATAPRG1`, the purge's sequence number, the bincode scope's length and bytes, and an XXH3-64
/// of the slot's first 4088 bytes in its last 8. A scope too long for a slot (an object key of
/// several KiB) is journaled as its whole bucket, which purges more, never less.
pub fn encode_purge(seq: u64, scope: &TombScope) -> AlignedBuf {
    let mut bytes = bincode::serde::encode_to_vec(scope, bincode_cfg()).unwrap_or_default();
    if bytes.len() > ALIGN - 32 {
        let bucket = match scope {
            TombScope::Object(b, _) | TombScope::Bucket(b) => TombScope::Bucket(b.clone()),
            TombScope::All => TombScope::All,
        };
        bytes = bincode::serde::encode_to_vec(&bucket, bincode_cfg()).unwrap_or_default();
        if bytes.len() > ALIGN - 32 {
            bytes =
                bincode::serde::encode_to_vec(TombScope::All, bincode_cfg()).unwrap_or_default();
        }
    }
    let mut buf = AlignedBuf::zeroed(ALIGN);
    let b = buf.as_mut_full();
    b[0..8].copy_from_slice(&PURGE_MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..20].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    b[20..20 + bytes.len()].copy_from_slice(&bytes);
    let sum = xxh3_64(&b[..ALIGN - 8]);
    b[ALIGN - 8..].copy_from_slice(&sum.to_le_bytes());
    buf.set_len(ALIGN);
    buf
}

/// A purge journal slot: (sequence number, scope), or why not (any damage, a torn write or a
/// slot never written included: the journal has no gaps, so every slot must decode).
pub fn decode_purge(b: &[u8]) -> Result<(u64, TombScope), Corrupt> {
    if b.len() < ALIGN {
        return Err(Corrupt::Short);
    }
    if b[0..8] != PURGE_MAGIC {
        return Err(Corrupt::NoRecord);
    }
    if u64_at(b, ALIGN - 8) != xxh3_64(&b[..ALIGN - 8]) {
        return Err(Corrupt::Checksum);
    }
    let len = u32_at(b, 16) as usize;
    let scope = b.get(20..20 + len).ok_or(Corrupt::Checksum)?;
    let scope = bincode::serde::decode_from_slice(scope, bincode_cfg())
        .map_err(|_| Corrupt::Checksum)?
        .0;
    Ok((u64_at(b, 8), scope))
}

fn header_sum(b: &[u8], body_offset: usize) -> u64 {
    let mut h = Xxh3::new();
    h.update(&b[0..56]);
    h.update(&b[FIXED_BYTES..body_offset]);
    h.digest()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

/// The fixed part of the record at the start of `b`, if it has the magic and sane lengths
/// (its checksum is checked by [`decode_header`]).
pub fn peek_fixed(b: &[u8]) -> Result<Fixed, Corrupt> {
    if b.len() < FIXED_BYTES {
        return Err(Corrupt::Short);
    }
    if b[0..8] != RECORD_MAGIC {
        return Err(Corrupt::NoRecord);
    }
    let f = Fixed {
        seq: u64_at(b, 8),
        region_gen: u64_at(b, 16),
        record_len: u64_at(b, 24),
        body_len: u64_at(b, 32),
        meta_len: u32_at(b, 40),
        blocks: u32_at(b, 44),
        body_offset: u32_at(b, 48),
        kind: match b[52] {
            0 => Kind::Entry,
            2 => Kind::Filler,
            _ => return Err(Corrupt::Checksum),
        },
    };
    if f.kind == Kind::Filler {
        let sane = f.body_len == 0
            && f.meta_len == 0
            && f.blocks == 0
            && f.body_offset as usize == FIXED_BYTES
            && f.record_len >= ALIGN as u64
            && f.record_len.is_multiple_of(ALIGN as u64);
        return if sane { Ok(f) } else { Err(Corrupt::Checksum) };
    }
    let header = FIXED_BYTES as u64 + f.meta_len as u64 + 8 * f.blocks as u64;
    // The body follows the header at once, or (a streamed record) at the next aligned offset.
    let sane = f.body_offset as u64 >= header
        && f.body_offset as u64 <= align_up(header as usize) as u64
        && f.blocks as u64 == f.body_len.div_ceil(BLOCK as u64)
        && f.record_len == align_up((f.body_offset as u64 + f.body_len) as usize) as u64
        && f.record_len.is_multiple_of(ALIGN as u64);
    if !sane {
        return Err(Corrupt::Checksum);
    }
    Ok(f)
}

/// Decode and verify the header of the record at the start of `b` (`b` must reach the body
/// offset: else [`Corrupt::Short`], read more and retry).
pub fn decode_header(b: &[u8]) -> Result<Header, Corrupt> {
    let fixed = peek_fixed(b)?;
    let body_offset = fixed.body_offset as usize;
    if b.len() < body_offset {
        return Err(Corrupt::Short);
    }
    if u64_at(b, 56) != header_sum(b, body_offset) {
        return Err(Corrupt::Checksum);
    }
    let meta_bytes = &b[FIXED_BYTES..FIXED_BYTES + fixed.meta_len as usize];
    let meta = match fixed.kind {
        Kind::Filler => Meta::Filler,
        Kind::Entry => Meta::Entry(
            bincode::serde::decode_from_slice(meta_bytes, bincode_cfg())
                .map_err(|_| Corrupt::Checksum)?
                .0,
        ),
    };
    let table_at = FIXED_BYTES + fixed.meta_len as usize;
    let table = (0..fixed.blocks as usize)
        .map(|i| u64_at(b, table_at + 8 * i))
        .collect();
    Ok(Header { fixed, meta, table })
}

/// Whether body blocks `first_block..` laid out in `data` (whole blocks, the last one possibly
/// short at the body's end) match `table`.
pub fn verify_blocks(table: &[u64], first_block: usize, data: &[u8]) -> bool {
    data.chunks(BLOCK)
        .enumerate()
        .all(|(i, chunk)| table.get(first_block + i) == Some(&xxh3_64(chunk)))
}

impl EntryMeta {
    /// The cache key this entry is stored under.
    pub fn cache_key(&self) -> CacheKey {
        CacheKey::new(&self.bucket, &self.key, self.version_id.as_deref())
    }

    /// The entry as served: stored headers (a header that no longer parses makes the whole
    /// entry unusable: `None`), `body` as given (the whole body, or empty for an entry served
    /// from disk in chunks).
    pub fn to_object(&self, body: Bytes) -> Option<CachedObject> {
        let mut headers = Vec::with_capacity(self.headers.len());
        for (n, v) in &self.headers {
            let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(v).ok()?;
            headers.push((name, value));
        }
        let mut obj = CachedObject::new(body, headers, from_ns(self.stored_at_ns), Duration::ZERO);
        obj.expires_at = from_ns(self.expires_at_ns);
        Some(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> (CacheKey, CachedObject) {
        let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let headers = vec![
            (http::header::ETAG, HeaderValue::from_static("\"abc\"")),
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("image/png"),
            ),
        ];
        let now = SystemTime::now();
        (
            CacheKey::new("media", b"a/b c.png", Some("v1")),
            CachedObject::new(body.into(), headers, now, Duration::from_secs(60)),
        )
    }

    #[test]
    fn an_entry_round_trips_and_every_block_verifies() {
        for len in [0, 1, 4096, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
            let (key, obj) = sample(len);
            let buf = encode_entry(7, 3, &key, &obj);
            assert_eq!(buf.len(), entry_record_len(&key, &obj));
            let h = decode_header(buf.as_ref()).expect("decodes");
            assert_eq!((h.fixed.seq, h.fixed.region_gen), (7, 3));
            assert_eq!(h.fixed.body_len, len as u64);
            let Meta::Entry(m) = h.meta else {
                panic!("entry")
            };
            assert_eq!(m.cache_key(), key);
            let off = h.fixed.body_offset as usize;
            let body = &buf.as_ref()[off..off + len];
            assert_eq!(body, &obj.body[..]);
            assert!(verify_blocks(&h.table, 0, body));
            let back = m.to_object(Bytes::copy_from_slice(body)).expect("object");
            assert_eq!(back.etag, obj.etag);
            assert_eq!(back.headers, obj.headers);
            assert_eq!(ns(back.expires_at), ns(obj.expires_at));
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (key, obj) = sample(BLOCK + 100);
        let clean = encode_entry(1, 1, &key, &obj);
        let off = decode_header(clean.as_ref()).unwrap().fixed.body_offset as usize;
        let end = off + obj.body.len();
        // Every byte of the header and a stride of the body.
        let positions = (0..off).chain((off..end).step_by(97));
        for at in positions {
            let mut bad = AlignedBuf::zeroed(clean.len());
            bad.as_mut_full()[..clean.len()].copy_from_slice(clean.as_ref());
            bad.set_len(clean.len());
            bad.as_mut_full()[at] ^= 0x20;
            let ok = match decode_header(bad.as_ref()) {
                Err(_) => false,
                Ok(h) => verify_blocks(&h.table, 0, &bad.as_ref()[off..end]),
            };
            assert!(!ok, "flip at {at} went unnoticed");
        }
    }

    #[test]
    fn a_streamed_record_decodes_like_an_encoded_one() {
        // Lengths where the aligned body offset changes the record length, and where it does not.
        for len in [1, 4095, 20 * ALIGN + 1, 2 * BLOCK + 5, 5 * BLOCK + 4095] {
            let (key, obj) = sample(len);
            let meta = entry_meta_bytes(&key, &obj);
            let table: Vec<u64> = obj.body.chunks(BLOCK).map(xxh3_64).collect();
            let head = encode_streamed_header(4, 2, &meta, &table, obj.body.len() as u64);
            let (off, record_len) = streamed_layout(meta.len(), obj.body.len() as u64);
            assert_eq!(off % ALIGN, 0);
            let mut rec = AlignedBuf::zeroed(record_len as usize);
            rec.as_mut_full()[..off].copy_from_slice(head.as_ref());
            rec.as_mut_full()[off..off + obj.body.len()].copy_from_slice(&obj.body);
            rec.set_len(record_len as usize);
            let h = decode_header(rec.as_ref()).expect("decodes");
            assert_eq!(h.fixed.body_offset as usize, off);
            assert_eq!(h.fixed.record_len, record_len);
            assert!(verify_blocks(
                &h.table,
                0,
                &rec.as_ref()[off..off + obj.body.len()]
            ));
            let filler = encode_filler(3, 2, record_len);
            let f = decode_header(filler.as_ref()).expect("filler decodes");
            assert_eq!(
                (f.fixed.kind, f.fixed.record_len),
                (Kind::Filler, record_len)
            );
        }
    }

    #[test]
    fn a_purge_slot_round_trips_and_every_flip_is_detected() {
        let scope = TombScope::Object("media".into(), b"a/b.png".to_vec());
        let slot = encode_purge(77, &scope);
        assert_eq!(decode_purge(slot.as_ref()), Ok((77, scope)));
        for at in [0, 7, 8, 16, 20, 30, 100, ALIGN - 9, ALIGN - 1] {
            let mut bad = slot.as_ref().to_vec();
            bad[at] ^= 0x01;
            assert!(decode_purge(&bad).is_err(), "flip at {at}");
        }
        let huge = TombScope::Object("b".into(), vec![b'k'; 8000]);
        assert_eq!(
            decode_purge(encode_purge(1, &huge).as_ref()),
            Ok((1, TombScope::Bucket("b".into())))
        );
    }

    #[test]
    fn a_truncated_header_is_short_and_a_region_header_round_trips() {
        let (key, obj) = sample(10);
        let t = encode_entry(9, 2, &key, &obj);
        assert_eq!(
            decode_header(&t.as_ref()[..40]).unwrap_err(),
            Corrupt::Short
        );
        let r = encode_region_header(5, 3);
        assert_eq!(decode_region_header(r.as_ref(), 3), Some(5));
        assert_eq!(decode_region_header(r.as_ref(), 4), None);
    }
}

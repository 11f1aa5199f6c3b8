//! Start-up of the disk tier, off the cores: the directory layout under `cache.disk.cache_dir`
//! (one subdirectory per shard), the geometry of each shard's data file, and the scan that
//! rebuilds each shard's index from its records. Also the `--check` probe of the directory.
//!
//! Not on the hot path: runs once on the main thread before the shards start (one scan thread
//! per shard). Cost of the scan: one 1 MiB `O_DIRECT` read per MiB of small records and one
//! read per large record (headers only; bodies are verified when read), then a sort of the
//! records found; `benches/disk.rs` reports 100k entries.
//!
//! # Layout
//!
//! ```text
//! cache_dir/
//!   shard-0-of-2/format   one line: format version and geometry (region size, region count)
//!   shard-0-of-2/data     regions x region_bytes, written as a ring of regions
//!   shard-0-of-2/purges   the purge journal: one 4 KiB checksummed slot per purge, compacted
//!                         at start; a damaged journal empties the shard (a purge it held
//!                         must never be forgotten)
//!   shard-1-of-2/...
//! ```
//!
//! Ownership is `owner_of(bucket, key) mod shards`, so a shard directory is only valid for the
//! shard count in its name: directories for another count are deleted at start (the objects are
//! fetched again from S3; a rehash would read every entry). A `format` line that does not
//! match the configured geometry (the size changed) empties that shard's data file. Nothing
//! requires the configured size to be free: the data file grows as it is written.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::aligned::{align_down, AlignedBuf, ALIGN};
use super::format::{self, Corrupt, Meta};
use crate::cache::CacheKey;
use crate::config::DiskCacheConfig;

/// Version of the on-disk format, in each shard's `format` file.
pub const FORMAT_VERSION: u32 = 1;

/// Largest region, bytes: the largest object the disk tier stores is a little less.
pub const MAX_REGION_BYTES: u64 = 1 << 30;

/// Smallest region, bytes.
pub const MIN_REGION_BYTES: u64 = 1 << 20;

/// Bytes of each shard's budget kept for its `format` file, its purge journal and directory
/// entries.
pub const SLACK_BYTES: u64 = 1 << 20;

/// Largest body a fill assembles in memory before the disk tier writes it, bytes; larger
/// bodies stream to disk as they pass through ([`super::DiskTier::stream_begin`]).
pub const FILL_BUFFER_MAX: u64 = 64 << 20;

/// Bytes read per scan step.
const SCAN_WINDOW: usize = 1 << 20;

/// How one shard's data file is cut into regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per region (a multiple of [`ALIGN`]).
    pub region_bytes: u64,
    /// Regions in the file.
    pub regions: usize,
}

impl Geometry {
    /// The geometry for a shard's `share` of the node's disk budget, bytes: regions of a
    /// quarter of the share (so four regions at least), between [`MIN_REGION_BYTES`] and
    /// [`MAX_REGION_BYTES`]. `None` when the share is smaller than one region.
    pub fn for_share(share: u64) -> Option<Geometry> {
        let usable = share.checked_sub(SLACK_BYTES)?;
        let region_bytes = align_down((usable / 4).clamp(MIN_REGION_BYTES, MAX_REGION_BYTES));
        let regions = (usable / region_bytes) as usize;
        (regions >= 1).then_some(Geometry {
            region_bytes,
            regions,
        })
    }

    /// Bytes the data file may reach.
    pub fn data_bytes(&self) -> u64 {
        self.region_bytes * self.regions as u64
    }

    /// Largest record a region holds (the region header takes one block).
    pub fn max_record(&self) -> u64 {
        self.region_bytes - ALIGN as u64
    }

    fn line(&self) -> String {
        format!(
            "yatagarasu-disk v{FORMAT_VERSION} region_bytes={} regions={}\n",
            self.region_bytes, self.regions
        )
    }
}

/// One region as the scan found it.
#[derive(Clone, Debug)]
pub struct RegionSeed {
    /// Its generation, when its header is valid (`None`: empty or unreadable, reused first).
    pub gen: Option<u64>,
    /// Where the next record goes, from the region start (after the last valid record).
    pub write_pos: u64,
}

/// One live entry the scan found (the journal's purges applied).
#[derive(Clone, Debug)]
pub struct ScannedEntry {
    /// Its key.
    pub key: CacheKey,
    /// Sequence number.
    pub seq: u64,
    /// Record start in the data file, bytes.
    pub pos: u64,
    /// Record length, bytes.
    pub record_len: u64,
    /// Body length, bytes.
    pub body_len: u64,
    /// Body offset in the record, bytes.
    pub body_offset: u32,
    /// Region index.
    pub region: usize,
}

/// What one shard's disk tier starts from: its file, geometry and scanned state. `Send`:
/// built off the cores, moved to the shard.
pub struct ShardSeed {
    /// The shard's directory.
    pub dir: PathBuf,
    /// The data file (`O_DIRECT` when the filesystem allows it).
    pub file: Arc<std::fs::File>,
    /// The purge journal (`purges`: one 4 KiB slot per purge, no gaps).
    pub journal: Arc<std::fs::File>,
    /// The journal's purges that may still matter (compacted at start), in slot order.
    pub purges: Vec<(u64, format::TombScope)>,
    /// Its geometry.
    pub geometry: Geometry,
    /// Per region, what the scan found.
    pub regions: Vec<RegionSeed>,
    /// Live entries.
    pub entries: Vec<ScannedEntry>,
    /// The first sequence number to use (greater than every one on disk).
    pub next_seq: u64,
    /// How long the scan took.
    pub scan_time: Duration,
    /// Whether the file was opened with `O_DIRECT`.
    pub direct: bool,
}

/// The disk tier of the node: every shard's seed (index = shard).
pub struct DiskNode {
    /// Per shard.
    pub shards: Vec<ShardSeed>,
    /// Largest body a fill assembles in memory for the disk tier, bytes (`max_item_size_mb`,
    /// at most what a region holds and [`FILL_BUFFER_MAX`]); larger ones up to the region (and
    /// `max_item_size_mb`, [`DiskNode::max_stream_bytes`]) are streamed.
    pub max_item_bytes: u64,
    /// Largest body stored at all, bytes: `max_item_size_mb`, at most a region less its header.
    pub max_stream_bytes: u64,
}

/// The shard directory name for shard `i` of `n`.
pub fn shard_dir_name(i: usize, n: usize) -> String {
    format!("shard-{i}-of-{n}")
}

/// `--check` and start: `dir` exists or can be created, and a file can be written in it.
/// Errors name the path and the reason.
#[allow(clippy::disallowed_methods)] // start-up / --check, off the shards
pub fn check_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cache.disk.cache_dir: cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(".yatagarasu-probe");
    let written = std::fs::write(&probe, b"probe");
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| {
        format!(
            "cache.disk.cache_dir: cannot write in {}: {e}",
            dir.display()
        )
    })
}

/// `--check`: what [`open`] would refuse, without touching the data: `cache_dir` cannot be
/// created or written, or `max_disk_cache_size_mb` gives a shard less than one region.
pub fn check(cfg: &DiskCacheConfig, shards: usize) -> Result<(), String> {
    if !cfg.enabled {
        return Ok(());
    }
    check_dir(&cfg.cache_dir)?;
    geometry_for(cfg, shards.max(1)).map(|_| ())
}

fn geometry_for(cfg: &DiskCacheConfig, shards: usize) -> Result<Geometry, String> {
    let share = cfg.max_disk_cache_size_mb * (1 << 20) / shards as u64;
    Geometry::for_share(share).ok_or_else(|| {
        format!(
            "cache.disk.max_disk_cache_size_mb: {} MiB gives each of {shards} shards less than \
             one {} MiB region and the 1 MiB journal",
            cfg.max_disk_cache_size_mb,
            MIN_REGION_BYTES >> 20
        )
    })
}

/// Open (creating what is missing) and scan the disk tier for `shards` shards. `None` when the
/// tier is off. Errors: the directory cannot be created or written, a shard's file cannot be
/// opened, or the budget is smaller than one region per shard; each names the path or key.
#[allow(clippy::disallowed_methods)] // start-up, off the shards
pub fn open(cfg: &DiskCacheConfig, shards: usize) -> Result<Option<DiskNode>, String> {
    if !cfg.enabled {
        return Ok(None);
    }
    let shards = shards.max(1);
    check_dir(&cfg.cache_dir)?;
    let geometry = geometry_for(cfg, shards)?;
    drop_other_shard_counts(&cfg.cache_dir, shards);
    let seeds: Vec<Result<ShardSeed, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..shards)
            .map(|i| {
                let dir = cfg.cache_dir.join(shard_dir_name(i, shards));
                s.spawn(move || open_shard(&dir, geometry))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("disk scan thread panicked".into()))
            })
            .collect()
    });
    let shards = seeds.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Room for the record header (metadata, block table) in the region.
    let max_item_bytes = (cfg.max_item_size_mb * (1 << 20))
        .min(geometry.max_record() - (64 << 10))
        .min(FILL_BUFFER_MAX);
    let max_stream_bytes = (cfg.max_item_size_mb * (1 << 20)).min(geometry.max_record());
    Ok(Some(DiskNode {
        shards,
        max_item_bytes,
        max_stream_bytes,
    }))
}

/// The shard count `n` in a directory name `shard-<i>-of-<n>`, if it is one.
fn shard_count_of(name: &str) -> Option<usize> {
    let (i, n) = name.strip_prefix("shard-")?.split_once("-of-")?;
    i.parse::<usize>().ok()?;
    n.parse().ok()
}

/// Delete shard directories made for another shard count (their ownership no longer holds).
#[allow(clippy::disallowed_methods)] // start-up, off the shards
fn drop_other_shard_counts(root: &Path, shards: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(count) = shard_count_of(&name) else {
            continue;
        };
        if count != shards {
            tracing::warn!(dir = %e.path().display(), shards, "dropping a disk shard made for another shard count");
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove an old disk shard");
            }
        }
    }
}

/// Open shard directory `dir` for `geometry` and scan it.
#[allow(clippy::disallowed_methods)] // start-up, off the shards
pub fn open_shard(dir: &Path, geometry: Geometry) -> Result<ShardSeed, String> {
    let started = Instant::now();
    let err =
        |what: &str, e: io::Error| format!("cache.disk.cache_dir: {what} {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| err("cannot create", e))?;
    let data_path = dir.join("data");
    let (file, direct) = open_direct(&data_path).map_err(|e| err("cannot open", e))?;
    let journal_path = dir.join("purges");
    let (journal, _) = open_direct(&journal_path).map_err(|e| err("cannot open", e))?;
    let format_path = dir.join("format");
    let line = geometry.line();
    let same = std::fs::read_to_string(&format_path).is_ok_and(|l| l == line);
    if !same {
        // New, or made for another size: start empty.
        file.set_len(0).map_err(|e| err("cannot truncate", e))?;
        journal.set_len(0).map_err(|e| err("cannot truncate", e))?;
        let mut f = std::fs::File::create(&format_path).map_err(|e| err("cannot write", e))?;
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err("cannot write", e))?;
    }
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > geometry.data_bytes() {
        file.set_len(geometry.data_bytes())
            .map_err(|e| err("cannot truncate", e))?;
    }
    let purges = match read_journal(&journal) {
        Some(p) => p,
        None => {
            // A purge it recorded might be lost: nothing older may be trusted. Start empty.
            tracing::warn!(dir = %dir.display(), "disk tier: the purge journal is damaged; this shard starts empty");
            file.set_len(0).map_err(|e| err("cannot truncate", e))?;
            journal.set_len(0).map_err(|e| err("cannot truncate", e))?;
            Vec::new()
        }
    };
    let (regions, entries, max_seq) = scan(&file, geometry, &purges);
    let purges = compact_journal(&journal, &regions, purges).map_err(|e| err("cannot write", e))?;
    let max_seq = purges.iter().map(|(s, _)| *s).fold(max_seq, u64::max);
    let now_ns = format::from_ns(0)
        .elapsed()
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok(ShardSeed {
        dir: dir.to_owned(),
        file: Arc::new(file),
        journal: Arc::new(journal),
        purges,
        geometry,
        regions,
        entries,
        next_seq: (max_seq + 1).max(now_ns),
        scan_time: started.elapsed(),
        direct,
    })
}

/// Open `path` for reading and writing, created if missing, with `O_DIRECT` when the
/// filesystem allows it (else buffered, logged); whether it is direct.
#[allow(clippy::disallowed_methods)] // start-up, off the shards
fn open_direct(path: &Path) -> io::Result<(std::fs::File, bool)> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok((f, true)),
        // A filesystem without O_DIRECT (tmpfs before 6.6, some FUSE): buffered I/O, same format.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "O_DIRECT refused: the disk tier uses buffered I/O here (see kernel-notes.md)");
            Ok((o.open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Every purge in `journal`, in slot order; `None` when any slot does not verify (a torn or
/// flipped slot, or a length that is not whole slots): a purge may be lost.
pub fn read_journal(journal: &std::fs::File) -> Option<Vec<(u64, format::TombScope)>> {
    let len = journal.metadata().ok()?.len();
    if !len.is_multiple_of(ALIGN as u64) {
        return None;
    }
    let mut buf = AlignedBuf::zeroed((len as usize).max(ALIGN));
    let bytes = read_at(journal, &mut buf, 0, len as usize)?;
    if (bytes.len() as u64) < len {
        return None;
    }
    bytes[..len as usize]
        .chunks(ALIGN)
        .map(|slot| format::decode_purge(slot).ok())
        .collect()
}

/// Keep the purges that may still matter (not older than the oldest written region: every
/// entry the others could purge is gone) and rewrite the journal with them: slots first (a
/// crash meanwhile leaves older, still true purges after them), then the length.
#[allow(clippy::disallowed_methods)] // start-up, off the shards
fn compact_journal(
    journal: &std::fs::File,
    regions: &[RegionSeed],
    purges: Vec<(u64, format::TombScope)>,
) -> io::Result<Vec<(u64, format::TombScope)>> {
    let oldest = regions.iter().filter_map(|r| r.gen).min();
    let kept: Vec<_> = purges
        .into_iter()
        .filter(|(seq, _)| oldest.is_some_and(|g| *seq >= g))
        .collect();
    for (i, (seq, scope)) in kept.iter().enumerate() {
        journal.write_all_at(
            format::encode_purge(*seq, scope).as_ref(),
            (i * ALIGN) as u64,
        )?;
    }
    journal.set_len((kept.len() * ALIGN) as u64)?;
    Ok(kept)
}

/// A record found by the scan, or a journaled purge, before purges are applied.
enum Found {
    Entry(ScannedEntry),
    Tombstone(format::TombScope),
}

/// Scan every region of `file`: region headers, then records in order until the first that
/// does not verify. Returns the regions, the live entries (later records and the journal's
/// `purges` applied in sequence order) and the highest sequence number seen.
pub fn scan(
    file: &std::fs::File,
    geometry: Geometry,
    purges: &[(u64, format::TombScope)],
) -> (Vec<RegionSeed>, Vec<ScannedEntry>, u64) {
    let mut regions = Vec::with_capacity(geometry.regions);
    let mut found: Vec<(u64, Found)> = Vec::new();
    let mut max_seq = 0u64;
    let mut window = AlignedBuf::zeroed(SCAN_WINDOW);
    for r in 0..geometry.regions {
        let start = r as u64 * geometry.region_bytes;
        let end = start + geometry.region_bytes;
        let Some(gen) = read_at(file, &mut window, start, ALIGN)
            .and_then(|b| format::decode_region_header(b, r as u64))
        else {
            regions.push(RegionSeed {
                gen: None,
                write_pos: ALIGN as u64,
            });
            continue;
        };
        max_seq = max_seq.max(gen);
        let mut pos = start + ALIGN as u64;
        // `window` holds file bytes [win_at, win_at + win_len).
        let (mut win_at, mut win_len) = (0u64, 0usize);
        while pos < end {
            if pos < win_at || pos + format::FIXED_BYTES as u64 > win_at + win_len as u64 {
                let want = ((end - pos) as usize).min(SCAN_WINDOW);
                match read_at(file, &mut window, pos, want) {
                    Some(b) if !b.is_empty() => {
                        win_at = pos;
                        win_len = b.len();
                    }
                    _ => break,
                }
            }
            let at = (pos - win_at) as usize;
            let head = &window.as_ref()[at..win_len];
            let fixed = match format::peek_fixed(head) {
                Ok(f) if f.region_gen == gen && pos + f.record_len <= end => f,
                _ => break,
            };
            let header = match format::decode_header(head) {
                Ok(h) => h,
                Err(Corrupt::Short) => {
                    // A header longer than what the window holds: read it alone.
                    let mut big = AlignedBuf::zeroed(fixed.body_offset as usize);
                    let cap = big.capacity();
                    let Some(b) = read_at(file, &mut big, pos, cap) else {
                        break;
                    };
                    match format::decode_header(b) {
                        Ok(h) => h,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            max_seq = max_seq.max(fixed.seq);
            match header.meta {
                Meta::Entry(m) => found.push((
                    fixed.seq,
                    Found::Entry(ScannedEntry {
                        key: m.cache_key(),
                        seq: fixed.seq,
                        pos,
                        record_len: fixed.record_len,
                        body_len: fixed.body_len,
                        body_offset: fixed.body_offset,
                        region: r,
                    }),
                )),
                // A streamed entry never sealed (crash, abandoned stream): step over it.
                Meta::Filler => {}
            }
            pos += fixed.record_len;
        }
        regions.push(RegionSeed {
            gen: Some(gen),
            write_pos: pos - start,
        });
    }
    found.extend(
        purges
            .iter()
            .map(|(seq, scope)| (*seq, Found::Tombstone(scope.clone()))),
    );
    found.sort_unstable_by_key(|(seq, _)| *seq);
    let mut live: HashMap<CacheKey, ScannedEntry> = HashMap::new();
    for (_, f) in found {
        match f {
            Found::Entry(e) => {
                live.insert(e.key.clone(), e);
            }
            Found::Tombstone(scope) => live.retain(|k, _| !scope.covers(k)),
        }
    }
    (regions, live.into_values().collect(), max_seq)
}

/// Read `want` bytes (rounded up to [`ALIGN`]) at `pos` into `buf`; the bytes read (short at
/// the end of the file), or `None` on an error.
fn read_at<'b>(
    file: &std::fs::File,
    buf: &'b mut AlignedBuf,
    pos: u64,
    want: usize,
) -> Option<&'b [u8]> {
    let want = super::aligned::align_up(want).min(buf.capacity());
    let mut done = 0;
    while done < want {
        match file.read_at(&mut buf.as_mut_full()[done..want], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.set_len(done);
    let buf: &'b AlignedBuf = buf;
    Some(buf.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_directories_are_recognised_by_their_exact_count() {
        assert_eq!(shard_count_of(&shard_dir_name(1, 12)), Some(12));
        assert_eq!(shard_count_of("shard-0-of-2"), Some(2));
        assert_eq!(shard_count_of("shard-x-of-2"), None);
        assert_eq!(shard_count_of("shards"), None);
        assert_eq!(shard_count_of("shard-1-of-"), None);
    }

    #[test]
    fn geometry_keeps_files_within_the_share() {
        for mb in [2u64, 8, 16, 64, 1024, 10 * 1024] {
            let share = mb << 20;
            let g = Geometry::for_share(share).expect("a region fits");
            assert!(g.data_bytes() + SLACK_BYTES <= share, "{mb} MiB");
            assert!(g.region_bytes >= MIN_REGION_BYTES && g.region_bytes <= MAX_REGION_BYTES);
            assert_eq!(g.region_bytes % ALIGN as u64, 0);
        }
        assert!(Geometry::for_share(512 << 10).is_none());
    }
}

//! The disk tier: one partition per owner core, kept in one data file per shard under
//! `cache.disk.cache_dir`, read and written with `O_DIRECT` through the core's own io_uring
//! ring (the blocking pool under epoll), surviving restarts, never serving a wrong byte.
//!
//! # Structure, and why
//!
//! Each shard's data file is a ring of large **regions** (a quarter of the shard's share, 1 MiB
//! to 1 GiB). Records (an entry: header, metadata, block checksums, body) are appended to the current region; when it is full the oldest region is reused whole and
//! every entry in it leaves the in-memory index (FIFO eviction by region). This is the layout
//! of foyer's large-object engine and Traffic Server's cyclone buffer, chosen over a file per
//! object because:
//!
//! - writes are sequential appends into one preopened file: no `openat`/`renameat`/`unlinkat`
//!   per object (the latter two need Linux 5.11 in monoio, `mkdirat` 5.15; none is used here),
//!   no inode per 4 KiB object, no directory with a million entries;
//! - the size bound is exact by construction: the file never exceeds `regions x region_bytes`
//!   (plus a one-line `format` file), whatever the object sizes; nothing to count or fsck;
//! - eviction is free (forget a region) and a restart rebuilds the index by reading each
//!   region's headers in order (`node.rs`), so there is no index file to keep consistent.
//!
//! What it costs: FIFO instead of LRU. `benches/disk.rs` replays a Zipf(1.0) trace at 1%, 10% and
//! 30% of the key space and reports both hit ratios side by side (see the README's figures).
//!
//! # Guarantees
//!
//! - Every record carries XXH3-64 checksums over its header and over each 64 KiB body block,
//!   and the region generation it was written in. A lookup verifies the header, the sequence
//!   number the index expects and every block it serves; a torn write, a record from a
//!   region's earlier use, a flipped byte or a truncated file is a miss (counted in
//!   `cache_disk_checksum_failures_total`, the entry dropped), never a wrong byte.
//! - Fills are written behind the client's stream: [`DiskTier::insert`] queues the entry (at
//!   most [`QUEUE_JOBS`] entries and [`QUEUE_BYTES`]) and returns; one writer task per core
//!   writes them in order. A full queue drops the write (`cache_disk_queue_drops_total`).
//!   Bodies too large to assemble in memory (over [`node::FILL_BUFFER_MAX`]) are streamed
//!   instead ([`DiskTier::stream_begin`], fed by the pipeline's `Tee` from whichever core
//!   serves the miss): the record's space is reserved and marked by a filler header, the body
//!   is hashed and written in 256 KiB aligned pieces as it passes through, and the entry's
//!   header replaces the filler only once every declared byte arrived. A piece the queue cannot
//!   take abandons the record; the client's response never waits for the disk.
//! - A failing disk is a miss: read errors, write errors (ENOSPC, EIO, EROFS) and a vanished
//!   directory are counted, logged at most once per [`LOG_INTERVAL`], and the request goes on
//!   to the next tier.
//! - A purge removes entries from the index at once and is appended to the shard's purge
//!   journal (`purges`: 4 KiB checksummed slots, no gaps), so a restart does not bring purged
//!   entries back; a damaged journal empties the shard at start rather than forget a purge. A crash may lose the entries written since the last
//!   completed write (no fsync: the disk tier is a cache), never serve a partial one.
//!
//! # Hot path and costs
//!
//! A hit: one hash probe, then one aligned read of the whole record (plain GETs of objects the
//! memory tier can hold; the entry is then promoted to memory), or of its header only (HEAD,
//! Range, conditionals, bodies over the memory item limit), the body then read by
//! [`DiskReader::read_chunk`] in 256 KiB steps as the client accepts it (constant memory per
//! connection; a Range reads only the 64 KiB blocks it overlaps). A fill: one copy of the body
//! into an aligned buffer and one write, on the writer task. The writer and readers never
//! block the core (io_uring, or the bounded blocking pool under epoll).

pub mod aligned;
pub mod format;
pub mod io;
pub mod node;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::aligned::{align_down, align_up, AlignedBuf, ALIGN};
use self::format::{Meta, TombScope, BLOCK};
use self::io::DiskFile;
use self::node::{Geometry, ShardSeed};
use super::entry::{CacheKey, CacheKeyRef, CachedObject};
use super::tier::PurgeScope;
use crate::metrics::ShardMetrics;

/// Entries the write-behind queue of one core holds before fills are dropped.
pub const QUEUE_JOBS: usize = 256;

/// Bytes the write-behind queue of one core holds before fills are dropped (also at most a
/// region, so queued writes never lap the ring).
pub const QUEUE_BYTES: u64 = 64 << 20;

/// Body bytes read from disk per step when a body streams from disk to a client.
pub const READ_CHUNK_BYTES: usize = 4 * BLOCK;

/// Longest wait for one disk read before it counts as failed (a miss), whatever the disk does.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Disk errors of one kind are logged at most once per interval (they are all counted).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where an entry's body lives on disk, for serving it in chunks from any core. `Send`: a
/// remote lookup's answer carries it to the asking core, which reads through its own ring.
#[derive(Debug)]
pub struct DiskBody {
    /// The shard whose data file holds it.
    pub shard: usize,
    /// Record start in that file, bytes.
    pub pos: u64,
    /// Body offset in the record, bytes.
    pub body_offset: u32,
    /// Body length, bytes.
    pub body_len: u64,
    /// One XXH3-64 per 64 KiB body block.
    pub table: Box<[u64]>,
}

/// Why a disk read gave nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFailed {
    /// The read failed or came back short.
    Io,
    /// The bytes did not verify.
    Checksum,
}

/// One core's handles on every shard's data file (a disk-backed entry may be owned by any
/// core), and this core's disk counters.
pub struct DiskReader {
    files: Vec<DiskFile>,
    metrics: Arc<ShardMetrics>,
    uring: bool,
    in_flight: Rc<Cell<usize>>,
}

impl DiskReader {
    /// Handles on every shard file of `node` for this core (`uring`: through its ring).
    pub fn new(
        seeds: &[Arc<std::fs::File>],
        uring: bool,
        metrics: Arc<ShardMetrics>,
    ) -> std::io::Result<DiskReader> {
        let in_flight = Rc::new(Cell::new(0));
        let files = seeds
            .iter()
            .map(|f| DiskFile::new(f, uring, in_flight.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(DiskReader {
            files,
            metrics,
            uring,
            in_flight,
        })
    }

    /// Whether this core reads through its io_uring ring.
    pub fn uring(&self) -> bool {
        self.uring
    }

    /// This core's count of operations on the blocking pool (epoll driver).
    pub fn in_flight(&self) -> Rc<Cell<usize>> {
        self.in_flight.clone()
    }

    /// Read `len` bytes (aligned) at `pos` (aligned) of shard `shard`'s file; short reads are
    /// errors.
    async fn read_exact(
        &self,
        shard: usize,
        pos: u64,
        len: usize,
    ) -> Result<AlignedBuf, ReadFailed> {
        let file = self.files.get(shard).ok_or(ReadFailed::Io)?;
        // A stalled disk (a dying drive's retries, a hung controller) is a miss, not a hung
        // request. Dropping the read cancels it; the buffer stays with the op until the kernel
        // lets go of it.
        let read = file.read_at(AlignedBuf::zeroed(len), pos);
        let Ok((res, buf)) = monoio::time::timeout(READ_TIMEOUT, read).await else {
            self.metrics.disk.read_errors.inc();
            return Err(ReadFailed::Io);
        };
        match res {
            Ok(n) if n >= len => {
                self.metrics.disk.read_bytes.add(n as u64);
                Ok(buf)
            }
            _ => {
                self.metrics.disk.read_errors.inc();
                Err(ReadFailed::Io)
            }
        }
    }

    /// Body bytes `from..` of `body`, at most `max` of them (and at least one unless `from` is
    /// the end), verified block by block. Reads only the blocks they overlap.
    pub async fn read_chunk(
        &self,
        body: &DiskBody,
        from: u64,
        max: usize,
    ) -> Result<Bytes, ReadFailed> {
        let to = (from + max as u64).min(body.body_len);
        if from >= to {
            return Ok(Bytes::new());
        }
        let first_block = from / BLOCK as u64;
        let end_block = to.div_ceil(BLOCK as u64);
        let body_start = body.pos + body.body_offset as u64;
        let blocks_from = body_start + first_block * BLOCK as u64;
        let blocks_to = body_start + (end_block * BLOCK as u64).min(body.body_len);
        let read_from = align_down(blocks_from);
        let read_len = align_up((blocks_to - read_from) as usize);
        let buf = self.read_exact(body.shard, read_from, read_len).await?;
        let data_at = (blocks_from - read_from) as usize;
        let data = &buf.as_ref()[data_at..data_at + (blocks_to - blocks_from) as usize];
        if !format::verify_blocks(&body.table, first_block as usize, data) {
            self.metrics.disk.checksum_failures.inc();
            return Err(ReadFailed::Checksum);
        }
        let skip = (from - first_block * BLOCK as u64) as usize;
        let start = data_at + skip;
        let end = start + (to - from) as usize;
        Ok(Bytes::from_owner(buf).slice(start..end))
    }
}

/// Whether a disk body of shard `shard` is a streamed record (aligned body offset), whose
/// header a revalidation rewrites in place.
fn in_place(body: &DiskBody, shard: usize) -> bool {
    body.shard == shard && (body.body_offset as usize).is_multiple_of(ALIGN)
}

fn bucket_str<'k>(key: &CacheKeyRef<'k>) -> &'k str {
    std::str::from_utf8(key.bucket).unwrap_or("-")
}

/// Where an indexed entry is.
#[derive(Clone, Copy, Debug)]
struct Slot {
    pos: u64,
    record_len: u64,
    body_len: u64,
    body_offset: u32,
    seq: u64,
}

/// One region of the ring.
struct Region {
    /// Generation (the sequence number it was opened with); `None` never written.
    gen: Option<u64>,
    /// Next record offset from the region start.
    write_pos: u64,
    /// Entries written here: (key, seq); an index entry with this seq lives here.
    keys: Vec<(CacheKey, u64)>,
}

/// A queued write.
enum Job {
    /// An entry, offered while the purge generation was `purge_gen`.
    Entry {
        key: CacheKey,
        obj: Arc<CachedObject>,
        purge_gen: u64,
    },
    /// A purge, appended so a restart honours it.
    Tombstone(TombScope),
    /// A streamed entry starts: its metadata and declared body length.
    StreamBegin {
        id: u64,
        key: CacheKey,
        meta: Arc<CachedObject>,
        len: u64,
        purge_gen: u64,
    },
    /// The next body bytes of stream `id`, in order.
    StreamChunk { id: u64, bytes: Bytes },
    /// Stream `id` ended; `complete`: every declared byte arrived (then the record is sealed
    /// and indexed), else it is abandoned.
    StreamEnd {
        id: u64,
        complete: bool,
        /// The queue refused one of its chunks (the disk fell behind): not counted against the
        /// abandon budget, which bounds what clients and origins waste.
        dropped: bool,
    },
}

/// Slots of a shard's purge journal before it is compacted (what fits the budget's slack).
pub const JOURNAL_SLOTS: usize = ((node::SLACK_BYTES - (64 << 10)) / ALIGN as u64) as usize;

/// The purges a shard's journal holds, in slot order.
struct Journal {
    purges: Vec<(u64, TombScope)>,
}

/// The window over which abandoned streamed records are counted: once they wasted a region's
/// worth in one window, no new stream starts until the window ends (bodies then pass through
/// unstored), so dropped downloads evict at most about one region per window.
pub const ABANDON_WINDOW: Duration = Duration::from_secs(60);

/// Body bytes a streamed record collects before one aligned write.
const STREAM_PIECE: usize = 4 * BLOCK;

/// A streamed record being written (writer task only).
struct Stream {
    key: CacheKey,
    meta: Vec<u8>,
    len: u64,
    pos: u64,
    gen: u64,
    seq: u64,
    body_offset: usize,
    purge_gen: u64,
    pending: AlignedBuf,
    pending_len: usize,
    flushed: u64,
    received: u64,
    table: Vec<u64>,
    hasher: xxhash_rust::xxh3::Xxh3,
    in_block: usize,
    failed: bool,
}

struct State {
    /// Probed with a borrowed [`CacheKeyRef`] (hashbrown's `Equivalent`, the same trait the
    /// memory tier's quick_cache uses).
    index: hashbrown::HashMap<CacheKey, Slot>,
    regions: Vec<Region>,
    /// Region indices, oldest first; the back is the current one when `current` is set.
    fifo: VecDeque<usize>,
    current: Option<usize>,
    next_seq: u64,
    purge_gen: u64,
    queue: VecDeque<(Job, u64)>,
    queued_bytes: u64,
    writer: Option<Waker>,
    closed: bool,
    /// Streams whose chunk was refused (full queue) or whose key was already streaming: their
    /// later chunks are ignored and their end abandons them.
    aborted: std::collections::HashSet<u64>,
    /// Keys with a stream queued or being written, so two misses of one large object do not
    /// both write it (the second is refused).
    streaming: HashMap<u64, CacheKey>,
}

/// One core's partition of the disk tier (see the module doc). `!Send`; lives in the core's
/// [`super::Tiered`].
pub struct DiskTier {
    shard: usize,
    geometry: Geometry,
    max_item: u64,
    max_stream: u64,
    reader: Rc<DiskReader>,
    metrics: Arc<ShardMetrics>,
    state: RefCell<State>,
    /// Streamed records in progress (the writer task's alone).
    streams: RefCell<HashMap<u64, Stream>>,
    /// The purge journal: this core's handle, the shared descriptor (for truncation on the
    /// blocking pool) and the purges it holds (the writer task's alone).
    journal_file: DiskFile,
    journal_std: Arc<std::fs::File>,
    journal: RefCell<Journal>,
    last_log: Cell<Option<Instant>>,
    /// Bytes of streamed records abandoned (client gone, origin short; not queue drops) in the
    /// current [`ABANDON_WINDOW`], and when it began: each one wasted its whole reservation,
    /// so a client that starts and drops large downloads could otherwise flush the ring.
    abandoned: Cell<(Instant, u64)>,
}

impl DiskTier {
    /// Core `shard`'s partition, from its scanned `seed`; `max_item` is the largest body it
    /// stores, bytes; `reader` this core's file handles.
    pub fn new(
        shard: usize,
        seed: &ShardSeed,
        max_item: u64,
        reader: Rc<DiskReader>,
        metrics: Arc<ShardMetrics>,
    ) -> DiskTier {
        let g = seed.geometry;
        // Through the ring when the descriptor can be duplicated, else on the blocking pool.
        let journal_file = DiskFile::new(&seed.journal, reader.uring(), reader.in_flight())
            .unwrap_or_else(|_| DiskFile::Pool(seed.journal.clone(), reader.in_flight()));
        let mut regions: Vec<Region> = seed
            .regions
            .iter()
            .map(|r| Region {
                gen: r.gen,
                write_pos: r.write_pos,
                keys: Vec::new(),
            })
            .collect();
        let mut index = hashbrown::HashMap::with_capacity(seed.entries.len());
        for e in &seed.entries {
            regions[e.region].keys.push((e.key.clone(), e.seq));
            let m = metrics.bucket(e.key.bucket());
            m.disk.items.add(1);
            m.disk.bytes.add(e.record_len as i64);
            index.insert(
                e.key.clone(),
                Slot {
                    pos: e.pos,
                    record_len: e.record_len,
                    body_len: e.body_len,
                    body_offset: e.body_offset,
                    seq: e.seq,
                },
            );
        }
        // Oldest first: never-written regions, then by generation; resume in the newest.
        let mut fifo: Vec<usize> = (0..regions.len()).collect();
        fifo.sort_by_key(|&r| regions[r].gen.map_or(0, |g| g + 1));
        let current = fifo.last().copied().filter(|&r| regions[r].gen.is_some());
        metrics
            .disk
            .enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        metrics.disk.capacity_bytes.add(g.data_bytes() as i64);
        DiskTier {
            shard,
            geometry: g,
            max_item,
            // Room for the header and its block table (8 bytes per 64 KiB) in a region.
            max_stream: g
                .max_record()
                .saturating_sub(g.max_record() / (BLOCK as u64 / 8) + (64 << 10)),
            reader,
            metrics,
            state: RefCell::new(State {
                index,
                regions,
                fifo: fifo.into(),
                current,
                next_seq: seed.next_seq,
                purge_gen: 0,
                queue: VecDeque::new(),
                queued_bytes: 0,
                writer: None,
                closed: false,
                aborted: Default::default(),
                streaming: HashMap::new(),
            }),
            streams: RefCell::new(HashMap::new()),
            journal_file,
            journal_std: seed.journal.clone(),
            journal: RefCell::new(Journal {
                purges: seed.purges.clone(),
            }),
            last_log: Cell::new(None),
            abandoned: Cell::new((Instant::now(), 0)),
        }
    }

    /// At most `cap` bytes per streamed body (`max_item_size_mb`; by default what a region holds).
    pub fn with_max_stream(mut self, cap: u64) -> DiskTier {
        self.max_stream = self.max_stream.min(cap);
        self
    }

    /// This partition's data file capacity, bytes.
    pub fn capacity(&self) -> u64 {
        self.geometry.data_bytes()
    }

    /// Largest body stored, bytes.
    pub fn max_item(&self) -> u64 {
        self.max_item
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.state.borrow().index.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Log a disk problem at most once per [`LOG_INTERVAL`] (all are counted).
    fn log(&self, what: &str, key: &CacheKey) {
        let now = Instant::now();
        if self.last_log.get().is_some_and(|t| now - t < LOG_INTERVAL) {
            return;
        }
        self.last_log.set(Some(now));
        tracing::warn!(shard = self.shard, key = ?key, "disk tier: {what}; served as a miss (further disk errors are counted, logged every 10 s)");
    }

    /// The entry for `key`: with its whole body when `whole` and the body is at most
    /// `whole_max` bytes (one read of the record), else with its headers and a [`DiskBody`] to
    /// stream from. A failed or unverifiable read drops the entry and is a miss.
    pub async fn get(
        &self,
        key: &CacheKeyRef<'_>,
        whole: bool,
        whole_max: u64,
    ) -> Option<Arc<CachedObject>> {
        // Probed with the borrowed key (hashbrown's `Equivalent`): no allocation on a miss.
        let Some(slot) = self.state.borrow().index.get(key).copied() else {
            self.metrics.bucket(bucket_str(key)).disk.misses.inc();
            return None;
        };
        let read_whole = whole && slot.body_len <= whole_max;
        let len = if read_whole {
            slot.record_len as usize
        } else {
            align_up(slot.body_offset as usize).min(slot.record_len as usize)
        };
        let got = match self.reader.read_exact(self.shard, slot.pos, len).await {
            Ok(buf) => self.decode(key, slot, buf, read_whole),
            Err(e) => Err(e),
        };
        match got {
            Ok(obj) => Some(Arc::new(obj)),
            Err(e) => {
                let owned = key.to_key();
                self.log(
                    match e {
                        ReadFailed::Io => "read failed",
                        ReadFailed::Checksum => "a record did not verify",
                    },
                    &owned,
                );
                self.drop_slot(&owned, slot.seq);
                self.metrics.bucket(bucket_str(key)).disk.misses.inc();
                None
            }
        }
    }

    fn decode(
        &self,
        key: &CacheKeyRef<'_>,
        slot: Slot,
        buf: AlignedBuf,
        whole: bool,
    ) -> Result<CachedObject, ReadFailed> {
        let bad = || {
            self.metrics.disk.checksum_failures.inc();
            ReadFailed::Checksum
        };
        let header = format::decode_header(buf.as_ref()).map_err(|_| bad())?;
        let Meta::Entry(meta) = &header.meta else {
            return Err(bad());
        };
        if header.fixed.seq != slot.seq || meta.cache_key().as_ref_key() != *key {
            return Err(bad());
        }
        let off = header.fixed.body_offset as usize;
        let body_len = header.fixed.body_len as usize;
        if whole {
            let body = buf.as_ref().get(off..off + body_len).ok_or_else(bad)?;
            if !format::verify_blocks(&header.table, 0, body) {
                return Err(bad());
            }
            let bytes = Bytes::from_owner(buf).slice(off..off + body_len);
            return meta.to_object(bytes).ok_or_else(bad);
        }
        let mut obj = meta.to_object(Bytes::new()).ok_or_else(bad)?;
        obj.disk = Some(Arc::new(DiskBody {
            shard: self.shard,
            pos: slot.pos,
            body_offset: header.fixed.body_offset,
            body_len: header.fixed.body_len,
            table: header.table.into_boxed_slice(),
        }));
        Ok(obj)
    }

    /// Drop `key`'s index entry if it is still the record `seq`.
    fn drop_slot(&self, key: &CacheKey, seq: u64) {
        let mut st = self.state.borrow_mut();
        if st.index.get(key).is_some_and(|s| s.seq == seq) {
            if let Some(s) = st.index.remove(key) {
                self.uncount(key, s.record_len);
            }
        }
    }

    fn uncount(&self, key: &CacheKey, record_len: u64) {
        let m = self.metrics.bucket(key.bucket());
        m.disk.items.add(-1);
        m.disk.bytes.add(-(record_len as i64));
    }

    /// Queue `obj` to be written under `key`; whether it was queued (too large, a full queue
    /// (counted) or a closed tier: not).
    pub fn insert(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        let len = obj.len();
        // A revalidated streamed entry of this shard is refreshed in place (its header only).
        let in_place = obj.disk.as_ref().is_some_and(|d| in_place(d, self.shard));
        if len > self.max_item && !in_place {
            return false;
        }
        let mut st = self.state.borrow_mut();
        let cost = if in_place {
            ALIGN as u64
        } else {
            len + ALIGN as u64
        };
        if st.closed {
            return false;
        }
        if st.queue.len() >= QUEUE_JOBS
            || st.queued_bytes + cost > QUEUE_BYTES.min(self.geometry.region_bytes)
        {
            self.metrics.disk.queue_drops.inc();
            return false;
        }
        let purge_gen = st.purge_gen;
        st.queue.push_back((
            Job::Entry {
                key: key.clone(),
                obj: obj.clone(),
                purge_gen,
            },
            cost,
        ));
        st.queued_bytes += cost;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        true
    }

    /// Forget `key` (it no longer matches S3). Not journaled: a forgotten entry that comes back
    /// after a restart is stale or superseded by a later record.
    pub fn remove(&self, key: &CacheKey) {
        let mut st = self.state.borrow_mut();
        if let Some(s) = st.index.remove(key) {
            self.uncount(key, s.record_len);
        }
    }

    /// Drop what `scope` names; how many entries. Queued writes offered before it are dropped
    /// too, and the purge is queued for the journal (never dropped) so a restart honours it.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        let tomb = TombScope::from(scope);
        let mut st = self.state.borrow_mut();
        let doomed: Vec<CacheKey> = st
            .index
            .keys()
            .filter(|k| tomb.covers(k))
            .cloned()
            .collect();
        for k in &doomed {
            if let Some(s) = st.index.remove(k) {
                self.uncount(k, s.record_len);
            }
        }
        st.purge_gen += 1;
        st.queue.push_back((Job::Tombstone(tomb), ALIGN as u64));
        st.queued_bytes += ALIGN as u64;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        doomed.len()
    }

    /// Write queued records until the tier is closed ([`DiskTier::close`]) and the queue is
    /// empty. Spawn once per core.
    pub async fn run_writer(self: Rc<Self>) {
        loop {
            let next = poll_fn(|cx| {
                let mut st = self.state.borrow_mut();
                match st.queue.pop_front() {
                    Some((job, cost)) => {
                        st.queued_bytes -= cost;
                        Poll::Ready(Some(job))
                    }
                    None if st.closed => Poll::Ready(None),
                    None => {
                        st.writer = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await;
            match next {
                Some(job) => self.write(job).await,
                None => return,
            }
        }
    }

    /// Stop taking writes; the writer ends once the queue is written.
    pub fn close(&self) {
        let mut st = self.state.borrow_mut();
        st.closed = true;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }

    async fn write(&self, job: Job) {
        let (buf_key, record) = match job {
            Job::StreamBegin {
                id,
                key,
                meta,
                len,
                purge_gen,
            } => return self.stream_open(id, key, &meta, len, purge_gen).await,
            Job::StreamChunk { id, bytes } => {
                let Some(mut st) = self.streams.borrow_mut().remove(&id) else {
                    return;
                };
                self.stream_append(&mut st, &bytes).await;
                self.streams.borrow_mut().insert(id, st);
                return;
            }
            Job::StreamEnd {
                id,
                complete,
                dropped,
            } => {
                let st = self.streams.borrow_mut().remove(&id);
                if let Some(st) = st {
                    self.stream_seal(st, complete, dropped).await;
                }
                return;
            }
            Job::Entry {
                key,
                obj,
                purge_gen,
            } => {
                if self.state.borrow().purge_gen != purge_gen {
                    return;
                }
                if let Some(body) = obj.disk.as_ref().filter(|d| in_place(d, self.shard)) {
                    return self.refresh_in_place(&key, &obj, body).await;
                }
                let obj = match &obj.disk {
                    // A revalidated disk entry: rewrite it with its body read back.
                    Some(body) => match self
                        .reader
                        .read_chunk(body, 0, body.body_len as usize)
                        .await
                    {
                        Ok(bytes) => Arc::new(CachedObject {
                            body: bytes,
                            disk: None,
                            ..(*obj).clone()
                        }),
                        Err(_) => return,
                    },
                    None => obj,
                };
                // The metadata is encoded once: its length sizes the reservation.
                let meta = format::entry_meta_bytes(&key, &obj);
                let len = format::record_len_for(meta.len(), obj.body.len()) as u64;
                let Some((pos, gen, seq)) = self.reserve(len, Some(&key)).await else {
                    return;
                };
                let buf = format::encode_entry_with(seq, gen, &meta, &obj.body);
                (Some((key, purge_gen, seq)), (buf, pos))
            }
            Job::Tombstone(scope) => return self.journal_purge(scope).await,
        };
        let (buf, pos) = record;
        let len = buf.len() as u64;
        let body_offset = format::peek_fixed(buf.as_ref()).map(|f| (f.body_offset, f.body_len));
        let (res, _) = self.reader.files[self.shard].write_all_at(buf, pos).await;
        if let Err(e) = res {
            self.metrics.disk.write_errors.inc();
            if let Some((key, _, _)) = &buf_key {
                self.log(&format!("write failed ({e})"), key);
            }
            return;
        }
        self.metrics.disk.write_bytes.add(len);
        let (Some((key, purge_gen, seq)), Ok((body_offset, body_len))) = (buf_key, body_offset)
        else {
            return;
        };
        self.commit(
            &key,
            purge_gen,
            Slot {
                pos,
                record_len: len,
                body_len,
                body_offset,
                seq,
            },
        );
    }

    /// Index a record just written, unless a purge ran since it was offered (`purge_gen`) or its
    /// region was already reused.
    fn commit(&self, key: &CacheKey, purge_gen: u64, slot: Slot) {
        let mut st = self.state.borrow_mut();
        let region = (slot.pos / self.geometry.region_bytes) as usize;
        let still_there = st.regions[region].keys.iter().any(|(_, s)| *s == slot.seq);
        if st.purge_gen != purge_gen || !still_there {
            return;
        }
        let m = self.metrics.bucket(key.bucket());
        m.disk.inserts.inc();
        m.disk.items.add(1);
        m.disk.bytes.add(slot.record_len as i64);
        if let Some(old) = st.index.insert(key.clone(), slot) {
            self.uncount(key, old.record_len);
        }
    }

    /// Rewrite the header of `key`'s streamed record `body` with `obj`'s metadata (a 304
    /// revalidation: new freshness, merged headers), when the new header fits the record's
    /// header space and the record is still the indexed one. A torn rewrite makes the record
    /// invalid (a miss after a restart), never a mix of old and new.
    async fn refresh_in_place(&self, key: &CacheKey, obj: &CachedObject, body: &DiskBody) {
        let meta = format::entry_meta_bytes(key, obj);
        let (body_offset, _) = format::streamed_layout(meta.len(), body.body_len);
        if body_offset != body.body_offset as usize {
            return;
        }
        let (seq, gen) = {
            let st = self.state.borrow();
            let Some(slot) = st.index.get(key).filter(|s| s.pos == body.pos) else {
                return;
            };
            let region = (slot.pos / self.geometry.region_bytes) as usize;
            let Some(gen) = st.regions[region].gen else {
                return;
            };
            (slot.seq, gen)
        };
        let header = format::encode_streamed_header(seq, gen, &meta, &body.table, body.body_len);
        let len = header.len() as u64;
        let (res, _) = self.reader.files[self.shard]
            .write_all_at(header, body.pos)
            .await;
        match res {
            Ok(()) => self.metrics.disk.write_bytes.add(len),
            Err(e) => {
                self.metrics.disk.write_errors.inc();
                self.log(&format!("write failed ({e})"), key);
                // The header may be torn: forget the record.
                self.drop_slot(key, seq);
            }
        }
    }

    /// Append a purge to the journal (so a restart honours it), compacting the journal first
    /// when it is full. A failed write is counted and logged; the purge then holds until the
    /// next restart only.
    async fn journal_purge(&self, scope: TombScope) {
        let seq = {
            let mut st = self.state.borrow_mut();
            st.next_seq += 1;
            st.next_seq - 1
        };
        if self.journal.borrow().purges.len() >= JOURNAL_SLOTS {
            self.compact_journal(seq).await;
        }
        let slot = self.journal.borrow().purges.len();
        let buf = format::encode_purge(seq, &scope);
        let (res, _) = self
            .journal_file
            .write_all_at(buf, (slot * ALIGN) as u64)
            .await;
        match res {
            Ok(()) => {
                self.metrics.disk.write_bytes.add(ALIGN as u64);
                self.journal.borrow_mut().purges.push((seq, scope));
            }
            Err(e) => {
                self.metrics.disk.write_errors.inc();
                tracing::warn!(shard = self.shard, error = %e, "disk tier: a purge could not be journaled; it holds until the next restart only");
            }
        }
    }

    /// Rewrite a full journal with the purges that may still matter (not older than the
    /// oldest written region). If those still fill half of it, they are replaced by one purge
    /// of everything at `seq` (and the partition's index is emptied to match). Slots are
    /// rewritten first, then the file is cut (on the blocking pool): a crash meanwhile leaves
    /// older, still true purges behind.
    async fn compact_journal(&self, seq: u64) {
        let oldest = {
            let st = self.state.borrow();
            st.regions.iter().filter_map(|r| r.gen).min()
        };
        let mut kept: Vec<(u64, TombScope)> = self
            .journal
            .borrow()
            .purges
            .iter()
            .filter(|(s, _)| oldest.is_some_and(|g| *s >= g))
            .cloned()
            .collect();
        if kept.len() >= JOURNAL_SLOTS / 2 {
            kept = vec![(seq, TombScope::All)];
            let mut st = self.state.borrow_mut();
            let all: Vec<(CacheKey, Slot)> = st.index.drain().collect();
            for (k, s) in all {
                self.uncount(&k, s.record_len);
            }
            st.purge_gen += 1;
        }
        for (i, (s, scope)) in kept.iter().enumerate() {
            let buf = format::encode_purge(*s, scope);
            let (res, _) = self
                .journal_file
                .write_all_at(buf, (i * ALIGN) as u64)
                .await;
            if res.is_err() {
                self.metrics.disk.write_errors.inc();
                return;
            }
        }
        let file = self.journal_std.clone();
        let len = (kept.len() * ALIGN) as u64;
        if let Ok(Ok(())) = monoio::spawn_blocking(move || file.set_len(len)).await {
            self.journal.borrow_mut().purges = kept;
        }
    }

    /// Largest body a streamed record holds, bytes (a region less its header and block table).
    pub fn max_stream(&self) -> u64 {
        self.max_stream
    }

    /// Start writing a streamed entry `id` (a body too large to assemble in memory, sent in
    /// order with [`DiskTier::stream_chunk`], ended with [`DiskTier::stream_end`]): whether it was
    /// queued (not when too large or closed).
    pub fn stream_begin(&self, id: u64, key: &CacheKey, meta: Arc<CachedObject>, len: u64) -> bool {
        let mut st = self.state.borrow_mut();
        let (since, wasted) = self.abandoned.get();
        let over_budget = since.elapsed() < ABANDON_WINDOW && wasted >= self.geometry.region_bytes;
        if st.closed
            || len > self.max_stream
            || over_budget
            || st.streaming.values().any(|k| k == key)
        {
            st.aborted.insert(id);
            return false;
        }
        st.streaming.insert(id, key.clone());
        let purge_gen = st.purge_gen;
        st.queue.push_back((
            Job::StreamBegin {
                id,
                key: key.clone(),
                meta,
                len,
                purge_gen,
            },
            ALIGN as u64,
        ));
        st.queued_bytes += ALIGN as u64;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        true
    }

    /// The next body bytes of stream `id`; whether they were queued. A full queue abandons the
    /// stream (counted in `cache_disk_queue_drops_total`): the client's response never waits.
    pub fn stream_chunk(&self, id: u64, bytes: Bytes) -> bool {
        let mut st = self.state.borrow_mut();
        if st.aborted.contains(&id) {
            return false;
        }
        let cost = bytes.len() as u64;
        if st.queue.len() >= QUEUE_JOBS * 4
            || st.queued_bytes + cost > QUEUE_BYTES.min(self.geometry.region_bytes)
        {
            st.aborted.insert(id);
            self.metrics.disk.queue_drops.inc();
            return false;
        }
        st.queue.push_back((Job::StreamChunk { id, bytes }, cost));
        st.queued_bytes += cost;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        true
    }

    /// Stream `id` ended (`complete`: all its declared bytes were sent). Always queued.
    pub fn stream_end(&self, id: u64, complete: bool) {
        let mut st = self.state.borrow_mut();
        let aborted = st.aborted.remove(&id);
        st.streaming.remove(&id);
        st.queue.push_back((
            Job::StreamEnd {
                id,
                complete: complete && !aborted,
                dropped: aborted,
            },
            0,
        ));
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }

    async fn stream_open(
        &self,
        id: u64,
        key: CacheKey,
        meta: &CachedObject,
        len: u64,
        purge_gen: u64,
    ) {
        if self.state.borrow().purge_gen != purge_gen {
            return;
        }
        let meta = format::entry_meta_bytes(&key, meta);
        let (body_offset, record_len) = format::streamed_layout(meta.len(), len);
        let Some((pos, gen, seq)) = self.reserve(record_len, Some(&key)).await else {
            return;
        };
        // A filler first: until the entry is sealed, the scan steps over its space.
        let filler = format::encode_filler(seq, gen, record_len);
        let (res, _) = self.reader.files[self.shard]
            .write_all_at(filler, pos)
            .await;
        if let Err(e) = res {
            self.metrics.disk.write_errors.inc();
            self.log(&format!("write failed ({e})"), &key);
            return;
        }
        self.metrics.disk.write_bytes.add(ALIGN as u64);
        self.streams.borrow_mut().insert(
            id,
            Stream {
                key,
                meta,
                len,
                pos,
                gen,
                seq,
                body_offset,
                purge_gen,
                pending: AlignedBuf::zeroed(STREAM_PIECE),
                pending_len: 0,
                flushed: 0,
                received: 0,
                table: Vec::with_capacity(len.div_ceil(BLOCK as u64) as usize),
                hasher: xxhash_rust::xxh3::Xxh3::new(),
                in_block: 0,
                failed: false,
            },
        );
    }

    /// Hash `data` into the stream's blocks and write it out in aligned pieces.
    async fn stream_append(&self, s: &mut Stream, mut data: &[u8]) {
        if s.failed || s.received + data.len() as u64 > s.len {
            s.failed = true;
            return;
        }
        while !data.is_empty() {
            let n = data
                .len()
                .min(BLOCK - s.in_block)
                .min(STREAM_PIECE - s.pending_len);
            s.hasher.update(&data[..n]);
            s.in_block += n;
            if s.in_block == BLOCK {
                s.table.push(s.hasher.digest());
                s.hasher = xxhash_rust::xxh3::Xxh3::new();
                s.in_block = 0;
            }
            s.pending.as_mut_full()[s.pending_len..s.pending_len + n].copy_from_slice(&data[..n]);
            s.pending_len += n;
            s.received += n as u64;
            data = &data[n..];
            if s.pending_len == STREAM_PIECE && !self.stream_flush(s).await {
                return;
            }
        }
    }

    /// Write the stream's pending piece (padded to [`ALIGN`]); whether it was written.
    async fn stream_flush(&self, s: &mut Stream) -> bool {
        let mut piece = std::mem::replace(&mut s.pending, AlignedBuf::zeroed(STREAM_PIECE));
        piece.set_len(align_up(s.pending_len));
        let at = s.pos + s.body_offset as u64 + s.flushed;
        let len = piece.len() as u64;
        let (res, _) = self.reader.files[self.shard].write_all_at(piece, at).await;
        if let Err(e) = res {
            self.metrics.disk.write_errors.inc();
            self.log(&format!("write failed ({e})"), &s.key);
            s.failed = true;
            return false;
        }
        self.metrics.disk.write_bytes.add(len);
        s.flushed += s.pending_len as u64;
        s.pending_len = 0;
        true
    }

    /// End a stream: when complete, write the rest of the body and then the header (so a
    /// crash before leaves no valid record), and index it.
    async fn stream_seal(&self, mut s: Stream, complete: bool, dropped: bool) {
        if !complete || s.failed || s.received != s.len {
            if dropped {
                return;
            }
            let (since, wasted) = self.abandoned.get();
            let (_, record_len) = format::streamed_layout(s.meta.len(), s.len);
            self.abandoned.set(if since.elapsed() < ABANDON_WINDOW {
                (since, wasted + record_len)
            } else {
                (Instant::now(), record_len)
            });
            return;
        }
        if s.in_block > 0 {
            s.table.push(s.hasher.digest());
        }
        if s.pending_len > 0 && !self.stream_flush(&mut s).await {
            return;
        }
        let header = format::encode_streamed_header(s.seq, s.gen, &s.meta, &s.table, s.len);
        let (res, _) = self.reader.files[self.shard]
            .write_all_at(header, s.pos)
            .await;
        if let Err(e) = res {
            self.metrics.disk.write_errors.inc();
            self.log(&format!("write failed ({e})"), &s.key);
            return;
        }
        self.metrics.disk.write_bytes.add(s.body_offset as u64);
        let (_, record_len) = format::streamed_layout(s.meta.len(), s.len);
        self.commit(
            &s.key,
            s.purge_gen,
            Slot {
                pos: s.pos,
                record_len,
                body_len: s.len,
                body_offset: s.body_offset as u32,
                seq: s.seq,
            },
        );
    }

    /// Room for a record of `len` bytes: (file position, region generation, sequence number).
    /// Opens (reuses) the oldest region when the current one is full, evicting its entries and
    /// writing its new header first. `None`: the record is larger than a region, or the
    /// region header could not be written.
    async fn reserve(&self, len: u64, key: Option<&CacheKey>) -> Option<(u64, u64, u64)> {
        if len > self.geometry.max_record() {
            return None;
        }
        let opened = {
            let mut st = self.state.borrow_mut();
            let fits = st
                .current
                .is_some_and(|c| st.regions[c].write_pos + len <= self.geometry.region_bytes);
            if fits {
                None
            } else {
                let r = st.fifo.pop_front()?;
                st.fifo.push_back(r);
                let gen = st.next_seq;
                st.next_seq += 1;
                let keys = std::mem::take(&mut st.regions[r].keys);
                for (k, seq) in keys {
                    if st.index.get(&k).is_some_and(|s| s.seq == seq) {
                        if let Some(s) = st.index.remove(&k) {
                            self.uncount(&k, s.record_len);
                            self.metrics.bucket(k.bucket()).disk.evictions.inc();
                        }
                    }
                }
                st.regions[r].gen = Some(gen);
                st.regions[r].write_pos = ALIGN as u64;
                st.current = Some(r);
                Some((r, gen))
            }
        };
        if let Some((r, gen)) = opened {
            let header = format::encode_region_header(gen, r as u64);
            let at = r as u64 * self.geometry.region_bytes;
            let (res, _) = self.reader.files[self.shard].write_all_at(header, at).await;
            if let Err(e) = res {
                self.metrics.disk.write_errors.inc();
                let mut st = self.state.borrow_mut();
                // Nothing can be trusted in this region: make it the next one to reuse.
                st.current = None;
                if let Some(i) = st.fifo.iter().position(|&x| x == r) {
                    st.fifo.remove(i);
                }
                st.fifo.push_front(r);
                drop(st);
                let now = Instant::now();
                if self.last_log.get().is_none_or(|t| now - t >= LOG_INTERVAL) {
                    self.last_log.set(Some(now));
                    tracing::warn!(shard = self.shard, error = %e, "disk tier: region header write failed; fills are skipped");
                }
                return None;
            }
            self.metrics.disk.write_bytes.add(ALIGN as u64);
        }
        let mut st = self.state.borrow_mut();
        let c = st.current?;
        let pos = c as u64 * self.geometry.region_bytes + st.regions[c].write_pos;
        st.regions[c].write_pos += len;
        let seq = st.next_seq;
        st.next_seq += 1;
        let gen = st.regions[c].gen?;
        if let Some(k) = key {
            st.regions[c].keys.push((k.clone(), seq));
        }
        Some((pos, gen, seq))
    }
}

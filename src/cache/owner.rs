//! Key-owned cache partitions across cores (DESIGN section 2: "a shard of the cache is a
//! partition, not a copy"): which core owns a key ([`owner_of`]), the messages cores send a
//! key's owner ([`OwnerMsg`]), the per-core [`Owners`] that answers them for its own keys and
//! asks the owner for everyone else's, single-flight across cores, and the per-core L1 of hot
//! copies ([`L1`]).
//!
//! # The protocol
//!
//! Every cache key `(bucket, key, versionId)` has one owner core, `owner_of(bucket, key)`. The
//! owner alone holds the key's entry in its tiers and runs its single-flight. A request on core
//! A for a key owned by core B:
//!
//! 1. looks in A's [`L1`] (hot copies of other cores' keys; a fresh copy answers at once);
//! 2. sends B [`OwnerMsg::Lookup`] through B's bounded queue ([`yatagarasu_runtime::Peers`])
//!    and awaits the one-shot reply, at most [`REPLY_TIMEOUT`]:
//!    - [`Answer::Found`]: B's entry (fresh, or stale with an ETag to revalidate), an `Arc`
//!      that A writes to its own socket with no copy;
//!    - [`Answer::Lead`]: nobody is fetching the key: A fetches it from S3 and ends the flight
//!      with [`OwnerMsg::Store`] (the entry, or `None` when it got nothing storable), which B
//!      inserts and hands to every follower;
//!    - [`Answer::Follow`]: another core is fetching it: A waits for the finished entry
//!      (bounded by the bucket's `first_byte_timeout_ms`, then fetches alone);
//!    - [`Answer::Miss`]: nothing, and the request may not lead (Range, conditionals).
//! 3. A full queue, an owner that does not answer within [`REPLY_TIMEOUT`], or an owner that
//!    exited make [`Lookup::Busy`]: the request is served from the origin without a fill
//!    (`cache_owner_busy_total`). A core never waits for room or blocks on another core.
//!
//! Requests on the owner itself skip the queue; its own concurrent misses share one fill
//! through the local [`SingleFlight`] and stream from it while it arrives, while followers on
//! other cores get the finished entry. The runtime carries these messages as opaque values; it
//! knows nothing of caches.
//!
//! # Costs
//!
//! Hot path. [`owner_of`]: two XXH3-64 calls over the bucket name and the key (~10 ns for short
//! keys). A hit on the owner: the tier lookup alone (memory: ~17 ns). An L1 hit: one more
//! hash probe. A remote lookup: the owned key (one allocation), one one-shot channel (one
//! allocation), a queue push and a cross-thread wake (an eventfd write only when the owner is
//! parked), the owner's tier lookup, the reply's wake back (`benches/owner.rs` measures the
//! round trip). Each core holds per flight of its own keys one small table entry plus one
//! one-shot sender per waiting core.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use yatagarasu_runtime::{Inbox, Peers};

use super::entry::{CacheKey, CacheKeyRef, CachedObject};
use super::memory::MemoryShard;
use super::single_flight::{Flight, LeaderGuard, SingleFlight, Waiter};
use super::tier::PurgeScope;
use super::tiered::{Found, Tiered};
use crate::metrics::BucketMetrics;

/// The seed of [`owner_of`]. Fixed forever: changing it moves every key to another owner (and
/// would orphan the disk tier's per-shard directories).
pub const OWNER_SEED: u64 = 0x5941_5441_4741_5241;

/// Lookups waiting in one owner's queue before further ones are refused (the owner is busy).
pub const QUEUE_CAPACITY: usize = 1024;

/// Longest wait for an owner's answer to a lookup before the request goes to the origin
/// without a fill. Normally the answer takes microseconds; this bounds a core that is stuck in
/// a long job or descheduled (shards outnumbering CPUs).
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(250);

/// Seed of the L1's admission filter (a different hash than ownership, so the filter's
/// collisions do not follow the owner split).
const SEEN_SEED: u64 = 0x4c31_5345_454e_0001;

/// The owner core of `(bucket, key)` among `shards` cores: `xxh3(key, seed = xxh3(bucket,
/// OWNER_SEED)) mod shards`. Every version of an object has the same owner (so a purge of the
/// key is exact on one core). Stable across restarts, builds and platforms (XXH3 is specified
/// bit for bit). `shards` 0 or 1 gives 0.
pub fn owner_of(bucket: &[u8], key: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let seed = xxhash_rust::xxh3::xxh3_64_with_seed(bucket, OWNER_SEED);
    (xxhash_rust::xxh3::xxh3_64_with_seed(key, seed) % shards as u64) as usize
}

/// A message to a key's owner core.
pub enum OwnerMsg {
    /// What does the owner have for `key`? `lead`: the asking request may lead a fill (a plain
    /// GET); otherwise a miss is answered [`Answer::Miss`] without joining a flight.
    Lookup {
        /// The key.
        key: CacheKey,
        /// Whether the request may lead the key's fill.
        lead: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// Insert `entry` (when `Some`) and, with `ends_flight`, end the key's flight that the
    /// sender led, handing `entry` to every follower (`None`: the leader got nothing storable;
    /// followers fetch for themselves).
    Store {
        /// The key.
        key: CacheKey,
        /// The complete entry, or `None`.
        entry: Option<Arc<CachedObject>>,
        /// The sender led the key's flight ([`Answer::Lead`]) and this ends it.
        ends_flight: bool,
    },
    /// Drop the owner's entry for `key` (it no longer matches S3).
    Remove {
        /// The key.
        key: CacheKey,
    },
    /// A body too large to assemble in memory, streamed to the owner's disk tier as it passes
    /// through another core ([`Tee`]).
    Stream(StreamMsg),
}

/// The pieces of a streamed disk fill, in order per stream ([`crate::cache::disk::DiskTier`]'s
/// `stream_begin`/`stream_chunk`/`stream_end`).
pub enum StreamMsg {
    /// Stream `id` of `key` starts: the response's metadata and its declared length.
    Begin {
        /// Stream id (unique per node: the sending core's index in the top byte).
        id: u64,
        /// The key.
        key: CacheKey,
        /// The entry's metadata (empty body).
        meta: Arc<CachedObject>,
        /// Declared body length, bytes.
        len: u64,
    },
    /// The next body bytes.
    Chunk {
        /// Stream id.
        id: u64,
        /// The bytes (shared, not copied again).
        bytes: Bytes,
    },
    /// The stream ended; `complete`: every declared byte was sent.
    End {
        /// Stream id.
        id: u64,
        /// Whether the body arrived whole.
        complete: bool,
    },
}

/// The owner's answer to [`OwnerMsg::Lookup`].
pub enum Answer {
    /// The owner's entry, fresh or stale with an ETag (the asker checks freshness).
    Found(Arc<CachedObject>, &'static str),
    /// Nobody fetches the key: the asker leads. Dropping the token unused ends the flight.
    Lead(LeadToken),
    /// Another core fetches the key: the finished entry (or `None`) arrives here.
    Follow(oneshot::Receiver<Option<Arc<CachedObject>>>),
    /// Nothing, and the asker may not lead.
    Miss,
}

/// The right to lead a key's fill for its (remote) owner. Ending it sends the owner
/// [`OwnerMsg::Store`]; dropping it unused (the asker gave up waiting, the request failed)
/// sends the store with no entry, so a flight never outlives its leader.
pub struct LeadToken {
    peers: Peers<OwnerMsg>,
    owner: usize,
    key: Option<CacheKey>,
}

impl LeadToken {
    /// End the flight with `entry`.
    fn end(&mut self, entry: Option<Arc<CachedObject>>) {
        if let Some(key) = self.key.take() {
            // Fails only when the owner exited; then nobody waits for the flight.
            let _ = self.peers.send_always(
                self.owner,
                OwnerMsg::Store {
                    key,
                    entry,
                    ends_flight: true,
                },
            );
        }
    }
}

impl Drop for LeadToken {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// What a lookup found, on whichever core owns the key.
pub enum Lookup<V> {
    /// An entry (fresh, or stale with an ETag): from this core's partition, its L1 or the owner.
    Found(Found),
    /// Nobody fetches the key: this request leads its fill and ends the lease.
    Lead(Lease<V>),
    /// A fill on this core (the owner) leads: its value is published here.
    Follow(Waiter<V>),
    /// A fill on another core leads: its finished entry (or `None`) arrives here.
    Await(oneshot::Receiver<Option<Arc<CachedObject>>>),
    /// Nothing, and the request may not lead.
    Miss,
    /// The owner did not answer (queue full, too slow, exited): fetch without a fill.
    Busy,
}

/// Held by the request that leads a key's fill, on any core. [`Lease::complete`] ends the
/// flight with the entry; dropping the lease ends it with none (followers fetch themselves).
pub struct Lease<V> {
    owners: Rc<Owners<V>>,
    key: CacheKey,
    /// The owner is this core: the local flight (its followers stream what is published).
    guard: Option<LeaderGuard<CacheKey, V>>,
    /// The owner is another core.
    token: Option<LeadToken>,
}

impl<V> Lease<V> {
    /// The key being filled.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Publish the fill in progress to this core's followers (owner core only; followers on
    /// other cores get the finished entry).
    pub fn publish(&self, value: V) {
        if let Some(g) = &self.guard {
            g.publish(value);
        }
    }

    /// End the flight: insert `entry` on the owner and hand it to every follower. Whether the
    /// owner's tiers admitted it (for a remote owner: whether there was an entry to send; the
    /// owner decides its admission).
    pub fn complete(mut self, entry: Option<Arc<CachedObject>>) -> bool {
        self.end(entry)
    }

    fn end(&mut self, entry: Option<Arc<CachedObject>>) -> bool {
        if let Some(mut token) = self.token.take() {
            let sent = entry.is_some();
            token.end(entry);
            return sent;
        }
        let Some(guard) = self.guard.take() else {
            return false;
        };
        let admitted = entry
            .as_ref()
            .is_some_and(|obj| self.owners.fill(&self.key, obj));
        // Local followers hold the published value; the flight ends here.
        drop(guard);
        self.owners.end_pending(&self.key, false, entry);
        admitted
    }
}

impl<V> Drop for Lease<V> {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// Flights of this core's keys that other cores wait on: led by another core
/// (`remote_led`), or by this core with followers elsewhere.
struct Pending {
    remote_led: bool,
    waiters: Vec<oneshot::Sender<Option<Arc<CachedObject>>>>,
}

/// One core's side of the key-owned cache: its partition of the tiers, its L1, the flights of
/// its keys, and the queues to every owner. `!Send`; the pipeline holds it in an `Rc`. `V` is
/// what a local fill publishes to local followers (the pipeline's entry being filled).
pub struct Owners<V> {
    me: usize,
    peers: Peers<OwnerMsg>,
    tiers: Tiered,
    l1: L1,
    flights: SingleFlight<CacheKey, V>,
    pending: RefCell<HashMap<CacheKey, Pending>>,
    /// Streams this core started ([`Tee`] ids).
    streams_started: std::cell::Cell<u64>,
    /// Per bucket: fills whose response arrived before this time are refused ([`Owners::fence`]).
    fences: RefCell<HashMap<String, SystemTime>>,
}

impl<V> Owners<V> {
    /// Core `me`'s side: its partition `tiers`, its `l1`, and `peers`, the queues of every
    /// core (`peers.shards()` is the shard count).
    pub fn new(me: usize, peers: Peers<OwnerMsg>, tiers: Tiered, l1: L1) -> Rc<Self> {
        Rc::new(Owners {
            me,
            peers,
            tiers,
            l1,
            flights: SingleFlight::new(),
            pending: RefCell::new(HashMap::new()),
            streams_started: std::cell::Cell::new(0),
            fences: RefCell::default(),
        })
    }

    /// Whether the cache holds anything (the partition has memory).
    pub fn enabled(&self) -> bool {
        self.tiers.enabled()
    }

    /// This core's memory partition, bytes (what one owner holds of the node's budget, L1
    /// excluded). Also the largest entry any owner admits.
    pub fn memory_capacity(&self) -> u64 {
        self.tiers.memory_capacity()
    }

    /// Largest body any tier stores, bytes, for a bucket whose memory item limit is
    /// `memory_limit` ([`Tiered::max_item`]).
    pub fn max_item(&self, memory_limit: u64) -> u64 {
        self.tiers.max_item(memory_limit)
    }

    /// Largest body the memory tier takes, bytes (`u64::MAX` without a disk tier: then the
    /// plan's limit alone decides).
    pub fn memory_item_max(&self) -> u64 {
        self.tiers.memory_item_max()
    }

    /// This core's disk partition, if the disk tier is on.
    pub fn disk(&self) -> Option<&Rc<super::disk::DiskTier>> {
        self.tiers.disk()
    }

    /// The L1's capacity on this core, bytes.
    pub fn l1_capacity(&self) -> u64 {
        self.l1.memory.capacity()
    }

    /// Entries in this core's L1.
    pub fn l1_len(&self) -> usize {
        self.l1.memory.len()
    }

    /// The owner core of `key`.
    pub fn owner(&self, key: &CacheKeyRef<'_>) -> usize {
        owner_of(key.bucket, key.key, self.peers.shards())
    }

    /// Look `key` up wherever it is owned (module doc). `lead`: the request may lead a fill.
    /// Counts remote lookups, their latency, L1 hits and busy owners in `m`.
    pub async fn lookup(
        self: &Rc<Self>,
        key: &CacheKeyRef<'_>,
        lead: bool,
        m: &BucketMetrics,
    ) -> Lookup<V> {
        let owner = self.owner(key);
        if owner == self.me {
            return self.lookup_owned(key, lead).await;
        }
        if let Some(obj) = self.l1.get(key) {
            m.cache_l1_hits.inc();
            return Lookup::Found(Found {
                obj,
                tier: "memory",
            });
        }
        m.cache_remote_lookups.inc();
        let started = Instant::now();
        let l1_epoch = self.l1.epoch.get();
        let (reply, answer) = oneshot::channel();
        let msg = OwnerMsg::Lookup {
            key: key.to_key(),
            lead,
            reply,
        };
        if self.peers.try_send(owner, msg).is_err() {
            m.cache_owner_busy.inc();
            return Lookup::Busy;
        }
        let answer = match monoio::time::timeout(REPLY_TIMEOUT, answer).await {
            Ok(Ok(a)) => a,
            // Timed out, or the owner exited with the lookup queued.
            _ => {
                m.cache_owner_busy.inc();
                return Lookup::Busy;
            }
        };
        m.cache_remote_lookup_duration.observe(started.elapsed());
        match answer {
            Answer::Found(obj, tier) => {
                // An L1 purge since the lookup left may have been for this very entry.
                if obj.is_fresh(SystemTime::now()) && self.l1.epoch.get() == l1_epoch {
                    self.l1.offer(key, &obj);
                }
                Lookup::Found(Found { obj, tier })
            }
            Answer::Lead(token) => Lookup::Lead(Lease {
                owners: self.clone(),
                key: key.to_key(),
                guard: None,
                token: Some(token),
            }),
            Answer::Follow(rx) => Lookup::Await(rx),
            Answer::Miss => Lookup::Miss,
        }
    }

    /// [`Owners::lookup`] for a key this core owns.
    async fn lookup_owned(self: &Rc<Self>, key: &CacheKeyRef<'_>, lead: bool) -> Lookup<V> {
        if let Some(found) = self.usable(key, lead).await {
            return Lookup::Found(found);
        }
        if !lead {
            return Lookup::Miss;
        }
        let key = key.to_key();
        if let Some(p) = self.pending.borrow_mut().get_mut(&key) {
            if p.remote_led {
                let (tx, rx) = oneshot::channel();
                p.waiters.push(tx);
                return Lookup::Await(rx);
            }
        }
        match self.flights.begin(&key) {
            Flight::Leader(guard) => Lookup::Lead(Lease {
                owners: self.clone(),
                key,
                guard: Some(guard),
                token: None,
            }),
            Flight::Follower(waiter) => Lookup::Follow(waiter),
        }
    }

    /// The partition's entry for `key` if it can serve (fresh) or be revalidated (stale with
    /// an ETag); a stale entry without one is dropped.
    async fn usable(&self, key: &CacheKeyRef<'_>, whole: bool) -> Option<Found> {
        let found = self.tiers.lookup(key, whole).await?;
        if found.obj.etag.is_some() || found.obj.is_fresh(SystemTime::now()) {
            return Some(found);
        }
        self.tiers.remove(&key.to_key());
        None
    }

    /// Apply a streamed-fill message to this core's disk tier (the key is owned here).
    fn stream(&self, m: StreamMsg) {
        let Some(disk) = self.tiers.disk() else {
            return;
        };
        match m {
            StreamMsg::Begin { id, key, meta, len } => {
                disk.stream_begin(id, &key, meta, len);
            }
            StreamMsg::Chunk { id, bytes } => {
                disk.stream_chunk(id, bytes);
            }
            StreamMsg::End { id, complete } => disk.stream_end(id, complete),
        }
    }

    /// Largest body a streamed disk fill takes, bytes (0 without a disk tier).
    pub fn max_stream(&self) -> u64 {
        self.tiers.disk().map_or(0, |d| d.max_stream())
    }

    /// Start streaming a body of `len` bytes for `key` (described by `meta`, an entry with an
    /// empty body) to its owner's disk tier while it passes through this core: `None` when
    /// there is no disk tier, the body is too large, or the owner's queue refused it.
    pub fn tee(self: &Rc<Self>, key: &CacheKey, meta: CachedObject, len: u64) -> Option<Tee<V>> {
        if len > self.max_stream() {
            return None;
        }
        let n = self.streams_started.get();
        self.streams_started.set(n + 1);
        let id = ((self.me as u64) << 56) | (n & ((1 << 56) - 1));
        let owner = owner_of(key.bucket_bytes(), key.key(), self.peers.shards());
        let tee = Tee {
            owners: self.clone(),
            owner,
            id,
            batch: BytesMut::new(),
            broken: false,
            ended: false,
        };
        let begin = StreamMsg::Begin {
            id,
            key: key.clone(),
            meta: Arc::new(meta),
            len,
        };
        tee.send(begin).then_some(tee)
    }

    /// Offer a complete entry (a revalidation's refresh, a fill nobody waited for) to the
    /// key's owner.
    pub fn insert(&self, key: &CacheKey, obj: &Arc<CachedObject>) {
        let owner = owner_of(key.bucket_bytes(), key.key(), self.peers.shards());
        if owner == self.me {
            self.fill(key, obj);
            return;
        }
        let _ = self.peers.send_always(
            owner,
            OwnerMsg::Store {
                key: key.clone(),
                entry: Some(obj.clone()),
                ends_flight: false,
            },
        );
    }

    /// Drop `key` at its owner and from this core's L1 (it no longer matches S3).
    pub fn remove(&self, key: &CacheKey) {
        self.l1.memory.remove(key);
        let owner = owner_of(key.bucket_bytes(), key.key(), self.peers.shards());
        if owner == self.me {
            self.tiers.remove(key);
        } else {
            let _ = self
                .peers
                .send_always(owner, OwnerMsg::Remove { key: key.clone() });
        }
    }

    /// Offer `obj` to this core's tiers unless a fence refuses it: an entry whose response
    /// arrived before its bucket was fenced ([`Owners::fence`]) was fetched under settings a
    /// reload replaced (a fill ends, or its store reaches the owner, after the purge that the
    /// reload caused). Whether a tier admitted it.
    fn fill(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        let fenced = self
            .fences
            .borrow()
            .get(key.bucket())
            .is_some_and(|at| obj.stored_at < *at);
        !fenced && self.tiers.fill(key, obj)
    }

    /// Refuse every later fill of `bucket` whose response arrived before `at` (a reload pointed
    /// the bucket at other S3 settings and purged it: fills in flight then must not bring the
    /// old objects back). One entry per bucket, replaced by the next fence.
    pub fn fence(&self, bucket: &str, at: SystemTime) {
        self.fences.borrow_mut().insert(bucket.to_owned(), at);
    }

    /// Drop what `scope` names from this core's partition; how many entries. The admin purge
    /// runs it on every core, then [`Owners::purge_l1`] on every core: once no owner holds the
    /// entry, no L1 can get it back, so the purge is exact on the node.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        self.tiers.purge(scope)
    }

    /// Drop what `scope` names from this core's L1 (the second phase of a purge); how many
    /// copies. An owner's answer already on its way when this runs is not admitted.
    pub fn purge_l1(&self, scope: &PurgeScope) -> usize {
        self.l1.purge(scope)
    }

    /// Serve the lookups and stores other cores send this core, until the future is dropped
    /// (or every sender is gone). Run it with `ShardContext::spawn_service`, which ends it on this
    /// core once the shard has drained; the inbox is then closed and what was queued is
    /// answered (a lookup: [`Answer::Miss`]; a store: its flight's followers get the entry).
    /// Later lookups from cores still draining find the queue closed: they fetch from S3
    /// without a fill, so no request is lost. `before_each` runs before each message (the pipeline
    /// applies a config reload there, so an owner never answers for a bucket a reload
    /// changed).
    pub async fn serve(self: Rc<Self>, inbox: Inbox<OwnerMsg>, before_each: impl Fn())
    where
        V: 'static,
    {
        let _close = CloseOnDrop {
            owners: &self,
            inbox: &inbox,
        };
        while let Some(msg) = inbox.recv().await {
            before_each();
            match msg {
                // A disk read or a Redis round trip takes tens of microseconds: answer
                // lookups concurrently.
                OwnerMsg::Lookup { .. } if self.tiers.lookups_wait() => {
                    let owners = self.clone();
                    monoio::spawn(async move { owners.handle(msg).await });
                }
                msg => self.handle(msg).await,
            }
        }
    }

    /// Answer one message from another core.
    pub async fn handle(&self, msg: OwnerMsg) {
        match msg {
            OwnerMsg::Lookup { key, lead, reply } => {
                let answer = self.answer(&key, lead).await;
                if let Err(Answer::Lead(mut token)) = reply.send(answer) {
                    // The asker gave up before the answer: nobody leads, end the flight now.
                    token.key = None;
                    self.pending.borrow_mut().remove(&key);
                }
            }
            OwnerMsg::Store {
                key,
                entry,
                ends_flight,
            } => {
                if let Some(obj) = &entry {
                    self.fill(&key, obj);
                }
                if ends_flight {
                    self.end_pending(&key, true, entry);
                }
            }
            OwnerMsg::Remove { key } => self.tiers.remove(&key),
            OwnerMsg::Stream(m) => self.stream(m),
        }
    }

    /// The answer to another core's lookup of `key` (a key this core owns).
    async fn answer(&self, key: &CacheKey, lead: bool) -> Answer {
        if let Some(found) = self.usable(&key.as_ref_key(), lead).await {
            return Answer::Found(found.obj, found.tier);
        }
        if !lead {
            return Answer::Miss;
        }
        let mut pending = self.pending.borrow_mut();
        if let Some(p) = pending.get_mut(key) {
            let (tx, rx) = oneshot::channel();
            p.waiters.push(tx);
            return Answer::Follow(rx);
        }
        if self.flights.contains(key) {
            let (tx, rx) = oneshot::channel();
            pending.insert(
                key.clone(),
                Pending {
                    remote_led: false,
                    waiters: vec![tx],
                },
            );
            return Answer::Follow(rx);
        }
        pending.insert(
            key.clone(),
            Pending {
                remote_led: true,
                waiters: Vec::new(),
            },
        );
        Answer::Lead(LeadToken {
            peers: self.peers.clone(),
            owner: self.me,
            key: Some(key.clone()),
        })
    }

    /// End the other cores' wait on `key`'s flight (led remotely when `remote_led`, else
    /// here), handing each waiter `entry`.
    fn end_pending(&self, key: &CacheKey, remote_led: bool, entry: Option<Arc<CachedObject>>) {
        let p = {
            let mut pending = self.pending.borrow_mut();
            match pending.get(key) {
                Some(p) if p.remote_led == remote_led => pending.remove(key),
                _ => None,
            }
        };
        for w in p.into_iter().flat_map(|p| p.waiters) {
            // A waiter that gave up dropped its receiver; nothing to do.
            let _ = w.send(entry.clone());
        }
    }
}

/// Body bytes a [`Tee`] gathers before it sends them to the owner (one message, one queued
/// write piece).
pub const TEE_BATCH_BYTES: usize = 256 * 1024;

/// A body streamed to its owner's disk tier as it passes through to the client (see
/// [`Owners::tee`]). Bytes are batched into [`TEE_BATCH_BYTES`] messages; a refused message
/// (the owner's queue is full or closed) breaks the stream and it is abandoned, never waited
/// for. Dropping a tee that was not finished abandons the record.
pub struct Tee<V> {
    owners: Rc<Owners<V>>,
    owner: usize,
    id: u64,
    batch: BytesMut,
    broken: bool,
    ended: bool,
}

impl<V> Tee<V> {
    fn send(&self, m: StreamMsg) -> bool {
        if self.owner == self.owners.me {
            let Some(disk) = self.owners.tiers.disk() else {
                return false;
            };
            return match m {
                StreamMsg::Begin { id, key, meta, len } => disk.stream_begin(id, &key, meta, len),
                StreamMsg::Chunk { id, bytes } => disk.stream_chunk(id, bytes),
                StreamMsg::End { id, complete } => {
                    disk.stream_end(id, complete);
                    true
                }
            };
        }
        let end = matches!(m, StreamMsg::End { .. });
        let sent = if end {
            self.owners
                .peers
                .send_always(self.owner, OwnerMsg::Stream(m))
        } else {
            self.owners.peers.try_send(self.owner, OwnerMsg::Stream(m))
        };
        sent.is_ok()
    }

    /// Copy `data` (the next body bytes) into the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.broken {
            return;
        }
        self.batch.extend_from_slice(data);
        if self.batch.len() >= TEE_BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() || self.broken {
            return;
        }
        let bytes = self.batch.split().freeze();
        self.batch.reserve(TEE_BATCH_BYTES);
        if !self.send(StreamMsg::Chunk { id: self.id, bytes }) {
            self.broken = true;
        }
    }

    /// End the stream: `complete` when the whole declared body passed (the owner then seals
    /// and indexes the record).
    pub fn finish(mut self, complete: bool) {
        self.flush();
        self.end(complete);
    }

    fn end(&mut self, complete: bool) {
        if !self.ended {
            self.ended = true;
            let complete = complete && !self.broken;
            self.send(StreamMsg::End {
                id: self.id,
                complete,
            });
        }
    }
}

impl<V> Drop for Tee<V> {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Closes an owner's inbox when its serving task ends, so later lookups fail at once
/// (`Busy`) instead of waiting [`REPLY_TIMEOUT`].
/// Answers what was queued when it closes: a lookup gets [`Answer::Miss`] (its asker fetches
/// from S3 without a fill), a store ends its flight (its followers get the entry), a removal
/// is applied.
struct CloseOnDrop<'a, V> {
    owners: &'a Owners<V>,
    inbox: &'a Inbox<OwnerMsg>,
}

impl<V> Drop for CloseOnDrop<'_, V> {
    fn drop(&mut self) {
        for msg in self.inbox.close() {
            match msg {
                OwnerMsg::Lookup { reply, .. } => {
                    let _ = reply.send(Answer::Miss);
                }
                OwnerMsg::Store {
                    key,
                    entry,
                    ends_flight,
                } => {
                    if ends_flight {
                        self.owners.end_pending(&key, true, entry);
                    }
                }
                OwnerMsg::Remove { key } => self.owners.tiers.remove(&key),
                // A closing owner writes nothing more; a half-streamed record stays unindexed.
                OwnerMsg::Stream(_) => {}
            }
        }
    }
}

/// One core's hot copies of entries other cores own, so the most requested objects do not
/// cross cores on every hit. A small memory shard (`cache.memory.l1_percent` of the core's
/// share) behind an admission filter: a copy is admitted on the second fresh remote hit of a
/// key within the filter's memory (a one-hit key never displaces a hot one). Copies share the
/// owner's body (`Bytes`), so an L1 copy costs memory only while the owner evicted the
/// original. Dropped on purge, on removal, on a reload that changes the bucket, and when stale
/// (the owner is asked again).
pub struct L1 {
    memory: MemoryShard,
    seen: RefCell<quick_cache::unsync::Cache<u64, ()>>,
    /// Purges so far: an owner's answer to a lookup sent before the latest purge is not
    /// admitted (it may be the purged entry).
    epoch: std::cell::Cell<u64>,
}

impl L1 {
    /// An L1 of `capacity_bytes` (0 = none). Its entries are not counted in the partition's
    /// cache gauges (they are copies).
    pub fn new(capacity_bytes: u64) -> L1 {
        let remembered = (capacity_bytes / 1024).clamp(64, 1 << 16) as usize;
        L1 {
            memory: MemoryShard::new(capacity_bytes),
            seen: RefCell::new(quick_cache::unsync::Cache::new(remembered)),
            epoch: std::cell::Cell::new(0),
        }
    }

    /// A fresh copy of `key`, or `None` (a stale copy is dropped).
    pub fn get(&self, key: &CacheKeyRef<'_>) -> Option<Arc<CachedObject>> {
        if self.memory.capacity() == 0 {
            return None;
        }
        let obj = self.memory.get(key)?;
        if obj.is_fresh(SystemTime::now()) {
            return Some(obj);
        }
        self.memory.remove(&key.to_key());
        None
    }

    /// A fresh entry the owner returned for `key`: admitted when the key was seen recently;
    /// whether it was.
    pub fn offer(&self, key: &CacheKeyRef<'_>, obj: &Arc<CachedObject>) -> bool {
        if self.memory.capacity() == 0
            || obj.disk.is_some()
            || obj.weight() > self.memory.max_entry_weight()
        {
            return false;
        }
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(
            key.key,
            xxhash_rust::xxh3::xxh3_64_with_seed(key.bucket, SEEN_SEED),
        );
        let mut seen = self.seen.borrow_mut();
        if seen.remove(&h).is_none() {
            seen.insert(h, ());
            return false;
        }
        drop(seen);
        self.memory.insert(key.to_key(), obj.clone())
    }

    /// Drop what `scope` names, and forget which keys were seen (a purged key is admitted
    /// again only after two fresh hits of the new entry); how many copies.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        self.epoch.set(self.epoch.get() + 1);
        self.seen.borrow_mut().clear();
        match scope {
            PurgeScope::All => self.memory.clear(),
            PurgeScope::Bucket(b) => self.memory.purge_bucket(b),
            PurgeScope::Object(b, k) => self.memory.purge_object(b, k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_in_range() {
        // Pinned values: a change here moves every key to another core (and orphans disk shards).
        assert_eq!(owner_of(b"public", b"a.txt", 1), 0);
        let first: Vec<usize> = (0..8)
            .map(|i| owner_of(b"public", format!("k{i}").as_bytes(), 4))
            .collect();
        let again: Vec<usize> = (0..8)
            .map(|i| owner_of(b"public", format!("k{i}").as_bytes(), 4))
            .collect();
        assert_eq!(first, again);
        assert!(first.iter().all(|&o| o < 4));
        assert_ne!(
            (0..64)
                .map(|i| owner_of(b"a", format!("{i}").as_bytes(), 2))
                .collect::<Vec<_>>(),
            (0..64)
                .map(|i| owner_of(b"b", format!("{i}").as_bytes(), 2))
                .collect::<Vec<_>>(),
            "the bucket takes part in the hash"
        );
    }

    #[test]
    fn load_is_even_over_100k_keys_for_2_to_64_shards() {
        for shards in [2usize, 3, 4, 8, 16, 32, 64] {
            let mut load = vec![0u32; shards];
            for i in 0..100_000u32 {
                let key = format!("objects/{:08}/image-{i}.jpg", i / 7);
                load[owner_of(b"media", key.as_bytes(), shards)] += 1;
            }
            let mean = 100_000.0 / shards as f64;
            let max = f64::from(*load.iter().max().unwrap_or(&0));
            // A uniform hash's max/mean at 100k keys is ~1.01 at 2 shards, ~1.06 at 64.
            assert!(
                max / mean < 1.10,
                "{shards} shards: max/mean {}",
                max / mean
            );
        }
    }

    #[test]
    fn l1_admits_on_the_second_fresh_offer() {
        let l1 = L1::new(1 << 20);
        let obj = Arc::new(CachedObject::new(
            bytes::Bytes::from_static(b"hello"),
            Vec::new(),
            SystemTime::now(),
            Duration::from_secs(60),
        ));
        let key = CacheKeyRef::new("b", b"k", None);
        assert!(!l1.offer(&key, &obj));
        assert!(l1.get(&key).is_none());
        assert!(l1.offer(&key, &obj));
        assert!(Arc::ptr_eq(&l1.get(&key).expect("admitted"), &obj));
        assert_eq!(l1.purge(&PurgeScope::Object("b".into(), b"k".to_vec())), 1);
        assert!(l1.get(&key).is_none());
        // A purge forgets what was seen: the next copy needs two fresh hits again.
        assert!(!l1.offer(&key, &obj));
        assert!(l1.offer(&key, &obj));
    }
}

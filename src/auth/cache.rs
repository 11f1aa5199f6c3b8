//! [`TokenCache`]: the shard's cache of verified tokens, so a client reusing its token pays one
//! RSA/ECDSA/EdDSA verification per shard, not one per request (issue 3, item 6).
//!
//! Hot path on every authenticated request. Cost: one SHA-256 of the token and one
//! quick_cache probe, 0.4-0.75 us together for an 800-byte token (`benches/jwt.rs`, versus
//! 50-440 us for an EdDSA/RSA/ECDSA verification); a miss adds an insert after the
//! verification. Memory: bounded by the entry count given to [`TokenCache::new`] (~150 bytes
//! per entry plus the shared claims).
//!
//! Keys are `(verifier id, SHA-256 of the token bytes)`: the token itself is never stored,
//! and a token verified under one bucket's verifier never answers for another bucket or a
//! reloaded config (a new [`super::Verifier`] has a new id). Each entry also records the
//! caller's config generation and the JWKS generation it was verified under; a lookup under a
//! different generation, or at or after `exp + leeway`, drops the entry and misses. `!Send`:
//! one per shard, never shared (`RefCell`, never borrowed across an `.await`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::Verified;

/// Cache key: the verifier's id and the SHA-256 of the token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    verifier: u64,
    digest: [u8; 32],
}

impl CacheKey {
    /// The key of `token` under verifier `verifier`.
    pub(crate) fn new(verifier: u64, token: &str) -> CacheKey {
        CacheKey {
            verifier,
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }
}

/// What an entry must match to be used: the verifier and both generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) verifier: u64,
    pub(crate) generation: u64,
    pub(crate) jwks_generation: u64,
}

/// A cached decision: the verified token, or the claims rule it failed (403).
pub(crate) type Outcome = Result<Rc<Verified>, Rc<str>>;

#[derive(Clone)]
struct Entry {
    stamp: Stamp,
    /// Unix seconds from which the entry is stale (`exp + leeway`).
    valid_until: u64,
    outcome: Outcome,
}

/// Per-shard cache of verified tokens (see the module docs). Bounded to the capacity given at
/// construction; quick_cache's CLOCK-Pro eviction keeps frequently reused tokens.
pub struct TokenCache {
    entries: RefCell<quick_cache::unsync::Cache<CacheKey, Entry>>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (e.g. 10_000; at least 1).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            entries: RefCell::new(quick_cache::unsync::Cache::new(capacity.max(1))),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// Lookups answered from the cache since creation.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Lookups that had to verify the token (absent, stale or of another generation).
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// Tokens currently cached.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry (e.g. when the shard sees a new config generation; entries of old
    /// verifiers would otherwise only age out).
    pub fn clear(&self) {
        self.entries.borrow_mut().clear();
    }

    /// The cached outcome for `key` if it was stored under `stamp` and `now < valid_until`;
    /// a stale or foreign entry is removed. Counts a hit or a miss.
    pub(crate) fn lookup(&self, key: &CacheKey, stamp: &Stamp, now: u64) -> Option<Outcome> {
        let found = {
            let entries = self.entries.borrow();
            entries.get(key).map(|e| {
                let fresh = e.stamp == *stamp && now < e.valid_until;
                (fresh, e.outcome.clone())
            })
        };
        match found {
            Some((true, outcome)) => {
                self.hits.set(self.hits.get() + 1);
                Some(outcome)
            }
            Some((false, _)) => {
                self.entries.borrow_mut().remove(key);
                self.misses.set(self.misses.get() + 1);
                None
            }
            None => {
                self.misses.set(self.misses.get() + 1);
                None
            }
        }
    }

    /// Stores `outcome` for `key`, valid until unix second `valid_until` (exclusive).
    pub(crate) fn insert(&self, key: CacheKey, stamp: Stamp, valid_until: u64, outcome: Outcome) {
        debug_assert_eq!(key.verifier, stamp.verifier);
        self.entries.borrow_mut().insert(
            key,
            Entry {
                stamp,
                valid_until,
                outcome,
            },
        );
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: u64) -> Outcome {
        Ok(Rc::new(Verified {
            subject: Some("alice".into()),
            claims: serde_json::json!({"sub": "alice", "exp": exp}),
            expires_at: Some(exp),
        }))
    }

    #[test]
    fn key_is_a_digest_not_the_token() {
        let a = CacheKey::new(1, "a.b.c");
        assert_eq!(a, CacheKey::new(1, "a.b.c"));
        assert_ne!(a, CacheKey::new(2, "a.b.c"));
        assert_ne!(a, CacheKey::new(1, "a.b.d"));
        assert!(!format!("{a:?}").contains("a.b.c"));
    }

    #[test]
    fn hit_until_valid_until_then_miss() {
        let cache = TokenCache::new(10);
        let stamp = Stamp {
            verifier: 1,
            generation: 1,
            jwks_generation: 0,
        };
        let key = CacheKey::new(1, "t");
        cache.insert(key.clone(), stamp, 100, verified(100));
        assert!(cache.lookup(&key, &stamp, 99).is_some());
        assert!(cache.lookup(&key, &stamp, 100).is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        // The stale entry was dropped.
        assert!(cache.is_empty());
    }

    #[test]
    fn generation_change_misses_and_drops() {
        let cache = TokenCache::new(10);
        let stamp = Stamp {
            verifier: 1,
            generation: 1,
            jwks_generation: 3,
        };
        let key = CacheKey::new(1, "t");
        cache.insert(key.clone(), stamp, 100, verified(100));
        let newer_jwks = Stamp {
            jwks_generation: 4,
            ..stamp
        };
        assert!(cache.lookup(&key, &newer_jwks, 1).is_none());
        assert_eq!(cache.len(), 0);
        cache.insert(key.clone(), stamp, 100, verified(100));
        let newer_config = Stamp {
            generation: 2,
            ..stamp
        };
        assert!(cache.lookup(&key, &newer_config, 1).is_none());
        cache.insert(key.clone(), stamp, 100, verified(100));
        cache.clear();
        assert!(cache.lookup(&key, &stamp, 1).is_none());
    }

    #[test]
    fn bounded() {
        let cache = TokenCache::new(100);
        let stamp = Stamp {
            verifier: 1,
            generation: 0,
            jwks_generation: 0,
        };
        for i in 0..1_000 {
            cache.insert(
                CacheKey::new(1, &format!("t{i}")),
                stamp,
                100,
                verified(100),
            );
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }
}

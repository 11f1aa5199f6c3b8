//! Longest-prefix routing of request paths to buckets on path-segment boundaries
//! (DESIGN section 5: `/publicdir/x` does not match `/public`).
//!
//! Hot path: one [`Router::route`] per request. The prefixes live in a hash map keyed by the
//! prefix text; a lookup probes the path cut at each `/` boundary from the longest candidate to
//! the shortest, skipping cut lengths no prefix has. Cost: at most one hash probe per path
//! segment (independent of the number of buckets), no allocation. The hasher is a fixed,
//! unkeyed multiply-rotate hash (FxHash style): the keys come from the config, and a client
//! choosing probe strings cannot make the table degrade, only miss.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Prefix table routing normalised request paths to bucket indices. Immutable once built;
/// rebuilt with each config snapshot.
#[derive(Debug, Clone)]
pub struct Router {
    /// Prefix without trailing `/` (never empty) to bucket index.
    prefixes: HashMap<Box<str>, usize, BuildHasherDefault<FxHasher>>,
    /// Bucket for the `/` prefix, used when nothing longer matches.
    catch_all: Option<usize>,
    /// `has_len[n]` is true when some prefix is exactly `n` bytes long.
    has_len: Vec<bool>,
}

impl Router {
    /// Build from `(path_prefix, bucket index)` pairs.
    ///
    /// A prefix starts with `/` (one is added if missing); trailing slashes are ignored and
    /// repeated slashes collapse, so `"/public/"` and `"/public"` are the same prefix; `"/"`
    /// alone (or `""`) is the catch-all. Prefixes are compared byte for byte with the
    /// normalised, still percent-encoded path, so give them in that form. When a prefix
    /// appears twice the first bucket index wins (config validation should reject that).
    pub fn new<I: IntoIterator<Item = (String, usize)>>(prefixes: I) -> Router {
        let mut map: HashMap<Box<str>, usize, BuildHasherDefault<FxHasher>> = HashMap::default();
        let mut catch_all = None;
        for (prefix, bucket) in prefixes {
            let key = canonical_prefix(&prefix);
            if key.is_empty() {
                catch_all.get_or_insert(bucket);
            } else {
                map.entry(key.into_boxed_str()).or_insert(bucket);
            }
        }
        let max_len = map.keys().map(|k| k.len()).max().unwrap_or(0);
        let mut has_len = vec![false; max_len + 1];
        for k in map.keys() {
            has_len[k.len()] = true;
        }
        Router {
            prefixes: map,
            catch_all,
            has_len,
        }
    }

    /// Number of distinct prefixes, the catch-all included.
    pub fn len(&self) -> usize {
        self.prefixes.len() + usize::from(self.catch_all.is_some())
    }

    /// True when no prefix was configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Route a normalised path (leading `/`, no `//`, still percent-encoded; see
    /// `http::path::normalize_path`).
    ///
    /// Returns the bucket index of the longest prefix matching on a segment boundary and the
    /// rest of the path after the prefix with its leading `/` removed (still percent-encoded;
    /// `""` when the path equals the prefix or the prefix plus `/`). `None` when nothing
    /// matches and there is no catch-all (404).
    pub fn route<'p>(&self, path: &'p str) -> Option<(usize, &'p str)> {
        debug_assert!(
            path.starts_with('/'),
            "route needs a normalised path: {path:?}"
        );
        let bytes = path.as_bytes();
        let max = self.has_len.len() - 1;
        // Candidate cut points: the end of the path, then every '/' from right to left. A cut
        // at a '/' is a char boundary, so slicing `path` there is safe.
        let mut end = if bytes.len() <= max {
            bytes.len()
        } else if bytes[max] == b'/' {
            max
        } else {
            bytes[..max]
                .iter()
                .rposition(|&b| b == b'/')
                .unwrap_or_default()
        };
        while end > 0 {
            if self.has_len[end] {
                if let Some(&bucket) = self.prefixes.get(&path[..end]) {
                    return Some((bucket, strip_slash(&path[end..])));
                }
            }
            end = bytes[..end]
                .iter()
                .rposition(|&b| b == b'/')
                .unwrap_or_default();
        }
        self.catch_all.map(|bucket| (bucket, strip_slash(path)))
    }
}

fn strip_slash(rest: &str) -> &str {
    rest.strip_prefix('/').unwrap_or(rest)
}

/// Leading `/`, no repeated or trailing `/`; `""` for the catch-all.
fn canonical_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for segment in prefix.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    out
}

/// Unkeyed FxHash-style hasher (the rustc hasher): 8 bytes per multiply. Safe here because the
/// table's keys come from trusted config; see the module header.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length first, so zero padding of the tail cannot make "/a" and "/a\0" collide.
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(prefixes: &[(&str, usize)]) -> Router {
        Router::new(prefixes.iter().map(|(p, b)| (p.to_string(), *b)))
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router(&[("/a", 0), ("/a/b", 1), ("/a/b/c", 2)]);
        assert_eq!(r.route("/a/x"), Some((0, "x")));
        assert_eq!(r.route("/a/b/x/y"), Some((1, "x/y")));
        assert_eq!(r.route("/a/b/c/d"), Some((2, "d")));
        assert_eq!(r.route("/a/b/cd"), Some((1, "cd")));
        assert_eq!(r.route("/z"), None);
    }

    #[test]
    fn segment_boundary() {
        let r = router(&[("/public", 0)]);
        assert_eq!(r.route("/publicdir/x"), None);
        assert_eq!(r.route("/publi"), None);
        assert_eq!(r.route("/public/x"), Some((0, "x")));
        let r = router(&[("/public", 0), ("/", 9)]);
        assert_eq!(r.route("/publicdir/x"), Some((9, "publicdir/x")));
    }

    #[test]
    fn exact_prefix_has_empty_rest() {
        let r = router(&[("/public", 0)]);
        assert_eq!(r.route("/public"), Some((0, "")));
        assert_eq!(r.route("/public/"), Some((0, "")));
        assert_eq!(r.route("/public/dir/"), Some((0, "dir/")));
    }

    #[test]
    fn catch_all() {
        let r = router(&[("/", 3)]);
        assert_eq!(r.route("/"), Some((3, "")));
        assert_eq!(r.route("/any/key.txt"), Some((3, "any/key.txt")));
        let r = router(&[("/", 3), ("/img", 4)]);
        assert_eq!(r.route("/img/a.png"), Some((4, "a.png")));
        assert_eq!(r.route("/imgs/a.png"), Some((3, "imgs/a.png")));
        assert_eq!(r.route("/"), Some((3, "")));
        assert!(router(&[("/a", 0)]).route("/").is_none());
    }

    #[test]
    fn trailing_slash_and_odd_prefixes() {
        let r = router(&[
            ("/public/", 0),
            ("//deep//nested///", 1),
            ("noslash", 2),
            ("", 5),
        ]);
        assert_eq!(r.route("/public/k"), Some((0, "k")));
        assert_eq!(r.route("/public"), Some((0, "")));
        assert_eq!(r.route("/deep/nested/k"), Some((1, "k")));
        assert_eq!(r.route("/noslash/k"), Some((2, "k")));
        assert_eq!(r.route("/other"), Some((5, "other")));
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn first_duplicate_wins() {
        let r = router(&[("/a", 0), ("/a/", 1), ("/", 2), ("/", 3)]);
        assert_eq!(r.route("/a/k"), Some((0, "k")));
        assert_eq!(r.route("/k"), Some((2, "k")));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn empty_router() {
        let r = router(&[]);
        assert!(r.is_empty());
        assert_eq!(r.route("/a/b"), None);
        assert_eq!(r.route("/"), None);
    }

    #[test]
    fn paths_longer_than_every_prefix() {
        let r = router(&[("/ab", 0), ("/abcdef", 1)]);
        // Longest prefix is 7 bytes: cut lands inside a segment, on a '/', or past the end.
        assert_eq!(r.route("/abcdefgh/x"), None);
        assert_eq!(r.route("/abcdef/xyz/123"), Some((1, "xyz/123")));
        assert_eq!(r.route("/ab/cdefghij"), Some((0, "cdefghij")));
        assert_eq!(r.route("/abcdefghijklmnop"), None);
    }

    #[test]
    fn non_ascii_and_encoded_prefixes() {
        let r = router(&[("/caf\u{e9}", 0), ("/my%20bucket", 1)]);
        assert_eq!(r.route("/caf\u{e9}/\u{20ac}"), Some((0, "\u{20ac}")));
        assert_eq!(r.route("/my%20bucket/k%2Fx"), Some((1, "k%2Fx")));
        // A cut after the multi-byte char must still land on a char boundary.
        assert_eq!(r.route("/\u{20ac}\u{20ac}\u{20ac}\u{20ac}/a"), None);
    }

    #[test]
    fn thousand_buckets() {
        let r = Router::new((0..1000).map(|i| (format!("/tenant-{i}/assets"), i)));
        assert_eq!(r.len(), 1000);
        for i in [0, 1, 499, 999] {
            let path = format!("/tenant-{i}/assets/img/2024/photo.jpg");
            assert_eq!(r.route(&path), Some((i, "img/2024/photo.jpg")));
        }
        assert_eq!(r.route("/tenant-1000/assets/x"), None);
        assert_eq!(r.route("/tenant-5/asset/x"), None);
        assert_eq!(r.route("/tenant-5"), None);
    }

    #[test]
    fn hasher_distinguishes_lengths_and_tails() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let b = BuildHasherDefault::<FxHasher>::default();
        let h = |s: &str| b.hash_one(s);
        assert_ne!(h("/a"), h("/a\0"));
        assert_ne!(h("/abcdefgh"), h("/abcdefgi"));
        assert_ne!(h("/abcdefghX"), h("/abcdefghY"));
    }
}

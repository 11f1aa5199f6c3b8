//! What the cache did for one request, as a type: the `X-Cache` value, the RFC 9211
//! `Cache-Status` field and the access log's `cache` word all come from one [`CacheOutcome`],
//! so they can never disagree.
//!
//! Hot path: every cached or fetched answer writes one or two of these static strings; no
//! allocation, no formatting.

/// What the cache did for a request (DESIGN section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The request never reached the cache (a local answer, or an error before the lookup).
    None,
    /// Answered from the entry a tier held, fresh.
    Hit {
        /// The tier that answered (`memory`, later `disk`, `redis`).
        tier: &'static str,
    },
    /// A stale entry S3 confirmed with 304: answered from it, refreshed.
    Revalidated,
    /// Joined another request's fetch of the key on this core and served from its fill.
    Collapsed,
    /// Fetched from S3; `stored` when the response is being filled into the cache.
    Miss {
        /// The response went into the entry being filled (a storable 200 within the limits).
        stored: bool,
    },
    /// The bucket does not cache, or the response may not be stored.
    Bypass,
    /// An expired entry served because S3 could not be reached to revalidate it.
    Stale,
}

impl CacheOutcome {
    /// The `X-Cache` value: `HIT` (any tier, a revalidated or a collapsed answer), `MISS`,
    /// `BYPASS`, `STALE`; `None` when no header is sent.
    pub fn x_cache(self) -> Option<&'static str> {
        match self {
            CacheOutcome::None => None,
            CacheOutcome::Hit { .. } | CacheOutcome::Revalidated | CacheOutcome::Collapsed => {
                Some("HIT")
            }
            CacheOutcome::Miss { .. } => Some("MISS"),
            CacheOutcome::Bypass => Some("BYPASS"),
            CacheOutcome::Stale => Some("STALE"),
        }
    }

    /// The `Cache-Status` value (RFC 9211 section 2): `yatagarasu; hit; detail=memory`,
    /// `yatagarasu; fwd=stale; fwd-status=304`, `yatagarasu; fwd=miss; collapsed`,
    /// `yatagarasu; fwd=miss; stored`, `yatagarasu; fwd=miss`, `yatagarasu; fwd=bypass`,
    /// `yatagarasu; hit; detail=stale`.
    pub fn cache_status(self) -> Option<&'static str> {
        Some(match self {
            CacheOutcome::None => return None,
            CacheOutcome::Hit { tier } => match tier {
                "disk" => "yatagarasu; hit; detail=disk",
                "redis" => "yatagarasu; hit; detail=redis",
                _ => "yatagarasu; hit; detail=memory",
            },
            CacheOutcome::Revalidated => "yatagarasu; fwd=stale; fwd-status=304",
            CacheOutcome::Collapsed => "yatagarasu; fwd=miss; collapsed",
            CacheOutcome::Miss { stored: true } => "yatagarasu; fwd=miss; stored",
            CacheOutcome::Miss { stored: false } => "yatagarasu; fwd=miss",
            CacheOutcome::Bypass => "yatagarasu; fwd=bypass",
            CacheOutcome::Stale => "yatagarasu; hit; detail=stale",
        })
    }

    /// The access log's `cache` field: the `X-Cache` value, or `-`.
    pub fn log_word(self) -> &'static str {
        self.x_cache().unwrap_or("-")
    }

    /// Whether the answer came from a cached body (counted as a hit; BYPASS is counted apart).
    pub fn is_hit(self) -> bool {
        matches!(
            self,
            CacheOutcome::Hit { .. }
                | CacheOutcome::Revalidated
                | CacheOutcome::Collapsed
                | CacheOutcome::Stale
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_cache_and_cache_status_agree() {
        let all = [
            CacheOutcome::Hit { tier: "memory" },
            CacheOutcome::Revalidated,
            CacheOutcome::Collapsed,
            CacheOutcome::Miss { stored: true },
            CacheOutcome::Miss { stored: false },
            CacheOutcome::Bypass,
            CacheOutcome::Stale,
        ];
        for o in all {
            let status = o.cache_status().unwrap();
            assert!(status.starts_with("yatagarasu; "), "{o:?}");
            match o.x_cache().unwrap() {
                "HIT" => assert!(
                    status.contains("hit")
                        || status.contains("fwd=stale")
                        || status.contains("collapsed")
                ),
                "MISS" => assert!(status.contains("fwd=miss")),
                "BYPASS" => assert!(status.contains("fwd=bypass")),
                "STALE" => assert!(status.contains("detail=stale")),
                other => panic!("{other}"),
            }
        }
        assert_eq!(CacheOutcome::None.x_cache(), None);
        assert_eq!(CacheOutcome::None.log_word(), "-");
        assert_eq!(
            CacheOutcome::Hit { tier: "disk" }.cache_status(),
            Some("yatagarasu; hit; detail=disk")
        );
    }
}

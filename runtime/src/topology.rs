//! Shard resolution: from the `shards` and `cpu_affinity` settings and the process's CPU
//! affinity mask to a list of shards, each with the CPU it is pinned to (or none).
//!
//! Cold path: runs once in `start()`, on the main thread, before any thread is pinned
//! (`core_affinity::get_core_ids()` reads the *calling* thread's mask, so it must be read
//! before pinning). Pure function of its inputs, so every rule is unit tested.
//!
//! Rules (the "CPU pool" is the affinity mask for `cpu_affinity: auto`, the list for
//! `cpu_affinity: [..]`):
//! - `shards: auto` = one shard per CPU of the pool; with `cpu_affinity: none`, one per CPU
//!   of the mask (or `available_parallelism` if the mask is unreadable).
//! - Shard `i` is pinned to `pool[i % pool.len()]`. `shards: N` with N <= pool size uses the
//!   first N CPUs; N > pool size wraps round-robin (two event loops share a CPU), which is
//!   allowed but logged as a warning by `start()` (see [`ShardPlan::oversubscribed`]); use
//!   `cpu_affinity: none` to leave placement to the scheduler instead.
//! - `cpu_affinity: none` pins nothing.
//! - Every listed CPU must be in the mask, appear once, and the list must not be empty.
//! - `shards: 0` and more than [`MAX_SHARDS`] shards are errors.
//!
//! The mask respects taskset/cpuset/systemd `CPUAffinity`, not cgroup CPU *quotas*
//! (`cpu.max`): a container limited to 2 CPUs of quota on a 64-CPU host still sees 64.

use crate::error::RuntimeError;

/// Upper bound on the shard count; a guard against typos like `shards: 10000`.
pub const MAX_SHARDS: usize = 1024;

/// The `server.shards` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shards {
    /// One shard per CPU of the pool (see module docs).
    Auto,
    /// Exactly this many shards (>= 1, <= [`MAX_SHARDS`]).
    Count(usize),
}

/// The `server.cpu_affinity` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuAffinity {
    /// Pin shard `i` to the `i`-th CPU of the process affinity mask.
    Auto,
    /// Do not pin; the kernel scheduler places shard threads.
    None,
    /// Pin shard `i` to `list[i % len]`; every id must be in the affinity mask.
    List(Vec<usize>),
}

/// The resolved shard layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    /// CPU per shard, index = shard index; `None` = not pinned.
    pub cpus: Vec<Option<usize>>,
    /// True when more shards than CPUs in the pool: some CPUs run two shards.
    pub oversubscribed: bool,
}

/// Resolves the shard layout.
///
/// `mask` is the process affinity mask (CPU ids, any order; `None` if unreadable);
/// `parallelism` is the fallback shard count for `shards: auto, cpu_affinity: none` when
/// the mask is unreadable. Errors: `Count(0)`, too many shards, an empty or duplicate list,
/// a listed CPU outside the mask, pinning requested but the mask unreadable.
pub fn resolve_shards(
    shards: &Shards,
    affinity: &CpuAffinity,
    mask: Option<&[usize]>,
    parallelism: usize,
) -> Result<ShardPlan, RuntimeError> {
    let mut sorted_mask: Option<Vec<usize>> = mask.map(|m| {
        let mut v = m.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    });
    if sorted_mask.as_ref().is_some_and(Vec::is_empty) {
        sorted_mask = None;
    }

    let pool: Option<Vec<usize>> = match affinity {
        CpuAffinity::None => None,
        CpuAffinity::Auto => Some(
            sorted_mask
                .clone()
                .ok_or(RuntimeError::AffinityUnavailable)?,
        ),
        CpuAffinity::List(list) => {
            if list.is_empty() {
                return Err(RuntimeError::BadCpuList {
                    reason: "the list is empty; use `auto` or `none`".into(),
                });
            }
            let m = sorted_mask
                .as_ref()
                .ok_or(RuntimeError::AffinityUnavailable)?;
            for (i, cpu) in list.iter().enumerate() {
                if list[..i].contains(cpu) {
                    return Err(RuntimeError::BadCpuList {
                        reason: format!("CPU {cpu} is listed twice"),
                    });
                }
                if m.binary_search(cpu).is_err() {
                    return Err(RuntimeError::CpuNotInMask {
                        cpu: *cpu,
                        mask: m.clone(),
                    });
                }
            }
            Some(list.clone())
        }
    };

    let count = match shards {
        Shards::Count(0) => {
            return Err(RuntimeError::InvalidOptions {
                reason: "shards must be >= 1 or `auto`".into(),
            })
        }
        Shards::Count(n) => *n,
        Shards::Auto => match (&pool, &sorted_mask) {
            (Some(p), _) => p.len(),
            (None, Some(m)) => m.len(),
            (None, None) => parallelism.max(1),
        },
    };
    if count > MAX_SHARDS {
        return Err(RuntimeError::TooManyShards {
            requested: count,
            max: MAX_SHARDS,
        });
    }

    let (cpus, oversubscribed) = match &pool {
        None => (vec![None; count], false),
        Some(p) => {
            debug_assert!(!p.is_empty(), "the CPU pool is never empty here");
            (
                (0..count).map(|i| Some(p[i % p.len()])).collect(),
                count > p.len(),
            )
        }
    };
    Ok(ShardPlan {
        cpus,
        oversubscribed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: &[usize] = &[2, 3, 5, 7];

    fn cpus(s: Shards, a: CpuAffinity) -> Vec<Option<usize>> {
        resolve_shards(&s, &a, Some(MASK), 99)
            .expect("valid settings")
            .cpus
    }

    #[test]
    fn auto_auto_is_one_pinned_shard_per_mask_cpu() {
        assert_eq!(
            cpus(Shards::Auto, CpuAffinity::Auto),
            vec![Some(2), Some(3), Some(5), Some(7)]
        );
    }

    #[test]
    fn mask_order_does_not_matter() {
        let plan = resolve_shards(&Shards::Auto, &CpuAffinity::Auto, Some(&[7, 2, 2, 5]), 1)
            .expect("valid");
        assert_eq!(plan.cpus, vec![Some(2), Some(5), Some(7)]);
    }

    #[test]
    fn count_uses_first_cpus_of_mask() {
        assert_eq!(
            cpus(Shards::Count(2), CpuAffinity::Auto),
            vec![Some(2), Some(3)]
        );
    }

    #[test]
    fn count_above_mask_wraps_and_flags_oversubscription() {
        let plan =
            resolve_shards(&Shards::Count(6), &CpuAffinity::Auto, Some(MASK), 1).expect("valid");
        assert_eq!(
            plan.cpus,
            vec![Some(2), Some(3), Some(5), Some(7), Some(2), Some(3)]
        );
        assert!(plan.oversubscribed);
        let fits =
            resolve_shards(&Shards::Count(4), &CpuAffinity::Auto, Some(MASK), 1).expect("valid");
        assert!(!fits.oversubscribed);
    }

    #[test]
    fn none_affinity_pins_nothing() {
        assert_eq!(cpus(Shards::Auto, CpuAffinity::None), vec![None; 4]);
        assert_eq!(cpus(Shards::Count(9), CpuAffinity::None), vec![None; 9]);
        let plan =
            resolve_shards(&Shards::Count(9), &CpuAffinity::None, Some(MASK), 1).expect("valid");
        assert!(!plan.oversubscribed);
    }

    #[test]
    fn none_affinity_without_mask_uses_parallelism() {
        let plan = resolve_shards(&Shards::Auto, &CpuAffinity::None, None, 3).expect("valid");
        assert_eq!(plan.cpus, vec![None; 3]);
    }

    #[test]
    fn list_sets_count_and_order() {
        assert_eq!(
            cpus(Shards::Auto, CpuAffinity::List(vec![7, 3])),
            vec![Some(7), Some(3)]
        );
        assert_eq!(
            cpus(Shards::Count(3), CpuAffinity::List(vec![7, 3])),
            vec![Some(7), Some(3), Some(7)]
        );
        assert_eq!(
            cpus(Shards::Count(1), CpuAffinity::List(vec![7, 3])),
            vec![Some(7)]
        );
    }

    #[test]
    fn list_cpu_outside_mask_is_rejected() {
        let err = resolve_shards(&Shards::Auto, &CpuAffinity::List(vec![3, 4]), Some(MASK), 1)
            .expect_err("4 is not in the mask");
        match err {
            RuntimeError::CpuNotInMask { cpu, mask } => {
                assert_eq!(cpu, 4);
                assert_eq!(mask, MASK.to_vec());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_lists_and_counts_are_rejected() {
        let dup = resolve_shards(&Shards::Auto, &CpuAffinity::List(vec![3, 3]), Some(MASK), 1);
        assert!(matches!(dup, Err(RuntimeError::BadCpuList { .. })));
        let empty = resolve_shards(&Shards::Auto, &CpuAffinity::List(vec![]), Some(MASK), 1);
        assert!(matches!(empty, Err(RuntimeError::BadCpuList { .. })));
        let zero = resolve_shards(&Shards::Count(0), &CpuAffinity::None, Some(MASK), 1);
        assert!(matches!(zero, Err(RuntimeError::InvalidOptions { .. })));
        let many = resolve_shards(
            &Shards::Count(MAX_SHARDS + 1),
            &CpuAffinity::None,
            Some(MASK),
            1,
        );
        assert!(matches!(many, Err(RuntimeError::TooManyShards { .. })));
    }

    #[test]
    fn pinning_without_mask_is_an_error() {
        let auto = resolve_shards(&Shards::Auto, &CpuAffinity::Auto, None, 4);
        assert!(matches!(auto, Err(RuntimeError::AffinityUnavailable)));
        let list = resolve_shards(&Shards::Auto, &CpuAffinity::List(vec![0]), Some(&[]), 4);
        assert!(matches!(list, Err(RuntimeError::AffinityUnavailable)));
    }
}

//! Building one monoio runtime per shard: io_uring through `FusionDriver`, with an explicit,
//! logged fallback to the epoll (`LegacyDriver`) runtime and a diagnosis of why.
//!
//! Cold path: runs once per shard at startup. Costs: the io_uring ring (`io_uring_entries`
//! SQEs, 2x CQEs; about 100 KiB at 1024 entries, charged to RLIMIT_MEMLOCK on kernels
//! <= 5.11), one timer wheel, and on fallback one failed `io_uring_setup` probe.
//!
//! Driver choice, in order:
//! 1. `Options::force_legacy` or `MONOIO_FORCE_LEGACY_DRIVER=1|true|yes` -> epoll. We check
//!    the variable ourselves on every `start()`: monoio checks it too, but inside
//!    `detect_uring()`, whose answer is cached once per process (`std::sync::Once`), so a
//!    later change of the variable (tests, embedding) would be ignored.
//! 2. `RuntimeBuilder::<FusionDriver>` with `with_entries(io_uring_entries)`,
//!    `enable_timer()` and a ring set up with `IORING_SETUP_COOP_TASKRUN` (Linux 5.19+;
//!    retried without it on EINVAL): completions wait for the shard's next kernel entry instead
//!    of interrupting it (measured: 1 KiB hits 1.08x -> 1.41x nginx's static ceiling). It probes io_uring with a 2-entry ring and checks the opcodes monoio
//!    uses; if the probe fails it silently builds epoll (`FusionRuntime::Legacy`), and if the
//!    probe passes but the real ring fails (RLIMIT_MEMLOCK on kernels <= 5.11, EPERM from a
//!    container seccomp profile, `kernel.io_uring_disabled`) `build()` returns `Err`.
//!    In both cases we build the epoll runtime ourselves and log the likely cause.
//!
//! Under epoll, file I/O is a blocking pread/pwrite on the core (measured 19k vs 61k IOPS
//! for 4 KiB O_DIRECT reads at queue depth 32), hence the loud warning.

use std::{ffi::CStr, fmt, io};

use monoio::{
    blocking::DefaultThreadPool, time::TimeDriver, FusionDriver, FusionRuntime, IoUringDriver,
    LegacyDriver, RuntimeBuilder,
};

/// The runtime type every shard runs: io_uring or epoll, both with a timer.
pub(crate) type ShardRuntime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// The I/O driver a shard's runtime really uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Driver {
    /// io_uring (monoio `IoUringDriver`). Displays as `io_uring`.
    IoUring,
    /// epoll via mio (monoio `LegacyDriver`). Displays as `epoll`.
    Legacy,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::IoUring => "io_uring",
            Driver::Legacy => "epoll",
        })
    }
}

/// True when `MONOIO_FORCE_LEGACY_DRIVER` is `1`, `true` or `yes` (any case), the values
/// monoio itself accepts.
pub fn legacy_forced_by_env() -> bool {
    std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// Host facts used to explain an io_uring failure, read once on the main thread.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostFacts {
    /// `uname -r`, e.g. `5.10.0-28-amd64`.
    pub kernel_release: String,
    /// RLIMIT_MEMLOCK soft limit in bytes; `None` = unlimited or unreadable.
    pub memlock_bytes: Option<u64>,
    /// `/proc/sys/kernel/io_uring_disabled` (Linux >= 6.6); `None` if absent.
    pub io_uring_disabled: Option<u32>,
}

impl HostFacts {
    /// Reads the facts (uname, getrlimit, one small procfs read). Startup only.
    // Off the shards: runs on the main thread before any shard exists.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn read() -> Self {
        // SAFETY: uname fills a caller-owned, zero-initialised struct; release is
        // NUL-terminated by the kernel.
        let kernel_release = unsafe {
            let mut u: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut u) == 0 {
                CStr::from_ptr(u.release.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            }
        };
        // SAFETY: getrlimit writes into a caller-owned struct.
        let memlock_bytes = unsafe {
            let mut r: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) == 0
                && r.rlim_cur != libc::RLIM_INFINITY
            {
                Some(r.rlim_cur)
            } else {
                None
            }
        };
        let io_uring_disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Self {
            kernel_release,
            memlock_bytes,
            io_uring_disabled,
        }
    }

    /// `(major, minor)` of the kernel release, if it parses.
    fn kernel_version(&self) -> Option<(u32, u32)> {
        let mut parts = self.kernel_release.split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
}

/// Likely cause and fix of an io_uring ring failure. `err` is the `io_uring_setup`/ring
/// build error, `None` when the ring builds but monoio's opcode probe failed.
pub(crate) fn diagnose(err: Option<&io::Error>, facts: &HostFacts, entries: u32) -> String {
    let kernel = if facts.kernel_release.is_empty() {
        "unknown".to_string()
    } else {
        facts.kernel_release.clone()
    };
    match facts.io_uring_disabled {
        Some(2) => {
            return format!(
                "kernel.io_uring_disabled=2: io_uring is disabled for every process on this \
                 host (kernel {kernel}); fix: sysctl kernel.io_uring_disabled=0"
            )
        }
        Some(1) if err.and_then(io::Error::raw_os_error) == Some(libc::EPERM) => {
            return format!(
                "kernel.io_uring_disabled=1: only CAP_SYS_ADMIN or members of \
                 kernel.io_uring_group may create rings (kernel {kernel}); fix: add the \
                 service's group to kernel.io_uring_group or set kernel.io_uring_disabled=0"
            )
        }
        _ => {}
    }
    let Some(err) = err else {
        return format!(
            "io_uring rings can be created but the kernel ({kernel}) lacks an opcode monoio \
             needs (accept/connect/send/recv/timeout exist from 5.6); fix: run kernel >= 5.6"
        );
    };
    let old_kernel = facts
        .kernel_version()
        .is_some_and(|(maj, min)| (maj, min) <= (5, 11));
    match err.raw_os_error() {
        Some(libc::EPERM) => format!(
            "io_uring_setup returned EPERM ({err}): a seccomp profile blocks io_uring \
             (Docker 25+ and containerd RuntimeDefault do), or kernel.io_uring_disabled is set \
             (value: {:?}); fix: run the container with a seccomp profile that allows \
             io_uring_setup/enter/register (docker/seccomp-io_uring.py derives one; \
             kernel-notes.md section 3)",
            facts.io_uring_disabled
        ),
        Some(libc::ENOMEM) if old_kernel => format!(
            "io_uring_setup returned ENOMEM ({err}) on kernel {kernel} (<= 5.11 charges ring \
             memory to RLIMIT_MEMLOCK), current limit {}; fix: LimitMEMLOCK=infinity (systemd), \
             `ulimit -l unlimited`, `--ulimit memlock=-1` (Docker), or lower io_uring_entries \
             (now {entries})",
            facts
                .memlock_bytes
                .map_or_else(|| "unlimited".to_string(), |b| format!("{b} bytes")),
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring_setup returned ENOMEM ({err}) on kernel {kernel}: the memory cgroup limit \
             is reached or io_uring_entries ({entries}) is too large; fix: lower \
             io_uring_entries or raise the memory limit"
        ),
        Some(libc::ENOSYS) => format!(
            "io_uring_setup is not implemented ({err}): kernel {kernel} is older than 5.1, \
             was built without CONFIG_IO_URING, or a sandbox (gVisor) hides it; fix: run on a \
             kernel with io_uring (>= 5.10 recommended)"
        ),
        Some(libc::EINVAL) => format!(
            "io_uring_setup returned EINVAL ({err}): io_uring_entries ({entries}) is above the \
             kernel's maximum (32768) or kernel {kernel} lacks a setup flag; fix: use a \
             power of two <= 32768"
        ),
        Some(libc::EMFILE) | Some(libc::ENFILE) => format!(
            "io_uring_setup failed with {err}: out of file descriptors; fix: raise \
             RLIMIT_NOFILE (LimitNOFILE=)"
        ),
        _ => format!("io_uring ring could not be built on kernel {kernel}: {err}"),
    }
}

/// How the shard came to use the driver it got.
pub(crate) struct Built {
    pub runtime: ShardRuntime,
    pub driver: Driver,
    /// Why the shard is on epoll although io_uring was allowed; `None` otherwise.
    pub fallback_cause: Option<String>,
}

fn build_legacy(entries: u32, pool: &DefaultThreadPool) -> io::Result<ShardRuntime> {
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .with_entries(entries)
        .attach_thread_pool(Box::new(pool.clone()))
        .enable_timer()
        .build()?;
    Ok(rt.into())
}

/// Builds the shard's runtime (see the module docs for the order). Logs the fallback cause
/// at `warn`. Errors only when the epoll runtime cannot be built either.
pub(crate) fn build_shard_runtime(
    shard: usize,
    entries: u32,
    force_legacy: Option<&'static str>,
    pool: &DefaultThreadPool,
    facts: &HostFacts,
) -> io::Result<Built> {
    if let Some(why) = force_legacy {
        tracing::info!(shard, reason = why, "epoll (legacy) driver forced");
        return Ok(Built {
            runtime: build_legacy(entries, pool)?,
            driver: Driver::Legacy,
            fallback_cause: None,
        });
    }
    let fusion = |ring: io_uring::Builder| {
        RuntimeBuilder::<FusionDriver>::new()
            .with_entries(entries)
            .uring_builder(ring)
            .attach_thread_pool(Box::new(pool.clone()))
            .enable_timer()
            .build()
    };
    // IORING_SETUP_COOP_TASKRUN (Linux 5.19+): completions are posted when the shard next
    // enters the kernel (it does on every loop turn) instead of through an interrupt of the
    // running shard. Older kernels reject the flag with EINVAL: build the plain ring then.
    let mut coop = io_uring::IoUring::builder();
    coop.setup_coop_taskrun();
    let fusion = match fusion(coop) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => fusion(io_uring::IoUring::builder()),
        other => other,
    };
    let cause = match fusion {
        Ok(rt @ FusionRuntime::Uring(_)) => {
            return Ok(Built {
                runtime: rt,
                driver: Driver::IoUring,
                fallback_cause: None,
            })
        }
        Ok(rt @ FusionRuntime::Legacy(_)) => {
            // monoio's probe failed (or the variable was set earlier in this process and
            // its cached answer says so). Build a ring directly to learn the errno.
            let probe = RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(entries)
                .build();
            let cause = match probe {
                Err(e) => diagnose(Some(&e), facts, entries),
                Ok(_) if legacy_forced_by_env_cached() => {
                    "MONOIO_FORCE_LEGACY_DRIVER was set earlier in this process (monoio caches \
                     its probe)"
                        .to_string()
                }
                Ok(_) => diagnose(None, facts, entries),
            };
            warn_fallback(shard, &cause);
            return Ok(Built {
                runtime: rt,
                driver: Driver::Legacy,
                fallback_cause: Some(cause),
            });
        }
        Err(e) => diagnose(Some(&e), facts, entries),
    };
    warn_fallback(shard, &cause);
    Ok(Built {
        runtime: build_legacy(entries, pool)?,
        driver: Driver::Legacy,
        fallback_cause: Some(cause),
    })
}

/// monoio reads the variable once per process; we cannot see that cached answer, so this
/// only tells whether it is set now.
fn legacy_forced_by_env_cached() -> bool {
    std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some()
}

fn warn_fallback(shard: usize, cause: &str) {
    tracing::warn!(
        shard,
        cause,
        "io_uring unavailable, falling back to the epoll (legacy) driver: network I/O still \
         works, file I/O becomes blocking pread/pwrite on the core (~3x fewer IOPS)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(release: &str, memlock: Option<u64>, disabled: Option<u32>) -> HostFacts {
        HostFacts {
            kernel_release: release.into(),
            memlock_bytes: memlock,
            io_uring_disabled: disabled,
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(Driver::IoUring.to_string(), "io_uring");
        assert_eq!(Driver::Legacy.to_string(), "epoll");
    }

    #[test]
    fn enomem_on_old_kernel_blames_memlock_with_limit() {
        let e = io::Error::from_raw_os_error(libc::ENOMEM);
        let text = diagnose(Some(&e), &facts("5.10.0-28-amd64", Some(65536), None), 1024);
        assert!(text.contains("RLIMIT_MEMLOCK"), "{text}");
        assert!(text.contains("65536 bytes"), "{text}");
        assert!(text.contains("5.10.0-28-amd64"), "{text}");
        let newer = diagnose(Some(&e), &facts("6.1.0", Some(65536), None), 1024);
        assert!(!newer.contains("RLIMIT_MEMLOCK"), "{newer}");
        assert!(newer.contains("cgroup"), "{newer}");
    }

    #[test]
    fn eperm_blames_seccomp_or_sysctl() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        let text = diagnose(Some(&e), &facts("6.8.0", None, Some(0)), 1024);
        assert!(text.contains("seccomp"), "{text}");
        let group = diagnose(Some(&e), &facts("6.8.0", None, Some(1)), 1024);
        assert!(group.contains("io_uring_group"), "{group}");
        let off = diagnose(Some(&e), &facts("6.8.0", None, Some(2)), 1024);
        assert!(off.contains("io_uring_disabled=2"), "{off}");
    }

    #[test]
    fn missing_opcode_and_enosys() {
        let text = diagnose(None, &facts("5.4.0", None, None), 1024);
        assert!(text.contains("opcode"), "{text}");
        let e = io::Error::from_raw_os_error(libc::ENOSYS);
        assert!(diagnose(Some(&e), &facts("4.19.0", None, None), 1024).contains("CONFIG_IO_URING"));
    }

    #[test]
    fn kernel_version_parses() {
        assert_eq!(facts("5.11", None, None).kernel_version(), Some((5, 11)));
        assert_eq!(
            facts("6.18.44-fc", None, None).kernel_version(),
            Some((6, 18))
        );
        assert_eq!(facts("weird", None, None).kernel_version(), None);
    }

    #[test]
    fn ring_failure_falls_back_to_a_working_epoll_runtime() {
        let pool = DefaultThreadPool::new(1);
        // 65536 entries is above IORING_MAX_ENTRIES: io_uring_setup fails with EINVAL
        // (validate() rejects it in start(); here it stands in for a ring that cannot be
        // built).
        let built = build_shard_runtime(0, 65536, None, &pool, &HostFacts::read())
            .expect("epoll runtime builds");
        assert_eq!(built.driver, Driver::Legacy);
        let cause = built.fallback_cause.expect("fallback explained");
        if monoio::utils::detect_uring() {
            assert!(cause.contains("EINVAL"), "{cause}");
        }
        let mut rt = built.runtime;
        assert!(rt.block_on(async { monoio::utils::is_legacy() }));
    }

    #[test]
    fn built_driver_matches_running_driver() {
        let pool = DefaultThreadPool::new(1);
        for force in [None, Some("test")] {
            let built = build_shard_runtime(0, 256, force, &pool, &HostFacts::read())
                .expect("runtime builds");
            let legacy = built.driver == Driver::Legacy;
            let mut rt = built.runtime;
            assert_eq!(rt.block_on(async { monoio::utils::is_legacy() }), legacy);
            if force.is_some() {
                assert!(legacy);
            }
        }
    }

    #[test]
    fn host_facts_read_on_linux() {
        let f = HostFacts::read();
        assert!(
            f.kernel_version().is_some(),
            "uname: {:?}",
            f.kernel_release
        );
    }
}

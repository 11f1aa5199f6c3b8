//! Tests of the integration harness's own rules (tests/common): the driver rule that makes an
//! io_uring run fail when a shard fell back to epoll. Pure functions; needs no backend.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "common/drivers.rs"]
mod drivers;

use drivers::{check, expectation, from_text_line, truthy, Expect};

#[test]
fn an_io_uring_run_rejects_a_shard_on_epoll() {
    assert_eq!(check("io_uring", Expect::IoUring), Ok(()));
    assert_eq!(check("io_uring,io_uring", Expect::IoUring), Ok(()));
    let err = check("io_uring,epoll", Expect::IoUring).unwrap_err();
    assert!(err.contains("shard(s) 1 fell back to epoll"), "{err}");
    assert!(
        err.contains("YATA_TEST_ALLOW_EPOLL=1"),
        "names the way out: {err}"
    );
    let err = check("epoll,epoll", Expect::IoUring).unwrap_err();
    assert!(err.contains("shard(s) 0,1 "), "{err}");
}

#[test]
fn a_forced_epoll_run_rejects_a_shard_on_io_uring() {
    assert_eq!(check("epoll,epoll", Expect::Epoll), Ok(()));
    let err = check("epoll,io_uring", Expect::Epoll).unwrap_err();
    assert!(
        err.contains("MONOIO_FORCE_LEGACY_DRIVER=1 but shard(s) 1 run io_uring"),
        "{err}"
    );
}

#[test]
fn allow_epoll_accepts_either_driver_but_not_garbage() {
    for ok in ["epoll", "io_uring,epoll", "io_uring"] {
        assert_eq!(check(ok, Expect::Either), Ok(()), "{ok}");
    }
    for bad in ["", "uring", "io_uring,,epoll", "mixed"] {
        for expect in [Expect::Either, Expect::IoUring, Expect::Epoll] {
            assert!(check(bad, expect).is_err(), "{bad:?} under {expect:?}");
        }
    }
}

#[test]
fn overrides_passed_to_the_proxy_decide_before_the_environment() {
    // The test's own environment is whatever the runner set; an explicit override wins.
    assert_eq!(
        expectation(&[("MONOIO_FORCE_LEGACY_DRIVER", "1")]),
        Expect::Epoll
    );
    assert_eq!(
        expectation(&[("MONOIO_FORCE_LEGACY_DRIVER", "YES")]),
        Expect::Epoll
    );
    assert_eq!(
        expectation(&[
            ("MONOIO_FORCE_LEGACY_DRIVER", "0"),
            ("YATA_TEST_ALLOW_EPOLL", "1")
        ]),
        Expect::Either
    );
    assert_eq!(
        expectation(&[
            ("MONOIO_FORCE_LEGACY_DRIVER", "0"),
            ("YATA_TEST_ALLOW_EPOLL", "0")
        ]),
        Expect::IoUring
    );
    for on in ["1", "true", "TRUE", "yes"] {
        assert!(truthy(on), "{on}");
    }
    for off in ["", "0", "no", "false", "2"] {
        assert!(!truthy(off), "{off}");
    }
}

#[test]
fn the_text_startup_line_yields_its_drivers() {
    let line = "2026-01-01T00:00:00Z  INFO yatagarasu: yatagarasu listening version=0.1.0 \
                listen=127.0.0.1:1 admin=127.0.0.1:2 shards=2 drivers=io_uring,epoll";
    assert_eq!(from_text_line(line), Some("io_uring,epoll"));
    assert_eq!(from_text_line("x drivers=epoll shards=1"), Some("epoll"));
    assert_eq!(from_text_line("no field here"), None);
}

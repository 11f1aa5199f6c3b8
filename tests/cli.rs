//! The binary's command line: `--check` validates a config and reports every error at once
//! (DESIGN section 6). Needs no backend.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::process::Command;

fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_yatagarasu"));
    cmd.arg("--config").arg(&path).arg("--check");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn reference_config_is_valid() {
    let (code, _, err) = check(
        include_str!("../config.yaml"),
        &[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("JWT_SECRET", "s"),
        ],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn every_error_is_reported_with_its_path() {
    let yaml = r#"
server:
  listen: "127.0.0.1:0"
  bogus_key: 1
buckets:
  - name: a
    path_prefix: /a
    s3: {bucket: b, endpoint: "ftp://x", access_key: k, secret_key: "${NOT_SET_ANYWHERE}"}
  - name: a
    path_prefix: nope
    s3: {bucket: c, region: r, access_key: k, secret_key: s}
    auth: {enabled: true}
"#;
    let (code, _, err) = check(yaml, &[]);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "server.bogus_key",
        "buckets[0].s3.region",
        "buckets[0].s3.endpoint",
        "NOT_SET_ANYWHERE",
        "buckets[1].path_prefix",
        "buckets[1].name",
        "buckets[1].auth",
    ] {
        assert!(err.contains(needle), "missing {needle} in:\n{err}");
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_yatagarasu"))
        .args(["--config", "/nonexistent/yatagarasu.yaml", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/yatagarasu.yaml"));
}

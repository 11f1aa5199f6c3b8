//! Checks that span more than one struct: unique bucket names and path prefixes, the
//! fail-closed auth rule (DESIGN section 6), data vs admin listener, and (for
//! [`super::load_file`] only) existence of the files the config names.
//!
//! Not on the hot path: runs once per config load. The bucket checks read the raw YAML of
//! each bucket rather than the typed result, so a duplicate name is still reported when the
//! same bucket also has, say, a missing region.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_yaml::Value;

use super::decode::{child, index, Decoder};
use super::schema::normalize_prefix;
use super::{AdminConfig, Config, ConfigError, JwtConfig, ServerConfig};

/// A string scalar (or number) at `key` of a mapping, unless substitution failed there.
fn raw_str(bucket: &Value, key: &str, path: &str, d: &Decoder) -> Option<String> {
    if d.failed_at_or_under(path) {
        return None;
    }
    match bucket.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Cross-bucket checks over the raw `buckets` list at `path`: unique names, unique
/// normalised prefixes, and `auth.enabled: true` only where JWT settings exist (the bucket's
/// `auth.jwt`, or a top-level `jwt` when `top_level_jwt`).
pub(super) fn buckets(seq: &[Value], top_level_jwt: bool, path: &str, d: &mut Decoder) {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut prefixes: HashMap<String, usize> = HashMap::new();
    for (i, b) in seq.iter().enumerate() {
        let bpath = index(path, i);
        let name_path = child(&bpath, "name");
        if let Some(name) = raw_str(b, "name", &name_path, d) {
            if let Some(first) = names.get(&name) {
                let msg = format!("duplicate bucket name {name:?} (also {path}[{first}])");
                d.error(&name_path, msg);
            } else {
                names.insert(name, i);
            }
        }
        let prefix_path = child(&bpath, "path_prefix");
        if let Some(prefix) =
            raw_str(b, "path_prefix", &prefix_path, d).and_then(|p| normalize_prefix(&p).ok())
        {
            if let Some(first) = prefixes.get(&prefix) {
                let msg = format!("duplicate path_prefix {prefix:?} (also {path}[{first}])");
                d.error(&prefix_path, msg);
            } else {
                prefixes.insert(prefix, i);
            }
        }
        let auth = b.get("auth");
        let enabled_path = child(&child(&bpath, "auth"), "enabled");
        let enabled = match auth.and_then(|a| a.get("enabled")) {
            Some(Value::Bool(on)) => *on,
            Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
            _ => false,
        };
        let own_jwt = auth
            .and_then(|a| a.get("jwt"))
            .is_some_and(|j| !matches!(j, Value::Null));
        if enabled && !own_jwt && !top_level_jwt && !d.failed_at_or_under(&enabled_path) {
            d.error(
                &enabled_path,
                "auth is enabled but no JWT settings exist: add auth.jwt to this bucket or a top-level jwt section (fail closed)",
            );
        }
    }
}

/// `admin.listen` must not collide with `server.listen`: same non-zero port on the same
/// address, or on any address when either side is the wildcard.
/// With no `admin.token`, `admin.listen` must be a loopback address: the admin API (reload,
/// purge) would otherwise be open to the network.
pub(super) fn listeners(server: &ServerConfig, admin: &AdminConfig, d: &mut Decoder) {
    if admin.token.is_none() && !admin.listen.ip().is_loopback() {
        d.error(
            "admin.token",
            format!(
                "required when admin.listen ({}) is not a loopback address; set a token or listen on 127.0.0.1 / [::1]",
                admin.listen
            ),
        );
    }
    if collide(server.listen, admin.listen) {
        d.error(
            "admin.listen",
            format!("collides with server.listen ({})", server.listen),
        );
    }
}

fn collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Every file a validated config names that is missing or not a regular file: JWT public
/// keys (top-level, per bucket, per `keys` entry) and S3 CA bundles. Blocking
/// (`std::fs::metadata`): startup / reload thread only.
// Off the shards: runs with `load_file` (start on the main thread, reload off the shards).
#[allow(clippy::disallowed_methods)]
pub(super) fn referenced_files(config: &Config) -> Vec<ConfigError> {
    let mut files: Vec<(String, &Path)> = Vec::new();
    if let Some(jwt) = &config.jwt {
        collect_jwt_files(jwt, "jwt", &mut files);
    }
    for (i, b) in config.buckets.iter().enumerate() {
        let bpath = index("buckets", i);
        if let Some(jwt) = &b.auth.jwt {
            collect_jwt_files(jwt, &child(&child(&bpath, "auth"), "jwt"), &mut files);
        }
        if let Some(ca) = &b.s3.tls_ca_file {
            files.push((child(&child(&bpath, "s3"), "tls_ca_file"), ca));
        }
    }
    files
        .into_iter()
        .filter_map(|(path, file)| match std::fs::metadata(file) {
            Ok(m) if m.is_file() => None,
            Ok(_) => Some(ConfigError::new(
                path,
                format!("{} is not a regular file", file.display()),
            )),
            Err(e) => Some(ConfigError::new(
                path,
                format!("cannot read {}: {e}", file.display()),
            )),
        })
        .collect()
}

fn collect_jwt_files<'a>(jwt: &'a JwtConfig, path: &str, files: &mut Vec<(String, &'a Path)>) {
    if let Some(p) = &jwt.public_key_path {
        files.push((child(path, "public_key_path"), p));
    }
    for (i, key) in jwt.keys.iter().enumerate() {
        if let Some(p) = &key.public_key_path {
            files.push((child(&index(&child(path, "keys"), i), "public_key_path"), p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_collisions() {
        let p = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(collide(p("0.0.0.0:8080"), p("127.0.0.1:8080")));
        assert!(collide(p("127.0.0.1:8080"), p("127.0.0.1:8080")));
        assert!(!collide(p("127.0.0.1:8080"), p("127.0.0.2:8080")));
        assert!(!collide(p("0.0.0.0:8080"), p("127.0.0.1:9090")));
        assert!(!collide(p("127.0.0.1:0"), p("127.0.0.1:0")));
    }
}

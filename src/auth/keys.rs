//! [`Verifier`]: one bucket's (or the top-level) JWT settings turned into ready
//! `jsonwebtoken` decoding keys and `Validation`s, and the verification of one token: key
//! selection by `kid` and `alg`, signature, `iss`/`aud`, `exp`/`nbf` with leeway.
//!
//! Building is not on the hot path: it runs on the main thread at startup and on reload and
//! reads PEM files (blocking `std::fs`). Verifying is on the hot path of a token-cache miss:
//! one header decode, then per candidate key one `jsonwebtoken::decode` (base64 + JSON of the
//! claims twice, plus the signature check, which dominates: see `benches/jwt.rs`). At most
//! [`MAX_KEYS_TRIED`] keys are tried for a token without `kid`.
//!
//! Choices (RFC 7519, RFC 8725 "JWT Best Current Practices"):
//! - The header `alg` must be in `algorithms` and allowed for the selected key; a key is only
//!   ever used with algorithms of its own type (an RSA key never verifies HS256, so an HMAC
//!   token signed with the RSA public key bytes fails), and `none` is never accepted.
//! - `exp` is required: a token without it is rejected (`missing exp claim`). Operators expect
//!   tokens to expire, and the token cache needs an end for every entry.
//! - `exp`/`nbf` are checked here against the caller's `now` (not by `jsonwebtoken`, which
//!   reads the system clock), so the cache and fresh verifications use one clock: a token is
//!   valid while `nbf - leeway <= now < exp + leeway`.
//! - `iss`/`aud` are checked only when configured, and then required. A token with an `aud`
//!   is accepted when no audience is configured (RFC 7519 would reject it; IdP tokens always
//!   carry `aud`, and the operator did not ask for a check).
//! - Keys named in the token header (`jwk`, `jku`, `x5u`, `x5c`) are ignored; a `crit`
//!   header is rejected (no extension is understood, RFC 7515 section 4.1.11).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::{JwksStore, KeysGuard};
use super::{reason, Verified};
use crate::config::{ClaimRule, JwtAlgorithm, JwtConfig, TokenSource};

/// Most keys whose signature check a single token may cost (a token without `kid` is tried
/// against every key allowing its `alg`, up to this many).
pub const MAX_KEYS_TRIED: usize = 8;
/// Smallest RSA modulus accepted, bits (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// Source of [`Verifier::id`]: unique per verifier built in this process.
static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

/// A set of [`Algorithm`]s as a bitmask (12 algorithms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlgSet(u16);

impl AlgSet {
    /// All twelve algorithms `jsonwebtoken` verifies.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    fn bit(alg: Algorithm) -> u16 {
        let i = Self::ALL.iter().position(|a| *a == alg).unwrap_or(15);
        1 << i
    }

    /// The set of `algs`.
    pub fn of(algs: &[Algorithm]) -> AlgSet {
        AlgSet(algs.iter().fold(0, |m, a| m | Self::bit(*a)))
    }

    /// Whether `alg` is in the set.
    pub fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    /// The intersection.
    pub fn and(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The algorithms in the set, in [`AlgSet::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Self::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

/// What a public or secret key is, which fixes the algorithms it can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// HMAC shared secret: HS256/384/512.
    Hmac,
    /// RSA: RS256/384/512, PS256/384/512.
    Rsa,
    /// ECDSA on P-256: ES256.
    EcP256,
    /// ECDSA on P-384: ES384.
    EcP384,
    /// Ed25519: EdDSA.
    Ed25519,
}

impl KeyType {
    /// The algorithms a key of this type can verify (RFC 7518 section 3.1, RFC 8037).
    pub fn algorithms(self) -> AlgSet {
        use Algorithm::*;
        match self {
            KeyType::Hmac => AlgSet::of(&[HS256, HS384, HS512]),
            KeyType::Rsa => AlgSet::of(&[RS256, RS384, RS512, PS256, PS384, PS512]),
            KeyType::EcP256 => AlgSet::of(&[ES256]),
            KeyType::EcP384 => AlgSet::of(&[ES384]),
            KeyType::Ed25519 => AlgSet::of(&[EdDSA]),
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyType::Hmac => "HMAC secret",
            KeyType::Rsa => "RSA key",
            KeyType::EcP256 => "EC P-256 key",
            KeyType::EcP384 => "EC P-384 key",
            KeyType::Ed25519 => "Ed25519 key",
        }
    }
}

/// One usable verification key.
#[derive(Clone)]
pub(crate) struct Key {
    /// `kid` it is selected by (`keys:` entries and JWKS keys), `None` for `secret` and
    /// `public_key_path`.
    pub(crate) kid: Option<String>,
    /// The key material.
    pub(crate) key: DecodingKey,
    /// Algorithms this key may verify (its type's, narrowed by config or the JWK's `alg`).
    pub(crate) algorithms: AlgSet,
}

/// The config's algorithm name in `jsonwebtoken`'s terms.
pub fn jwt_algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Verifies tokens for one JWT config (top-level `jwt` or a bucket's `auth.jwt`). Built on
/// the main thread by [`Verifier::from_config`]; immutable afterwards, `Send + Sync`, shared by
/// every shard through the config snapshot. Holds no token.
pub struct Verifier {
    id: u64,
    /// `algorithms` from the config.
    algorithms: AlgSet,
    /// `keys:` entries, selected by `kid`.
    keyed: Vec<Key>,
    /// `secret` and `public_key_path`, used for tokens whose `kid` names no other key.
    unnamed: Vec<Key>,
    /// One `Validation` per algorithm family present in `algorithms` (HMAC, RSA, EC, Ed), with
    /// exactly that family's configured algorithms (jsonwebtoken requires one family).
    validations: [Option<Validation>; 4],
    jwks_url: Option<String>,
    jwks_refresh_seconds: u64,
    leeway_seconds: u64,
    claims: Vec<ClaimRule>,
    token_sources: Vec<TokenSource>,
}

impl std::fmt::Debug for Verifier {
    /// Shape only; key material is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("id", &self.id)
            .field("algorithms", &self.algorithms.iter().collect::<Vec<_>>())
            .field("keyed", &self.keyed.len())
            .field("unnamed", &self.unnamed.len())
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

fn family_index(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => 0,
        Algorithm::ES256 | Algorithm::ES384 => 2,
        Algorithm::EdDSA => 3,
        _ => 1,
    }
}

impl Verifier {
    /// Builds the verifier of `cfg`: loads `public_key_path` and `keys[].public_key_path`
    /// (PEM; RSA as SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`, EC P-256/P-384 and Ed25519 as
    /// SPKI; the type is detected), checks that each key can verify at least one configured
    /// algorithm and that every configured algorithm has a key (or a `jwks_url`).
    ///
    /// Blocking (reads files): call on the main thread, never on a shard. Errors: every
    /// problem, one line each, naming the config key (`public_key_path`, `keys[1]`) and the
    /// file, never key material.
    pub fn from_config(cfg: &JwtConfig) -> Result<Verifier, Vec<String>> {
        let mut errors = Vec::new();
        let configured: Vec<Algorithm> = cfg.algorithms.iter().map(|a| jwt_algorithm(*a)).collect();
        let algorithms = AlgSet::of(&configured);
        if algorithms.is_empty() {
            errors.push("algorithms: must list at least one algorithm".to_owned());
        }
        let mut unnamed = Vec::new();
        if let Some(secret) = cfg.secret.as_ref().filter(|s| !s.expose().is_empty()) {
            let allowed = KeyType::Hmac.algorithms().and(algorithms);
            if allowed.is_empty() {
                errors.push("secret: algorithms lists no HS algorithm".to_owned());
            } else {
                unnamed.push(Key {
                    kid: None,
                    key: DecodingKey::from_secret(secret.expose().as_bytes()),
                    algorithms: allowed,
                });
            }
        }
        if let Some(path) = &cfg.public_key_path {
            match load_public_key(path) {
                Ok((key, kind)) => {
                    let allowed = kind.algorithms().and(algorithms);
                    if allowed.is_empty() {
                        errors.push(format!(
                            "public_key_path: {} holds an {}, which verifies none of the configured algorithms",
                            path.display(),
                            kind.name()
                        ));
                    } else {
                        unnamed.push(Key {
                            kid: None,
                            key,
                            algorithms: allowed,
                        });
                    }
                }
                Err(e) => errors.push(format!("public_key_path: {e}")),
            }
        }
        let mut keyed = Vec::new();
        let mut kids = HashSet::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            let at = format!("keys[{i}] (kid {})", k.kid);
            if !kids.insert(k.kid.as_str()) {
                errors.push(format!("{at}: duplicate kid"));
                continue;
            }
            let alg = jwt_algorithm(k.algorithm);
            if !algorithms.contains(alg) {
                errors.push(format!(
                    "{at}: {} is not listed in algorithms",
                    k.algorithm.as_str()
                ));
                continue;
            }
            let loaded = match (&k.secret, &k.public_key_path) {
                (Some(secret), None) if k.algorithm.is_hmac() && !secret.expose().is_empty() => {
                    Ok((DecodingKey::from_secret(secret.expose().as_bytes()), KeyType::Hmac))
                }
                (None, Some(path)) if !k.algorithm.is_hmac() => load_public_key(path),
                _ => Err(format!(
                    "needs exactly one of secret (HS algorithms) or public_key_path (others) for {}",
                    k.algorithm.as_str()
                )),
            };
            match loaded {
                Ok((key, kind)) if kind.algorithms().contains(alg) => keyed.push(Key {
                    kid: Some(k.kid.clone()),
                    key,
                    algorithms: AlgSet::of(&[alg]),
                }),
                Ok((_, kind)) => errors.push(format!(
                    "{at}: the key is an {}, which cannot verify {}",
                    kind.name(),
                    k.algorithm.as_str()
                )),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        if cfg.jwks_url.is_none() {
            for alg in algorithms.iter() {
                let covered = unnamed
                    .iter()
                    .chain(&keyed)
                    .any(|k| k.algorithms.contains(alg));
                if !covered {
                    errors.push(format!(
                        "algorithms: no configured key can verify {alg:?} (add a key or a jwks_url, or remove it)"
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut validations: [Option<Validation>; 4] = Default::default();
        for (i, slot) in validations.iter_mut().enumerate() {
            let family: Vec<Algorithm> = algorithms
                .iter()
                .filter(|a| family_index(*a) == i)
                .collect();
            if !family.is_empty() {
                *slot = Some(validation(cfg, family));
            }
        }
        Ok(Verifier {
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
            algorithms,
            keyed,
            unnamed,
            validations,
            jwks_url: cfg.jwks_url.clone(),
            jwks_refresh_seconds: cfg.jwks_refresh_seconds,
            leeway_seconds: cfg.leeway_seconds,
            claims: cfg.claims.clone(),
            token_sources: cfg.token_sources.clone(),
        })
    }

    /// The JWKS URL (RFC 7517) whose keys this verifier also uses, if configured.
    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_url.as_deref()
    }

    /// How often the JWKS should be refetched, seconds (`jwks_refresh_seconds`).
    pub fn jwks_refresh_seconds(&self) -> u64 {
        self.jwks_refresh_seconds
    }

    /// Where tokens are looked for, in order (for [`super::extract_token`]).
    pub fn token_sources(&self) -> &[TokenSource] {
        &self.token_sources
    }

    /// The claims rules, all of which must hold.
    pub fn claims_rules(&self) -> &[ClaimRule] {
        &self.claims
    }

    /// Allowed clock skew on `exp`/`nbf`, seconds.
    pub fn leeway_seconds(&self) -> u64 {
        self.leeway_seconds
    }

    /// Process-unique identity of this verifier: part of every [`super::TokenCache`] key, so a
    /// token verified for one bucket (or one config generation) never answers for another.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Unix time (seconds) from which `verified` must be verified again: `exp + leeway`.
    pub fn valid_until(&self, verified: &Verified) -> u64 {
        verified
            .expires_at
            .map_or(0, |exp| exp.saturating_add(self.leeway_seconds))
    }

    /// Verifies `token` at unix time `now` (seconds): header, key selection, signature,
    /// `iss`/`aud`, `exp`/`nbf`. Does not check the claims rules and does not cache. `jwks` is
    /// consulted only when the verifier has a `jwks_url`.
    ///
    /// Key selection: a `kid` naming a `keys:` entry or (then) a JWKS key selects exactly that
    /// key; otherwise (no `kid`, or an unknown one) the keys without `kid` (`secret`,
    /// `public_key_path`) allowing the header `alg` are tried, and for a token without `kid`
    /// also the `keys:` entries and JWKS keys allowing it, at most [`MAX_KEYS_TRIED`]. An
    /// unknown `kid` with nothing to fall back on is `unknown key id` and, with a JWKS, marks
    /// the store for an early refresh ([`JwksStore::note_unknown_kid`]).
    ///
    /// Errors: a [`reason`] constant.
    pub fn verify(
        &self,
        token: &str,
        jwks: Option<&JwksStore>,
        now: u64,
    ) -> Result<Verified, &'static str> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return Err(header_failure(token)),
        };
        if header.crit.is_some() {
            return Err(reason::MALFORMED);
        }
        let alg = header.alg;
        if !self.algorithms.contains(alg) {
            return Err(reason::ALGORITHM_NOT_ALLOWED);
        }
        let Some(validation) = self.validations[family_index(alg)].as_ref() else {
            return Err(reason::ALGORITHM_NOT_ALLOWED);
        };
        let jwks = jwks.filter(|_| self.jwks_url.is_some());
        let jwks_keys = jwks.map(JwksStore::keys);
        let jwks_slice: &[Key] = jwks_keys.as_ref().map_or(&[], KeysGuard::as_slice);

        let mut candidates: Vec<&Key> = Vec::new();
        if let Some(kid) = header.kid.as_deref() {
            let named = self
                .keyed
                .iter()
                .chain(jwks_slice)
                .find(|k| k.kid.as_deref() == Some(kid));
            if let Some(key) = named {
                if !key.algorithms.contains(alg) {
                    return Err(reason::ALGORITHM_NOT_ALLOWED);
                }
                return self.decode_with(token, key, validation, now);
            }
            if let Some(store) = jwks {
                store.note_unknown_kid();
            }
            candidates.extend(self.unnamed.iter().filter(|k| k.algorithms.contains(alg)));
            if candidates.is_empty() {
                return Err(reason::UNKNOWN_KEY_ID);
            }
        } else {
            candidates.extend(
                self.unnamed
                    .iter()
                    .chain(&self.keyed)
                    .chain(jwks_slice)
                    .filter(|k| k.algorithms.contains(alg))
                    .take(MAX_KEYS_TRIED),
            );
            if candidates.is_empty() {
                return Err(if jwks.is_some() {
                    reason::UNKNOWN_KEY_ID
                } else {
                    reason::ALGORITHM_NOT_ALLOWED
                });
            }
        }
        for key in candidates {
            match self.decode_with(token, key, validation, now) {
                Err(reason::BAD_SIGNATURE) => continue,
                other => return other,
            }
        }
        Err(reason::BAD_SIGNATURE)
    }

    /// Signature, `iss`, `aud` (jsonwebtoken), then `exp`/`nbf` against `now`.
    fn decode_with(
        &self,
        token: &str,
        key: &Key,
        validation: &Validation,
        now: u64,
    ) -> Result<Verified, &'static str> {
        let data = jsonwebtoken::decode::<Value>(token, &key.key, validation).map_err(map_error)?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(reason::MALFORMED);
        }
        let exp = match claims.get("exp") {
            None => return Err(reason::MISSING_EXP),
            Some(v) => numeric_date(v).ok_or(reason::MALFORMED)?,
        };
        if now >= exp.saturating_add(self.leeway_seconds) {
            return Err(reason::EXPIRED);
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = numeric_date(v).ok_or(reason::MALFORMED)?;
            if now.saturating_add(self.leeway_seconds) < nbf {
                return Err(reason::NOT_YET_VALID);
            }
        }
        Ok(Verified {
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            expires_at: Some(exp),
            claims,
        })
    }
}

/// The `Validation` for one family's configured algorithms: `exp` required (its time checked
/// by us), `iss`/`aud` required and checked when configured.
fn validation(cfg: &JwtConfig, algorithms: Vec<Algorithm>) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms;
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    let mut required = vec!["exp"];
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &cfg.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            v.validate_aud = true;
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// RFC 7519 NumericDate as unix seconds (fractions rounded, as jsonwebtoken does); `None`
/// for negatives, non-numbers and non-finite values.
fn numeric_date(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then(|| f.round() as u64)
}

/// Maps a jsonwebtoken error to a client-safe reason.
fn map_error(e: jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        // A key that cannot take this token (e.g. a P-384 JWK for an ES256 header) is just a
        // key that does not verify it.
        K::InvalidSignature
        | K::InvalidEcdsaKey
        | K::InvalidEddsaKey
        | K::InvalidRsaKey(_)
        | K::InvalidKeyFormat => reason::BAD_SIGNATURE,
        K::InvalidAlgorithm | K::MissingAlgorithm | K::UnsupportedAlgorithm => {
            reason::ALGORITHM_NOT_ALLOWED
        }
        K::InvalidIssuer => reason::ISSUER_MISMATCH,
        K::InvalidAudience => reason::AUDIENCE_MISMATCH,
        K::ExpiredSignature => reason::EXPIRED,
        K::ImmatureSignature => reason::NOT_YET_VALID,
        K::MissingRequiredClaim(c) => match c.as_str() {
            "iss" => reason::ISSUER_MISMATCH,
            "aud" => reason::AUDIENCE_MISMATCH,
            "exp" => reason::MISSING_EXP,
            _ => reason::MALFORMED,
        },
        _ => reason::MALFORMED,
    }
}

/// Why a header did not decode: an `alg` that jsonwebtoken does not know (`none`, `HS1`,
/// ...) is `algorithm not allowed`, anything else `malformed token`.
fn header_failure(token: &str) -> &'static str {
    let mut parts = token.split('.');
    let (Some(encoded), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return reason::MALFORMED;
    };
    let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) else {
        return reason::MALFORMED;
    };
    let Ok(header) = serde_json::from_slice::<Value>(&raw) else {
        return reason::MALFORMED;
    };
    match header.get("alg").and_then(Value::as_str) {
        Some(alg) if alg.parse::<Algorithm>().is_err() => reason::ALGORITHM_NOT_ALLOWED,
        _ => reason::MALFORMED,
    }
}

/// Reads and parses the PEM public key at `path`. Errors name the file, never its content.
// Off the shards: config preparation runs on the main thread (start) and the reload thread.
#[allow(clippy::disallowed_methods)]
fn load_public_key(path: &Path) -> Result<(DecodingKey, KeyType), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_public_key_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a PEM public key and detects its type: `RSA PUBLIC KEY` (PKCS#1, RFC 8017) or
/// `PUBLIC KEY` (SPKI, RFC 5280) holding RSA, EC P-256, EC P-384 or Ed25519. Private keys
/// and certificates are refused with a hint. RSA keys under [`MIN_RSA_BITS`] are refused.
pub fn parse_public_key_pem(pem: &[u8]) -> Result<(DecodingKey, KeyType), String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not text)".to_owned())?;
    let label = text
        .split("-----BEGIN ")
        .nth(1)
        .and_then(|rest| rest.split_once("-----"))
        .map(|(label, _)| label)
        .ok_or_else(|| "not a PEM file (no -----BEGIN line)".to_owned())?;
    match label {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        l if l.contains("PRIVATE KEY") => {
            return Err(
                "holds a private key; configure the public key (openssl pkey -in key.pem -pubout)"
                    .to_owned(),
            )
        }
        "CERTIFICATE" => {
            return Err(
                "holds a certificate; extract its public key (openssl x509 -in cert.pem -pubkey -noout)"
                    .to_owned(),
            )
        }
        _ => return Err("unsupported PEM block; expected PUBLIC KEY or RSA PUBLIC KEY".to_owned()),
    }
    let (key, kind) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (key, KeyType::Rsa)
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        let curve = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => KeyType::EcP256,
            Ok(97) => KeyType::EcP384,
            _ => return Err("unsupported EC curve (P-256 and P-384 are supported)".to_owned()),
        };
        (key, curve)
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        (key, KeyType::Ed25519)
    } else {
        return Err("not an RSA, EC or Ed25519 public key".to_owned());
    };
    check_key(&key, kind)?;
    Ok((key, kind))
}

/// Checks that the key material parses for its type (RSA DER and size, EC point on the
/// curve, Ed25519 point), so a broken key fails at load time rather than per request.
pub(crate) fn check_key(key: &DecodingKey, kind: KeyType) -> Result<(), String> {
    match kind {
        KeyType::Hmac => Ok(()),
        KeyType::Rsa => {
            let jwk = Jwk::from_decoding_key(key, None)
                .map_err(|_| "invalid RSA public key".to_owned())?;
            let bits = match &jwk.algorithm {
                AlgorithmParameters::RSA(p) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&p.n)
                    .map(|n| modulus_bits(&n))
                    .unwrap_or(0),
                _ => 0,
            };
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA key of {bits} bits; at least {MIN_RSA_BITS} bits are required"
                ));
            }
            Ok(())
        }
        KeyType::EcP256 | KeyType::EcP384 | KeyType::Ed25519 => {
            let Some(alg) = kind.algorithms().iter().next() else {
                return Err("no algorithm for this key type".to_owned());
            };
            // Building the verifier parses the point; a bogus signature then just fails.
            jsonwebtoken::crypto::verify("AA", b"probe", key, alg)
                .map(|_| ())
                .map_err(|_| format!("invalid {} (the public point does not decode)", kind.name()))
        }
    }
}

/// Bit length of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// The key a JWK (RFC 7517) can verify with, or why it is unusable: symmetric (`oct`) keys,
/// encryption keys (`use: enc`), curves other than P-256/P-384/Ed25519, RSA under
/// [`MIN_RSA_BITS`], and an `alg` that does not fit the key are refused.
pub(crate) fn key_from_jwk(jwk: &Jwk) -> Result<Key, &'static str> {
    use jsonwebtoken::jwk::PublicKeyUse;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
    ) {
        return Err("not a signature key (use is not sig)");
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyType::EcP256,
            EllipticCurve::P384 => KeyType::EcP384,
            _ => return Err("unsupported EC curve"),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyType::Ed25519,
            _ => return Err("unsupported OKP curve"),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are not accepted from a JWKS")
        }
        _ => return Err("unsupported key type"),
    };
    let mut algorithms = kind.algorithms();
    if let Some(ka) = jwk.common.key_algorithm {
        let alg = Algorithm::try_from(ka).map_err(|_| "unsupported alg")?;
        if !algorithms.contains(alg) {
            return Err("alg does not fit the key type");
        }
        algorithms = AlgSet::of(&[alg]);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "invalid key parameters")?;
    check_key(&key, kind).map_err(|_| "invalid key")?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::fixture;

    #[test]
    fn detects_pem_types() {
        let cases = [
            ("rsa_public.pem", KeyType::Rsa),
            ("rsa_public_pkcs1.pem", KeyType::Rsa),
            ("ec256_public.pem", KeyType::EcP256),
            ("ec384_public.pem", KeyType::EcP384),
            ("ed25519_public.pem", KeyType::Ed25519),
        ];
        for (file, want) in cases {
            let (_, kind) = parse_public_key_pem(&fixture(file)).unwrap();
            assert_eq!(kind, want, "{file}");
        }
    }

    #[test]
    fn refuses_private_keys_and_junk() {
        for file in [
            "rsa_private.pem",
            "ec256_private.pem",
            "ed25519_private.pem",
        ] {
            let err = parse_public_key_pem(&fixture(file)).unwrap_err();
            assert!(err.contains("private key"), "{file}: {err}");
        }
        assert!(parse_public_key_pem(b"hello").unwrap_err().contains("PEM"));
        let bogus = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(parse_public_key_pem(bogus).is_err());
    }

    #[test]
    fn alg_set() {
        let s = AlgSet::of(&[Algorithm::RS256, Algorithm::EdDSA]);
        assert!(s.contains(Algorithm::RS256) && s.contains(Algorithm::EdDSA));
        assert!(!s.contains(Algorithm::HS256));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Algorithm::RS256, Algorithm::EdDSA]
        );
        assert!(s.and(KeyType::Hmac.algorithms()).is_empty());
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01, 0]), 9);
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&serde_json::json!(10)), Some(10));
        assert_eq!(numeric_date(&serde_json::json!(10.6)), Some(11));
        assert_eq!(numeric_date(&serde_json::json!(-1)), None);
        assert_eq!(numeric_date(&serde_json::json!("10")), None);
    }
}

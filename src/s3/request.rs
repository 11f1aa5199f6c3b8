//! The backend seam: an object request described before it is signed ([`ObjectRequest`]) and a
//! backend it can be sent to ([`Backend`]: the bucket's addressing, its SigV4 signer, the
//! connection target). The upstream layer signs the description for whichever backend it sends
//! it to (`Upstream::send_object`), so a retry on another backend (a replica with its own
//! credentials, region and endpoint) re-signs instead of replaying bytes signed for the first.
//! The pipeline's fetch phase and the admin readiness probe build their requests here alike.
//!
//! Hot path of every miss: [`Backend::signed_head`] costs the S3 host and canonical URI (two
//! small `String`s), one SigV4 signature with the cached per-day key (~2 us) and one ~600-byte
//! head (`Vec`, one allocation). Nothing here runs on a cache hit.

use std::rc::Rc;
use std::time::SystemTime;

use crate::config::{Addressing as ConfigAddressing, S3Config};
use crate::pipeline::prepared::PreparedBackend;
use crate::upstream::Target;

use super::addressing::{object_target, Addressing};
use super::sigv4::{Credentials, Signer};
use super::uri::canonical_query;

/// Sent upstream as User-Agent.
const USER_AGENT: &str = concat!("yatagarasu/", env!("CARGO_PKG_VERSION"));

/// Most header fields an object request forwards (conditionals, Range, one injected
/// precondition).
pub const MAX_FORWARDED: usize = 8;

/// A body-less S3 object request (GET or HEAD) before signing: what to ask for, not how to
/// reach or sign for one backend.
#[derive(Clone, Debug)]
pub struct ObjectRequest<'a> {
    /// `GET` or `HEAD`.
    pub method: &'static str,
    /// The object key, decoded bytes; empty = the bucket itself (`HEAD bucket`).
    pub key: &'a [u8],
    /// `versionId` to read, when the bucket allows it (the only query parameter ever sent).
    pub version_id: Option<&'a str>,
    /// Fields forwarded as they are (name, value): conditionals, `Range`, a precondition the
    /// proxy injects. At most [`MAX_FORWARDED`].
    pub fields: Vec<(&'static str, &'a [u8])>,
}

impl<'a> ObjectRequest<'a> {
    /// A request for `key` with no forwarded fields.
    pub fn new(method: &'static str, key: &'a [u8], version_id: Option<&'a str>) -> Self {
        ObjectRequest {
            method,
            key,
            version_id,
            fields: Vec::new(),
        }
    }

    /// Whether this is a HEAD (its response has no body whatever its Content-Length says).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Add a forwarded field.
    pub fn field(&mut self, name: &'static str, value: &'a [u8]) -> &mut Self {
        debug_assert!(
            self.fields.len() < MAX_FORWARDED,
            "too many forwarded fields"
        );
        self.fields.push((name, value));
        self
    }
}

/// One backend of a bucket (its primary or a replica): how to address, sign for and reach it.
pub struct Backend<'a> {
    /// `<bucket>` or `<bucket>/<replica>` (`PreparedBackend::name`).
    pub name: &'a str,
    /// The backend's S3 settings (S3 bucket name, endpoint, addressing style).
    pub s3: &'a S3Config,
    /// SigV4 signer with this backend's credentials and region.
    pub signer: &'a Signer,
    /// Where to connect, with which TLS and timeouts, and which idle connections to reuse.
    pub target: Target<'a>,
}

impl Backend<'_> {
    /// The complete signed request head for `req` on this backend (AWS SigV4 documentation,
    /// "Authenticating Requests: Using the Authorization Header"), ending with the empty line.
    pub fn signed_head(&self, req: &ObjectRequest<'_>) -> Vec<u8> {
        let (host, uri) = bucket_object_target(self.s3, req.key);
        let query = req
            .version_id
            .map(|v| canonical_query(&[("versionId", v)]))
            .unwrap_or_default();
        let mut head = signed_request_head(self.signer, req.method, &host, &uri, &query);
        for (name, value) in &req.fields {
            push_header(&mut head, name, value);
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

/// The SigV4 signer for backend `s3`'s credentials and region (derives nothing until first
/// use; the signing key is cached per day inside).
pub fn signer_for(s3: &S3Config) -> Signer {
    Signer::new(
        Credentials {
            access_key: s3.access_key.expose().to_owned(),
            secret_key: s3.secret_key.expose().to_owned(),
            session_token: s3.session_token.as_ref().map(|t| t.expose().to_owned()),
        },
        &s3.region,
    )
}

/// `(Host header, canonical URI)` of object `key` (decoded bytes; empty = the bucket itself) on
/// backend `s3`, per its endpoint and addressing style ([`object_target`]).
pub fn bucket_object_target(s3: &S3Config, key: &[u8]) -> (String, String) {
    let ep = &s3.endpoint;
    let addressing = match s3.addressing {
        ConfigAddressing::Path => Addressing::Path,
        ConfigAddressing::Virtual => Addressing::Virtual,
    };
    object_target(
        addressing,
        &ep.host,
        ep.port,
        ep.explicit_port,
        &s3.bucket,
        key,
    )
}

/// Where and how to reach backend `s3`: address, TLS and timeouts from its prepared
/// settings, idle connections under `pool_key`.
pub fn upstream_target<'a>(
    s3: &'a S3Config,
    prepared: &'a PreparedBackend,
    pool_key: &'a Rc<str>,
) -> Target<'a> {
    Target {
        pool_key,
        host: &s3.endpoint.host,
        port: s3.endpoint.port,
        tls: prepared.tls.as_ref(),
        connect_timeout: prepared.connect_timeout,
        first_byte_timeout: prepared.first_byte_timeout,
    }
}

/// The request line and headers of a SigV4-signed, body-less S3 request: `Host`, `x-amz-date`,
/// `x-amz-content-sha256` (empty payload), `x-amz-security-token` with temporary credentials,
/// `Authorization` and `User-Agent`, each line ending in CRLF. The caller appends any further
/// fields and the final CRLF. ~600 bytes, one allocation.
pub fn signed_request_head(
    signer: &Signer,
    method: &str,
    host: &str,
    canonical_uri: &str,
    query: &str,
) -> Vec<u8> {
    let signed = signer.sign(method, host, canonical_uri, query, &[], SystemTime::now());
    let mut req = Vec::with_capacity(768);
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(canonical_uri.as_bytes());
    if !query.is_empty() {
        req.push(b'?');
        req.extend_from_slice(query.as_bytes());
    }
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(b"\r\nx-amz-date: ");
    req.extend_from_slice(signed.x_amz_date.as_bytes());
    req.extend_from_slice(b"\r\nx-amz-content-sha256: ");
    req.extend_from_slice(signed.x_amz_content_sha256.as_bytes());
    if let Some(token) = &signed.x_amz_security_token {
        req.extend_from_slice(b"\r\nx-amz-security-token: ");
        req.extend_from_slice(token.as_bytes());
    }
    req.extend_from_slice(b"\r\nAuthorization: ");
    req.extend_from_slice(signed.authorization.as_bytes());
    req.extend_from_slice(b"\r\nUser-Agent: ");
    req.extend_from_slice(USER_AGENT.as_bytes());
    req.extend_from_slice(b"\r\n");
    req
}

fn push_header(req: &mut Vec<u8>, name: &str, value: &[u8]) {
    req.extend_from_slice(name.as_bytes());
    req.extend_from_slice(b": ");
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
}

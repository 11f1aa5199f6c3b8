//! S3 protocol pieces the proxy needs to talk to a bucket: SigV4 request signing (`sigv4`), the
//! SigV4 `UriEncode` rules for keys and query strings (`uri`), path-style vs virtual-hosted-style
//! addressing (`addressing`) and reading S3 XML error bodies (`error`).
//!
//! Hot path: `uri::encode_key_path`, `addressing::object_target` and `sigv4::Signer::sign` run
//! once per upstream request (about 2 us together, a handful of small allocations, no key
//! derivation: the signing key is cached per UTC day). `error::parse_error_xml` runs only on
//! upstream errors. `request` is the backend seam: an object request described before signing
//! and the backend (addressing, signer, connection target) it is signed for and sent to. Apart
//! from `request`, nothing here does I/O or depends on other crate modules: inputs are plain
//! `&str` / `&[u8]`, so the module can be tested and benched on its own.

pub mod addressing;
pub mod error;
pub mod request;
pub mod sigv4;
pub mod uri;

pub use addressing::{object_target, supports_virtual, Addressing};
pub use error::{parse_error_xml, S3ErrorInfo};
pub use sigv4::{derive_signing_key, Credentials, SignedHeaders, Signer, EMPTY_PAYLOAD_SHA256};
pub use uri::{canonical_query, encode_key_path, encode_query_component};

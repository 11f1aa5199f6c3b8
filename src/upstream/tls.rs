//! TLS client configuration for HTTPS endpoints: rustls 0.23 with the `ring` provider, trusting
//! the system roots (rustls-native-certs) or, when `s3.tls_ca_file` is set, that PEM bundle
//! instead (a private CA).
//!
//! Not on the hot path: built once per distinct CA setting when a config snapshot is prepared, on
//! the main thread (it reads files), then shared by every shard through `Arc`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Build a client config trusting `ca_file` (PEM, one or more certificates) or, without one, the
/// system's root store. Errors name the file and the cause; never the certificate contents.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read tls_ca_file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad PEM in tls_ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "tls_ca_file {} holds no certificate",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Skip the odd unparsable system certificate rather than failing startup.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system root certificates found (install ca-certificates)".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

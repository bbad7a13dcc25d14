//! TLS for the Postgres port (`--tls-cert`, `--tls-key`): rustls with the ring provider,
//! offered to clients that send SSLRequest (libpq's `sslmode=require`, `verify-full`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

/// The ALPN name of Postgres's protocol (libpq 17 sends it; direct TLS requires it).
const POSTGRES_ALPN: &[u8] = b"postgresql";

/// An acceptor for the PEM certificate chain and private key at these paths.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate does not match the key")?;
    config.alpn_protocols = vec![POSTGRES_ALPN.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

//! Certificates, key and client CA from PEM files, turned into the rustls
//! server configuration; and the shared, reloadable slot that holds it.

use super::identity::describe_certificate;
use super::suites::{provider, select_suites};
use crate::config::{ConfigError, TlsConfig};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// The TLS configuration every shard's SSL listener handshakes with.
pub(crate) struct ServerTls {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
}

impl ServerTls {
    /// Reads the PEM files and builds the configuration; any problem names
    /// the setting whose file is at fault.
    pub(crate) fn load(settings: &TlsConfig) -> Result<ServerTls, ConfigError> {
        let config = build(settings)?;
        Ok(ServerTls {
            settings: settings.clone(),
            current: ArcSwap::from(config),
        })
    }

    /// The configuration new handshakes use.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the files. On success new handshakes use them; on failure
    /// the error is returned and the configuration in use is kept.
    pub(crate) fn reload(&self) -> Result<(), ConfigError> {
        let config = build(&self.settings)?;
        self.current.store(config);
        Ok(())
    }
}

fn error(setting: &str, path: &Path, message: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        message: format!("{}: {message}", path.display()),
    }
}

fn build(settings: &TlsConfig) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain = read_certificates("TLS_CERT_PATH", &settings.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_path).map_err(|e| {
        error(
            "TLS_KEY_PATH",
            &settings.key_path,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(CryptoProvider {
        cipher_suites: select_suites(&settings.cipher_suites),
        ..provider()
    });
    let versions: Vec<&'static SupportedProtocolVersion> =
        settings.versions.iter().map(|v| v.rustls()).collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| ConfigError {
            setting: "TLS_CIPHER_SUITES".into(),
            message: e.to_string(),
        })?;
    let builder = match &settings.ca_path {
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certificates("TLS_CA_PATH", ca_path)? {
                roots
                    .add(ca)
                    .map_err(|e| error("TLS_CA_PATH", ca_path, format!("unusable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // Without the requirement a client may still offer a
            // certificate; if it does, it is verified all the same.
            let verifier = if settings.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| error("TLS_CA_PATH", ca_path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let leaf = describe_certificate(&chain[0]);
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        error(
            "TLS_KEY_PATH",
            &settings.key_path,
            format!("does not fit TLS_CERT_PATH: {e}"),
        )
    })?;
    // The operator's TLS_CIPHER_SUITES order wins over the client's, so a
    // configured preference is what gets negotiated.
    config.ignore_client_order = true;
    match leaf {
        Some(leaf) if leaf.expired() => warn!(
            subject = %leaf.subject,
            not_after = %leaf.not_after,
            "the TLS certificate has expired; clients will refuse it"
        ),
        Some(leaf) => info!(subject = %leaf.subject, not_after = %leaf.not_after, "TLS certificate loaded"),
        None => warn!("the TLS certificate could not be parsed for logging"),
    }
    Ok(Arc::new(config))
}

fn read_certificates(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(setting, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(setting, path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(error(setting, path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

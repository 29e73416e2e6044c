//! The server side of one TLS handshake, bounded in time, with the reason
//! it failed in words an operator can act on.

use super::identity::PeerIdentity;
use super::suites::iana_name;
use futures::future::{select, Either};
use futures::{AsyncRead, AsyncWrite};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use rustls::{CertificateError, Error as TlsError, PeerIncompatible, ServerConfig};
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

/// Every `reason` a failed handshake is counted under (pre-created as
/// metric series so rates work from the first scrape).
pub(crate) const FAILURE_REASONS: &[&str] = &[
    "no_client_cert",
    "unknown_ca",
    "cert_expired",
    "bad_certificate",
    "protocol_version",
    "no_shared_cipher",
    "not_tls",
    "alert_received",
    "timeout",
    "closed",
    "other",
];

#[derive(Debug)]
pub(crate) struct HandshakeFailure {
    /// One of [`FAILURE_REASONS`].
    pub reason: &'static str,
    pub detail: String,
}

/// A completed handshake.
pub(crate) struct Established<S> {
    pub stream: TlsStream<S>,
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: String,
    pub cipher_suite: String,
    /// The client certificate's identity, when one was presented (and so
    /// verified against TLS_CA_PATH).
    pub identity: Option<PeerIdentity>,
}

/// Runs the server handshake on `stream`, giving up after `timeout` so a
/// client that connects and says nothing cannot hold a connection slot.
pub(crate) async fn accept<S>(
    config: Arc<ServerConfig>,
    stream: S,
    timeout: Duration,
) -> Result<Established<S>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = pin!(TlsAcceptor::from(config).accept(stream));
    let deadline = pin!(glommio::timer::sleep(timeout));
    let stream = match select(handshake, deadline).await {
        Either::Left((Ok(stream), _)) => stream,
        Either::Left((Err(e), _)) => return Err(classify(&e)),
        Either::Right(_) => {
            return Err(HandshakeFailure {
                reason: "timeout",
                detail: format!("no complete handshake within {} s", timeout.as_secs_f64()),
            })
        }
    };
    let (_, session) = stream.get_ref();
    let version = session
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cipher_suite = session
        .negotiated_cipher_suite()
        .map(|s| iana_name(&s))
        .unwrap_or_default();
    let identity = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(PeerIdentity::of);
    Ok(Established {
        stream,
        version,
        cipher_suite,
        identity,
    })
}

fn classify(e: &io::Error) -> HandshakeFailure {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>());
    let reason = match tls {
        Some(TlsError::NoCertificatesPresented) => "no_client_cert",
        Some(TlsError::InvalidCertificate(cert)) => match cert {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "cert_expired",
            _ => "bad_certificate",
        },
        Some(TlsError::PeerIncompatible(incompatible)) => match incompatible {
            PeerIncompatible::NoCipherSuitesInCommon => "no_shared_cipher",
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig => "protocol_version",
            _ => "other",
        },
        // A Kafka request (or anything else) where a ClientHello belongs:
        // most often a plaintext client pointed at the SSL listener.
        Some(TlsError::InvalidMessage(_))
        | Some(TlsError::InappropriateMessage { .. })
        | Some(TlsError::InappropriateHandshakeMessage { .. }) => "not_tls",
        Some(TlsError::AlertReceived(_)) => "alert_received",
        Some(_) => "other",
        None if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ) =>
        {
            "closed"
        }
        None => "other",
    };
    let detail = match tls {
        Some(TlsError::InvalidMessage(_)) => format!("{e} (a plaintext client on the SSL listener?)"),
        Some(TlsError::AlertReceived(alert)) => {
            format!("the client sent alert {alert:?} (it refused our certificate?)")
        }
        _ => e.to_string(),
    };
    HandshakeFailure { reason, detail }
}

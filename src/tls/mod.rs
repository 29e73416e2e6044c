//! TLS for the SSL listener: rustls (ring provider) over glommio streams.
//!
//! The rustls configuration is built once from the PEM files and shared by
//! every shard behind an `ArcSwap`; SIGHUP builds a new one and swaps it in,
//! so new handshakes see the new certificate while sessions already
//! established keep the keys they negotiated.

mod handshake;
mod identity;
mod material;
mod read_ahead;
mod suites;

pub(crate) use handshake::{accept, FAILURE_REASONS};
pub(crate) use material::ServerTls;
pub(crate) use read_ahead::ReadAhead;
pub use suites::{canonical_suite_name, supported_suites, TlsVersion};

/// Every allowed version needs at least one configured suite, and every
/// configured suite must belong to an allowed version: either mismatch is a
/// configuration mistake that would otherwise show up only as failed
/// handshakes.
pub(crate) fn check_suites_against_versions(
    suites: &[String],
    versions: &[TlsVersion],
) -> Result<(), String> {
    if suites.is_empty() {
        return Ok(());
    }
    let known = supported_suites();
    let version_of = |name: &String| known.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    for name in suites {
        if let Some(version) = version_of(name) {
            if !versions.contains(&version) {
                return Err(format!(
                    "{name} is a TLS {} suite but TLS_VERSIONS does not allow {}",
                    version.name(),
                    version.name()
                ));
            }
        }
    }
    for version in versions {
        if !suites.iter().any(|name| version_of(name) == Some(*version)) {
            return Err(format!(
                "no TLS {} suite listed, but TLS_VERSIONS allows {}: add one or drop {} from TLS_VERSIONS",
                version.name(),
                version.name(),
                version.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_and_versions_must_agree() {
        let tls13 = vec!["TLS_AES_256_GCM_SHA384".to_string()];
        assert!(check_suites_against_versions(&tls13, &[TlsVersion::Tls13]).is_ok());
        let err = check_suites_against_versions(&tls13, &[TlsVersion::Tls12, TlsVersion::Tls13]).unwrap_err();
        assert!(err.contains("no TLS 1.2 suite"), "{err}");
        let tls12 = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()];
        let err = check_suites_against_versions(&tls12, &[TlsVersion::Tls13]).unwrap_err();
        assert!(err.contains("TLS 1.2 suite"), "{err}");
        assert!(check_suites_against_versions(&[], &[TlsVersion::Tls12]).is_ok());
    }
}

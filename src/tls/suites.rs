//! Protocol versions and cipher suites, by the names operators write.
//!
//! Kafka's `ssl.cipher.suites` takes IANA names; rustls calls the TLS 1.3
//! suites `TLS13_*`. Both spellings are accepted, IANA is what we print.

use rustls::crypto::CryptoProvider;
use rustls::{ProtocolVersion, SupportedCipherSuite, SupportedProtocolVersion};

/// A TLS protocol version the broker can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// `1.2`, `TLSv1.2`, `TLS1.2` (any case) and the same for 1.3.
    pub fn parse(text: &str) -> Option<TlsVersion> {
        let lower = text.trim().to_ascii_lowercase();
        let number = lower
            .strip_prefix("tlsv")
            .or_else(|| lower.strip_prefix("tls"))
            .unwrap_or(&lower);
        match number {
            "1.2" | "1_2" => Some(TlsVersion::Tls12),
            "1.3" | "1_3" => Some(TlsVersion::Tls13),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }

    pub(crate) fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }

    fn of(version: ProtocolVersion) -> Option<TlsVersion> {
        match version {
            ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
            ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

/// The crypto provider every TLS listener uses (see the README for why
/// ring).
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The IANA name of a suite (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`).
pub fn iana_name(suite: &SupportedCipherSuite) -> String {
    let name = suite
        .suite()
        .as_str()
        .map_or_else(|| format!("{:?}", suite.suite()), str::to_string);
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// Every suite this build can negotiate, by IANA name, with its version.
pub fn supported_suites() -> Vec<(String, TlsVersion)> {
    provider()
        .cipher_suites
        .iter()
        .filter_map(|s| Some((iana_name(s), TlsVersion::of(s.version().version)?)))
        .collect()
}

/// The suite called `name` (IANA or rustls spelling, any case), if this
/// build has it; returns its canonical IANA name.
pub fn canonical_suite_name(name: &str) -> Option<String> {
    let wanted = name.trim().to_ascii_uppercase();
    let wanted = match wanted.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => wanted,
    };
    supported_suites()
        .into_iter()
        .map(|(iana, _)| iana)
        .find(|iana| *iana == wanted)
}

/// The provider's suites restricted to `names` (canonical IANA names), in
/// the operator's order of preference; all of them when `names` is empty.
pub(crate) fn select_suites(names: &[String]) -> Vec<SupportedCipherSuite> {
    let all = provider().cipher_suites;
    if names.is_empty() {
        return all;
    }
    names
        .iter()
        .filter_map(|name| all.iter().find(|s| iana_name(s) == *name).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_the_usual_spellings() {
        for text in ["1.2", "TLSv1.2", "tls1.2", " TLSV1.2 "] {
            assert_eq!(TlsVersion::parse(text), Some(TlsVersion::Tls12), "{text}");
        }
        assert_eq!(TlsVersion::parse("TLSv1.3"), Some(TlsVersion::Tls13));
        assert_eq!(TlsVersion::parse("1.1"), None);
        assert_eq!(TlsVersion::parse("SSLv3"), None);
    }

    #[test]
    fn suites_are_named_as_iana_does() {
        let names: Vec<String> = supported_suites().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"TLS_AES_128_GCM_SHA256".to_string()), "{names:?}");
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()));
        assert_eq!(
            canonical_suite_name("tls13_chacha20_poly1305_sha256").as_deref(),
            Some("TLS_CHACHA20_POLY1305_SHA256")
        );
        assert_eq!(canonical_suite_name("TLS_RSA_WITH_RC4_128_MD5"), None);
        let picked = select_suites(&["TLS_AES_256_GCM_SHA384".into()]);
        assert_eq!(picked.len(), 1);
        assert_eq!(iana_name(&picked[0]), "TLS_AES_256_GCM_SHA384");
    }
}

//! Who a client certificate says the client is.
//!
//! The principal is written as Kafka's default SSL principal builder does:
//! `User:` and the subject in RFC 4514 form (most specific RDN first,
//! `CN=client,O=Example`), so ACLs written for Kafka read the same here.

use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};
use x509_parser::x509::X509Name;

/// The verified client certificate's identity, kept with the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerIdentity {
    /// `User:CN=...`, as Kafka names an SSL principal.
    pub principal: String,
    /// The subject in RFC 4514 form (`CN=client,O=Example`): the
    /// principal's name.
    pub subject: String,
    /// Subject alternative names, `DNS:`, `IP:`, `email:`, `URI:` prefixed.
    pub sans: Vec<String>,
}

impl PeerIdentity {
    /// From the leaf of the chain the client presented (already verified
    /// by rustls when this is called).
    pub(crate) fn of(leaf: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let subject = rfc4514(cert.subject());
        Some(PeerIdentity {
            principal: format!("User:{subject}"),
            subject,
            sans: subject_alternative_names(&cert),
        })
    }
}

/// What the log says about a certificate the broker serves.
pub(crate) struct CertificateSummary {
    pub subject: String,
    pub not_after: String,
    not_after_unix: i64,
}

impl CertificateSummary {
    pub(crate) fn expired(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.not_after_unix < now
    }
}

pub(crate) fn describe_certificate(der: &CertificateDer<'_>) -> Option<CertificateSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let not_after = cert.validity().not_after;
    Some(CertificateSummary {
        subject: rfc4514(cert.subject()),
        not_after: not_after.to_string(),
        not_after_unix: not_after.timestamp(),
    })
}

fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = oid2abbrev(attr.attr_type(), oid_registry())
                        .map_or_else(|_| attr.attr_type().to_id_string(), str::to_string);
                    let value = attr.as_str().map_or_else(|_| "#?".to_string(), escape);
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // DER lists the RDNs from the root down; RFC 4514 writes them the
    // other way round.
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn subject_alternative_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(format!("DNS:{dns}")),
            GeneralName::RFC822Name(email) => Some(format!("email:{email}")),
            GeneralName::URI(uri) => Some(format!("URI:{uri}")),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| format!("IP:{}", std::net::Ipv4Addr::from(b))),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| format!("IP:{}", std::net::Ipv6Addr::from(b))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(escape("Acme, Inc."), "Acme\\, Inc.");
        assert_eq!(escape("#1"), "\\#1");
        assert_eq!(escape("plain"), "plain");
    }
}

//! Listeners: where clients connect, whether they speak TLS there, and
//! whether they authenticate with SASL.
//!
//! Kafka's form is `LISTENERS=PLAINTEXT://0.0.0.0:9092,SASL_SSL://0.0.0.0:9093`
//! with `ADVERTISED_LISTENERS` naming what each listener tells its clients.
//! A listener's name is its security protocol, unless
//! `LISTENER_SECURITY_PROTOCOL_MAP` (Kafka's `listener.security.protocol.map`,
//! `INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL`) maps the name to one, so
//! several listeners may share a protocol. Without LISTENERS, the single
//! BIND_ADDRESS listener speaks TLS exactly when TLS_CERT_PATH is set.

use std::net::{SocketAddr, ToSocketAddrs};

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// A protocol by its Kafka name (any case).
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether connections start with a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients authenticate with SASL before other requests.
    pub fn is_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// `LISTENER_SECURITY_PROTOCOL_MAP`: listener name -> protocol.
pub(super) fn parse_protocol_map(text: &str) -> Result<Vec<(String, SecurityProtocol)>, String> {
    let mut map: Vec<(String, SecurityProtocol)> = Vec::new();
    for entry in entries(text) {
        let (name, protocol) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry}: expected NAME:PROTOCOL"))?;
        let name = checked_name(name.trim())?;
        let protocol = SecurityProtocol::parse(protocol.trim()).ok_or_else(|| {
            format!("{entry}: unknown security protocol (use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)")
        })?;
        if map.iter().any(|(n, _)| *n == name) {
            return Err(format!("{name} is mapped twice"));
        }
        map.push((name, protocol));
    }
    Ok(map)
}

pub(super) fn show_protocol_map(map: &[(String, SecurityProtocol)]) -> String {
    map.iter()
        .map(|(name, protocol)| format!("{name}:{}", protocol.name()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Listener names are Kafka's: letters, digits and `_`, upper-cased.
fn checked_name(name: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("{name:?}: a listener name is letters, digits and _"));
    }
    Ok(name.to_ascii_uppercase())
}

/// One `NAME://host:port` entry of LISTENERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The listener's name (upper case): a protocol's name, or one that
    /// LISTENER_SECURITY_PROTOCOL_MAP maps to a protocol.
    pub name: String,
    pub addr: SocketAddr,
}

/// One `NAME://host:port` entry of ADVERTISED_LISTENERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedListener {
    /// The listener it is for (by name).
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A listener as the server starts it: where it binds, what it speaks and
/// what it advertises (`host` or `host:port`; `None` = derive it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub security: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertised: Option<String>,
}

/// Splits `NAME://host:port` into its parts; `host` may be empty or a
/// bracketed IPv6 address.
fn split_entry(entry: &str) -> Result<(String, &str, u16), String> {
    let (name, rest) = entry
        .split_once("://")
        .ok_or_else(|| format!("{entry}: expected NAME://host:port"))?;
    let name = checked_name(name)?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{entry}: missing :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{entry}: port must be 0-65535"))?;
    Ok((name, host.trim_start_matches('[').trim_end_matches(']'), port))
}

fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn refuse_repeats<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = Vec::new();
    for name in names {
        if seen.contains(&name) {
            return Err(format!("{name} is listed twice (listener names must be unique)"));
        }
        seen.push(name);
    }
    Ok(())
}

pub(super) fn parse_listeners(text: &str) -> Result<Vec<ListenerConfig>, String> {
    let listeners = entries(text)
        .map(|entry| {
            let (name, host, port) = split_entry(entry)?;
            // An empty host means every interface, as in Kafka.
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            let addr = (host, port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| format!("{entry}: cannot resolve {host}"))?;
            Ok(ListenerConfig { name, addr })
        })
        .collect::<Result<Vec<_>, String>>()?;
    refuse_repeats(listeners.iter().map(|l| l.name.as_str()))?;
    Ok(listeners)
}

pub(super) fn parse_advertised(text: &str) -> Result<Vec<AdvertisedListener>, String> {
    let advertised = entries(text)
        .map(|entry| {
            let (name, host, port) = split_entry(entry)?;
            if host.is_empty() || host == "0.0.0.0" || host == "::" {
                return Err(format!(
                    "{entry}: must name a host clients can reach, not a wildcard address"
                ));
            }
            if port == 0 {
                return Err(format!("{entry}: port must be 1-65535"));
            }
            Ok(AdvertisedListener {
                name,
                host: host.to_string(),
                port,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    refuse_repeats(advertised.iter().map(|l| l.name.as_str()))?;
    Ok(advertised)
}

pub(super) fn show_listeners(listeners: &[ListenerConfig]) -> String {
    listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, l.addr))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn show_advertised(listeners: &[AdvertisedListener]) -> String {
    listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, host_port(&l.host, l.port)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `host:port`, bracketing an IPv6 address.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_style_listeners_parse() {
        let parsed = parse_listeners("PLAINTEXT://127.0.0.1:9092, ssl://[::1]:9093").unwrap();
        assert_eq!(parsed[0].name, "PLAINTEXT");
        assert_eq!(parsed[0].addr, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(parsed[1].name, "SSL");
        assert_eq!(parsed[1].addr, "[::1]:9093".parse().unwrap());
        assert_eq!(
            show_listeners(&parsed),
            "PLAINTEXT://127.0.0.1:9092,SSL://[::1]:9093"
        );
        let wildcard = parse_listeners("PLAINTEXT://:9092").unwrap();
        assert_eq!(wildcard[0].addr, "0.0.0.0:9092".parse().unwrap());
    }

    #[test]
    fn bad_listeners_name_the_entry() {
        for (text, needle) in [
            ("PLAINTEXT://127.0.0.1:9092,PLAINTEXT://127.0.0.1:9093", "twice"),
            ("IN-TERNAL://127.0.0.1:9092", "IN-TERNAL"),
            ("127.0.0.1:9092", "NAME://"),
            ("SSL://127.0.0.1:http", "port"),
        ] {
            let err = parse_listeners(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn advertised_listeners_need_a_reachable_host() {
        let parsed = parse_advertised("SSL://broker.example:19093").unwrap();
        assert_eq!(parsed[0].host, "broker.example");
        assert_eq!(show_advertised(&parsed), "SSL://broker.example:19093");
        assert!(parse_advertised("SSL://0.0.0.0:9093").is_err());
        assert!(parse_advertised("SSL://:9093").is_err());
    }

    #[test]
    fn the_protocol_map_names_listeners() {
        let map = parse_protocol_map("internal:sasl_plaintext, EXTERNAL:SASL_SSL").unwrap();
        assert_eq!(
            map,
            vec![
                ("INTERNAL".to_string(), SecurityProtocol::SaslPlaintext),
                ("EXTERNAL".to_string(), SecurityProtocol::SaslSsl),
            ]
        );
        assert_eq!(
            show_protocol_map(&map),
            "INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL"
        );
        assert!(parse_protocol_map("A:KERBEROS").is_err());
        assert!(parse_protocol_map("A:SSL,A:PLAINTEXT").is_err());
        assert!(SecurityProtocol::SaslSsl.is_tls() && SecurityProtocol::SaslSsl.is_sasl());
        assert!(!SecurityProtocol::Ssl.is_sasl());
    }
}

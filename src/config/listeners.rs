//! Listeners: where clients connect and whether they speak TLS there.
//!
//! Kafka's form is `LISTENERS=PLAINTEXT://0.0.0.0:9092,SSL://0.0.0.0:9093`
//! with `ADVERTISED_LISTENERS` naming what each listener tells its clients.
//! The listener name is its security protocol (Kafka's default
//! `listener.security.protocol.map`); SASL is not offered, so PLAINTEXT and
//! SSL are the names there are. Without LISTENERS, the single BIND_ADDRESS
//! listener speaks TLS exactly when TLS_CERT_PATH is set.

use std::net::{SocketAddr, ToSocketAddrs};

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
        }
    }

    fn parse(name: &str) -> Result<SecurityProtocol, String> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" | "SASL_SSL" => Err(format!("{name}: SASL listeners are not supported")),
            _ => Err(format!("{name}: unknown listener name (use PLAINTEXT or SSL)")),
        }
    }
}

/// One `NAME://host:port` entry of LISTENERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub security: SecurityProtocol,
    pub addr: SocketAddr,
}

/// One `NAME://host:port` entry of ADVERTISED_LISTENERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedListener {
    pub security: SecurityProtocol,
    pub host: String,
    pub port: u16,
}

/// A listener as the server starts it: where it binds, what it speaks and
/// what it advertises (`host` or `host:port`; `None` = derive it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub security: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertised: Option<String>,
}

/// Splits `NAME://host:port` into its parts; `host` may be empty or a
/// bracketed IPv6 address.
fn split_entry(entry: &str) -> Result<(SecurityProtocol, &str, u16), String> {
    let (name, rest) = entry
        .split_once("://")
        .ok_or_else(|| format!("{entry}: expected NAME://host:port"))?;
    let security = SecurityProtocol::parse(name)?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{entry}: missing :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{entry}: port must be 0-65535"))?;
    Ok((security, host.trim_start_matches('[').trim_end_matches(']'), port))
}

fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn refuse_repeats(names: impl Iterator<Item = SecurityProtocol>) -> Result<(), String> {
    let mut seen = Vec::new();
    for name in names {
        if seen.contains(&name) {
            return Err(format!(
                "{} is listed twice (listener names must be unique)",
                name.name()
            ));
        }
        seen.push(name);
    }
    Ok(())
}

pub(super) fn parse_listeners(text: &str) -> Result<Vec<ListenerConfig>, String> {
    let listeners = entries(text)
        .map(|entry| {
            let (security, host, port) = split_entry(entry)?;
            // An empty host means every interface, as in Kafka.
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            let addr = (host, port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| format!("{entry}: cannot resolve {host}"))?;
            Ok(ListenerConfig { security, addr })
        })
        .collect::<Result<Vec<_>, String>>()?;
    refuse_repeats(listeners.iter().map(|l| l.security))?;
    Ok(listeners)
}

pub(super) fn parse_advertised(text: &str) -> Result<Vec<AdvertisedListener>, String> {
    let advertised = entries(text)
        .map(|entry| {
            let (security, host, port) = split_entry(entry)?;
            if host.is_empty() || host == "0.0.0.0" || host == "::" {
                return Err(format!(
                    "{entry}: must name a host clients can reach, not a wildcard address"
                ));
            }
            if port == 0 {
                return Err(format!("{entry}: port must be 1-65535"));
            }
            Ok(AdvertisedListener {
                security,
                host: host.to_string(),
                port,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    refuse_repeats(advertised.iter().map(|l| l.security))?;
    Ok(advertised)
}

pub(super) fn show_listeners(listeners: &[ListenerConfig]) -> String {
    listeners
        .iter()
        .map(|l| format!("{}://{}", l.security.name(), l.addr))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn show_advertised(listeners: &[AdvertisedListener]) -> String {
    listeners
        .iter()
        .map(|l| format!("{}://{}", l.security.name(), host_port(&l.host, l.port)))
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
        assert_eq!(parsed[0].security, SecurityProtocol::Plaintext);
        assert_eq!(parsed[0].addr, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(parsed[1].security, SecurityProtocol::Ssl);
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
            ("INTERNAL://127.0.0.1:9092", "INTERNAL"),
            ("SASL_SSL://127.0.0.1:9092", "SASL"),
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
}

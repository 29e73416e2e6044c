//! The address clients are told to connect to.
//!
//! A broker bound to 0.0.0.0 that advertises 0.0.0.0 sends every client
//! nowhere. Kafka makes the operator pick a hostname; we do better when none
//! is given: the local address of the connection the Metadata request came
//! in on is, by construction, one this client can reach.

use crate::config::SecurityProtocol;
use std::net::SocketAddr;

/// A listener as the handlers see it.
#[derive(Debug, Clone)]
pub(crate) struct BrokerListener {
    pub name: std::rc::Rc<str>,
    pub security: SecurityProtocol,
    pub advertised: Advertised,
}

#[derive(Debug, Clone)]
pub(crate) struct Advertised {
    /// A fixed host, or `None` to use each connection's local address.
    host: Option<String>,
    port: u16,
}

impl Advertised {
    /// `configured` is `host` or `host:port` (validated by the config), or
    /// `None`; `bound` is the address the shards actually listen on.
    pub(crate) fn new(configured: Option<&str>, bound: SocketAddr) -> Self {
        if let Some(text) = configured {
            if let Some((host, port)) = split_host_port(text) {
                return Advertised {
                    host: Some(host),
                    port,
                };
            }
            return Advertised {
                host: Some(text.trim_start_matches('[').trim_end_matches(']').to_string()),
                port: bound.port(),
            };
        }
        let host = (!bound.ip().is_unspecified()).then(|| bound.ip().to_string());
        Advertised {
            host,
            port: bound.port(),
        }
    }

    /// The address whatever the connection, if it is fixed (configured,
    /// or bound to a specific address).
    pub(crate) fn fixed(&self) -> Option<(String, u16)> {
        self.host.clone().map(|host| (host, self.port))
    }

    pub(crate) fn for_connection(&self, local: SocketAddr) -> (String, u16) {
        let host = self.host.clone().unwrap_or_else(|| local.ip().to_string());
        (host, self.port)
    }
}

fn split_host_port(text: &str) -> Option<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host.to_string(), port.parse().ok()?));
    }
    let (host, port) = text.rsplit_once(':')?;
    if host.contains(':') {
        return None; // a bare IPv6 address, no port
    }
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn wildcard_bind_advertises_the_address_the_client_reached() {
        let a = Advertised::new(None, addr("0.0.0.0:19092"));
        assert_eq!(
            a.for_connection(addr("10.1.2.3:19092")),
            ("10.1.2.3".into(), 19092)
        );
        let a = Advertised::new(None, addr("127.0.0.1:9092"));
        assert_eq!(
            a.for_connection(addr("127.0.0.1:9092")),
            ("127.0.0.1".into(), 9092)
        );
    }

    #[test]
    fn configured_host_and_port() {
        let bound = addr("0.0.0.0:9092");
        let a = Advertised::new(Some("kafka.example:19092"), bound);
        assert_eq!(
            a.for_connection(addr("10.0.0.1:9092")),
            ("kafka.example".into(), 19092)
        );
        let a = Advertised::new(Some("kafka.example"), bound);
        assert_eq!(
            a.for_connection(addr("10.0.0.1:9092")),
            ("kafka.example".into(), 9092)
        );
        let a = Advertised::new(Some("[::1]:9093"), bound);
        assert_eq!(a.for_connection(addr("10.0.0.1:9092")), ("::1".into(), 9093));
        let a = Advertised::new(Some("fe80::1"), bound);
        assert_eq!(a.for_connection(addr("10.0.0.1:9092")), ("fe80::1".into(), 9092));
    }
}

//! The one table of settings. Each row names the environment variable (its
//! lower-case form is the config-file key), says what it does, and where in
//! [`ServerConfig`] it lands.

use super::{ConfigError, ServerConfig};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// One configurable setting.
pub struct Setting {
    pub name: &'static str,
    pub help: &'static str,
    field: fn(&mut ServerConfig) -> &mut dyn SettingValue,
}

impl Setting {
    /// Parses `text` into the setting's field; the error names the setting.
    pub fn apply(&self, config: &mut ServerConfig, text: &str) -> Result<(), ConfigError> {
        (self.field)(config)
            .set(text.trim())
            .map_err(|message| ConfigError {
                setting: self.name.into(),
                message: format!("{text:?}: {message}"),
            })
    }

    /// The setting's current value as it would be written in the file.
    pub fn show(&self, config: &ServerConfig) -> String {
        let mut copy = config.clone();
        (self.field)(&mut copy).show()
    }
}

/// A field type a setting can hold.
trait SettingValue {
    fn set(&mut self, text: &str) -> Result<(), String>;
    fn show(&self) -> String;
}

impl SettingValue for usize {
    fn set(&mut self, text: &str) -> Result<(), String> {
        match text.parse::<usize>() {
            Ok(0) => Err("must be at least 1".into()),
            Ok(n) => {
                *self = n;
                Ok(())
            }
            Err(_) => Err("expected a whole number".into()),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Rates: 0 is allowed and means "no limit".
impl SettingValue for u32 {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = text
            .parse()
            .map_err(|_| "expected a whole number (0 = no limit)")?;
        Ok(())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Plain whole numbers where 0 is meaningful (milliseconds, minutes).
impl SettingValue for u64 {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = text.parse().map_err(|_| "expected a whole number")?;
        Ok(())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Durations are whole seconds, as the `_SECS` names say.
impl SettingValue for Duration {
    fn set(&mut self, text: &str) -> Result<(), String> {
        let secs: u64 = text.parse().map_err(|_| "expected whole seconds")?;
        *self = Duration::from_secs(secs);
        Ok(())
    }
    fn show(&self) -> String {
        self.as_secs().to_string()
    }
}

impl SettingValue for bool {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err("expected true or false".into()),
        };
        Ok(())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for SocketAddr {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = text
            .parse()
            .map_err(|_| "expected IP:port, e.g. 127.0.0.1:9092 or [::]:9092")?;
        Ok(())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Empty (or `none`) turns an optional address off.
impl SettingValue for Option<SocketAddr> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        if text.is_empty() || text.eq_ignore_ascii_case("none") {
            *self = None;
            return Ok(());
        }
        let mut addr = SocketAddr::from(([0, 0, 0, 0], 0));
        addr.set(text)?;
        *self = Some(addr);
        Ok(())
    }
    fn show(&self) -> String {
        self.map(|a| a.to_string()).unwrap_or_default()
    }
}

impl SettingValue for PathBuf {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = PathBuf::from(text);
        Ok(())
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl SettingValue for Option<PathBuf> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = (!text.is_empty()).then(|| PathBuf::from(text));
        Ok(())
    }
    fn show(&self) -> String {
        self.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }
}

impl SettingValue for String {
    fn set(&mut self, text: &str) -> Result<(), String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        *self = text.into();
        Ok(())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

/// The advertised address: `host` or `host:port`, empty for "derive it".
impl SettingValue for Option<String> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        if text.is_empty() {
            *self = None;
            return Ok(());
        }
        let host = match text.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => {
                port.parse::<u16>().map_err(|_| "port must be 1-65535")?;
                host
            }
            _ => text,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host == "0.0.0.0" || host == "::" {
            return Err("must be a host clients can reach, not a wildcard address".into());
        }
        *self = Some(text.into());
        Ok(())
    }
    fn show(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

/// Shard count: `auto` (or empty) = one per CPU this process may use.
impl SettingValue for Option<NonZeroUsize> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        if text.is_empty() || text.eq_ignore_ascii_case("auto") {
            *self = None;
            return Ok(());
        }
        let n: usize = text.parse().map_err(|_| "expected a whole number or auto")?;
        *self = Some(NonZeroUsize::new(n).ok_or("must be at least 1 (or auto)")?);
        Ok(())
    }
    fn show(&self) -> String {
        self.map_or_else(|| "auto".into(), |n| n.to_string())
    }
}

impl SettingValue for super::LogFormat {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = match text.to_ascii_lowercase().as_str() {
            "text" => super::LogFormat::Text,
            "json" => super::LogFormat::Json,
            _ => return Err("expected text or json".into()),
        };
        Ok(())
    }
    fn show(&self) -> String {
        match self {
            super::LogFormat::Text => "text".into(),
            super::LogFormat::Json => "json".into(),
        }
    }
}

impl SettingValue for Vec<chronik_shard::IpNet> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(chronik_shard::IpNet::parse)
            .collect::<Result<_, _>>()?;
        Ok(())
    }
    fn show(&self) -> String {
        self.iter()
            .map(|n| format!("{}/{}", n.addr, n.prefix))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl SettingValue for Vec<super::ListenerConfig> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = super::listeners::parse_listeners(text)?;
        Ok(())
    }
    fn show(&self) -> String {
        super::listeners::show_listeners(self)
    }
}

impl SettingValue for Vec<super::AdvertisedListener> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = super::listeners::parse_advertised(text)?;
        Ok(())
    }
    fn show(&self) -> String {
        super::listeners::show_advertised(self)
    }
}

impl SettingValue for Vec<super::TlsVersion> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        let mut versions = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let version = super::TlsVersion::parse(entry)
                .ok_or_else(|| format!("{entry}: unknown TLS version (use 1.2 and/or 1.3)"))?;
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        if versions.is_empty() {
            return Err("at least one of 1.2, 1.3".into());
        }
        versions.sort();
        *self = versions;
        Ok(())
    }
    fn show(&self) -> String {
        self.iter().map(|v| v.name()).collect::<Vec<_>>().join(",")
    }
}

/// Cipher-suite names (the only `Vec<String>` setting): each must be one
/// this build can negotiate; stored in canonical IANA spelling.
impl SettingValue for Vec<String> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|name| {
                crate::tls::canonical_suite_name(name).ok_or_else(|| {
                    let known: Vec<String> = crate::tls::supported_suites()
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect();
                    format!(
                        "{name}: unknown cipher suite (this build has: {})",
                        known.join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }
    fn show(&self) -> String {
        self.join(",")
    }
}

fn tls(config: &mut ServerConfig) -> &mut super::TlsConfig {
    config.tls_config.get_or_insert_with(Default::default)
}

macro_rules! setting {
    ($name:literal, |$c:ident| $field:expr, $help:literal) => {
        Setting {
            name: $name,
            help: $help,
            field: |$c: &mut ServerConfig| -> &mut dyn SettingValue { $field },
        }
    };
}

/// Every setting, in the order `--help` lists them.
pub static SETTINGS: &[Setting] = &[
    setting!("BIND_ADDRESS", |c| &mut c.listen_addr,
        "Address every shard listens on for Kafka clients (SO_REUSEPORT), when LISTENERS is empty; it speaks TLS if TLS_CERT_PATH is set."),
    setting!("ADVERTISED_ADDRESS", |c| &mut c.advertised_address,
        "host or host:port given to clients in Metadata. Empty: the bind address, or, when bound to a wildcard, the local address each client connected to."),
    setting!("LISTENERS", |c| &mut c.listeners,
        "Kafka-style listeners, e.g. PLAINTEXT://0.0.0.0:9092,SSL://0.0.0.0:9093 (names: PLAINTEXT, SSL; each shard binds each). Empty: one listener on BIND_ADDRESS."),
    setting!("ADVERTISED_LISTENERS", |c| &mut c.advertised_listeners,
        "What each listener tells its clients in Metadata, e.g. SSL://broker.example:9093. Unlisted: ADVERTISED_ADDRESS, else derived."),
    setting!("SHARDS", |c| &mut c.shards,
        "Number of shards (pinned io_uring executors); auto = one per CPU this process may use."),
    setting!("STORAGE_PATH", |c| &mut c.storage_path,
        "Data directory (cluster id, lock file, partition logs)."),
    setting!("MAX_REQUEST_BYTES", |c| &mut c.max_request_bytes,
        "Largest request frame accepted; larger sizes close the connection before anything is allocated."),
    setting!("QUEUED_MAX_REQUEST_BYTES", |c| &mut c.queued_max_request_bytes,
        "Bytes of requests each shard may hold from when a frame's size is read until its response is written (Kafka's queued.max.request.bytes); when spent, the shard reads no more requests until answers free some. A frame larger than this is served alone. 0 = no limit."),
    setting!("SHUTDOWN_TIMEOUT_SECS", |c| &mut c.shutdown_timeout,
        "On SIGINT/SIGTERM, how long in-flight requests may take before connections are force-closed."),
    setting!("BUFFER_SIZE", |c| &mut c.buffer_size,
        "Initial read buffer per connection, in bytes."),
    setting!("AUTO_CREATE_TOPICS", |c| &mut c.auto_create_topics,
        "Create a topic (NUM_PARTITIONS partitions) when Metadata or Produce names one that does not exist."),
    setting!("NUM_PARTITIONS", |c| &mut c.num_partitions,
        "Partitions of auto-created topics and of CreateTopics requests that ask for the default (-1)."),
    setting!("LOG_RETENTION_CHECK_INTERVAL_SECS", |c| &mut c.retention_check_interval,
        "How often retention.ms / retention.bytes are applied (whole segments are deleted)."),
    setting!("GROUP_INITIAL_REBALANCE_DELAY_MS", |c| &mut c.group_initial_rebalance_delay_ms,
        "How long the first rebalance of an empty consumer group waits for more members (Kafka's group.initial.rebalance.delay.ms)."),
    setting!("OFFSETS_RETENTION_MINUTES", |c| &mut c.offsets_retention_minutes,
        "Committed offsets of a group are dropped this long after the group became empty."),
    setting!("RUST_LOG", |c| &mut c.log_filter,
        "Log filter, e.g. info or chronik_ingest=info,chronik_protocol=debug (one line per request)."),
    setting!("LOG_FORMAT", |c| &mut c.log_format,
        "text, or json (one JSON object per line, with the connection and request spans)."),
    setting!("MAX_CONNECTIONS", |c| &mut c.max_connections,
        "Most connections open at once across all shards."),
    setting!("MAX_CONNECTIONS_PER_IP", |c| &mut c.pool_config.max_per_ip,
        "Most connections one client IP may hold across all shards."),
    setting!("CONNECTION_RATE_LIMIT", |c| &mut c.pool_config.rate_limit,
        "New connections per second one IP may open before it is banned (0 = no limit)."),
    setting!("RATE_LIMIT_BAN_SECS", |c| &mut c.pool_config.ban_duration,
        "How long an IP that broke the rate limit stays banned."),
    setting!("RATE_LIMIT_EXEMPT", |c| &mut c.pool_config.exempt,
        "Comma-separated CIDR blocks (e.g. 127.0.0.0/8,::1) exempt from the rate limit and bans; empty: none, loopback included."),
    setting!("REQUEST_TIMEOUT_SECS", |c| &mut c.request_timeout,
        "A request not answered within this is counted and its connection closed (Fetch long-polls are capped below it)."),
    setting!("IDLE_TIMEOUT_SECS", |c| &mut c.idle_timeout,
        "Connections without a complete request for this long are closed."),
    setting!("BACKPRESSURE_THRESHOLD", |c| &mut c.backpressure_threshold,
        "Pending requests per shard above which the shard stops reading new requests."),
    setting!("METRICS_ADDRESS", |c| &mut c.metrics_address,
        "Address of the /metrics, /health and /ready HTTP endpoint; empty = off."),
    setting!("METRICS_INTERVAL_SECS", |c| &mut c.metrics_interval,
        "How often each shard logs a one-line summary."),
    setting!("TLS_CERT_PATH", |c| &mut tls(c).cert_path,
        "PEM certificate chain, leaf first, for the SSL listener (re-read on SIGHUP)."),
    setting!("TLS_KEY_PATH", |c| &mut tls(c).key_path,
        "PEM private key for TLS_CERT_PATH: PKCS#8, PKCS#1 or SEC1 (re-read on SIGHUP)."),
    setting!("TLS_CA_PATH", |c| &mut tls(c).ca_path,
        "PEM CA bundle; a client certificate that is offered must chain to it (re-read on SIGHUP)."),
    setting!("TLS_REQUIRE_CLIENT_CERT", |c| &mut tls(c).require_client_cert,
        "Refuse TLS clients without a certificate signed by TLS_CA_PATH (mutual TLS)."),
    setting!("TLS_VERSIONS", |c| &mut tls(c).versions,
        "TLS protocol versions offered: 1.2, 1.3 or both."),
    setting!("TLS_CIPHER_SUITES", |c| &mut tls(c).cipher_suites,
        "IANA cipher-suite names in preference order, e.g. TLS_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384. Empty: rustls's defaults. Each allowed version needs one."),
    setting!("TLS_HANDSHAKE_TIMEOUT_SECS", |c| &mut c.tls_handshake_timeout,
        "A TLS client that has not completed its handshake within this is disconnected."),
];

impl ServerConfig {
    /// `--help` text: every setting with its default.
    pub fn settings_help() -> String {
        let defaults = ServerConfig::default();
        let mut out = String::from(
            "Settings (environment variable; the lower-case name is the --config file key;\n\
             environment overrides file, file overrides default):\n",
        );
        for s in SETTINGS {
            let default = s.show(&defaults);
            let default = if default.is_empty() {
                "(empty)".to_string()
            } else {
                default
            };
            out.push_str(&format!("  {:<24} default: {default}\n      {}", s.name, s.help));
            out.push('\n');
        }
        out
    }
}

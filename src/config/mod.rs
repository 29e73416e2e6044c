//! What the broker is told to do: [`ServerConfig`] and where it comes from.
//!
//! Precedence, lowest first: built-in defaults, the TOML file given with
//! `--config`, environment variables. Every setting is declared once, in
//! [`settings::SETTINGS`] (with its file key in [`settings::SECTIONS`]),
//! which drives the environment, the file and `--help` alike, so they
//! cannot drift apart.

pub(crate) mod alter;
pub(crate) mod broker_configs;
pub(crate) mod dynamic;
mod listeners;
pub mod security;
mod settings;

pub use crate::tls::TlsVersion;
pub(crate) use listeners::host_port;
pub use listeners::{AdvertisedListener, ListenerConfig, ListenerSpec, SecurityProtocol};
pub use settings::{Section, Setting, SECTIONS, SETTINGS};

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS material and policy for the SSL listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// CA bundle that client certificates must chain to; with it, a
    /// certificate a client offers is verified.
    pub ca_path: Option<PathBuf>,
    /// Refuse clients that offer no certificate (needs `ca_path`).
    pub require_client_cert: bool,
    /// Protocol versions offered, never empty.
    pub versions: Vec<TlsVersion>,
    /// Canonical IANA cipher-suite names, in preference order; empty = the
    /// crypto provider's defaults.
    pub cipher_suites: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            ca_path: None,
            require_client_cert: false,
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            cipher_suites: Vec::new(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Per-client-address protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPoolConfig {
    /// Connections one IP may hold across all shards.
    pub max_per_ip: usize,
    /// New connections per second one IP may open before it is banned.
    pub rate_limit: u32,
    pub ban_duration: Duration,
    /// Addresses the rate limit and bans do not apply to.
    pub exempt: Vec<chronik_shard::IpNet>,
}

/// Everything the broker is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The one listener's address when `listeners` is empty.
    pub listen_addr: SocketAddr,
    /// `host` or `host:port` given to clients in Metadata; `None` derives it
    /// from the listen address (never 0.0.0.0, see `handlers::metadata`).
    pub advertised_address: Option<String>,
    /// Kafka-style listeners; empty = one on `listen_addr`.
    pub listeners: Vec<ListenerConfig>,
    /// What each listener advertises, by name.
    pub advertised_listeners: Vec<AdvertisedListener>,
    /// Shards (pinned executors); `None` = one per CPU this process may use.
    pub shards: Option<NonZeroUsize>,
    pub max_connections: usize,
    pub request_timeout: Duration,
    /// Initial read buffer per connection.
    pub buffer_size: usize,
    pub idle_timeout: Duration,
    pub tls_config: Option<TlsConfig>,
    /// A TLS client that has not finished its handshake by then is dropped.
    pub tls_handshake_timeout: Duration,
    pub pool_config: ConnectionPoolConfig,
    /// Pending requests per shard above which that shard stops reading.
    pub backpressure_threshold: usize,
    pub shutdown_timeout: Duration,
    pub metrics_interval: Duration,
    /// Where `/metrics`, `/health`, `/ready` are served; `None` = nowhere.
    pub metrics_address: Option<SocketAddr>,
    /// Largest request frame accepted, checked before anything is allocated.
    pub max_request_bytes: usize,
    /// Bytes of requests each shard may hold while reading and processing
    /// them (Kafka's queued.max.request.bytes); 0 = no limit.
    pub queued_max_request_bytes: usize,
    pub storage_path: PathBuf,
    /// How segment files are written.
    pub segment_write: crate::storage::WriteMode,
    /// Recently stored batches kept in memory per shard, in MiB; `None`:
    /// see [`Config::recent_cache_bytes_per_shard`].
    pub recent_cache_mb: Option<usize>,
    /// Where tiered topics keep their closed segments (`s3://bucket/prefix`,
    /// `gs://`, `az://`, `file:///dir`); `None`: no tiering.
    pub object_store_url: Option<String>,
    /// Local segment bytes per tiered partition past which produce is
    /// refused (uploads not keeping up, or failing); 0 = no cap.
    pub tiering_local_cap_mb: usize,
    /// Cluster mode when not empty: etcd's client URLs.
    pub etcd_endpoints: Vec<String>,
    /// This broker's id in cluster mode.
    pub node_id: Option<i32>,
    /// How long a broker's etcd lease outlives its last renewal.
    pub cluster_lease_ttl_ms: u64,
    pub broker_rack: Option<String>,
    /// Cluster mode: how often each shard writes its accepted batches to
    /// object storage and commits them in etcd.
    pub wal_flush_interval_ms: u64,
    /// Cluster mode: how old a WAL object no pointer names must be before
    /// the controller deletes it.
    pub wal_garbage_grace_ms: u64,
    /// `RUST_LOG`-style filter for the binary's log output.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Create unknown topics named in Metadata and Produce requests.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: usize,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval: Duration,
    pub group_initial_rebalance_delay_ms: u64,
    pub offsets_retention_minutes: u64,
    /// Segment size of the offsets and transaction-state partitions
    /// (Kafka's offsets.topic.segment.bytes): the cleaner compacts closed
    /// segments, so this bounds what each may hold beyond its live keys.
    pub offsets_topic_segment_bytes: usize,
    /// Compacted topics are cleaned (Kafka's log.cleaner.enable).
    pub log_cleaner_enable: bool,
    /// How long a shard's cleaner waits when nothing is due.
    pub log_cleaner_backoff_ms: u64,
    /// Memory for a cleaning's key map, per shard.
    pub log_cleaner_dedupe_buffer_size: usize,
    /// Cleaning I/O per shard, bytes per second (0 = no limit). Paced by
    /// default, unlike Kafka: unpaced, a cleaning on this machine's disk
    /// took produce p99 on its shard from 2 ms to 7-10 ms; at 64 MiB/s, 3.
    pub log_cleaner_io_max_bytes_per_second: usize,
    /// The longest transaction.timeout.ms a producer may ask for.
    pub transaction_max_timeout_ms: u64,
    /// A transactional id unused this long (no transaction open) is
    /// forgotten.
    pub transactional_id_expiration_ms: u64,
    /// SASL, OAuth and the authorizer.
    pub security: security::SecurityConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_address: None,
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            shards: None,
            max_connections: 10_000,
            request_timeout: Duration::from_secs(30),
            buffer_size: 64 * 1024,
            idle_timeout: Duration::from_secs(600),
            tls_config: None,
            tls_handshake_timeout: Duration::from_secs(10),
            pool_config: ConnectionPoolConfig {
                max_per_ip: 1_000,
                rate_limit: 100,
                ban_duration: Duration::from_secs(300),
                exempt: Vec::new(),
            },
            backpressure_threshold: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(60),
            metrics_address: Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
            max_request_bytes: 100 * 1024 * 1024,
            queued_max_request_bytes: 256 * 1024 * 1024,
            storage_path: PathBuf::from("./data"),
            segment_write: crate::storage::WriteMode::Direct,
            recent_cache_mb: None,
            object_store_url: None,
            tiering_local_cap_mb: 0,
            etcd_endpoints: Vec::new(),
            node_id: None,
            cluster_lease_ttl_ms: 6000,
            broker_rack: None,
            wal_flush_interval_ms: 5,
            wal_garbage_grace_ms: 30 * 60 * 1000,
            log_filter: "info".into(),
            log_format: LogFormat::Text,
            auto_create_topics: true,
            num_partitions: 1,
            retention_check_interval: Duration::from_secs(300),
            group_initial_rebalance_delay_ms: 3000,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_topic_segment_bytes: 8 << 20,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_size: 128 << 20,
            log_cleaner_io_max_bytes_per_second: 64 << 20,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3_600_000,
            security: security::SecurityConfig::default(),
        }
    }
}

/// A setting that could not be used; the message names it and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A TOML value as setting text: strings, whole numbers and booleans as
/// written; an array of strings (`listeners = ["PLAINTEXT://...", ...]`)
/// as the comma-separated list the environment form takes.
fn toml_text(shown: &str, value: toml::Value) -> Result<String, ConfigError> {
    let wrong = |what: &str| ConfigError {
        setting: shown.into(),
        message: format!("expected a string, whole number, boolean or list of strings, got {what}"),
    };
    Ok(match value {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s),
                other => Err(wrong(&format!("a list holding a {}", other.type_str()))),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        other => return Err(wrong(&format!("a {}", other.type_str()))),
    })
}

impl ServerConfig {
    /// Defaults overridden by environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(None)
    }

    /// Defaults, then the TOML file (if any), then environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = ServerConfig::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                setting: "--config".into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            config.apply_toml(&text)?;
        }
        config.apply_vars(std::env::vars())?;
        Ok(config)
    }

    /// Applies `NAME=value` pairs whose names are settings; others are
    /// ignored (the environment holds much besides ours).
    pub fn apply_vars(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            if let Some(setting) = SETTINGS.iter().find(|s| s.name == name) {
                setting.apply(self, &value)?;
            }
        }
        self.validate()
    }

    /// Applies a TOML document. Keys are either a setting's key in its
    /// section (`[limits]` `max_connections = 5000`) or, at the top level,
    /// its name in lower case (`max_connections = 5000`, the flat form).
    /// Unknown keys and sections are an error naming them: a typo in a file
    /// must not be silently ignored. So is one setting given twice.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            setting: "--config".into(),
            message: e.to_string(),
        })?;
        let mut given: Vec<(&'static str, String)> = Vec::new();
        let mut apply = |config: &mut ServerConfig,
                         setting: &'static Setting,
                         shown: String,
                         value: toml::Value|
         -> Result<(), ConfigError> {
            if let Some((_, first)) = given.iter().find(|(name, _)| *name == setting.name) {
                return Err(ConfigError {
                    setting: shown,
                    message: format!("{} is already set (as {first})", setting.name),
                });
            }
            let text = toml_text(&shown, value)?;
            setting.apply_as(&shown, config, &text)?;
            given.push((setting.name, shown));
            Ok(())
        };
        for (key, value) in table {
            if let toml::Value::Table(entries) = value {
                let section = SECTIONS
                    .iter()
                    .find(|s| s.name == key)
                    .ok_or_else(|| ConfigError {
                        setting: format!("[{key}]"),
                        message: format!(
                            "unknown section in config file (sections: {})",
                            SECTIONS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                        ),
                    })?;
                for (entry, value) in entries {
                    let shown = format!("{key}.{entry}");
                    let setting = section
                        .keys
                        .iter()
                        .find(|(k, _)| *k == entry)
                        .and_then(|(_, name)| SETTINGS.iter().find(|s| s.name == *name))
                        .ok_or_else(|| ConfigError {
                            setting: shown.clone(),
                            message: if section.keys.is_empty() {
                                format!("[{key}] is reserved for settings this version does not have")
                            } else {
                                format!(
                                    "unknown key in [{key}] (keys: {})",
                                    section
                                        .keys
                                        .iter()
                                        .map(|(k, _)| *k)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            },
                        })?;
                    apply(self, setting, shown, value)?;
                }
                continue;
            }
            let setting = SETTINGS
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(&key))
                .ok_or_else(|| ConfigError {
                    setting: key.clone(),
                    message: "unknown setting in config file (see --help)".into(),
                })?;
            apply(self, setting, setting.name.to_string(), value)?;
        }
        self.validate()
    }

    /// Checks that hold across settings.
    fn validate(&mut self) -> Result<(), ConfigError> {
        const MIN_OFFSETS_SEGMENT_BYTES: usize = 4096;
        // TLS_* variables set to empty strings mean "no TLS", not "broken TLS".
        if self.tls_config.as_ref() == Some(&TlsConfig::default()) {
            self.tls_config = None;
        }
        if self.max_request_bytes > i32::MAX as usize {
            return Err(ConfigError {
                setting: "MAX_REQUEST_BYTES".into(),
                message: format!(
                    "{}: at most {} (frame sizes are 31-bit)",
                    self.max_request_bytes,
                    i32::MAX
                ),
            });
        }
        if self.offsets_topic_segment_bytes < MIN_OFFSETS_SEGMENT_BYTES {
            return Err(ConfigError {
                setting: "OFFSETS_TOPIC_SEGMENT_BYTES".into(),
                message: format!(
                    "{}: at least {MIN_OFFSETS_SEGMENT_BYTES}",
                    self.offsets_topic_segment_bytes
                ),
            });
        }
        if !self.etcd_endpoints.is_empty() {
            if self.object_store_url.is_none() {
                return Err(ConfigError {
                    setting: "OBJECT_STORE_URL".into(),
                    message: "cluster mode (ETCD_ENDPOINTS) needs object storage, where acknowledged data outlives any one broker".into(),
                });
            }
            if self.node_id.is_none() {
                return Err(ConfigError {
                    setting: "NODE_ID".into(),
                    message: "cluster mode (ETCD_ENDPOINTS) needs this broker's id, unique in the cluster"
                        .into(),
                });
            }
        }
        if let Some(tls) = &self.tls_config {
            if tls.cert_path.as_os_str().is_empty() {
                return Err(ConfigError {
                    setting: "TLS_CERT_PATH".into(),
                    message: "must be set when any other TLS_* setting is".into(),
                });
            }
            if tls.key_path.as_os_str().is_empty() {
                return Err(ConfigError {
                    setting: "TLS_KEY_PATH".into(),
                    message: "must be set when TLS_CERT_PATH is".into(),
                });
            }
            if tls.require_client_cert && tls.ca_path.is_none() {
                return Err(ConfigError {
                    setting: "TLS_REQUIRE_CLIENT_CERT".into(),
                    message: "needs TLS_CA_PATH, the CA client certificates are verified against".into(),
                });
            }
            crate::tls::check_suites_against_versions(&tls.cipher_suites, &tls.versions).map_err(
                |message| ConfigError {
                    setting: "TLS_CIPHER_SUITES".into(),
                    message,
                },
            )?;
        }
        self.validate_listeners()
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let error = |setting: &str, message: String| ConfigError {
            setting: setting.into(),
            message,
        };
        for listener in &self.listeners {
            if self.protocol_of(&listener.name).is_none() {
                return Err(error(
                    "LISTENERS",
                    format!(
                        "{}: not a security protocol and not in LISTENER_SECURITY_PROTOCOL_MAP",
                        listener.name
                    ),
                ));
            }
        }
        let listeners = self.listeners();
        let has_tls = listeners.iter().any(|l| l.security.is_tls());
        if has_tls && self.tls_config.is_none() {
            return Err(error(
                "LISTENERS",
                "an SSL or SASL_SSL listener needs TLS_CERT_PATH and TLS_KEY_PATH".into(),
            ));
        }
        if !has_tls && self.tls_config.is_some() {
            return Err(error(
                "TLS_CERT_PATH",
                format!(
                    "is set but LISTENERS ({}) has no SSL or SASL_SSL listener",
                    listeners::show_listeners(&self.listeners)
                ),
            ));
        }
        for advertised in &self.advertised_listeners {
            if !listeners.iter().any(|l| l.name == advertised.name) {
                return Err(error(
                    "ADVERTISED_LISTENERS",
                    format!("{} is not a listener (see LISTENERS)", advertised.name),
                ));
            }
        }
        for (listener, _) in &self.security.sasl_mechanisms {
            if let Some(name) = listener {
                if !listeners.iter().any(|l| l.name == *name && l.security.is_sasl()) {
                    return Err(error(
                        "SASL_ENABLED_MECHANISMS",
                        format!("{name} is not a SASL listener (see LISTENERS)"),
                    ));
                }
            }
        }
        let oauth = listeners.iter().filter(|l| l.security.is_sasl()).any(|l| {
            self.security
                .mechanisms_for(&l.name)
                .iter()
                .any(|m| m == "OAUTHBEARER")
        });
        if oauth && self.security.oauth_jwks_file.is_none() && !self.security.oauth_unsecured {
            return Err(error(
                "SASL_ENABLED_MECHANISMS",
                "OAUTHBEARER needs SASL_OAUTHBEARER_JWKS_FILE (or, for tests, SASL_OAUTHBEARER_UNSECURED=true)"
                    .into(),
            ));
        }
        if let Some(address) = &self.advertised_address {
            let has_port = address.starts_with('[') && address.contains("]:")
                || (!address.starts_with('[') && address.matches(':').count() == 1);
            if has_port && listeners.len() > 1 {
                return Err(error(
                    "ADVERTISED_ADDRESS",
                    format!(
                        "{address} names one port but there are {} listeners; set ADVERTISED_LISTENERS instead",
                        listeners.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The protocol listener `name` speaks: its LISTENER_SECURITY_PROTOCOL_MAP
    /// entry, else the protocol of that name.
    pub fn protocol_of(&self, name: &str) -> Option<SecurityProtocol> {
        self.security
            .protocol_map
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .or_else(|| SecurityProtocol::parse(name))
    }

    /// The listeners to start, in order, each with what it advertises:
    /// its ADVERTISED_LISTENERS entry, else ADVERTISED_ADDRESS, else
    /// derived per connection.
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        let configured = if self.listeners.is_empty() {
            let security = if self.tls_config.is_some() {
                SecurityProtocol::Ssl
            } else {
                SecurityProtocol::Plaintext
            };
            vec![ListenerConfig {
                name: security.name().to_string(),
                addr: self.listen_addr,
            }]
        } else {
            self.listeners.clone()
        };
        configured
            .into_iter()
            .map(|l| ListenerSpec {
                security: self.protocol_of(&l.name).unwrap_or(SecurityProtocol::Plaintext),
                addr: l.addr,
                advertised: self
                    .advertised_listeners
                    .iter()
                    .find(|a| a.name == l.name)
                    .map(|a| host_port(&a.host, a.port))
                    .or_else(|| self.advertised_address.clone()),
                name: l.name,
            })
            .collect()
    }

    /// Each shard's cache of recently stored batches, in bytes: the
    /// configured size, or by default an eighth of the host's memory split
    /// between the shards, at most 1 GiB each. Not more by default: memory
    /// the process has not used yet costs a page fault and zeroing per page
    /// on first use, and on the VM this was measured on, filling 6 GiB of
    /// cache halved a fresh broker's ingest rate (BENCHMARKS.md, issue 14).
    pub fn recent_cache_bytes_per_shard(&self) -> usize {
        match self.recent_cache_mb {
            Some(mb) => mb << 20,
            None => crate::storage::HostMemory::read()
                .map_or(256 << 20, |m| (m.total / 8 / self.shard_count()).min(1 << 30)),
        }
    }

    /// Shards to start: the configured count, or one per usable CPU.
    /// Several brokers sharing etcd and object storage (ETCD_ENDPOINTS).
    pub fn cluster_mode(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    pub fn shard_count(&self) -> usize {
        match self.shards {
            Some(n) => n.get(),
            None => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_defaults_and_names_bad_values() {
        let mut config = ServerConfig::default();
        config
            .apply_vars(vars(&[
                ("MAX_CONNECTIONS", "5"),
                ("SHUTDOWN_TIMEOUT_SECS", "2"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!(config.max_connections, 5);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(2));

        let err = ServerConfig::default()
            .apply_vars(vars(&[("MAX_CONNECTIONS", "abc")]))
            .unwrap_err();
        assert_eq!(err.setting, "MAX_CONNECTIONS");
        assert!(err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn toml_file_uses_lowercase_names_and_rejects_unknown_keys() {
        let mut config = ServerConfig::default();
        config
            .apply_toml("bind_address = \"0.0.0.0:19092\"\nshards = 2\nmetrics_address = \"\"\n")
            .unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(config.shard_count(), 2);
        assert_eq!(config.metrics_address, None);
        let err = ServerConfig::default()
            .apply_toml("max_conections = 3")
            .unwrap_err();
        assert_eq!(err.setting, "max_conections");
    }

    #[test]
    fn tls_needs_cert_and_key() {
        let err = ServerConfig::default()
            .apply_vars(vars(&[("TLS_CERT_PATH", "/tmp/c.pem")]))
            .unwrap_err();
        assert_eq!(err.setting, "TLS_KEY_PATH");
        let mut config = ServerConfig::default();
        config
            .apply_vars(vars(&[("TLS_CERT_PATH", "/c.pem"), ("TLS_KEY_PATH", "/k.pem")]))
            .unwrap();
        assert_eq!(config.tls_config.unwrap().key_path, PathBuf::from("/k.pem"));
    }

    #[test]
    fn listeners_resolve_with_their_advertised_addresses() {
        let plain = ServerConfig::default();
        let resolved = plain.listeners();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].security, SecurityProtocol::Plaintext);
        assert_eq!(resolved[0].addr, plain.listen_addr);

        let mut tls = ServerConfig::default();
        tls.apply_vars(vars(&[
            ("TLS_CERT_PATH", "/c.pem"),
            ("TLS_KEY_PATH", "/k.pem"),
            ("ADVERTISED_ADDRESS", "kafka.example"),
        ]))
        .unwrap();
        let resolved = tls.listeners();
        assert_eq!(
            resolved[0].security,
            SecurityProtocol::Ssl,
            "BIND_ADDRESS + TLS_* speaks TLS"
        );
        assert_eq!(resolved[0].advertised.as_deref(), Some("kafka.example"));

        let mut both = ServerConfig::default();
        both.apply_vars(vars(&[
            ("TLS_CERT_PATH", "/c.pem"),
            ("TLS_KEY_PATH", "/k.pem"),
            ("LISTENERS", "PLAINTEXT://0.0.0.0:9092,SSL://0.0.0.0:9093"),
            ("ADVERTISED_LISTENERS", "SSL://tls.example:19093"),
        ]))
        .unwrap();
        let resolved = both.listeners();
        assert_eq!(resolved.len(), 2);
        assert_eq!(resolved[0].advertised, None);
        assert_eq!(resolved[1].advertised.as_deref(), Some("tls.example:19093"));
    }

    #[test]
    fn inconsistent_listener_settings_name_the_setting() {
        for (pairs, setting) in [
            (vec![("LISTENERS", "SSL://127.0.0.1:9093")], "LISTENERS"),
            (
                vec![
                    ("LISTENERS", "PLAINTEXT://127.0.0.1:9092"),
                    ("TLS_CERT_PATH", "/c.pem"),
                    ("TLS_KEY_PATH", "/k.pem"),
                ],
                "TLS_CERT_PATH",
            ),
            (
                vec![("ADVERTISED_LISTENERS", "SSL://tls.example:9093")],
                "ADVERTISED_LISTENERS",
            ),
            (
                vec![
                    ("LISTENERS", "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093"),
                    ("TLS_CERT_PATH", "/c.pem"),
                    ("TLS_KEY_PATH", "/k.pem"),
                    ("ADVERTISED_ADDRESS", "kafka.example:9092"),
                ],
                "ADVERTISED_ADDRESS",
            ),
            (
                vec![
                    ("TLS_CERT_PATH", "/c.pem"),
                    ("TLS_KEY_PATH", "/k.pem"),
                    ("TLS_CIPHER_SUITES", "TLS_AES_128_GCM_SHA256"),
                ],
                "TLS_CIPHER_SUITES",
            ),
            (vec![("TLS_VERSIONS", "1.0")], "TLS_VERSIONS"),
        ] {
            let err = ServerConfig::default().apply_vars(vars(&pairs)).unwrap_err();
            assert_eq!(err.setting, setting, "{pairs:?}: {err}");
        }
    }

    #[test]
    fn toml_sections_hold_the_settings_and_flat_keys_still_work() {
        let mut config = ServerConfig::default();
        config
            .apply_toml(
                "rust_log = \"debug\"\n\
                 [server]\nshards = 2\nshutdown_timeout = \"500ms\"\n\
                 [limits]\nmax_connections = 5\nidle_timeout = \"10m\"\n\
                 [groups]\ninitial_rebalance_delay = \"3s\"\noffsets_retention = \"1d\"\n\
                 [metrics]\naddress = \"\"\n\
                 [object_store]\n",
            )
            .unwrap();
        assert_eq!(config.log_filter, "debug");
        assert_eq!(config.shard_count(), 2);
        assert_eq!(config.shutdown_timeout, Duration::from_millis(500));
        assert_eq!(config.max_connections, 5);
        assert_eq!(config.idle_timeout, Duration::from_secs(600));
        assert_eq!(config.group_initial_rebalance_delay_ms, 3000);
        assert_eq!(config.offsets_retention_minutes, 24 * 60);
        assert_eq!(config.metrics_address, None);

        let mut listed = ServerConfig::default();
        listed
            .apply_toml(
                "[tls]\ncert_path = \"/c.pem\"\nkey_path = \"/k.pem\"\n\
                 [server]\nlisteners = [\"PLAINTEXT://127.0.0.1:9092\", \"SSL://127.0.0.1:9093\"]\n",
            )
            .unwrap();
        assert_eq!(listed.listeners().len(), 2);
    }

    #[test]
    fn unknown_or_repeated_file_keys_are_named() {
        for (text, setting) in [
            ("[limits]\nmax_conections = 3", "limits.max_conections"),
            ("[sasl]\nmechanism = \"PLAIN\"", "[sasl]"),
            ("[security]\nmechanism = \"PLAIN\"", "security.mechanism"),
            ("[cluster]\nnode = 1", "cluster.node"),
            ("[object_store]\nbucket = \"b\"", "object_store.bucket"),
            ("[limitz]\nmax_connections = 3", "[limitz]"),
            ("[limits]\nrequest_timeout = \"soon\"", "limits.request_timeout"),
            ("[server]\nshards = 1.5", "server.shards"),
        ] {
            let err = ServerConfig::default().apply_toml(text).unwrap_err();
            assert_eq!(err.setting, setting, "{text}: {err}");
        }
        let err = ServerConfig::default()
            .apply_toml("[cluster]\nnode_id = 1\netcd_endpoints = \"127.0.0.1:2379\"")
            .unwrap_err();
        assert_eq!(err.setting, "OBJECT_STORE_URL", "{err}");
        let mut config = ServerConfig::default();
        config.apply_toml("[cluster]\nnode_id = 1").unwrap();
        assert_eq!(config.node_id, Some(1));
        // One setting given flat and in its section: which would win is
        // not obvious, so neither does.
        let err = ServerConfig::default()
            .apply_toml("max_connections = 3\n[limits]\nmax_connections = 4")
            .unwrap_err();
        assert!(err.message.contains("MAX_CONNECTIONS is already set"), "{err}");
    }

    #[test]
    fn durations_take_units_and_plain_numbers_keep_their_unit() {
        let apply = |pairs: &[(&str, &str)]| {
            let mut config = ServerConfig::default();
            config.apply_vars(vars(pairs)).map(|()| config)
        };
        // Plain numbers mean what the names have always said.
        let config = apply(&[
            ("SHUTDOWN_TIMEOUT_SECS", "2"),
            ("GROUP_INITIAL_REBALANCE_DELAY_MS", "250"),
            ("OFFSETS_RETENTION_MINUTES", "90"),
        ])
        .unwrap();
        assert_eq!(config.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(config.group_initial_rebalance_delay_ms, 250);
        assert_eq!(config.offsets_retention_minutes, 90);
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            (" 45 s ", Duration::from_secs(45)),
        ] {
            let config = apply(&[("REQUEST_TIMEOUT_SECS", text)]).unwrap();
            assert_eq!(config.request_timeout, expected, "{text}");
        }
        let config = apply(&[
            ("GROUP_INITIAL_REBALANCE_DELAY_MS", "3s"),
            ("OFFSETS_RETENTION_MINUTES", "7d"),
        ])
        .unwrap();
        assert_eq!(config.group_initial_rebalance_delay_ms, 3000);
        assert_eq!(config.offsets_retention_minutes, 7 * 24 * 60);
        // Errors name the setting.
        for (name, value) in [
            ("IDLE_TIMEOUT_SECS", "10 minutes"),
            ("IDLE_TIMEOUT_SECS", "-1"),
            ("OFFSETS_RETENTION_MINUTES", "90s"),
            ("OFFSETS_RETENTION_MINUTES", "0"),
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("LOG_RETENTION_CHECK_INTERVAL_SECS", "0ms"),
            ("METRICS_INTERVAL_SECS", "99999999999999999d"),
        ] {
            let err = apply(&[(name, value)]).unwrap_err();
            assert_eq!(err.setting, name, "{value}: {err}");
        }
        // A sub-second value shows (and so round-trips) with its unit.
        let setting = SETTINGS
            .iter()
            .find(|s| s.name == "SHUTDOWN_TIMEOUT_SECS")
            .unwrap();
        let config = apply(&[("SHUTDOWN_TIMEOUT_SECS", "1500ms")]).unwrap();
        assert_eq!(setting.show(&config), "1500ms");
        assert_eq!(setting.show(&ServerConfig::default()), "30");
    }

    /// The README says 0 means no limit (never) for these; the shards read
    /// 0 that way, so the settings must accept it.
    #[test]
    fn zero_means_no_limit_where_the_readme_says_so() {
        let mut config = ServerConfig::default();
        config
            .apply_vars(vars(&[
                ("MAX_CONNECTIONS", "0"),
                ("MAX_CONNECTIONS_PER_IP", "0"),
                ("CONNECTION_RATE_LIMIT", "0"),
                ("IDLE_TIMEOUT_SECS", "0"),
            ]))
            .unwrap();
        assert_eq!(config.max_connections, 0);
        assert_eq!(config.pool_config.max_per_ip, 0);
        assert_eq!(config.pool_config.rate_limit, 0);
        let live = broker_configs::live_settings(&config, &dynamic::DynamicConfigs::default());
        assert_eq!(live.limits.max_connections, 0, "0 reaches the shards as no limit");
        assert_eq!(live.idle_timeout, None, "idle timeout 0 = never");
        // Where 0 would mean "nothing at all" it is still refused.
        for name in [
            "BACKPRESSURE_THRESHOLD",
            "MAX_REQUEST_BYTES",
            "NUM_PARTITIONS",
            "BUFFER_SIZE",
        ] {
            let err = ServerConfig::default()
                .apply_vars(vars(&[(name, "0")]))
                .unwrap_err();
            assert_eq!(err.setting, name);
        }
    }

    #[test]
    fn every_setting_sits_in_one_section() {
        for setting in SETTINGS {
            let homes: Vec<&str> = SECTIONS
                .iter()
                .filter(|s| s.keys.iter().any(|(_, name)| *name == setting.name))
                .map(|s| s.name)
                .collect();
            assert_eq!(
                homes.len(),
                1,
                "{} must be listed in exactly one of settings::SECTIONS, is in {homes:?}",
                setting.name
            );
        }
        for section in SECTIONS {
            for (key, name) in section.keys {
                assert!(
                    SETTINGS.iter().any(|s| s.name == *name),
                    "[{}] {key}: no setting {name}",
                    section.name
                );
            }
        }
    }

    #[test]
    fn every_default_round_trips_through_its_own_parser() {
        let defaults = ServerConfig::default();
        for setting in SETTINGS {
            let mut config = ServerConfig::default();
            setting.apply(&mut config, &setting.show(&defaults)).unwrap();
            assert_eq!(setting.show(&config), setting.show(&defaults), "{}", setting.name);
        }
    }
}

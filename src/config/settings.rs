//! The one table of settings. Each row names the environment variable, says
//! what it does, and where in [`ServerConfig`] it lands; [`SECTIONS`] gives
//! each its key in the config file (its lower-case name works too, at the
//! top level).

use super::{ConfigError, ServerConfig};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// One configurable setting.
pub struct Setting {
    pub name: &'static str,
    pub help: &'static str,
    field: for<'a> fn(&'a mut ServerConfig) -> Box<dyn SettingValue + 'a>,
}

impl Setting {
    /// Parses `text` into the setting's field; the error names the setting.
    pub fn apply(&self, config: &mut ServerConfig, text: &str) -> Result<(), ConfigError> {
        self.apply_as(self.name, config, text)
    }

    /// As [`Setting::apply`], naming the setting `shown` in an error (the
    /// key the config file used).
    pub(super) fn apply_as(
        &self,
        shown: &str,
        config: &mut ServerConfig,
        text: &str,
    ) -> Result<(), ConfigError> {
        let secret = SECRET_SETTINGS.contains(&self.name);
        (self.field)(config)
            .set(text.trim())
            .map_err(|message| ConfigError {
                setting: shown.into(),
                message: if secret {
                    message
                } else {
                    format!("{text:?}: {message}")
                },
            })
    }

    /// The setting's current value as it would be written in the file.
    pub fn show(&self, config: &ServerConfig) -> String {
        let mut copy = config.clone();
        let value = (self.field)(&mut copy);
        value.show()
    }

    /// For a duration, the unit a plain number is read in.
    pub fn unit(&self) -> Option<&'static str> {
        let mut config = ServerConfig::default();
        let value = (self.field)(&mut config);
        value.unit()
    }

    /// Where the setting sits in a sectioned config file: (section, key).
    pub fn file_key(&self) -> Option<(&'static str, &'static str)> {
        SECTIONS.iter().find_map(|section| {
            section
                .keys
                .iter()
                .find(|(_, setting)| *setting == self.name)
                .map(|(key, _)| (section.name, *key))
        })
    }
}

/// Settings whose values hold passwords: an error about one never
/// repeats the value.
const SECRET_SETTINGS: &[&str] = &["SASL_BOOTSTRAP_USERS"];

/// A table of the config file and the settings it holds.
pub struct Section {
    pub name: &'static str,
    /// (key in the section, setting name).
    pub keys: &'static [(&'static str, &'static str)],
}

/// Sections of the config file. Each setting sits in one; its lower-case
/// name also works as a top-level key (the flat form older files use).
/// Sections with no keys are reserved for settings still to come, so that
/// a file written for a later version fails loudly here instead of being
/// half understood.
pub static SECTIONS: &[Section] = &[
    Section {
        name: "server",
        keys: &[
            ("bind_address", "BIND_ADDRESS"),
            ("advertised_address", "ADVERTISED_ADDRESS"),
            ("listeners", "LISTENERS"),
            ("advertised_listeners", "ADVERTISED_LISTENERS"),
            ("shards", "SHARDS"),
            ("storage_path", "STORAGE_PATH"),
            ("shutdown_timeout", "SHUTDOWN_TIMEOUT_SECS"),
            ("buffer_size", "BUFFER_SIZE"),
        ],
    },
    Section {
        name: "log",
        keys: &[("filter", "RUST_LOG"), ("format", "LOG_FORMAT")],
    },
    Section {
        name: "storage",
        keys: &[
            ("segment_write", "SEGMENT_WRITE"),
            ("recent_cache_mb", "RECENT_CACHE_MB"),
        ],
    },
    Section {
        name: "topics",
        keys: &[
            ("auto_create", "AUTO_CREATE_TOPICS"),
            ("num_partitions", "NUM_PARTITIONS"),
            ("retention_check_interval", "LOG_RETENTION_CHECK_INTERVAL_SECS"),
        ],
    },
    Section {
        name: "groups",
        keys: &[
            ("initial_rebalance_delay", "GROUP_INITIAL_REBALANCE_DELAY_MS"),
            ("offsets_retention", "OFFSETS_RETENTION_MINUTES"),
            ("offsets_segment_bytes", "OFFSETS_TOPIC_SEGMENT_BYTES"),
        ],
    },
    Section {
        name: "cleaner",
        keys: &[
            ("enable", "LOG_CLEANER_ENABLE"),
            ("backoff", "LOG_CLEANER_BACKOFF_MS"),
            ("dedupe_buffer_size", "LOG_CLEANER_DEDUPE_BUFFER_SIZE"),
            ("io_max_bytes_per_second", "LOG_CLEANER_IO_MAX_BYTES_PER_SECOND"),
        ],
    },
    Section {
        name: "transactions",
        keys: &[
            ("max_timeout", "TRANSACTION_MAX_TIMEOUT_MS"),
            ("id_expiration", "TRANSACTIONAL_ID_EXPIRATION_MS"),
        ],
    },
    Section {
        name: "limits",
        keys: &[
            ("max_request_bytes", "MAX_REQUEST_BYTES"),
            ("max_connections", "MAX_CONNECTIONS"),
            ("max_connections_per_ip", "MAX_CONNECTIONS_PER_IP"),
            ("connection_rate_limit", "CONNECTION_RATE_LIMIT"),
            ("rate_limit_ban", "RATE_LIMIT_BAN_SECS"),
            ("rate_limit_exempt", "RATE_LIMIT_EXEMPT"),
            ("request_timeout", "REQUEST_TIMEOUT_SECS"),
            ("idle_timeout", "IDLE_TIMEOUT_SECS"),
            ("backpressure_threshold", "BACKPRESSURE_THRESHOLD"),
            ("queued_max_request_bytes", "QUEUED_MAX_REQUEST_BYTES"),
        ],
    },
    Section {
        name: "metrics",
        keys: &[
            ("address", "METRICS_ADDRESS"),
            ("interval", "METRICS_INTERVAL_SECS"),
        ],
    },
    Section {
        name: "tls",
        keys: &[
            ("cert_path", "TLS_CERT_PATH"),
            ("key_path", "TLS_KEY_PATH"),
            ("ca_path", "TLS_CA_PATH"),
            ("require_client_cert", "TLS_REQUIRE_CLIENT_CERT"),
            ("versions", "TLS_VERSIONS"),
            ("cipher_suites", "TLS_CIPHER_SUITES"),
            ("handshake_timeout", "TLS_HANDSHAKE_TIMEOUT_SECS"),
        ],
    },
    Section {
        name: "object_store",
        keys: &[
            ("url", "OBJECT_STORE_URL"),
            ("local_cap_mb", "TIERING_LOCAL_CAP_MB"),
        ],
    },
    Section {
        name: "cluster",
        keys: &[
            ("etcd_endpoints", "ETCD_ENDPOINTS"),
            ("node_id", "NODE_ID"),
            ("lease_ttl", "CLUSTER_LEASE_TTL_MS"),
            ("rack", "BROKER_RACK"),
            ("wal_flush_interval", "WAL_FLUSH_INTERVAL_MS"),
            ("wal_garbage_grace", "WAL_GARBAGE_GRACE_MS"),
        ],
    },
    Section {
        name: "security",
        keys: &[
            ("listener_security_protocol_map", "LISTENER_SECURITY_PROTOCOL_MAP"),
            ("sasl_enabled_mechanisms", "SASL_ENABLED_MECHANISMS"),
            ("sasl_bootstrap_users", "SASL_BOOTSTRAP_USERS"),
            ("connections_max_reauth", "CONNECTIONS_MAX_REAUTH_MS"),
            ("oauthbearer_jwks_file", "SASL_OAUTHBEARER_JWKS_FILE"),
            ("oauthbearer_unsecured", "SASL_OAUTHBEARER_UNSECURED"),
            ("oauthbearer_expected_issuer", "SASL_OAUTHBEARER_EXPECTED_ISSUER"),
            (
                "oauthbearer_expected_audience",
                "SASL_OAUTHBEARER_EXPECTED_AUDIENCE",
            ),
            ("oauthbearer_sub_claim_name", "SASL_OAUTHBEARER_SUB_CLAIM_NAME"),
            ("oauthbearer_clock_skew", "SASL_OAUTHBEARER_CLOCK_SKEW_SECS"),
            ("authorizer", "AUTHORIZER"),
            ("super_users", "SUPER_USERS"),
            ("allow_everyone_if_no_acl_found", "ALLOW_EVERYONE_IF_NO_ACL_FOUND"),
            ("auth_failure_ban_threshold", "AUTH_FAILURE_BAN_THRESHOLD"),
            ("ssl_principal_mapping_rules", "SSL_PRINCIPAL_MAPPING_RULES"),
        ],
    },
];

/// A field type a setting can hold.
trait SettingValue {
    fn set(&mut self, text: &str) -> Result<(), String>;
    fn show(&self) -> String;
    /// For durations: the unit of a plain number.
    fn unit(&self) -> Option<&'static str> {
        None
    }
}

/// Rows name their field directly (`&mut c.field`); adapters below wrap a
/// field that needs other parsing than its type's.
impl<T: SettingValue + ?Sized> SettingValue for &mut T {
    fn set(&mut self, text: &str) -> Result<(), String> {
        (**self).set(text)
    }
    fn show(&self) -> String {
        (**self).show()
    }
    fn unit(&self) -> Option<&'static str> {
        (**self).unit()
    }
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

/// Limits where 0 means "no limit" (as the README and the run-time
/// configs of the same name say).
struct NoLimitIfZero<'a>(&'a mut usize);

impl SettingValue for NoLimitIfZero<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self.0 = text
            .parse()
            .map_err(|_| "expected a whole number (0 = no limit)")?;
        Ok(())
    }
    fn show(&self) -> String {
        self.0.to_string()
    }
}

impl SettingValue for crate::storage::WriteMode {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = match text.to_ascii_lowercase().as_str() {
            "direct" => crate::storage::WriteMode::Direct,
            "buffered" => crate::storage::WriteMode::Buffered,
            _ => return Err("expected direct or buffered".into()),
        };
        Ok(())
    }
    fn show(&self) -> String {
        match self {
            crate::storage::WriteMode::Direct => "direct".into(),
            crate::storage::WriteMode::Buffered => "buffered".into(),
        }
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

/// The unit a plain number of a duration setting is read in: the one its
/// name has always said (`_SECS`, `_MS`, `_MINUTES`), so existing files
/// and environments keep their meaning.
#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Secs,
    Minutes,
}

impl Unit {
    fn millis(self) -> u64 {
        match self {
            Unit::Millis => 1,
            Unit::Secs => 1_000,
            Unit::Minutes => 60_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Secs => "seconds",
            Unit::Minutes => "minutes",
        }
    }

    /// `d` as a plain number of this unit when it is whole, else in the
    /// largest unit suffix that is (so `show` always parses back).
    fn show(self, d: Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(u128::from(self.millis())) {
            return (ms / u128::from(self.millis())).to_string();
        }
        match [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")]
            .into_iter()
            .find(|(unit, _)| ms.is_multiple_of(*unit))
        {
            Some((unit, suffix)) => format!("{}{suffix}", ms / unit),
            None => format!("{ms}ms"),
        }
    }
}

/// Parses a duration: a whole number with a unit, `500ms`, `30s`, `10m`,
/// `1h`, `1d`, or a plain whole number in `base`.
fn parse_duration(text: &str, base: Unit) -> Result<Duration, String> {
    parse_millis(text, base).map(Duration::from_millis)
}

/// [`parse_duration`] in whole milliseconds.
fn parse_millis(text: &str, base: Unit) -> Result<u64, String> {
    let expected = || {
        format!(
            "expected a duration: a whole number with a unit (500ms, 30s, 10m, 1h, 1d) or plain {}",
            base.name()
        )
    };
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| expected())?;
    let unit_ms: u64 = match suffix.trim() {
        "" => base.millis(),
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    Ok(number.checked_mul(unit_ms).ok_or("too large")?)
}

/// Durations held as `Duration` are read in seconds when plain, as their
/// `_SECS` names say; 0 is allowed (for IDLE_TIMEOUT_SECS it means never).
impl SettingValue for Duration {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = parse_duration(text, Unit::Secs)?;
        Ok(())
    }
    fn show(&self) -> String {
        Unit::Secs.show(*self)
    }
    fn unit(&self) -> Option<&'static str> {
        Some(Unit::Secs.name())
    }
}

/// A duration in seconds that must not be 0: a zero interval would spin,
/// a zero timeout would fail everything at once.
struct Positive<'a>(&'a mut Duration);

impl SettingValue for Positive<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        let d = parse_duration(text, Unit::Secs)?;
        if d.is_zero() {
            return Err("must be more than 0".into());
        }
        *self.0 = d;
        Ok(())
    }
    fn show(&self) -> String {
        self.0.show()
    }
    fn unit(&self) -> Option<&'static str> {
        self.0.unit()
    }
}

/// A duration the rest of the broker keeps as a whole number of `unit`s
/// (at least `min` of them).
struct WholeUnits<'a> {
    value: &'a mut u64,
    unit: Unit,
    min: u64,
}

impl SettingValue for WholeUnits<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        let ms = parse_millis(text, self.unit)?;
        if !ms.is_multiple_of(self.unit.millis()) {
            return Err(format!("must be whole {}", self.unit.name()));
        }
        let n = ms / self.unit.millis();
        if n < self.min {
            return Err(format!("must be at least {} {}", self.min, self.unit.name()));
        }
        *self.value = n;
        Ok(())
    }
    fn show(&self) -> String {
        self.value.to_string()
    }
    fn unit(&self) -> Option<&'static str> {
        Some(self.unit.name())
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

/// An object store's URL: empty for none, else one of the schemes the
/// `object_store` crate is built with here.
struct StoreUrl<'a>(&'a mut Option<String>);

impl SettingValue for StoreUrl<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        if text.is_empty() {
            *self.0 = None;
            return Ok(());
        }
        let scheme = url::Url::parse(text).map(|u| u.scheme().to_string());
        if !matches!(
            scheme.as_deref(),
            Ok("s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "file")
        ) {
            return Err(
                "expected s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///dir"
                    .into(),
            );
        }
        *self.0 = Some(text.into());
        Ok(())
    }
    fn show(&self) -> String {
        self.0.clone().unwrap_or_default()
    }
}

/// Sizes with a default worked out from the host: `auto` (or empty), a
/// whole number, or 0 for off.
struct AutoSize<'a>(&'a mut Option<usize>);

impl SettingValue for AutoSize<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        if text.is_empty() || text.eq_ignore_ascii_case("auto") {
            *self.0 = None;
            return Ok(());
        }
        *self.0 = Some(
            text.parse()
                .map_err(|_| "expected a whole number, auto, or 0 for off")?,
        );
        Ok(())
    }
    fn show(&self) -> String {
        self.0.map_or_else(|| "auto".into(), |n| n.to_string())
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

struct ProtocolMap<'a>(&'a mut Vec<(String, super::SecurityProtocol)>);

impl SettingValue for ProtocolMap<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self.0 = super::listeners::parse_protocol_map(text)?;
        Ok(())
    }
    fn show(&self) -> String {
        super::listeners::show_protocol_map(self.0)
    }
}

struct Mechanisms<'a>(&'a mut super::security::MechanismsByListener);

impl SettingValue for Mechanisms<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self.0 = super::security::parse_mechanisms(text)?;
        Ok(())
    }
    fn show(&self) -> String {
        super::security::show_mechanisms(self.0)
    }
}

/// `name:password` pairs; shown as names only.
struct Users<'a>(&'a mut Vec<(String, String)>);

impl SettingValue for Users<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self.0 = super::security::parse_users(text)?;
        Ok(())
    }
    fn show(&self) -> String {
        self.0
            .iter()
            .map(|(name, _)| format!("{name}:<hidden>"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Principals separated by `;` (Kafka's `super.users` form), each `Type:name`.
struct Principals<'a>(&'a mut Vec<String>);

impl SettingValue for Principals<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        let mut principals = Vec::new();
        for principal in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match principal.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                    principals.push(principal.to_string())
                }
                _ => return Err(format!("{principal}: expected Type:name, e.g. User:admin")),
            }
        }
        *self.0 = principals;
        Ok(())
    }
    fn show(&self) -> String {
        self.0.join(";")
    }
}

/// Kafka's ssl.principal.mapping.rules, checked when set.
struct MappingRules<'a>(&'a mut String);

impl SettingValue for MappingRules<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        crate::security::principal_mapping::PrincipalMapper::parse(text)?;
        *self.0 = text.to_string();
        Ok(())
    }
    fn show(&self) -> String {
        self.0.clone()
    }
}

/// etcd client URLs; a bare host:port gets http://.
struct EtcdEndpoints<'a>(&'a mut Vec<String>);

impl SettingValue for EtcdEndpoints<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        let mut endpoints = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let endpoint = if item.contains("://") {
                item.to_string()
            } else {
                format!("http://{item}")
            };
            match url::Url::parse(&endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    endpoints.push(endpoint)
                }
                _ => return Err(format!("{item}: expected http://host:port")),
            }
        }
        *self.0 = endpoints;
        Ok(())
    }
    fn show(&self) -> String {
        self.0.join(",")
    }
}

/// A broker id: empty for none.
struct NodeId<'a>(&'a mut Option<i32>);

impl SettingValue for NodeId<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        if text.is_empty() {
            *self.0 = None;
            return Ok(());
        }
        let id: i32 = text
            .parse()
            .map_err(|_| "expected a whole number from 0 to 2147483647")?;
        if id < 0 {
            return Err("expected a whole number from 0 to 2147483647".into());
        }
        *self.0 = Some(id);
        Ok(())
    }
    fn show(&self) -> String {
        self.0.map(|id| id.to_string()).unwrap_or_default()
    }
}

/// Free text where empty means none.
struct OptionalText<'a>(&'a mut Option<String>);

impl SettingValue for OptionalText<'_> {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self.0 = (!text.is_empty()).then(|| text.to_string());
        Ok(())
    }
    fn show(&self) -> String {
        self.0.clone().unwrap_or_default()
    }
}

impl SettingValue for super::security::AuthorizerKind {
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = match text.to_ascii_lowercase().as_str() {
            "none" => super::security::AuthorizerKind::None,
            "acl" => super::security::AuthorizerKind::Acl,
            _ => return Err("expected none or acl".into()),
        };
        Ok(())
    }
    fn show(&self) -> String {
        match self {
            super::security::AuthorizerKind::None => "none".into(),
            super::security::AuthorizerKind::Acl => "acl".into(),
        }
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
            field: {
                fn field($c: &mut ServerConfig) -> Box<dyn SettingValue + '_> {
                    Box::new($field)
                }
                field
            },
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
    setting!("SEGMENT_WRITE", |c| &mut c.segment_write,
        "How segment files are written: direct (O_DIRECT from the broker's aligned buffers; the device's speed, no dirty page cache, cheap fdatasync) or buffered (through the page cache). A file system without O_DIRECT falls back to buffered."),
    setting!("RECENT_CACHE_MB", |c| AutoSize(&mut c.recent_cache_mb),
        "Memory per shard for the batches written last, which consumers read without touching the disk, spent oldest first across the shard's partitions and given back while the host's available memory is under an eighth of its total. auto = an eighth of the host's memory split between the shards, at most 1024 each; 0 = off."),
    setting!("OBJECT_STORE_URL", |c| StoreUrl(&mut c.object_store_url),
        "Object storage for tiered topics (remote.storage.enable=true): s3://bucket/prefix (with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP for S3-compatible servers), gs://bucket/prefix, az://container/prefix, or file:///dir. Empty = no tiering. A broker started with an empty data directory takes back every tiered topic it finds there."),
    setting!("TIERING_LOCAL_CAP_MB", |c| NoLimitIfZero(&mut c.tiering_local_cap_mb),
        "Per tiered partition: MiB of local segments past which produce is answered KAFKA_STORAGE_ERROR, because uploads to object storage are failing or behind and local retention may only delete what is uploaded. 0 = no cap (the disk fills until uploads resume)."),
    setting!("ETCD_ENDPOINTS", |c| EtcdEndpoints(&mut c.etcd_endpoints),
        "Cluster mode: etcd's client URLs, comma-separated (http://127.0.0.1:2379). Needs OBJECT_STORE_URL and NODE_ID. Empty = one broker on its own (no etcd)."),
    setting!("NODE_ID", |c| NodeId(&mut c.node_id),
        "Cluster mode: this broker's id, unique in the cluster (0 to 2147483647). On one broker: 0."),
    setting!("CLUSTER_LEASE_TTL_MS", |c| WholeUnits { value: &mut c.cluster_lease_ttl_ms, unit: Unit::Millis, min: 2000 },
        "Cluster mode: how long a broker's etcd lease outlives its last renewal. A broker that dies loses its partitions this long after; one that cannot renew stops leading then (rounded up to whole seconds)."),
    setting!("BROKER_RACK", |c| OptionalText(&mut c.broker_rack),
        "Cluster mode: this broker's rack, reported in Metadata (Kafka's broker.rack). Empty = none."),
    setting!("WAL_FLUSH_INTERVAL_MS", |c| WholeUnits { value: &mut c.wal_flush_interval_ms, unit: Unit::Millis, min: 1 },
        "Cluster mode: how often each shard writes the batches it accepted to object storage as one object and commits them in etcd; acks=all is answered after that (4 MiB waiting flushes at once)."),
    setting!("WAL_GARBAGE_GRACE_MS", |c| WholeUnits { value: &mut c.wal_garbage_grace_ms, unit: Unit::Millis, min: 10_000 },
        "Cluster mode: the controller deletes a WAL object (or folded one) that no committed pointer names once it is this old; a flush whose commit keeps failing writes its batches again after a third of it rather than commit an object that old. The controller looks every tenth of it (1 s to 60 s)."),
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
    setting!("LOG_RETENTION_CHECK_INTERVAL_SECS", |c| Positive(&mut c.retention_check_interval),
        "How often retention.ms / retention.bytes are applied (whole segments are deleted)."),
    setting!("GROUP_INITIAL_REBALANCE_DELAY_MS", |c| WholeUnits { value: &mut c.group_initial_rebalance_delay_ms, unit: Unit::Millis, min: 0 },
        "How long the first rebalance of an empty consumer group waits for more members (Kafka's group.initial.rebalance.delay.ms)."),
    setting!("OFFSETS_RETENTION_MINUTES", |c| WholeUnits { value: &mut c.offsets_retention_minutes, unit: Unit::Minutes, min: 1 },
        "Committed offsets of a group are dropped this long after the group became empty."),
    setting!("OFFSETS_TOPIC_SEGMENT_BYTES", |c| &mut c.offsets_topic_segment_bytes,
        "Segment size of the committed-offsets and transaction-state partitions (Kafka's offsets.topic.segment.bytes; smaller here, since only closed segments are compacted, each of the 50 partitions of each holds up to about twice its live keys plus two segments). At least 4096."),
    setting!("LOG_CLEANER_ENABLE", |c| &mut c.log_cleaner_enable,
        "Clean compacted topics (Kafka's log.cleaner.enable): each shard's cleaner keeps the latest record of every key of its partitions."),
    setting!("LOG_CLEANER_BACKOFF_MS", |c| WholeUnits { value: &mut c.log_cleaner_backoff_ms, unit: Unit::Millis, min: 1 },
        "How long a shard's cleaner sleeps when no partition is due (Kafka's log.cleaner.backoff.ms)."),
    setting!("LOG_CLEANER_DEDUPE_BUFFER_SIZE", |c| &mut c.log_cleaner_dedupe_buffer_size,
        "Memory, per shard, for a cleaning's map of keys to their latest offsets (Kafka's log.cleaner.dedupe.buffer.size); a dirty part with more keys is cleaned in several rounds."),
    setting!("LOG_CLEANER_IO_MAX_BYTES_PER_SECOND", |c| NoLimitIfZero(&mut c.log_cleaner_io_max_bytes_per_second),
        "Bytes per second a shard's cleaner may read and write (Kafka's log.cleaner.io.max.bytes.per.second, which is unlimited by default); 0 = no limit. The default keeps produce p99 on the cleaning shard within 2x of no cleaning on a single disk."),
    setting!("TRANSACTION_MAX_TIMEOUT_MS", |c| WholeUnits { value: &mut c.transaction_max_timeout_ms, unit: Unit::Millis, min: 1 },
        "The longest transaction.timeout.ms a producer may ask for (Kafka's transaction.max.timeout.ms); longer is refused with INVALID_TRANSACTION_TIMEOUT."),
    setting!("TRANSACTIONAL_ID_EXPIRATION_MS", |c| WholeUnits { value: &mut c.transactional_id_expiration_ms, unit: Unit::Millis, min: 1 },
        "A transactional id with no transaction open and no use for this long is forgotten, its producer id with it (Kafka's transactional.id.expiration.ms)."),
    setting!("RUST_LOG", |c| &mut c.log_filter,
        "Log filter, e.g. info or chronik_ingest=info,chronik_protocol=debug (one line per request)."),
    setting!("LOG_FORMAT", |c| &mut c.log_format,
        "text, or json (one JSON object per line, with the connection and request spans)."),
    setting!("MAX_CONNECTIONS", |c| NoLimitIfZero(&mut c.max_connections),
        "Most connections open at once across all shards (0 = no limit)."),
    setting!("MAX_CONNECTIONS_PER_IP", |c| NoLimitIfZero(&mut c.pool_config.max_per_ip),
        "Most connections one client IP may hold across all shards (0 = no limit)."),
    setting!("CONNECTION_RATE_LIMIT", |c| &mut c.pool_config.rate_limit,
        "New connections per second one IP may open before it is banned (0 = no limit)."),
    setting!("RATE_LIMIT_BAN_SECS", |c| &mut c.pool_config.ban_duration,
        "How long an IP that broke the rate limit stays banned."),
    setting!("RATE_LIMIT_EXEMPT", |c| &mut c.pool_config.exempt,
        "Comma-separated CIDR blocks (e.g. 127.0.0.0/8,::1) exempt from the rate limit and bans; empty: none, loopback included."),
    setting!("REQUEST_TIMEOUT_SECS", |c| Positive(&mut c.request_timeout),
        "A request not answered within this is counted and its connection closed (Fetch long-polls are capped below it)."),
    setting!("IDLE_TIMEOUT_SECS", |c| &mut c.idle_timeout,
        "Connections without a complete request for this long are closed (0 = never)."),
    setting!("BACKPRESSURE_THRESHOLD", |c| &mut c.backpressure_threshold,
        "Pending requests per shard above which the shard stops reading new requests."),
    setting!("METRICS_ADDRESS", |c| &mut c.metrics_address,
        "Address of the /metrics, /health and /ready HTTP endpoint; empty = off."),
    setting!("METRICS_INTERVAL_SECS", |c| Positive(&mut c.metrics_interval),
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
    setting!("TLS_HANDSHAKE_TIMEOUT_SECS", |c| Positive(&mut c.tls_handshake_timeout),
        "A TLS client that has not completed its handshake within this is disconnected."),
    setting!("LISTENER_SECURITY_PROTOCOL_MAP", |c| ProtocolMap(&mut c.security.protocol_map),
        "Listener name to security protocol, e.g. INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL (Kafka's listener.security.protocol.map). A listener named after a protocol needs no entry."),
    setting!("SASL_ENABLED_MECHANISMS", |c| Mechanisms(&mut c.security.sasl_mechanisms),
        "SASL mechanisms offered on SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER. Per listener: groups separated by ;, e.g. SCRAM-SHA-512;EXTERNAL=PLAIN,OAUTHBEARER (a group without NAME= is for the other SASL listeners)."),
    setting!("SASL_BOOTSTRAP_USERS", |c| Users(&mut c.security.bootstrap_users),
        "name:password,... created as SCRAM-SHA-256 and SCRAM-SHA-512 credentials at start if the user has none, so a fresh broker can be administered. Only salted keys are stored."),
    setting!("CONNECTIONS_MAX_REAUTH_MS", |c| WholeUnits { value: &mut c.security.max_reauth_ms, unit: Unit::Millis, min: 0 },
        "Longest a SASL session lasts before the client must re-authenticate (KIP-368); 0 = no limit (an OAUTHBEARER session still ends when its token expires)."),
    setting!("SASL_OAUTHBEARER_JWKS_FILE", |c| &mut c.security.oauth_jwks_file,
        "JWKS file (RFC 7517) whose RSA or EC keys OAUTHBEARER tokens must be signed with (RS256/384/512, ES256/384)."),
    setting!("SASL_OAUTHBEARER_UNSECURED", |c| &mut c.security.oauth_unsecured,
        "Accept unsigned OAUTHBEARER tokens (alg none; Kafka's unsecured validator). For tests only: anyone can claim any principal."),
    setting!("SASL_OAUTHBEARER_EXPECTED_ISSUER", |c| OptionalText(&mut c.security.oauth_expected_issuer),
        "The iss claim a signed token must carry; empty = not checked."),
    setting!("SASL_OAUTHBEARER_EXPECTED_AUDIENCE", |c| OptionalText(&mut c.security.oauth_expected_audience),
        "Comma-separated audiences; a signed token's aud must name one. Empty = not checked."),
    setting!("SASL_OAUTHBEARER_SUB_CLAIM_NAME", |c| &mut c.security.oauth_principal_claim,
        "The claim that names the principal (User:<claim>)."),
    setting!("SASL_OAUTHBEARER_CLOCK_SKEW_SECS", |c| &mut c.security.oauth_clock_skew,
        "Clock difference allowed when checking a signed token's exp and iat."),
    setting!("AUTHORIZER", |c| &mut c.security.authorizer,
        "none: every principal may do everything (Kafka without an authorizer). acl: Kafka's ACLs (CreateAcls/DescribeAcls/DeleteAcls) decide every request."),
    setting!("SUPER_USERS", |c| Principals(&mut c.security.super_users),
        "Principals allowed everything whatever the ACLs say, separated by ; (e.g. User:admin;User:ops)."),
    setting!("ALLOW_EVERYONE_IF_NO_ACL_FOUND", |c| &mut c.security.allow_everyone_if_no_acl_found,
        "With AUTHORIZER=acl: allow an operation on a resource that no ACL names at all (Kafka's allow.everyone.if.no.acl.found)."),
    setting!("SSL_PRINCIPAL_MAPPING_RULES", |c| MappingRules(&mut c.security.ssl_principal_mapping_rules),
        "How an SSL client certificate's subject becomes its principal (Kafka's ssl.principal.mapping.rules): rules tried in order, RULE:<regex>/<replacement>/[L|U] (the regex must match the whole subject; $1 names a group) or DEFAULT (the subject as it is), e.g. RULE:^CN=([^,]*),.*$/$1/L,DEFAULT. A subject no rule matches is refused."),
    setting!("AUTH_FAILURE_BAN_THRESHOLD", |c| &mut c.security.auth_failure_ban_threshold,
        "Failed SASL authentications from one address within a minute after which it is banned for RATE_LIMIT_BAN_SECS, like a broken connection rate limit (RATE_LIMIT_EXEMPT addresses never are). 0 = never."),
];

impl ServerConfig {
    /// `--help` text: every setting with its default, its config-file key,
    /// the unit of a plain-number duration, and the broker config that
    /// changes it at run time.
    pub fn settings_help() -> String {
        let defaults = ServerConfig::default();
        let mut out = String::from(
            "Settings (environment variable; in the --config TOML file, the key shown in its\n\
             [section], or the lower-case name at the top level; environment overrides file,\n\
             file overrides default). Durations take a unit (500ms, 30s, 10m, 1h, 1d); a plain\n\
             number is in the unit shown.\n",
        );
        for s in SETTINGS {
            let default = s.show(&defaults);
            let default = if default.is_empty() {
                "(empty)".to_string()
            } else {
                default
            };
            let unit = s.unit().map(|u| format!(" {u}")).unwrap_or_default();
            out.push_str(&format!(
                "  {:<24} default: {default}{unit}\n      {}",
                s.name, s.help
            ));
            let mut notes = Vec::new();
            if let Some((section, key)) = s.file_key() {
                notes.push(format!("File: [{section}] {key}."));
            }
            if let Some(name) = super::broker_configs::runtime_name(s.name) {
                notes.push(format!("Changes at run time as broker config {name}."));
            }
            if !notes.is_empty() {
                out.push_str(&format!("\n      {}", notes.join(" ")));
            }
            out.push('\n');
        }
        out
    }
}

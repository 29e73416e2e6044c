//! Authentication and authorization settings: SASL mechanisms per
//! listener, bootstrap users, re-authentication, OAUTHBEARER validation,
//! and the authorizer with its super users.

use std::path::PathBuf;
use std::time::Duration;

/// The SASL mechanisms this build offers (Kafka's names).
pub const SASL_MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

/// SASL_ENABLED_MECHANISMS parsed: (listener name, or `None` for every
/// SASL listener without its own list; its mechanisms).
pub type MechanismsByListener = Vec<(Option<String>, Vec<String>)>;

/// Which authorizer decides requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizerKind {
    /// Everything is allowed (Kafka without `authorizer.class.name`).
    None,
    /// Kafka's ACLs (StandardAuthorizer).
    Acl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// LISTENER_SECURITY_PROTOCOL_MAP.
    pub protocol_map: Vec<(String, super::SecurityProtocol)>,
    /// SASL_ENABLED_MECHANISMS.
    pub sasl_mechanisms: MechanismsByListener,
    /// SASL_BOOTSTRAP_USERS: (name, password), created on first start.
    pub bootstrap_users: Vec<(String, String)>,
    /// CONNECTIONS_MAX_REAUTH_MS: a SASL session's longest life (zero:
    /// unbounded, except by an OAuth token's expiry).
    pub max_reauth_ms: u64,
    /// SASL_OAUTHBEARER_JWKS_FILE: keys signed tokens must verify against.
    pub oauth_jwks_file: Option<PathBuf>,
    /// SASL_OAUTHBEARER_UNSECURED: accept unsigned tokens (tests only).
    pub oauth_unsecured: bool,
    pub oauth_expected_issuer: Option<String>,
    /// Comma-separated; a token must name one of them in `aud`.
    pub oauth_expected_audience: Option<String>,
    pub oauth_principal_claim: String,
    pub oauth_clock_skew: Duration,
    pub authorizer: AuthorizerKind,
    /// SUPER_USERS: principals (`User:admin`) allowed everything.
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
    /// AUTH_FAILURE_BAN_THRESHOLD: failed authentications from one address
    /// within a minute (on one shard) that ban it; 0 = never.
    pub auth_failure_ban_threshold: u32,
    /// SSL_PRINCIPAL_MAPPING_RULES (Kafka's ssl.principal.mapping.rules).
    pub ssl_principal_mapping_rules: String,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            protocol_map: Vec::new(),
            sasl_mechanisms: vec![(
                None,
                vec!["PLAIN".into(), "SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
            )],
            bootstrap_users: Vec::new(),
            max_reauth_ms: 0,
            oauth_jwks_file: None,
            oauth_unsecured: false,
            oauth_expected_issuer: None,
            oauth_expected_audience: None,
            oauth_principal_claim: "sub".into(),
            oauth_clock_skew: Duration::from_secs(30),
            authorizer: AuthorizerKind::None,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
            auth_failure_ban_threshold: 20,
            ssl_principal_mapping_rules: "DEFAULT".into(),
        }
    }
}

impl SecurityConfig {
    /// The mechanisms enabled on listener `name`.
    pub fn mechanisms_for(&self, name: &str) -> &[String] {
        self.sasl_mechanisms
            .iter()
            .find(|(listener, _)| listener.as_deref() == Some(name))
            .or_else(|| self.sasl_mechanisms.iter().find(|(l, _)| l.is_none()))
            .map_or(&[], |(_, m)| m.as_slice())
    }
}

/// `PLAIN,SCRAM-SHA-512` (every SASL listener) or groups separated by
/// `;`, each optionally `LISTENER=` first: `SCRAM-SHA-512;EXTERNAL=PLAIN`.
pub(super) fn parse_mechanisms(text: &str) -> Result<MechanismsByListener, String> {
    let mut groups = Vec::new();
    for group in text.split(';').map(str::trim).filter(|g| !g.is_empty()) {
        let (listener, list) = match group.split_once('=') {
            Some((name, list)) => (Some(name.trim().to_ascii_uppercase()), list),
            None => (None, group),
        };
        let mut mechanisms = Vec::new();
        for name in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if !SASL_MECHANISMS.contains(&name) {
                return Err(format!(
                    "{name}: unknown SASL mechanism (this build has: {})",
                    SASL_MECHANISMS.join(", ")
                ));
            }
            if !mechanisms.iter().any(|m| m == name) {
                mechanisms.push(name.to_string());
            }
        }
        if mechanisms.is_empty() {
            return Err(format!("{group}: no mechanisms"));
        }
        if groups.iter().any(|(l, _)| *l == listener) {
            return Err(format!("{group}: listener given twice"));
        }
        groups.push((listener, mechanisms));
    }
    Ok(groups)
}

pub(super) fn show_mechanisms(groups: &[(Option<String>, Vec<String>)]) -> String {
    groups
        .iter()
        .map(|(listener, list)| match listener {
            Some(name) => format!("{name}={}", list.join(",")),
            None => list.join(","),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// `name:password,...`; a password may hold `:` but not `,`.
pub(super) fn parse_users(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut users: Vec<(String, String)> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, password) = entry
            .split_once(':')
            .ok_or("expected name:password (the entry is not shown: it holds a password)")?;
        if name.is_empty() || password.is_empty() {
            return Err("a user needs a name and a password".into());
        }
        if users.iter().any(|(n, _)| n == name) {
            return Err(format!("user {name} given twice"));
        }
        users.push((name.to_string(), password.to_string()));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_per_listener() {
        let groups = parse_mechanisms("SCRAM-SHA-512; external=PLAIN,SCRAM-SHA-256").unwrap();
        let config = SecurityConfig {
            sasl_mechanisms: groups.clone(),
            ..SecurityConfig::default()
        };
        assert_eq!(config.mechanisms_for("INTERNAL"), ["SCRAM-SHA-512".to_string()]);
        assert_eq!(config.mechanisms_for("EXTERNAL").len(), 2);
        assert_eq!(
            show_mechanisms(&groups),
            "SCRAM-SHA-512;EXTERNAL=PLAIN,SCRAM-SHA-256"
        );
        assert!(parse_mechanisms("GSSAPI").unwrap_err().contains("GSSAPI"));
        assert!(parse_mechanisms("A=PLAIN;A=PLAIN").is_err());
    }

    #[test]
    fn bootstrap_users_never_echo_a_password() {
        assert_eq!(
            parse_users("admin:s3:cret, app:pw").unwrap(),
            vec![("admin".into(), "s3:cret".into()), ("app".into(), "pw".into())]
        );
        let err = parse_users("adminsecret").unwrap_err();
        assert!(!err.contains("adminsecret"));
        assert!(parse_users("a:x,a:y").is_err());
    }
}

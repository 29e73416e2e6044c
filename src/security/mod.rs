//! Who a client is: SASL mechanisms (PLAIN, SCRAM, OAUTHBEARER), the
//! credentials they check against, and the broker-wide services every
//! shard shares for them.

pub(crate) mod acl;
pub(crate) mod credentials;
pub(crate) mod oauth;
pub(crate) mod principal_mapping;
pub(crate) mod quotas;
pub(crate) mod sasl;
pub(crate) mod scram;

use crate::config::security::AuthorizerKind;
use crate::config::{ConfigError, ServerConfig};
use crate::server::authorize::{AclAuthorizer, AllowAll, Authorizer};
use acl::AclStore;
use credentials::CredentialStore;
use oauth::OAuthValidator;
use sasl::SaslMechanism;
use std::rc::Rc;
use std::sync::Arc;

/// Authentication state shared by every shard: read lock-free, changed
/// on the controller shard.
pub(crate) struct SecurityServices {
    pub credentials: Arc<CredentialStore>,
    pub oauth: OAuthValidator,
    /// Per listener (configured order): the SASL mechanisms it offers,
    /// empty for a listener without SASL.
    pub mechanisms: Vec<Vec<SaslMechanism>>,
    /// CONNECTIONS_MAX_REAUTH_MS; 0 = unbounded.
    pub max_reauth_ms: i64,
    pub acls: Arc<AclStore>,
    pub quotas: Arc<quotas::QuotaStore>,
    /// SSL_PRINCIPAL_MAPPING_RULES.
    pub principal_mapper: principal_mapping::PrincipalMapper,
    /// AUTHORIZER=acl: with SUPER_USERS and ALLOW_EVERYONE_IF_NO_ACL_FOUND.
    acl_authorizer: Option<(Arc<[String]>, bool)>,
}

impl SecurityServices {
    /// Blocking (start-up): reads the JWKS file, loads the credentials and
    /// creates the bootstrap users.
    pub(crate) fn open(
        config: &ServerConfig,
        store: Arc<dyn crate::metadata::MetadataStore>,
    ) -> Result<SecurityServices, ConfigError> {
        let security = &config.security;
        let oauth_error = |message: String| ConfigError {
            setting: "SASL_OAUTHBEARER_JWKS_FILE".into(),
            message,
        };
        let mut oauth = match &security.oauth_jwks_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| oauth_error(format!("cannot read {}: {e}", path.display())))?;
                OAuthValidator::with_jwks(&text)
                    .map_err(|e| oauth_error(format!("{}: {e}", path.display())))?
            }
            None => OAuthValidator::unsecured(),
        };
        oauth.expected_issuer = security.oauth_expected_issuer.clone();
        oauth.expected_audience = security
            .oauth_expected_audience
            .iter()
            .flat_map(|a| a.split(','))
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        oauth.principal_claim = security.oauth_principal_claim.clone();
        if security.oauth_jwks_file.is_some() {
            oauth.clock_skew_ms = security.oauth_clock_skew.as_millis() as i64;
        }
        let mechanisms = config
            .listeners()
            .iter()
            .map(|l| {
                if !l.security.is_sasl() {
                    return Vec::new();
                }
                security
                    .mechanisms_for(&l.name)
                    .iter()
                    .filter_map(|m| SaslMechanism::parse(m))
                    .collect()
            })
            .collect();
        let data_error = |e: std::io::Error| ConfigError {
            setting: "STORAGE_PATH".into(),
            message: format!("SCRAM credentials: {e}"),
        };
        let acls = AclStore::open(store.clone()).map_err(|e| ConfigError {
            setting: "STORAGE_PATH".into(),
            message: format!("ACLs: {e}"),
        })?;
        let quotas =
            quotas::QuotaStore::open(store.clone(), config.shard_count()).map_err(|e| ConfigError {
                setting: "STORAGE_PATH".into(),
                message: format!("client quotas: {e}"),
            })?;
        let credentials = CredentialStore::open(store).map_err(data_error)?;
        let created = credentials
            .bootstrap(&security.bootstrap_users)
            .map_err(data_error)?;
        for user in created {
            tracing::info!(target: "chronik_audit", user = %user, "bootstrap SCRAM credentials created (SASL_BOOTSTRAP_USERS)");
        }
        Ok(SecurityServices {
            credentials: Arc::new(credentials),
            oauth,
            mechanisms,
            max_reauth_ms: security.max_reauth_ms.min(i64::MAX as u64) as i64,
            acls: Arc::new(acls),
            quotas: Arc::new(quotas),
            principal_mapper: principal_mapping::PrincipalMapper::parse(
                &security.ssl_principal_mapping_rules,
            )
            .map_err(|message| ConfigError {
                setting: "SSL_PRINCIPAL_MAPPING_RULES".into(),
                message,
            })?,
            acl_authorizer: (security.authorizer == AuthorizerKind::Acl).then(|| {
                (
                    security.super_users.clone().into(),
                    security.allow_everyone_if_no_acl_found,
                )
            }),
        })
    }

    /// Whether ACLs decide requests (AUTHORIZER=acl); without, the ACL
    /// admin APIs answer SECURITY_DISABLED as Kafka's do.
    pub(crate) fn acls_enabled(&self) -> bool {
        self.acl_authorizer.is_some()
    }

    /// The authorizer a shard's connections use.
    pub(crate) fn shard_authorizer(&self) -> Rc<dyn Authorizer> {
        match &self.acl_authorizer {
            None => Rc::new(AllowAll),
            Some((super_users, allow_if_no_acl)) => Rc::new(AclAuthorizer {
                acls: self.acls.clone(),
                super_users: super_users.clone(),
                allow_if_no_acl: *allow_if_no_acl,
            }),
        }
    }
}

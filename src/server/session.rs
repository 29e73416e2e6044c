//! Who is at the other end of a connection and how far they have proved
//! it: the session every request of the connection is handled in.
//!
//! Kafka keeps the same per connection: the listener and its security
//! protocol, the authenticated principal (`KafkaPrincipal`, built from the
//! TLS client certificate or a SASL exchange, `User:ANONYMOUS` otherwise),
//! and the authentication state that decides which requests may be sent
//! before authentication completes.

use super::authorize::{self, AclOperation, Authorizer, LogDenial, Resource};
use crate::config::SecurityProtocol;
use crate::security::sasl::{SaslMechanism, SaslServer};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// A principal as Kafka writes it: `User:alice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaPrincipal {
    pub principal_type: &'static str,
    pub name: String,
}

impl KafkaPrincipal {
    pub(crate) const USER_TYPE: &'static str = "User";

    pub(crate) fn user(name: impl Into<String>) -> KafkaPrincipal {
        KafkaPrincipal {
            principal_type: Self::USER_TYPE,
            name: name.into(),
        }
    }

    /// Kafka's principal for a client that proved nothing.
    pub(crate) fn anonymous() -> KafkaPrincipal {
        Self::user("ANONYMOUS")
    }

    /// What Kafka's default principal builder makes of a connection: on
    /// SSL with a verified client certificate, `User:` and its subject in
    /// RFC 4514 form (see `tls::identity`); otherwise (plaintext, or SSL
    /// without a client certificate) `User:ANONYMOUS`.
    pub(crate) fn of_certificate(subject: Option<&str>) -> KafkaPrincipal {
        match subject {
            Some(subject) if !subject.is_empty() => Self::user(subject),
            _ => Self::anonymous(),
        }
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// How far the client has authenticated. Plaintext and SSL listeners
/// authenticate before the first request (the TLS handshake, or nothing),
/// so their connections start `Authenticated`; SASL listeners start in
/// `AwaitingSaslHandshake` and move on as the exchange goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthState {
    Authenticated,
    /// Before SaslHandshake: only ApiVersions and SaslHandshake are served.
    AwaitingSaslHandshake,
    /// Between SaslHandshake v1 and a successful SaslAuthenticate (or
    /// during re-authentication): only SaslAuthenticate is served.
    AwaitingSaslAuthenticate,
    /// After SaslHandshake v0: the next frames are bare SASL tokens, no
    /// Kafka header (the exchange clients before KIP-152 use).
    AwaitingSaslToken,
}

impl AuthState {
    /// Whether a request of `api` may be served in this state. Kafka's
    /// SaslServerAuthenticator closes the connection on anything else
    /// ("Unexpected Kafka request of type ... during SASL handshake").
    pub(crate) fn allows(self, api: ApiKey) -> bool {
        match self {
            AuthState::Authenticated => true,
            AuthState::AwaitingSaslHandshake => {
                matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake)
            }
            AuthState::AwaitingSaslAuthenticate => api == ApiKey::SaslAuthenticate,
            // Frames are not requests in this state (see connection.rs).
            AuthState::AwaitingSaslToken => false,
        }
    }
}

/// One connection's session, shared by every request read from it.
pub(crate) struct Session {
    /// Index into the broker's configured listeners.
    pub listener: usize,
    /// The listener's name (its protocol's, or a mapped name).
    pub listener_name: Rc<str>,
    pub security: SecurityProtocol,
    /// Set once (TLS identity at accept, or SASL's user on success): a
    /// re-authentication must keep it.
    principal: RefCell<Rc<KafkaPrincipal>>,
    pub peer: SocketAddr,
    /// The local address the client reached us at.
    pub local_addr: SocketAddr,
    auth: Cell<AuthState>,
    authorizer: Rc<dyn Authorizer>,
    /// Whether the connection's span has the client id yet (recorded once).
    pub(super) client_id_recorded: Cell<bool>,
    /// The SASL exchange in progress, and the mechanism it uses.
    pub(crate) sasl: RefCell<Option<SaslServer>>,
    pub(crate) mechanism: Cell<Option<SaslMechanism>>,
    /// When the SASL session ends (ms since the epoch), if it does: past
    /// it every request but SaslHandshake closes the connection (KIP-368).
    pub(crate) expires_at_ms: Cell<Option<i64>>,
    /// When the last (re-)authentication began: Kafka allows one per second.
    pub(crate) auth_started: Cell<Option<Instant>>,
    /// The connection closes once the answer in flight is written (a
    /// failed authentication).
    closing: Cell<bool>,
    /// The authorizer's decisions for this principal.
    pub(super) decisions: RefCell<authorize::DecisionCache>,
    /// Quotas resolved for this session, by quota key.
    pub(super) quotas: RefCell<std::collections::HashMap<&'static str, super::throttle::ResolvedQuota>>,
    /// Until when reading requests waits: a quota's throttle (KIP-219).
    muted_until: Cell<Option<Instant>>,
    /// Whether a quota has applied to this session: its requests are then
    /// started one at a time, each recorded before the next is read.
    pub(crate) quota_applies: Cell<bool>,
}

impl Session {
    pub(crate) fn new(
        listener: usize,
        listener_name: Rc<str>,
        security: SecurityProtocol,
        principal: KafkaPrincipal,
        peer: SocketAddr,
        local_addr: SocketAddr,
        authorizer: Rc<dyn Authorizer>,
    ) -> Session {
        let auth = if security.is_sasl() {
            AuthState::AwaitingSaslHandshake
        } else {
            AuthState::Authenticated
        };
        Session {
            listener,
            listener_name,
            security,
            principal: RefCell::new(Rc::new(principal)),
            peer,
            local_addr,
            auth: Cell::new(auth),
            authorizer,
            client_id_recorded: Cell::new(false),
            sasl: RefCell::new(None),
            mechanism: Cell::new(None),
            expires_at_ms: Cell::new(None),
            auth_started: Cell::new(None),
            closing: Cell::new(false),
            decisions: RefCell::default(),
            quotas: RefCell::default(),
            muted_until: Cell::new(None),
            quota_applies: Cell::new(false),
        }
    }

    /// Reads no more requests for `throttle` from now (a quota's throttle).
    pub(crate) fn mute_for(&self, throttle: std::time::Duration) {
        if throttle.is_zero() {
            return;
        }
        let until = Instant::now() + throttle;
        if self.muted_until.get().is_none_or(|at| at < until) {
            self.muted_until.set(Some(until));
        }
    }

    /// Until when reading waits, if it must.
    pub(crate) fn muted_until(&self) -> Option<Instant> {
        self.muted_until.get().filter(|at| *at > Instant::now())
    }

    pub(crate) fn principal(&self) -> Rc<KafkaPrincipal> {
        self.principal.borrow().clone()
    }

    pub(crate) fn set_principal(&self, principal: KafkaPrincipal) {
        *self.principal.borrow_mut() = Rc::new(principal);
        self.decisions.borrow_mut().clear();
        self.quotas.borrow_mut().clear();
    }

    pub(crate) fn auth_state(&self) -> AuthState {
        self.auth.get()
    }

    pub(crate) fn set_auth_state(&self, state: AuthState) {
        self.auth.set(state);
    }

    /// Closes the connection once the answer being prepared is written.
    pub(crate) fn close_after_reply(&self) {
        self.closing.set(true);
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing.get()
    }

    /// Whether the SASL session has ended (`now_ms` since the epoch).
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.get().is_some_and(|at| now_ms >= at)
    }

    /// May this connection's principal perform `operation` on `resource`?
    /// `Err` carries the error Kafka answers for the resource's type
    /// (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, ...).
    pub(crate) fn authorize(
        &self,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> Result<(), ResponseError> {
        authorize::check(self, &*self.authorizer, operation, resource, LogDenial::Yes)
    }

    /// Kafka's authorizeByResourceType: may the principal perform
    /// `operation` on some resource of `resource_type` (not logged)?
    pub(crate) fn may_any(&self, operation: AclOperation, resource_type: i8) -> bool {
        self.authorizer.authorize_any(self, operation, resource_type)
    }

    /// The same question, asked only to filter or report (a denial is not
    /// logged): Kafka's `logIfDenied = false` checks.
    pub(crate) fn may(&self, operation: AclOperation, resource: Resource<'_>) -> bool {
        authorize::check(self, &*self.authorizer, operation, resource, LogDenial::No).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn principals_are_written_as_kafka_writes_them() {
        assert_eq!(KafkaPrincipal::of_certificate(None).to_string(), "User:ANONYMOUS");
        assert_eq!(
            KafkaPrincipal::of_certificate(Some("")).to_string(),
            "User:ANONYMOUS"
        );
        let certified = KafkaPrincipal::of_certificate(Some("CN=client,O=Example"));
        assert_eq!(certified.to_string(), "User:CN=client,O=Example");
        assert_eq!(certified.principal_type, "User");
        assert_eq!(certified.name, "CN=client,O=Example");
    }

    #[test]
    fn a_session_names_its_listener_and_starts_authenticated() {
        let session = Session::new(
            1,
            "SSL".into(),
            SecurityProtocol::Ssl,
            KafkaPrincipal::of_certificate(Some("CN=app")),
            addr(40000),
            addr(9093),
            Rc::new(authorize::AllowAll),
        );
        assert_eq!(&*session.listener_name, "SSL");
        assert_eq!(session.auth_state(), AuthState::Authenticated);
        assert_eq!(session.principal().to_string(), "User:CN=app");
        assert!(session
            .authorize(AclOperation::Write, Resource::Topic("t"))
            .is_ok());
        let sasl = Session::new(
            2,
            "INTERNAL".into(),
            SecurityProtocol::SaslPlaintext,
            KafkaPrincipal::anonymous(),
            addr(40001),
            addr(9094),
            Rc::new(authorize::AllowAll),
        );
        // A SASL listener starts awaiting the handshake: dispatch then
        // serves only the exchange (it asks `allows` for every request).
        assert_eq!(sasl.auth_state(), AuthState::AwaitingSaslHandshake);
        assert!(!sasl.auth_state().allows(ApiKey::Produce));
    }

    #[test]
    fn before_authentication_only_the_sasl_exchange_is_served() {
        let all = [
            ApiKey::ApiVersions,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate,
            ApiKey::Produce,
            ApiKey::Metadata,
        ];
        let allowed =
            |state: AuthState| -> Vec<ApiKey> { all.into_iter().filter(|a| state.allows(*a)).collect() };
        assert_eq!(allowed(AuthState::Authenticated), all.to_vec());
        assert_eq!(
            allowed(AuthState::AwaitingSaslHandshake),
            vec![ApiKey::ApiVersions, ApiKey::SaslHandshake]
        );
        assert_eq!(
            allowed(AuthState::AwaitingSaslAuthenticate),
            vec![ApiKey::SaslAuthenticate]
        );
    }
}

//! The one place a request asks whether its principal may do something:
//! `request.authorize(operation, resource)`, called where Kafka's handlers
//! authorize (Produce WRITE on each topic, Fetch READ, JoinGroup READ on
//! the group, ...). With AUTHORIZER=none everything is allowed, as Kafka
//! does without `authorizer.class.name`; with AUTHORIZER=acl Kafka's ACLs
//! decide, each decision cached in the session until the ACLs change, so
//! produce and fetch pay a hash lookup. A denial maps to the error Kafka
//! answers for the resource's type.

use super::session::Session;
use crate::security::acl::{code, AclStore, Requester, CLUSTER_NAME};
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tracing::info;

/// Kafka's AclOperation, with its wire codes (the bit positions of the
/// `authorized_operations` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum AclOperation {
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
}

impl AclOperation {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// What an operation is performed on (Kafka's ResourcePattern, literal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
    TransactionalId(&'a str),
}

impl Resource<'_> {
    /// Kafka's ResourceType code.
    pub(crate) fn type_code(&self) -> i8 {
        match self {
            Resource::Topic(_) => code::TOPIC,
            Resource::Group(_) => code::GROUP,
            Resource::Cluster => code::CLUSTER,
            Resource::TransactionalId(_) => code::TRANSACTIONAL_ID,
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Resource::Topic(name) | Resource::Group(name) | Resource::TransactionalId(name) => name,
            Resource::Cluster => CLUSTER_NAME,
        }
    }

    /// The error Kafka answers when an operation on this resource is
    /// denied.
    pub(crate) fn denied_error(&self) -> ResponseError {
        match self {
            Resource::Topic(_) => ResponseError::TopicAuthorizationFailed,
            Resource::Group(_) => ResponseError::GroupAuthorizationFailed,
            Resource::Cluster => ResponseError::ClusterAuthorizationFailed,
            Resource::TransactionalId(_) => ResponseError::TransactionalIdAuthorizationFailed,
        }
    }
}

impl fmt::Display for Resource<'_> {
    /// As Kafka's authorizer log writes a resource: `Topic:LITERAL:orders`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(name) => write!(f, "Topic:LITERAL:{name}"),
            Resource::Group(name) => write!(f, "Group:LITERAL:{name}"),
            Resource::Cluster => write!(f, "Cluster:LITERAL:kafka-cluster"),
            Resource::TransactionalId(name) => write!(f, "TransactionalId:LITERAL:{name}"),
        }
    }
}

/// Decides whether a session may perform an operation on a resource.
pub(crate) trait Authorizer {
    fn authorize(&self, session: &Session, operation: AclOperation, resource: &Resource<'_>) -> bool;

    /// Kafka's authorizeByResourceType: may the session perform
    /// `operation` on at least one resource of `resource_type`?
    fn authorize_any(&self, session: &Session, operation: AclOperation, resource_type: i8) -> bool;

    /// The version of what decisions depend on: a session keeps its
    /// decisions while it stays the same. `None`: nothing to cache.
    fn version(&self) -> Option<u64> {
        None
    }
}

/// AUTHORIZER=none: everything is allowed.
pub(crate) struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &Session, _: AclOperation, _: &Resource<'_>) -> bool {
        true
    }

    fn authorize_any(&self, _: &Session, _: AclOperation, _: i8) -> bool {
        true
    }
}

/// AUTHORIZER=acl: Kafka's StandardAuthorizer over the broker's ACLs.
pub(crate) struct AclAuthorizer {
    pub acls: Arc<AclStore>,
    /// SUPER_USERS, as `Type:name`.
    pub super_users: Arc<[String]>,
    pub allow_if_no_acl: bool,
}

impl AclAuthorizer {
    fn decide(&self, session: &Session, ask: impl FnOnce(&Requester<'_>) -> bool) -> bool {
        let principal = session.principal().to_string();
        if self.super_users.contains(&principal) {
            return true;
        }
        ask(&Requester {
            principal: &principal,
            host: session.peer.ip(),
        })
    }
}

impl Authorizer for AclAuthorizer {
    fn authorize(&self, session: &Session, operation: AclOperation, resource: &Resource<'_>) -> bool {
        let acls = self.acls.snapshot();
        self.decide(session, |who| {
            acls.allows(
                who,
                operation.code() as i8,
                resource.type_code(),
                resource.name(),
                self.allow_if_no_acl,
            )
        })
    }

    fn authorize_any(&self, session: &Session, operation: AclOperation, resource_type: i8) -> bool {
        let acls = self.acls.snapshot();
        self.decide(session, |who| {
            acls.allows_any(who, operation.code() as i8, resource_type, self.allow_if_no_acl)
        })
    }

    fn version(&self) -> Option<u64> {
        Some(self.acls.version())
    }
}

/// A session's decisions for one version of the ACLs, by (operation,
/// resource type) and resource name: looked up without allocating.
#[derive(Default)]
pub(crate) struct DecisionCache {
    version: u64,
    decisions: HashMap<(u8, i8), HashMap<Box<str>, bool>>,
    entries: usize,
}

/// A session that names more resources than this starts over, so one
/// connection cannot grow its cache without bound.
const MAX_CACHED_DECISIONS: usize = 10_000;

impl DecisionCache {
    fn get(&self, version: u64, operation: AclOperation, resource: &Resource<'_>) -> Option<bool> {
        if self.version != version {
            return None;
        }
        self.decisions
            .get(&(operation.code(), resource.type_code()))?
            .get(resource.name())
            .copied()
    }

    fn put(&mut self, version: u64, operation: AclOperation, resource: &Resource<'_>, allowed: bool) {
        if self.version != version || self.entries >= MAX_CACHED_DECISIONS {
            self.decisions.clear();
            self.entries = 0;
            self.version = version;
        }
        self.decisions
            .entry((operation.code(), resource.type_code()))
            .or_default()
            .insert(resource.name().into(), allowed);
        self.entries += 1;
    }

    /// The principal changed (SASL completed): nothing cached holds.
    pub(crate) fn clear(&mut self) {
        self.decisions.clear();
        self.entries = 0;
    }
}

/// Whether a denial is logged: yes for an operation the request performs;
/// no where Kafka only asks to filter or report (a listing filtered to
/// what may be described, `authorized_operations` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogDenial {
    Yes,
    No,
}

/// Asks `authorizer`; a denial is logged if `log` says so (who, what, from
/// where, on what, like Kafka's authorizer log) and mapped to the
/// resource's error.
pub(crate) fn check(
    session: &Session,
    authorizer: &dyn Authorizer,
    operation: AclOperation,
    resource: Resource<'_>,
    log: LogDenial,
) -> Result<(), ResponseError> {
    let allowed = match authorizer.version() {
        None => authorizer.authorize(session, operation, &resource),
        Some(version) => {
            let cached = session.decisions.borrow().get(version, operation, &resource);
            cached.unwrap_or_else(|| {
                let allowed = authorizer.authorize(session, operation, &resource);
                session
                    .decisions
                    .borrow_mut()
                    .put(version, operation, &resource, allowed);
                allowed
            })
        }
    };
    if allowed {
        return Ok(());
    }
    if log == LogDenial::No {
        return Err(resource.denied_error());
    }
    info!(
        target: "chronik_authorizer",
        principal = %session.principal(),
        operation = ?operation,
        host = %session.peer.ip(),
        listener = &*session.listener_name,
        security_protocol = session.security.name(),
        resource = %resource,
        "denied"
    );
    Err(resource.denied_error())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::SecurityProtocol;
    use crate::server::session::KafkaPrincipal;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Denies one operation, allows the rest, and records what was asked.
    pub(crate) struct DenyOne {
        pub denied: AclOperation,
        pub asked: RefCell<Vec<(AclOperation, String)>>,
    }

    impl Authorizer for DenyOne {
        fn authorize(&self, _: &Session, operation: AclOperation, resource: &Resource<'_>) -> bool {
            self.asked.borrow_mut().push((operation, resource.to_string()));
            operation != self.denied
        }

        fn authorize_any(&self, _: &Session, operation: AclOperation, _: i8) -> bool {
            operation != self.denied
        }
    }

    fn session_with(authorizer: Rc<dyn Authorizer>) -> Session {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9092));
        Session::new(
            0,
            "PLAINTEXT".into(),
            SecurityProtocol::Plaintext,
            KafkaPrincipal::anonymous(),
            addr,
            addr,
            authorizer,
        )
    }

    #[test]
    fn denials_map_to_the_resource_types_error() {
        let cases = [
            (Resource::Topic("t"), ResponseError::TopicAuthorizationFailed, 29),
            (Resource::Group("g"), ResponseError::GroupAuthorizationFailed, 30),
            (Resource::Cluster, ResponseError::ClusterAuthorizationFailed, 31),
            (
                Resource::TransactionalId("x"),
                ResponseError::TransactionalIdAuthorizationFailed,
                53,
            ),
        ];
        for (resource, error, code) in cases {
            assert_eq!(resource.denied_error(), error);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn the_session_asks_its_authorizer_and_maps_a_denial() {
        let deny = Rc::new(DenyOne {
            denied: AclOperation::Write,
            asked: RefCell::default(),
        });
        let session = session_with(deny.clone());
        assert_eq!(
            session.authorize(AclOperation::Write, Resource::Topic("orders")),
            Err(ResponseError::TopicAuthorizationFailed)
        );
        assert_eq!(
            session.authorize(AclOperation::Read, Resource::Group("g")),
            Ok(())
        );
        assert_eq!(
            deny.asked.borrow().as_slice(),
            &[
                (AclOperation::Write, "Topic:LITERAL:orders".to_string()),
                (AclOperation::Read, "Group:LITERAL:g".to_string()),
            ]
        );
        let open = session_with(Rc::new(AllowAll));
        assert_eq!(open.authorize(AclOperation::Alter, Resource::Cluster), Ok(()));
    }

    #[test]
    fn operation_codes_are_kafkas() {
        assert_eq!(AclOperation::Read.code(), 3);
        assert_eq!(AclOperation::IdempotentWrite.code(), 12);
    }
}

//! The one place a request asks whether its principal may do something:
//! `request.authorize(operation, resource)`, called where Kafka's handlers
//! authorize (Produce WRITE on each topic, Fetch READ, JoinGroup READ on
//! the group, ...). There is no ACL store yet, so the authorizer allows
//! everything, as Kafka does without `authorizer.class.name`; a denial
//! maps to the error Kafka answers for the resource's type.

use super::session::Session;
use kafka_protocol::ResponseError;
use std::fmt;
use std::rc::Rc;
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
}

/// The authorizer while there are no ACLs: everything is allowed.
pub(crate) struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &Session, _: AclOperation, _: &Resource<'_>) -> bool {
        true
    }
}

thread_local! {
    /// This shard's authorizer. Held here until the broker's shard services
    /// own one (configured from ACLs); connections take it at accept.
    static SHARD_AUTHORIZER: Rc<dyn Authorizer> = Rc::new(AllowAll);
}

/// The authorizer new connections on this shard check requests against.
pub(crate) fn shard_authorizer() -> Rc<dyn Authorizer> {
    SHARD_AUTHORIZER.with(Rc::clone)
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
    if authorizer.authorize(session, operation, &resource) {
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

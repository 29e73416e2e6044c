//! Kafka's ACLs: the bindings CreateAcls/DescribeAcls/DeleteAcls manage,
//! their filters, and the decision Kafka's StandardAuthorizer makes from
//! them. Kept as one metadata document, `acls.json`; every shard reads a
//! snapshot, changes happen on the controller shard one at a time and
//! bump the snapshot's version (sessions drop cached decisions on it).

use crate::metadata::{documents, MetadataStore};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

/// Wire codes (Kafka's ResourceType, PatternType, AclOperation,
/// AclPermissionType).
pub(crate) mod code {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const USER: i8 = 7;

    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;

    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const DESCRIBE_TOKENS: i8 = 14;

    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The cluster resource's only name.
pub(crate) const CLUSTER_NAME: &str = "kafka-cluster";
const WILDCARD: &str = "*";
const WILDCARD_PRINCIPAL: &str = "User:*";

/// One ACL: who may (or may not) do what to which resources, from where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

impl AclBinding {
    /// Kafka's CreateAcls checks; `Err` is answered INVALID_REQUEST.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(code::TOPIC..=code::USER).contains(&self.resource_type) {
            return Err(format!("invalid resource type {}", self.resource_type));
        }
        if !matches!(self.pattern_type, code::LITERAL | code::PREFIXED) {
            return Err(format!(
                "invalid pattern type {} (LITERAL or PREFIXED)",
                self.pattern_type
            ));
        }
        if !(code::ALL..=code::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(format!("invalid operation {}", self.operation));
        }
        if !matches!(self.permission, code::DENY | code::ALLOW) {
            return Err(format!("invalid permission type {}", self.permission));
        }
        if self.resource_name.is_empty() {
            return Err("resource name must not be empty".into());
        }
        if self.resource_type == code::CLUSTER && self.resource_name != CLUSTER_NAME {
            return Err(format!("the cluster resource is named {CLUSTER_NAME}"));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Err(format!("principal {:?} is not Type:name", self.principal)),
        }
        if self.host.is_empty() {
            return Err("host must not be empty (* for any)".into());
        }
        Ok(())
    }

    fn host_matches(&self, peer: IpAddr) -> bool {
        // Java writes IPv6 in full (0:0:0:0:0:0:0:1), Rust compressed
        // (::1): compare addresses, not their spellings.
        self.host == WILDCARD || self.host.parse::<IpAddr>().is_ok_and(|h| h == peer)
    }

    fn principal_matches(&self, principal: &str) -> bool {
        self.principal == principal || self.principal == WILDCARD_PRINCIPAL
    }
}

/// A DescribeAcls/DeleteAcls filter (`None` = any).
#[derive(Debug, Clone)]
pub(crate) struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// An UNKNOWN (0) or out-of-range code anywhere is INVALID_REQUEST.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let ok = (code::ANY..=code::USER).contains(&self.resource_type)
            && (code::ANY..=code::PREFIXED).contains(&self.pattern_type)
            && (code::ANY..=code::DESCRIBE_TOKENS).contains(&self.operation)
            && (code::ANY..=code::ALLOW).contains(&self.permission);
        if ok {
            Ok(())
        } else {
            Err("the filter holds an unknown resource type, pattern type, operation or permission".into())
        }
    }

    pub(crate) fn matches(&self, b: &AclBinding) -> bool {
        let resource_type = self.resource_type == code::ANY || self.resource_type == b.resource_type;
        let name = match (self.pattern_type, &self.resource_name) {
            (code::MATCH, Some(name)) => match b.pattern_type {
                code::LITERAL => b.resource_name == *name || b.resource_name == WILDCARD,
                code::PREFIXED => name.starts_with(&b.resource_name),
                _ => false,
            },
            (code::MATCH | code::ANY, None) => true,
            (code::ANY, Some(name)) => b.resource_name == *name,
            (pattern, name) => {
                b.pattern_type == pattern && name.as_ref().is_none_or(|n| b.resource_name == *n)
            }
        };
        let principal = self.principal.as_ref().is_none_or(|p| *p == b.principal);
        let host = self.host.as_ref().is_none_or(|h| *h == b.host);
        let operation = self.operation == code::ANY || self.operation == b.operation;
        let permission = self.permission == code::ANY || self.permission == b.permission;
        resource_type && name && principal && host && operation && permission
    }
}

/// Who asks, from where.
pub(crate) struct Requester<'a> {
    pub principal: &'a str,
    pub host: IpAddr,
}

/// One version of every ACL, indexed for decisions.
#[derive(Debug, Default)]
pub(crate) struct AclSnapshot {
    pub version: u64,
    pub bindings: Vec<AclBinding>,
    /// Per resource type: literal names -> binding indices, and the
    /// prefixed bindings.
    literal: HashMap<i8, HashMap<String, Vec<usize>>>,
    prefixed: HashMap<i8, Vec<usize>>,
}

impl AclSnapshot {
    fn new(version: u64, bindings: Vec<AclBinding>) -> AclSnapshot {
        let mut literal: HashMap<i8, HashMap<String, Vec<usize>>> = HashMap::new();
        let mut prefixed: HashMap<i8, Vec<usize>> = HashMap::new();
        for (i, b) in bindings.iter().enumerate() {
            match b.pattern_type {
                code::PREFIXED => prefixed.entry(b.resource_type).or_default().push(i),
                _ => literal
                    .entry(b.resource_type)
                    .or_default()
                    .entry(b.resource_name.clone())
                    .or_default()
                    .push(i),
            }
        }
        AclSnapshot {
            version,
            bindings,
            literal,
            prefixed,
        }
    }

    /// The ACLs that apply to resource `(resource_type, name)`.
    fn candidates<'a>(
        &'a self,
        resource_type: i8,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let names = self.literal.get(&resource_type);
        let literal = move |n: &str| names.and_then(|m| m.get(n)).into_iter().flatten();
        let prefixed = self
            .prefixed
            .get(&resource_type)
            .into_iter()
            .flatten()
            .filter(move |i| name.starts_with(&self.bindings[**i].resource_name));
        literal(name)
            .chain(literal(WILDCARD))
            .chain(prefixed)
            .map(|i| &self.bindings[*i])
    }

    /// StandardAuthorizer's decision for one operation on one resource
    /// (super users are decided before this).
    pub(crate) fn allows(
        &self,
        who: &Requester<'_>,
        operation: i8,
        resource_type: i8,
        name: &str,
        allow_if_no_acl: bool,
    ) -> bool {
        let mut any = false;
        let mut allowed = false;
        for b in self.candidates(resource_type, name) {
            any = true;
            if !b.principal_matches(who.principal) || !b.host_matches(who.host) {
                continue;
            }
            if b.permission == code::DENY {
                // A DENY matches only its own operation (or ALL): a DENY
                // READ does not deny DESCRIBE.
                if b.operation == code::ALL || b.operation == operation {
                    return false;
                }
            } else if b.operation == code::ALL || b.operation == operation || implies(b.operation, operation)
            {
                allowed = true;
            }
        }
        if !any {
            return allow_if_no_acl;
        }
        allowed
    }

    /// Kafka's authorizeByResourceType: may the requester perform
    /// `operation` on at least one resource of the type (InitProducerId
    /// without a transactional id asks it for WRITE on topics)?
    pub(crate) fn allows_any(
        &self,
        who: &Requester<'_>,
        operation: i8,
        resource_type: i8,
        allow_if_no_acl: bool,
    ) -> bool {
        // Kafka's first question: would a resource no ACL names be
        // allowed (ALLOW_EVERYONE_IF_NO_ACL_FOUND), or does a wildcard
        // binding allow it?
        if self.allows(who, operation, resource_type, "hardcode", allow_if_no_acl) {
            return true;
        }
        let applies = |b: &&AclBinding| {
            b.resource_type == resource_type
                && b.principal_matches(who.principal)
                && b.host_matches(who.host)
                && (b.operation == operation || b.operation == code::ALL)
        };
        let mut deny_literal = Vec::new();
        let mut deny_prefix = Vec::new();
        let mut allow_literal = Vec::new();
        let mut allow_prefix = Vec::new();
        for b in self.bindings.iter().filter(applies) {
            let name = b.resource_name.as_str();
            match (b.permission, b.pattern_type) {
                (code::DENY, code::LITERAL) if name == WILDCARD => return false,
                (code::DENY, code::LITERAL) => deny_literal.push(name),
                (code::DENY, _) => deny_prefix.push(name),
                (_, code::LITERAL) if name == WILDCARD => return true,
                (_, code::LITERAL) => allow_literal.push(name),
                _ => allow_prefix.push(name),
            }
        }
        let denied_by_prefix = |name: &str| deny_prefix.iter().any(|p| name.starts_with(p));
        allow_literal
            .iter()
            .any(|l| !deny_literal.contains(l) && !denied_by_prefix(l))
            || allow_prefix.iter().any(|a| !denied_by_prefix(a))
    }
}

/// Kafka's implied operations: DESCRIBE by READ, WRITE, DELETE and ALTER;
/// DESCRIBE_CONFIGS by ALTER_CONFIGS (for ALLOW bindings only).
fn implies(granted: i8, asked: i8) -> bool {
    match asked {
        code::DESCRIBE => matches!(granted, code::READ | code::WRITE | code::DELETE | code::ALTER),
        code::DESCRIBE_CONFIGS => granted == code::ALTER_CONFIGS,
        _ => false,
    }
}

/// The persisted ACLs.
pub(crate) struct AclStore {
    store: Arc<dyn MetadataStore>,
    current: ArcSwap<AclSnapshot>,
}

/// Per creation: `Err` = (INVALID_REQUEST or storage error, message).
pub(crate) type CreationOutcome = Result<(), (kafka_protocol::ResponseError, String)>;
/// Per filter: the bindings it deleted.
pub(crate) type DeletionOutcome = Result<Vec<AclBinding>, (kafka_protocol::ResponseError, String)>;

impl AclStore {
    /// Blocking (start-up).
    pub(crate) fn open(store: Arc<dyn MetadataStore>) -> io::Result<AclStore> {
        let bindings: Vec<AclBinding> = store.get_json(documents::ACLS)?.unwrap_or_default();
        Ok(AclStore {
            store,
            current: ArcSwap::from_pointee(AclSnapshot::new(1, bindings)),
        })
    }

    pub(crate) fn snapshot(&self) -> Arc<AclSnapshot> {
        self.current.load_full()
    }

    /// Bumped by every change.
    pub(crate) fn version(&self) -> u64 {
        self.current.load().version
    }

    fn publish(&self, bindings: Vec<AclBinding>) -> io::Result<()> {
        self.store.put_json(documents::ACLS, &bindings)?;
        let version = self.current.load().version + 1;
        self.current.store(Arc::new(AclSnapshot::new(version, bindings)));
        Ok(())
    }

    /// Adds the valid bindings (a duplicate changes nothing), durably.
    /// Blocking: run it off the shard thread.
    pub(crate) fn create(&self, bindings: Vec<AclBinding>) -> Vec<CreationOutcome> {
        use kafka_protocol::ResponseError;
        let mut next = self.snapshot().bindings.clone();
        let mut outcomes: Vec<CreationOutcome> = Vec::with_capacity(bindings.len());
        for binding in bindings {
            match binding.validate() {
                Ok(()) => {
                    if !next.contains(&binding) {
                        next.push(binding);
                    }
                    outcomes.push(Ok(()));
                }
                Err(message) => outcomes.push(Err((ResponseError::InvalidRequest, message))),
            }
        }
        if outcomes.iter().any(Result::is_ok) {
            if let Err(e) = self.publish(next) {
                let failed = (ResponseError::KafkaStorageError, format!("persisting ACLs: {e}"));
                for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *outcome = Err(failed.clone());
                }
            }
        }
        outcomes
    }

    /// Removes every binding each filter matches, all at once, durably.
    /// Blocking: run it off the shard thread.
    pub(crate) fn delete(&self, filters: Vec<AclFilter>) -> Vec<DeletionOutcome> {
        use kafka_protocol::ResponseError;
        let current = self.snapshot();
        let mut outcomes: Vec<DeletionOutcome> = Vec::with_capacity(filters.len());
        let mut removed = vec![false; current.bindings.len()];
        for filter in &filters {
            match filter.validate() {
                Ok(()) => {
                    let matching = current
                        .bindings
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| filter.matches(b))
                        .map(|(i, b)| {
                            removed[i] = true;
                            b.clone()
                        })
                        .collect();
                    outcomes.push(Ok(matching));
                }
                Err(message) => outcomes.push(Err((ResponseError::InvalidRequest, message))),
            }
        }
        if removed.iter().any(|r| *r) {
            let next = current
                .bindings
                .iter()
                .zip(&removed)
                .filter(|(_, r)| !**r)
                .map(|(b, _)| b.clone())
                .collect();
            if let Err(e) = self.publish(next) {
                let failed = (ResponseError::KafkaStorageError, format!("persisting ACLs: {e}"));
                for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *outcome = Err(failed.clone());
                }
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: i8, name: &str, pattern: i8, principal: &str, op: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn alice() -> Requester<'static> {
        Requester {
            principal: "User:alice",
            host: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn decisions_follow_the_standard_authorizer() {
        use code::*;
        let snapshot = AclSnapshot::new(
            1,
            vec![
                acl(TOPIC, "orders", LITERAL, "User:alice", WRITE, ALLOW),
                acl(TOPIC, "orders", LITERAL, "User:alice", READ, ALLOW),
                acl(GROUP, "app-", PREFIXED, "User:alice", READ, ALLOW),
                acl(TOPIC, "secret", LITERAL, "User:*", ALL, ALLOW),
                acl(TOPIC, "secret", LITERAL, "User:alice", READ, DENY),
            ],
        );
        let a = alice();
        assert!(snapshot.allows(&a, WRITE, TOPIC, "orders", false));
        assert!(
            snapshot.allows(&a, DESCRIBE, TOPIC, "orders", false),
            "WRITE implies DESCRIBE"
        );
        assert!(!snapshot.allows(&a, DELETE, TOPIC, "orders", false));
        assert!(
            !snapshot.allows(&a, WRITE, TOPIC, "payments", false),
            "no ACL: denied"
        );
        assert!(
            snapshot.allows(&a, WRITE, TOPIC, "payments", true),
            "no ACL, allow-everyone"
        );
        assert!(snapshot.allows(&a, READ, GROUP, "app-billing", false));
        assert!(!snapshot.allows(&a, READ, GROUP, "other", false));
        assert!(!snapshot.allows(&a, READ, TOPIC, "secret", false), "deny wins");
        assert!(
            snapshot.allows(&a, DESCRIBE, TOPIC, "secret", false),
            "DENY READ leaves DESCRIBE"
        );
        assert!(snapshot.allows_any(&a, WRITE, TOPIC, false));
        let bob = Requester {
            principal: "User:bob",
            host: "::1".parse().unwrap(),
        };
        assert!(!snapshot.allows(&bob, WRITE, TOPIC, "orders", false));
        assert!(snapshot.allows(&bob, WRITE, TOPIC, "secret", false));
    }

    #[test]
    fn hosts_compare_as_addresses() {
        let mut b = acl(
            code::TOPIC,
            "t",
            code::LITERAL,
            "User:alice",
            code::READ,
            code::ALLOW,
        );
        b.host = "0:0:0:0:0:0:0:1".into();
        assert!(b.host_matches("::1".parse().unwrap()));
        assert!(!b.host_matches("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn filters_match_as_kafkas() {
        use code::*;
        let literal = acl(TOPIC, "orders", LITERAL, "User:alice", READ, ALLOW);
        let prefixed = acl(TOPIC, "ord", PREFIXED, "User:alice", READ, ALLOW);
        let filter = |pattern: i8, name: Option<&str>| AclFilter {
            resource_type: ANY,
            resource_name: name.map(str::to_string),
            pattern_type: pattern,
            principal: None,
            host: None,
            operation: ANY,
            permission: ANY,
        };
        assert!(filter(MATCH, Some("orders")).matches(&literal));
        assert!(filter(MATCH, Some("orders")).matches(&prefixed));
        assert!(!filter(ANY, Some("orders")).matches(&prefixed));
        assert!(filter(PREFIXED, None).matches(&prefixed));
        assert!(!filter(LITERAL, Some("ord")).matches(&prefixed));
        assert!(filter(0, None).validate().is_err());
        assert!(acl(CLUSTER, "x", LITERAL, "User:a", ALTER, ALLOW)
            .validate()
            .is_err());
        assert!(acl(TOPIC, "t", LITERAL, "alice", READ, ALLOW).validate().is_err());
    }
}

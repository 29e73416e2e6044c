//! SCRAM credentials, per user and mechanism: what SaslAuthenticate checks
//! (PLAIN too: one password per user) and what the credential admin APIs
//! change. Kept as one metadata document, `scram-credentials.json`; reads
//! are lock-free snapshots every shard takes, writes happen on the
//! controller shard one at a time.

use super::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::metadata::{documents, MetadataStore};
use arc_swap::ArcSwap;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// Every user's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Credentials {
    pub users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

impl Credentials {
    pub(crate) fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.users.get(user).and_then(|m| m.get(&mechanism))
    }
}

/// One change of AlterUserScramCredentials.
#[derive(Debug, Clone)]
pub(crate) enum CredentialChange {
    Delete {
        user: String,
        mechanism: i8,
    },
    Upsert {
        user: String,
        mechanism: i8,
        iterations: i32,
        salt: Vec<u8>,
        salted_password: Vec<u8>,
    },
}

impl CredentialChange {
    pub(crate) fn user(&self) -> &str {
        match self {
            CredentialChange::Delete { user, .. } | CredentialChange::Upsert { user, .. } => user,
        }
    }
}

/// A user's result: `None` = changed.
pub(crate) type UserOutcome = (String, Option<(ResponseError, String)>);

pub(crate) struct CredentialStore {
    store: Arc<dyn MetadataStore>,
    current: ArcSwap<Credentials>,
}

impl CredentialStore {
    /// Blocking (start-up): loads the document, or starts empty.
    pub(crate) fn open(store: Arc<dyn MetadataStore>) -> io::Result<CredentialStore> {
        let credentials = store.get_json(documents::SCRAM_CREDENTIALS)?.unwrap_or_default();
        Ok(CredentialStore {
            store,
            current: ArcSwap::from_pointee(credentials),
        })
    }

    pub(crate) fn snapshot(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// Blocking (start-up): creates both SCRAM credentials for each
    /// `(user, password)` that has none yet, so a fresh broker can be
    /// administered; an existing user is left as it is (its password may
    /// have been changed since).
    pub(crate) fn bootstrap(&self, users: &[(String, String)]) -> io::Result<Vec<String>> {
        let mut next = (*self.snapshot()).clone();
        let mut created = Vec::new();
        for (user, password) in users {
            if next.users.contains_key(user) {
                continue;
            }
            let mut mechanisms = BTreeMap::new();
            for mechanism in ScramMechanism::ALL {
                let credential = ScramCredential::from_password(mechanism, password, MIN_ITERATIONS)
                    .ok_or_else(|| io::Error::other("no randomness for a salt"))?;
                mechanisms.insert(mechanism, credential);
            }
            next.users.insert(user.clone(), mechanisms);
            created.push(user.clone());
        }
        if !created.is_empty() {
            self.publish(next)?;
        }
        Ok(created)
    }

    fn publish(&self, next: Credentials) -> io::Result<()> {
        self.store.put_json(documents::SCRAM_CREDENTIALS, &next)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Validates and applies one AlterUserScramCredentials request, as
    /// Kafka's ScramControlManager does: a user named twice anywhere in
    /// the request is refused (DUPLICATE_RESOURCE); every valid user's
    /// changes are applied together, durably, before the answer. Blocking
    /// (a durable write): run it off the shard thread.
    pub(crate) fn alter(&self, changes: Vec<CredentialChange>) -> Vec<UserOutcome> {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for change in &changes {
            *count.entry(change.user()).or_default() += 1;
        }
        let mut next = (*self.snapshot()).clone();
        let mut outcomes: Vec<UserOutcome> = Vec::new();
        let mut changed = false;
        for change in &changes {
            let user = change.user();
            if outcomes.iter().any(|(u, _)| u == user) {
                continue;
            }
            let outcome = if count[user] > 1 {
                Some((
                    ResponseError::DuplicateResource,
                    "A user credential cannot be altered twice in the same request".to_string(),
                ))
            } else {
                let applied = apply(&mut next, change);
                changed |= applied.is_ok();
                applied.err()
            };
            outcomes.push((user.to_string(), outcome));
        }
        if changed {
            if let Err(e) = self.publish(next) {
                let message = format!("persisting credentials: {e}");
                for (_, outcome) in outcomes.iter_mut().filter(|(_, o)| o.is_none()) {
                    *outcome = Some((ResponseError::KafkaStorageError, message.clone()));
                }
            }
        }
        outcomes
    }
}

fn apply(credentials: &mut Credentials, change: &CredentialChange) -> Result<(), (ResponseError, String)> {
    let unacceptable = |what: &str| (ResponseError::UnacceptableCredential, what.to_string());
    if change.user().is_empty() {
        return Err(unacceptable("Username must not be empty"));
    }
    let code = match change {
        CredentialChange::Delete { mechanism, .. } | CredentialChange::Upsert { mechanism, .. } => *mechanism,
    };
    let mechanism = ScramMechanism::from_code(code).ok_or((
        ResponseError::UnsupportedSaslMechanism,
        "Unknown SCRAM mechanism".to_string(),
    ))?;
    match change {
        CredentialChange::Delete { user, .. } => {
            let removed = credentials.users.get_mut(user).and_then(|m| m.remove(&mechanism));
            if removed.is_none() {
                return Err((
                    ResponseError::ResourceNotFound,
                    format!("Attempt to delete a user credential that does not exist: {user}"),
                ));
            }
            credentials.users.retain(|_, m| !m.is_empty());
        }
        CredentialChange::Upsert {
            user,
            iterations,
            salt,
            salted_password,
            ..
        } => {
            if *iterations < MIN_ITERATIONS {
                return Err(unacceptable("Too few iterations"));
            }
            if *iterations > MAX_ITERATIONS {
                return Err(unacceptable("Too many iterations"));
            }
            if salt.is_empty() || salted_password.is_empty() {
                return Err(unacceptable("Salt and salted password must not be empty"));
            }
            let credential = ScramCredential::from_salted(mechanism, salt, salted_password, *iterations);
            credentials
                .users
                .entry(user.clone())
                .or_default()
                .insert(mechanism, credential);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::FileStore;

    fn upsert(user: &str, mechanism: i8, iterations: i32) -> CredentialChange {
        CredentialChange::Upsert {
            user: user.into(),
            mechanism,
            iterations,
            salt: b"salt".to_vec(),
            salted_password: vec![7; 32],
        }
    }

    #[test]
    fn alterations_validate_per_user_and_persist() {
        let dir = std::env::temp_dir().join(format!("chronik-credentials-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = CredentialStore::open(Arc::new(FileStore::new(&dir))).unwrap();
        let outcomes = store.alter(vec![
            upsert("alice", 1, 4096),
            upsert("bob", 2, 4096),
            CredentialChange::Delete {
                user: "bob".into(),
                mechanism: 1,
            },
            upsert("", 1, 4096),
            upsert("carol", 3, 4096),
            upsert("dave", 1, 100),
            upsert("erin", 1, 20000),
            CredentialChange::Delete {
                user: "frank".into(),
                mechanism: 1,
            },
        ]);
        let codes: Vec<(String, Option<i16>)> = outcomes
            .into_iter()
            .map(|(u, o)| (u, o.map(|(e, _)| e.code())))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("alice".into(), None),
                ("bob".into(), Some(92)),
                ("".into(), Some(93)),
                ("carol".into(), Some(33)),
                ("dave".into(), Some(93)),
                ("erin".into(), Some(93)),
                ("frank".into(), Some(91)),
            ]
        );
        let reopened = CredentialStore::open(Arc::new(FileStore::new(&dir))).unwrap();
        let snapshot = reopened.snapshot();
        assert!(snapshot.get("alice", ScramMechanism::Sha256).is_some());
        assert_eq!(snapshot.users.len(), 1);
        let created = reopened
            .bootstrap(&[("admin".into(), "pw".into()), ("alice".into(), "x".into())])
            .unwrap();
        assert_eq!(created, vec!["admin".to_string()]);
        let admin = reopened.snapshot();
        let credential = admin.get("admin", ScramMechanism::Sha512).unwrap();
        assert!(credential.matches_password(ScramMechanism::Sha512, "pw"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

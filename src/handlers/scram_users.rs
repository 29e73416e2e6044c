//! DescribeUserScramCredentials and AlterUserScramCredentials: which users
//! have SCRAM credentials, and setting or removing them. The client salts
//! the password (the broker never sees it); salts and keys are never
//! returned.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::security::credentials::CredentialChange;
use crate::server::ShardBroker;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;
use tracing::info;

pub(crate) const DESCRIBE: Handler =
    handler!(DescribeUserScramCredentialsRequest, describe, versions = 0..=0);
pub(crate) const ALTER: Handler = handler!(AlterUserScramCredentialsRequest, alter, versions = 0..=0);

async fn describe(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<DescribeUserScramCredentialsRequest>("DescribeUserScramCredentials")?;
    let names: Vec<String> = body
        .users
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    if let Err(denied) = request.authorize(AclOperation::Describe, Resource::Cluster) {
        // Kafka's answer: the error at the top and on every result, with
        // the user left empty.
        let results = names
            .iter()
            .map(|_| DescribeUserScramCredentialsResult::default().with_error_code(denied.code()))
            .collect();
        return request.respond(
            &DescribeUserScramCredentialsResponse::default()
                .with_error_code(denied.code())
                .with_results(results),
        );
    }
    let credentials = broker.security().credentials.snapshot();
    let asked: Vec<String> = if names.is_empty() {
        credentials.users.keys().cloned().collect()
    } else {
        names.clone()
    };
    let mut results = Vec::new();
    for (i, user) in asked.iter().enumerate() {
        if asked[..i].contains(user) {
            continue;
        }
        let result =
            DescribeUserScramCredentialsResult::default().with_user(StrBytes::from_string(user.clone()));
        let result = if asked[i + 1..].contains(user) {
            result
                .with_error_code(ResponseError::DuplicateResource.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                ))))
        } else {
            match credentials.users.get(user) {
                Some(mechanisms) => result.with_credential_infos(
                    mechanisms
                        .iter()
                        .map(|(m, c)| {
                            CredentialInfo::default()
                                .with_mechanism(m.code())
                                .with_iterations(c.iterations)
                        })
                        .collect(),
                ),
                None => result
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "Attempt to describe a user credential that does not exist: {user}"
                    )))),
            }
        };
        results.push(result);
    }
    request.respond(&DescribeUserScramCredentialsResponse::default().with_results(results))
}

async fn alter(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<AlterUserScramCredentialsRequest>("AlterUserScramCredentials")?;
    let mut changes: Vec<CredentialChange> = body
        .deletions
        .into_iter()
        .map(|d| CredentialChange::Delete {
            user: d.name.to_string(),
            mechanism: d.mechanism,
        })
        .collect();
    changes.extend(body.upsertions.into_iter().map(|u| CredentialChange::Upsert {
        user: u.name.to_string(),
        mechanism: u.mechanism,
        iterations: u.iterations,
        salt: u.salt.to_vec(),
        salted_password: u.salted_password.to_vec(),
    }));
    let mut users: Vec<String> = Vec::new();
    for change in &changes {
        if !users.iter().any(|u| u == change.user()) {
            users.push(change.user().to_string());
        }
    }
    let result = |user: &str, error: Option<(ResponseError, String)>| {
        let result =
            AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user.to_string()));
        match error {
            Some((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
            None => result,
        }
    };
    if let Err(denied) = request.authorize(AclOperation::Alter, Resource::Cluster) {
        let results = users
            .iter()
            .map(|u| result(u, Some((denied, "Authorization failed.".to_string()))))
            .collect();
        return request.respond(&AlterUserScramCredentialsResponse::default().with_results(results));
    }
    let outcomes = match broker.controller().alter_scram_credentials(changes.clone()).await {
        Ok(outcomes) => outcomes,
        Err(e) => users
            .iter()
            .map(|u| (u.clone(), Some((ResponseError::KafkaStorageError, e.clone()))))
            .collect(),
    };
    for (user, outcome) in &outcomes {
        if outcome.is_none() {
            for change in changes.iter().filter(|c| c.user() == user) {
                let (action, mechanism) = match change {
                    CredentialChange::Delete { mechanism, .. } => ("deleted", mechanism),
                    CredentialChange::Upsert { mechanism, .. } => ("set", mechanism),
                };
                info!(
                    target: "chronik_audit",
                    principal = %request.session.principal(),
                    peer = %request.session.peer,
                    user = %user,
                    mechanism = crate::security::scram::ScramMechanism::from_code(*mechanism).map_or("?", |m| m.name()),
                    "SCRAM credential {action}"
                );
            }
        }
    }
    let results = outcomes.into_iter().map(|(u, o)| result(&u, o)).collect();
    request.respond(&AlterUserScramCredentialsResponse::default().with_results(results))
}

//! The server's side of a SASL exchange, one mechanism at a time: tokens
//! in, the next challenge (or the principal, or why not) out. Framing
//! (SaslAuthenticate or the unframed v0 exchange) is the connection's
//! business; this module only sees token bytes.

use super::credentials::Credentials;
use super::oauth::{OAuthFailure, OAuthValidator};
use super::scram::{ScramExchange, ScramFailure, ScramMechanism};
use std::fmt;

/// A SASL mechanism this broker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl SaslMechanism {
    pub(crate) const ALL: [SaslMechanism; 4] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
        SaslMechanism::OAuthBearer,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Case-sensitive, as Kafka matches mechanism names.
    pub(crate) fn parse(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthFailure {
    /// The SaslAuthenticate error_message: the mechanism's own text where
    /// Kafka sends one, else Kafka's generic sentence.
    pub client_message: String,
    /// The `reason` label of `chronik_auth_failures_total`.
    pub reason: &'static str,
    /// For the log only (never sent: it would tell a guesser too much).
    pub detail: String,
}

impl AuthFailure {
    fn generic(mechanism: SaslMechanism, reason: &'static str, detail: String) -> AuthFailure {
        AuthFailure {
            client_message: format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
            ),
            reason,
            detail,
        }
    }
}

/// What one token led to.
#[derive(Debug)]
pub(crate) enum SaslStep {
    /// Send this challenge; the exchange goes on.
    Challenge(Vec<u8>),
    /// Authenticated: send `token` (possibly empty) as the last answer.
    Done {
        token: Vec<u8>,
        user: String,
        /// When the credential itself expires (an OAuth token's `exp`),
        /// in ms since the epoch: bounds the session lifetime.
        expires_at_ms: Option<i64>,
    },
    /// Answer `Challenge(error)` with error code 0 and expect one more
    /// token before failing (OAUTHBEARER's error document, RFC 7628).
    FailAfter(Vec<u8>),
    Failed(AuthFailure),
}

/// One connection's exchange in progress.
pub(crate) enum SaslServer {
    Plain,
    ScramFirst(ScramMechanism),
    ScramFinal(ScramExchange),
    OAuthBearer,
    /// OAUTHBEARER sent its error document; the client's next token
    /// (0x01) is answered with the failure.
    Failing(AuthFailure),
    Finished,
}

impl SaslServer {
    pub(crate) fn new(mechanism: SaslMechanism) -> SaslServer {
        match mechanism {
            SaslMechanism::Plain => SaslServer::Plain,
            SaslMechanism::Scram(m) => SaslServer::ScramFirst(m),
            SaslMechanism::OAuthBearer => SaslServer::OAuthBearer,
        }
    }

    /// Handles the client's next token.
    pub(crate) fn step(
        &mut self,
        token: &[u8],
        credentials: &Credentials,
        oauth: &OAuthValidator,
    ) -> SaslStep {
        match std::mem::replace(self, SaslServer::Finished) {
            SaslServer::Plain => plain(token, credentials),
            SaslServer::ScramFirst(mechanism) => {
                let lookup = |user: &str| credentials.get(user, mechanism).cloned();
                match ScramExchange::start(mechanism, token, lookup) {
                    Ok((exchange, challenge)) => {
                        *self = SaslServer::ScramFinal(exchange);
                        SaslStep::Challenge(challenge)
                    }
                    Err(failure) => SaslStep::Failed(scram_failure(mechanism, failure)),
                }
            }
            SaslServer::ScramFinal(exchange) => {
                let user = exchange.username().to_string();
                let mechanism = SaslMechanism::Scram(exchange.mechanism());
                match exchange.finish(token) {
                    Ok(token) => SaslStep::Done {
                        token,
                        user,
                        expires_at_ms: None,
                    },
                    Err(failure) => SaslStep::Failed(scram_failure_of(mechanism, failure, &user)),
                }
            }
            SaslServer::OAuthBearer => match oauth.validate_initial_response(token) {
                Ok(validated) => SaslStep::Done {
                    token: Vec::new(),
                    user: validated.principal,
                    expires_at_ms: Some(validated.expires_at_ms),
                },
                Err(OAuthFailure::Malformed(detail)) => SaslStep::Failed(AuthFailure::generic(
                    SaslMechanism::OAuthBearer,
                    "malformed",
                    detail,
                )),
                Err(OAuthFailure::InvalidToken { reason, detail }) => {
                    let document = br#"{"status":"invalid_token"}"#.to_vec();
                    let failure = AuthFailure {
                        client_message: String::from_utf8_lossy(&document).into_owned(),
                        reason,
                        detail,
                    };
                    *self = SaslServer::Failing(failure);
                    SaslStep::FailAfter(document)
                }
            },
            SaslServer::Failing(failure) => SaslStep::Failed(failure),
            SaslServer::Finished => SaslStep::Failed(AuthFailure {
                client_message: "Unexpected SASL token after the exchange completed".into(),
                reason: "malformed",
                detail: "token after completion".into(),
            }),
        }
    }
}

fn scram_failure(mechanism: ScramMechanism, failure: ScramFailure) -> AuthFailure {
    scram_failure_of(SaslMechanism::Scram(mechanism), failure, "")
}

fn scram_failure_of(mechanism: SaslMechanism, failure: ScramFailure, user: &str) -> AuthFailure {
    let reason = failure.reason();
    match failure {
        ScramFailure::Safe(text) => AuthFailure {
            client_message: text.to_string(),
            reason,
            detail: text.to_string(),
        },
        ScramFailure::Invalid(detail) => AuthFailure::generic(mechanism, reason, detail),
        ScramFailure::UnknownUser(user) => {
            AuthFailure::generic(mechanism, reason, format!("unknown user {user}"))
        }
        ScramFailure::BadProof => {
            AuthFailure::generic(mechanism, reason, format!("bad proof for user {user}"))
        }
    }
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL password`, checked against
/// the user's SCRAM credential. Kafka's messages are sent verbatim.
fn plain(token: &[u8], credentials: &Credentials) -> SaslStep {
    let fail = |message: &str, reason: &'static str, detail: String| {
        SaslStep::Failed(AuthFailure {
            client_message: message.to_string(),
            reason,
            detail,
        })
    };
    let Ok(text) = std::str::from_utf8(token) else {
        return fail(
            "Invalid SASL/PLAIN response: not UTF-8",
            "malformed",
            "not UTF-8".into(),
        );
    };
    let parts: Vec<&str> = text.splitn(4, '\u{0}').collect();
    let [authzid, user, password] = parts[..] else {
        let message = format!(
            "Invalid SASL/PLAIN response: expected 3 tokens, got {}",
            parts.len()
        );
        return fail(&message, "malformed", message.clone());
    };
    if user.is_empty() {
        return fail(
            "Authentication failed: username not specified",
            "malformed",
            "no username".into(),
        );
    }
    if password.is_empty() {
        return fail(
            "Authentication failed: password not specified",
            "malformed",
            format!("no password for {user}"),
        );
    }
    if !authzid.is_empty() && authzid != user {
        let message =
            "Authentication failed: Client requested an authorization id that is different from username";
        return fail(message, "malformed", format!("authzid {authzid} for user {user}"));
    }
    // SHA-256's credential: the cheaper of the two to derive again.
    let credential = ScramMechanism::ALL
        .into_iter()
        .find_map(|m| credentials.get(user, m).map(|c| (m, c)));
    let verified = credential.is_some_and(|(m, c)| c.matches_password(m, password));
    if !verified {
        let reason = if credential.is_none() {
            "unknown_user"
        } else {
            "bad_password"
        };
        return fail(
            "Authentication failed: Invalid username or password",
            reason,
            format!("user {user}"),
        );
    }
    SaslStep::Done {
        token: Vec::new(),
        user: user.to_string(),
        expires_at_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::ScramCredential;

    fn store() -> Credentials {
        let mut credentials = Credentials::default();
        let mut mechanisms = std::collections::BTreeMap::new();
        mechanisms.insert(
            ScramMechanism::Sha256,
            ScramCredential::from_password(ScramMechanism::Sha256, "pw", 4096).unwrap(),
        );
        credentials.users.insert("alice".into(), mechanisms);
        credentials
    }

    fn plain_step(token: &[u8]) -> SaslStep {
        SaslServer::new(SaslMechanism::Plain).step(token, &store(), &OAuthValidator::unsecured())
    }

    #[test]
    fn plain_accepts_the_forms_clients_send_and_names_failures_as_kafka() {
        for token in [&b"\0alice\0pw"[..], b"alice\0alice\0pw"] {
            assert!(matches!(plain_step(token), SaslStep::Done { user, .. } if user == "alice"));
        }
        let message = |token: &[u8]| match plain_step(token) {
            SaslStep::Failed(f) => (f.client_message, f.reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message(b"\0alice\0nope"),
            (
                "Authentication failed: Invalid username or password".into(),
                "bad_password"
            )
        );
        assert_eq!(message(b"\0bob\0pw").1, "unknown_user");
        assert_eq!(
            message(b"alice\0pw").0,
            "Invalid SASL/PLAIN response: expected 3 tokens, got 2"
        );
        assert!(message(b"bob\0alice\0pw").0.contains("authorization id"));
    }

    #[test]
    fn mechanism_names_are_kafkas() {
        for m in SaslMechanism::ALL {
            assert_eq!(SaslMechanism::parse(m.name()), Some(m));
        }
        assert_eq!(SaslMechanism::parse("scram-sha-256"), None);
        assert_eq!(SaslMechanism::parse("GSSAPI"), None);
    }
}

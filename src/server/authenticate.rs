//! The SASL exchange on a connection, whichever way its tokens travel
//! (SaslAuthenticate requests, or bare frames after a v0 handshake):
//! choosing the mechanism, stepping it, and what success or failure does
//! to the session. Kafka's SaslServerAuthenticator is the reference.

use super::session::{AuthState, KafkaPrincipal, Session};
use super::shard_broker::ShardBroker;
use crate::log::partition_log::now_ms;
use crate::security::sasl::{AuthFailure, SaslMechanism, SaslServer, SaslStep};
use kafka_protocol::ResponseError;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Kafka refuses a re-authentication less than this after the last one.
const MIN_REAUTH_INTERVAL: Duration = Duration::from_secs(1);

/// The answer to a SaslHandshake: an error (if any) and the mechanisms
/// to list. Kafka lists the enabled ones on success and on an unknown
/// mechanism alike (kafkajs and kafka-python check the list).
pub(crate) fn handshake(
    broker: &ShardBroker,
    session: &Session,
    mechanism: &str,
    version: i16,
) -> (Option<ResponseError>, Vec<&'static str>) {
    let enabled = broker
        .security()
        .mechanisms
        .get(session.listener)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&'static str> = enabled.iter().map(|m| m.name()).collect();
    match session.auth_state() {
        AuthState::AwaitingSaslHandshake => {}
        AuthState::Authenticated => {
            // KIP-368: a handshake after authentication starts a new
            // exchange only on a session that expires, at most once a
            // second; otherwise Kafka answers ILLEGAL_SASL_STATE and keeps
            // the connection.
            let reauth = session.expires_at_ms.get().is_some()
                && session
                    .auth_started
                    .get()
                    .is_none_or(|at| at.elapsed() >= MIN_REAUTH_INTERVAL);
            if !reauth {
                return (Some(ResponseError::IllegalSaslState), Vec::new());
            }
        }
        AuthState::AwaitingSaslAuthenticate | AuthState::AwaitingSaslToken => {
            session.close_after_reply();
            return (Some(ResponseError::IllegalSaslState), Vec::new());
        }
    }
    let chosen = SaslMechanism::parse(mechanism).filter(|m| enabled.contains(m));
    let Some(chosen) = chosen else {
        broker
            .metrics()
            .auth_failed(mechanism_label(mechanism), "unsupported_mechanism");
        warn!(
            peer = %session.peer,
            listener = &*session.listener_name,
            mechanism,
            enabled = %names.join(","),
            "SASL authentication failed: mechanism not enabled on this listener; closing connection"
        );
        session.close_after_reply();
        return (Some(ResponseError::UnsupportedSaslMechanism), names);
    };
    if session.auth_state() == AuthState::Authenticated && session.mechanism.get() != Some(chosen) {
        // Re-authentication must keep the mechanism.
        session.close_after_reply();
        return (Some(ResponseError::IllegalSaslState), Vec::new());
    }
    *session.sasl.borrow_mut() = Some(SaslServer::new(chosen));
    session.mechanism.set(Some(chosen));
    session.auth_started.set(Some(Instant::now()));
    session.set_auth_state(if version == 0 {
        AuthState::AwaitingSaslToken
    } else {
        AuthState::AwaitingSaslAuthenticate
    });
    (None, names)
}

/// A mechanism name as a bounded label value.
fn mechanism_label(name: &str) -> &'static str {
    SaslMechanism::parse(name).map_or("unknown", SaslMechanism::name)
}

/// What a client's token led to.
pub(crate) enum TokenAnswer {
    /// Send this token (error 0); the exchange goes on.
    Continue(Vec<u8>),
    /// Authenticated: send the last token with the session lifetime.
    Done { token: Vec<u8>, lifetime_ms: i64 },
    /// Answer SASL_AUTHENTICATION_FAILED with this message, then close.
    Fail(AuthFailure),
}

/// Steps the session's exchange with `token`.
pub(crate) fn token(broker: &ShardBroker, session: &Session, token: &[u8]) -> TokenAnswer {
    let mechanism = session.mechanism.get();
    let server = session.sasl.borrow_mut().take();
    let (Some(mut server), Some(mechanism)) = (server, mechanism) else {
        return fail(
            broker,
            session,
            "none",
            AuthFailure {
                client_message: "Unexpected SASL token: no exchange in progress".into(),
                reason: "malformed",
                detail: "token without a handshake".into(),
            },
        );
    };
    let credentials = broker.security().credentials.snapshot();
    match server.step(token, &credentials, &broker.security().oauth) {
        SaslStep::Challenge(challenge) => {
            *session.sasl.borrow_mut() = Some(server);
            TokenAnswer::Continue(challenge)
        }
        SaslStep::FailAfter(document) => {
            // The failure is counted when the client acknowledges it.
            *session.sasl.borrow_mut() = Some(server);
            TokenAnswer::Continue(document)
        }
        SaslStep::Failed(failure) => fail(broker, session, mechanism.name(), failure),
        SaslStep::Done {
            token,
            user,
            expires_at_ms,
        } => {
            let principal = KafkaPrincipal::user(user);
            let reauthenticating = session.expires_at_ms.get().is_some();
            let previous = session.principal();
            if reauthenticating && *previous != principal {
                let message =
                    format!("Cannot change principals during re-authentication from {previous}: {principal}");
                return fail(
                    broker,
                    session,
                    mechanism.name(),
                    AuthFailure {
                        client_message: message.clone(),
                        reason: "principal_changed",
                        detail: message,
                    },
                );
            }
            let now = now_ms();
            let lifetime_ms = session_lifetime(broker.security().max_reauth_ms, expires_at_ms, now);
            session
                .expires_at_ms
                .set((lifetime_ms > 0).then_some(now + lifetime_ms));
            if !reauthenticating {
                tracing::Span::current().record("principal", principal.to_string().as_str());
                info!(
                    peer = %session.peer,
                    listener = &*session.listener_name,
                    mechanism = mechanism.name(),
                    principal = %principal,
                    session_lifetime_ms = lifetime_ms,
                    "SASL authentication succeeded"
                );
            }
            session.set_principal(principal);
            session.set_auth_state(AuthState::Authenticated);
            TokenAnswer::Done { token, lifetime_ms }
        }
    }
}

/// KIP-368: the smaller of CONNECTIONS_MAX_REAUTH_MS and the time left on
/// the credential, whichever are set; 0 = the session does not expire.
fn session_lifetime(max_reauth_ms: i64, credential_expires_at_ms: Option<i64>, now_ms: i64) -> i64 {
    let left = credential_expires_at_ms.map(|at| (at - now_ms).max(0));
    match (max_reauth_ms > 0, left) {
        (false, None) => 0,
        (true, None) => max_reauth_ms,
        (false, Some(left)) => left.max(1),
        (true, Some(left)) => left.min(max_reauth_ms).max(1),
    }
}

/// A minute's failed authentications from one address, counted per shard.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Counts a failed authentication from `ip`; past the threshold within a
/// minute the address is banned on every shard (the connection rate
/// limit's ban), so a password guesser is slowed to a crawl.
fn count_failure(broker: &ShardBroker, ip: std::net::IpAddr) {
    let threshold = broker.config().security.auth_failure_ban_threshold;
    if threshold == 0 {
        return;
    }
    let now = Instant::now();
    let mut failures = broker.net().auth_failures.borrow_mut();
    failures.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
    let (_, count) = failures.entry(ip).or_insert((now, 0));
    *count += 1;
    if *count >= threshold {
        failures.remove(&ip);
        if broker.shard().ban(ip) {
            warn!(
                peer = %ip,
                failures = threshold,
                ban_secs = broker.config().pool_config.ban_duration.as_secs(),
                "address banned after repeated failed authentications (AUTH_FAILURE_BAN_THRESHOLD)"
            );
        }
    }
}

fn fail(
    broker: &ShardBroker,
    session: &Session,
    mechanism: &'static str,
    failure: AuthFailure,
) -> TokenAnswer {
    broker.metrics().auth_failed(mechanism, failure.reason);
    count_failure(broker, session.peer.ip());
    warn!(
        peer = %session.peer,
        listener = &*session.listener_name,
        mechanism,
        reason = failure.reason,
        detail = %failure.detail,
        "SASL authentication failed; closing connection"
    );
    session.close_after_reply();
    TokenAnswer::Fail(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lifetime_follows_kip_368() {
        assert_eq!(session_lifetime(0, None, 1000), 0);
        assert_eq!(session_lifetime(60_000, None, 1000), 60_000);
        assert_eq!(session_lifetime(0, Some(31_000), 1000), 30_000);
        assert_eq!(session_lifetime(10_000, Some(31_000), 1000), 10_000);
        // A credential already expired still ends the session at once.
        assert_eq!(session_lifetime(0, Some(500), 1000), 1);
    }
}

//! SaslHandshake and SaslAuthenticate: the framed SASL exchange (the
//! unframed one after a v0 handshake is read by the connection itself).
//! The exchange's rules live in `server::authenticate`.

use super::{handler, Handler, Outcome, Request};
use crate::server::authenticate::{self, TokenAnswer};
use crate::server::session::AuthState;
use crate::server::ShardBroker;
use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const HANDSHAKE: Handler = handler!(SaslHandshakeRequest, handshake, versions = 0..=1);
pub(crate) const AUTHENTICATE: Handler = handler!(SaslAuthenticateRequest, authenticate, versions = 0..=2);

async fn handshake(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<SaslHandshakeRequest>("SaslHandshake")?;
    let (error, mechanisms) = authenticate::handshake(
        &broker,
        &request.session,
        body.mechanism.as_str(),
        request.version,
    );
    request.respond(
        &SaslHandshakeResponse::default()
            .with_error_code(error.map_or(0, |e| e.code()))
            .with_mechanisms(mechanisms.into_iter().map(StrBytes::from_static_str).collect()),
    )
}

async fn authenticate(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<SaslAuthenticateRequest>("SaslAuthenticate")?;
    let session = &request.session;
    if session.auth_state() != AuthState::AwaitingSaslAuthenticate {
        // Kafka's answer after authentication (or on a listener without
        // SASL); the connection stays open.
        return request.respond(
            &SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate request received after successful authentication",
                ))),
        );
    }
    let response = match authenticate::token(&broker, session, &body.auth_bytes) {
        TokenAnswer::Continue(token) => {
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token))
        }
        TokenAnswer::Done { token, lifetime_ms } => SaslAuthenticateResponse::default()
            .with_auth_bytes(Bytes::from(token))
            .with_session_lifetime_ms(lifetime_ms),
        TokenAnswer::Fail(failure) => SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
            .with_error_message(Some(StrBytes::from_string(failure.client_message))),
    };
    request.respond(&response)
}

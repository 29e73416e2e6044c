//! One client connection: frames in, handlers run, responses out in request
//! order.
//!
//! The read side splits whole frames off the buffer and starts a handler
//! task for each at once, so requests on one connection are processed
//! concurrently (at most [`MAX_IN_FLIGHT`]); the write side awaits those
//! tasks strictly in the order the requests arrived, as Kafka requires.
//! Handler tasks start in arrival order too, which keeps per-partition
//! append order equal to request order.

use super::authenticate::{self, TokenAnswer};
use super::backpressure::{ByteBudget, HeldBytes};
use super::deadline::{answered_in_time, ProtocolWait};
use super::session::{AuthState, KafkaPrincipal, Session};
use super::shard_broker::ShardBroker;
use super::throttle;
use crate::config::SecurityProtocol;
use crate::handlers::{self, Outcome, Request};
use crate::log::partition_log::now_ms;
use crate::protocol::frame::{FrameBuffer, Incoming, SIZE_PREFIX};
use crate::protocol::header::{decode_header, peek_client_id, peek_ids, RequestIds};
use crate::protocol::response::ResponseFrame;
use crate::tls;
use bytes::Bytes;
use chronik_shard::{bump, Connection, ConnectionEntry};
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::sync::Semaphore;
use glommio::Task;
use kafka_protocol::messages::ApiKey;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::time::Instant;
use tracing::Instrument;
use tracing::{debug, info, warn};

/// Requests one connection may have in flight before reading pauses.
/// librdkafka pipelines up to 5 per connection for idempotent producers and
/// up to 1,000,000 otherwise; bounding it bounds per-connection memory.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// Request bytes one connection may have read and not yet answered. A
/// producer that outruns its partitions' writes would otherwise stack up
/// to MAX_IN_FLIGHT large requests here, each waiting behind the others
/// (64 x 1 MiB is over 50 ms at device speed); past this the rest wait
/// unread in the socket, as Kafka, which reads one request per connection
/// at a time, leaves them. A larger frame is served alone. More would
/// keep the writer busier (acks=1 is answered once the O_DIRECT write is
/// done: with two 4 MiB trips in flight, 6 GiB acks=1 gave 0.87-0.97 M
/// records/s with 8 MiB, 0.90-1.13 M with 12, 0.96-1.30 M with 16; with
/// four ~2 MB trips 1.08-1.16 M with 8 and 1.10-1.22 M with 12), but with 12
/// or 16 MiB queued, 0.05-0.18% of requests waited over 51.2 ms whenever
/// the virtual disk slowed; with 8 MiB far fewer did.
const CONNECTION_QUEUED_BYTES: usize = 8 << 20;

/// How long a connection whose authentication failed stays open after
/// its answer (Kafka's connection.failed.authentication.delay.ms).
const FAILED_AUTHENTICATION_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Kafka's sasl.server.max.receive.size: the largest frame read before
/// authentication completes, so an unauthenticated client cannot make
/// the broker hold MAX_REQUEST_BYTES for it.
const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// A request's bytes held against its connection's and its shard's
/// budgets, given back once the response is written (or the slot dropped
/// with the connection).
type Held = (HeldBytes, HeldBytes);

/// A response slot, in request order.
struct Pending {
    api: i16,
    started: Instant,
    wait: ProtocolWait,
    answer: Answer,
    _held: Option<Held>,
}

enum Answer {
    Ready(ResponseFrame),
    Running(Task<Outcome>),
}

pub(crate) async fn serve(broker: Rc<ShardBroker>, conn: Connection) {
    // connection_creation_rate (a per-address client quota): over it, the
    // connection is closed at once, as Kafka closes it.
    if !throttle::connection_allowed(&broker, conn.entry.peer().ip()) {
        bump(&broker.net().counters.connection_quota_rejected, 1);
        debug!(peer = %conn.entry.peer(), "connection over its address's connection_creation_rate quota; closing");
        return;
    }
    let (name, security): (Rc<str>, _) = broker
        .net()
        .listeners
        .get(conn.listener)
        .map_or(("PLAINTEXT".into(), SecurityProtocol::Plaintext), |l| {
            (l.name.clone(), l.security)
        });
    let span = tracing::info_span!(
        "conn",
        shard = broker.shard().id,
        conn = conn.entry.id(),
        peer = %conn.entry.peer(),
        listener = &*name,
        client_id = tracing::field::Empty,
        tls = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    serve_listener(broker, conn, name, security)
        .instrument(span)
        .await
}

async fn serve_listener(
    broker: Rc<ShardBroker>,
    conn: Connection,
    name: Rc<str>,
    security: SecurityProtocol,
) {
    let Connection {
        stream,
        listener,
        entry,
        drain,
    } = conn;
    let tls = match (security.is_tls(), &broker.net().tls) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls.current()),
        (true, None) => {
            // The configuration check makes this unreachable; refuse rather
            // than speak plaintext on a port meant to be encrypted.
            warn!(peer = %entry.peer(), "SSL listener without a TLS configuration; closing");
            return;
        }
    };
    let Some(tls) = tls else {
        let session = new_session(&broker, listener, name, security, &entry, None);
        // glommio's default TcpStream keeps no receive buffer of its own,
        // so reading its descriptor directly cannot reorder bytes.
        let socket = Some(stream.as_raw_fd());
        return serve_connection(broker, stream, socket, entry, drain, session).await;
    };
    // Boxed: the handshake and the TLS session are large, and an unboxed
    // branch would make every plaintext connection's task as big.
    let at = ListenerAt {
        index: listener,
        name,
        security,
    };
    Box::pin(serve_tls(broker, stream, at, entry, drain, tls)).await
}

/// Which listener a connection came in on.
struct ListenerAt {
    index: usize,
    name: Rc<str>,
    security: SecurityProtocol,
}

/// The session of a connection that has finished whatever its listener
/// authenticates with before the first request (TLS, or nothing): its
/// principal is the certificate's, mapped by SSL_PRINCIPAL_MAPPING_RULES,
/// or `User:ANONYMOUS`. On a SASL listener the principal comes from the
/// exchange, never from a client certificate (as in Kafka).
fn new_session(
    broker: &ShardBroker,
    listener: usize,
    name: Rc<str>,
    security: SecurityProtocol,
    entry: &ConnectionEntry,
    principal_name: Option<&str>,
) -> Rc<Session> {
    let principal = if security.is_sasl() {
        KafkaPrincipal::anonymous()
    } else {
        KafkaPrincipal::of_certificate(principal_name)
    };
    Rc::new(Session::new(
        listener,
        name,
        security,
        principal,
        entry.peer(),
        entry.local(),
        broker.net().authorizer.clone(),
    ))
}

async fn serve_tls(
    broker: Rc<ShardBroker>,
    stream: glommio::net::TcpStream,
    listener: ListenerAt,
    entry: Rc<ConnectionEntry>,
    drain: chronik_shard::Signal,
    tls: std::sync::Arc<rustls::ServerConfig>,
) {
    let stream = tls::ReadAhead::new(stream);
    let established = match tls::accept(tls, stream, broker.config().tls_handshake_timeout).await {
        Ok(established) => established,
        Err(failure) => {
            broker.metrics().tls_handshake_failed(failure.reason);
            warn!(
                peer = %entry.peer(),
                reason = failure.reason,
                "TLS handshake failed: {}; closing connection",
                failure.detail
            );
            return;
        }
    };
    // The certificate's subject as a principal name, by Kafka's mapping
    // rules; a subject no rule matches is refused, as in Kafka.
    let mapped = match (&established.identity, listener.security.is_sasl()) {
        (Some(id), false) => match broker.security().principal_mapper.map(&id.subject) {
            Some(name) => Some(name),
            None => {
                broker.metrics().auth_failed("SSL", "no_mapping_rule");
                warn!(
                    peer = %entry.peer(),
                    subject = %id.subject,
                    "no SSL_PRINCIPAL_MAPPING_RULES rule matches the client certificate's subject; closing connection"
                );
                return;
            }
        },
        _ => None,
    };
    let principal = mapped.as_ref().map(|name| format!("User:{name}"));
    let span = tracing::Span::current();
    span.record(
        "tls",
        format!("{} {}", established.version, established.cipher_suite).as_str(),
    );
    if let Some(principal) = &principal {
        span.record("principal", principal.as_str());
    }
    // One line per TLS session, naming who it is: the audit trail for
    // certificate identities.
    info!(
        peer = %entry.peer(),
        version = %established.version,
        cipher_suite = %established.cipher_suite,
        principal = principal.as_deref().unwrap_or("-"),
        subject = established.identity.as_ref().map_or("-", |id| id.subject.as_str()),
        san = %established.identity.as_ref().map(|id| id.sans.join(",")).unwrap_or_default(),
        "TLS session established"
    );
    let subject = established.identity.as_ref().map(|id| id.subject.as_str());
    let session = new_session(
        &broker,
        listener.index,
        listener.name,
        listener.security,
        &entry,
        subject,
    );
    serve_connection(broker, established.stream, None, entry, drain, session).await
}

async fn serve_connection<S>(
    broker: Rc<ShardBroker>,
    stream: S,
    socket: Option<RawFd>,
    entry: Rc<ConnectionEntry>,
    drain: chronik_shard::Signal,
    session: Rc<Session>,
) where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let (reader, writer) = stream.split();
    let incoming = Incoming { reader, socket };
    // Unbounded queue, bounded by the slots: a bounded channel would
    // reserve MAX_IN_FLIGHT entries up front on every connection, most of
    // which never have more than a few requests in flight.
    let (tx, rx) = local_channel::new_unbounded();
    let slots = Semaphore::new(MAX_IN_FLIGHT as u64);
    let read_side = pin!(read_requests(
        &broker, &entry, &session, incoming, tx, &slots, &drain
    ));
    let write_side = pin!(write_responses(&broker, &entry, &session, writer, rx, &slots));
    // When reading ends (EOF, drain, bad frame) the responses already owed
    // are still written; when writing fails the connection is over.
    if let Either::Left(((), write_side)) = select(read_side, write_side).await {
        write_side.await;
    }
    debug!(conn = entry.id(), peer = %entry.peer(), "connection closed");
}

async fn read_requests<R: futures::AsyncRead + Unpin>(
    broker: &Rc<ShardBroker>,
    entry: &Rc<ConnectionEntry>,
    session: &Rc<Session>,
    mut incoming: Incoming<R>,
    responses: LocalSender<Pending>,
    slots: &Semaphore,
    drain: &chronik_shard::Signal,
) {
    let mut buffer = FrameBuffer::new(broker.config().buffer_size, broker.config().max_request_bytes);
    let budget = broker.net().backpressure.bytes().clone();
    budget.report_to(|| {
        (
            broker.metrics().queued_bytes.clone(),
            broker.metrics().queued_bytes_peak.clone(),
        )
    });
    let limit = broker.config().queued_max_request_bytes;
    let connection_budget = Rc::new(ByteBudget::default());
    // The reservations for the frame at the front of the buffer, taken as
    // soon as its size is known, before its body is read.
    let mut front: Option<Held> = None;
    loop {
        loop {
            if front.is_none() {
                match buffer.next_size() {
                    Ok(Some(size))
                        if size > MAX_UNAUTHENTICATED_FRAME
                            && session.auth_state() != AuthState::Authenticated =>
                    {
                        let reason = format!(
                            "a {size}-byte frame before authentication completed (at most {MAX_UNAUTHENTICATED_FRAME})"
                        );
                        frame_error(broker, entry, &reason, None);
                        return;
                    }
                    Ok(Some(size)) => {
                        let bytes = SIZE_PREFIX + size;
                        let reserve = pin!(async {
                            let connection = connection_budget.reserve(bytes, CONNECTION_QUEUED_BYTES).await;
                            (connection, budget.reserve(bytes, limit).await)
                        });
                        match select(reserve, pin!(drain.wait())).await {
                            Either::Left((held, _)) => front = Some(held),
                            Either::Right(_) => return,
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        frame_error(broker, entry, &format!("{e}"), None);
                        return;
                    }
                }
            }
            let frame = match buffer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    frame_error(broker, entry, &format!("{e}"), None);
                    return;
                }
            };
            // A quota's throttle (KIP-219): the answer that set it is on
            // its way; nothing more from this client is served until then.
            if let Some(until) = session.muted_until() {
                let wait = glommio::timer::sleep(until.saturating_duration_since(Instant::now()));
                if let Either::Right(_) = select(pin!(wait), pin!(drain.wait())).await {
                    return;
                }
            }
            // Released by the write side once the answer is ready.
            if slots.acquire(1).await.is_err() {
                return;
            }
            let pending = match dispatch(broker, entry, session, frame, front.take()) {
                Ok(pending) => pending,
                Err(()) => return,
            };
            entry.request_started();
            broker.metrics().pending.inc();
            if broker.net().backpressure.started() {
                broker.metrics().backpressure_event();
                debug!(
                    shard = broker.shard().id,
                    "backpressure: too many pending requests; pausing reads"
                );
            }
            if responses.send(pending).await.is_err() {
                return;
            }
            if session.quota_applies.get() {
                // Let the request just started record what it uses (and
                // mute the connection if that breaks the quota) before the
                // next one is looked at: otherwise every request already
                // buffered would start before the first throttle.
                glommio::executor().yield_now().await;
            }
        }
        if drain.is_fired() {
            return;
        }
        broker.net().backpressure.ready_to_read().await;
        // Between frames, read nothing more while the byte budget is spent
        // (mid-frame the body is read: its bytes are already reserved).
        if front.is_none() && budget.spent(limit) {
            match select(pin!(budget.until_available(limit)), pin!(drain.wait())).await {
                Either::Left(_) => {}
                Either::Right(_) => return,
            }
        }
        let read = {
            let read = pin!(buffer.read_from(&mut incoming));
            let drained = pin!(drain.wait());
            match select(read, drained).await {
                Either::Left((read, _)) => read,
                Either::Right(_) => return,
            }
        };
        match read {
            Ok(0) => {
                if buffer.pending() > 0 {
                    let reason = format!(
                        "peer closed mid-frame ({} bytes of an unfinished frame)",
                        buffer.pending()
                    );
                    frame_error(broker, entry, &reason, None);
                }
                return;
            }
            Ok(n) => entry.record_read(n),
            Err(e) => {
                debug!(conn = entry.id(), peer = %entry.peer(), error = %e, "read failed");
                return;
            }
        }
    }
}

/// Routes one frame to its handler; `Err` means the connection must close
/// (already logged and counted).
fn dispatch(
    broker: &Rc<ShardBroker>,
    entry: &Rc<ConnectionEntry>,
    session: &Rc<Session>,
    frame: Bytes,
    held: Option<Held>,
) -> Result<Pending, ()> {
    bump(&broker.net().counters.requests, 1);
    let started = Instant::now();
    if session.closing() {
        // Authentication failed: nothing after it is served.
        return Err(());
    }
    if session.auth_state() == AuthState::AwaitingSaslToken {
        return Ok(Pending {
            api: ApiKey::SaslAuthenticate as i16,
            started,
            wait: ProtocolWait::default(),
            answer: Answer::Ready(unframed_token(broker, session, &frame)),
            _held: held,
        });
    }
    let Some(ids) = peek_ids(&frame) else {
        frame_error(broker, entry, "frame shorter than a request header", None);
        return Err(());
    };
    let Some(handler) = handlers::find(ids.api_key) else {
        frame_error(broker, entry, "unknown api key", Some((ids, &frame)));
        return Err(());
    };
    if !handler.supports(ids.api_version) {
        if ids.api_key == ApiKey::ApiVersions as i16 {
            // Answer so the client can retry at a version we speak.
            debug!(
                conn = entry.id(),
                version = ids.api_version,
                "ApiVersions at unsupported version"
            );
            broker.metrics().request_error(ids.api_key, "UnsupportedVersion");
            return handlers::unsupported_version_response(ids.correlation_id)
                .map(|frame| Pending {
                    api: ids.api_key,
                    started,
                    wait: ProtocolWait::default(),
                    answer: Answer::Ready(ResponseFrame::Whole(frame)),
                    _held: held,
                })
                .map_err(|e| frame_error(broker, entry, &e, Some((ids, &frame))));
        }
        frame_error(broker, entry, "unsupported api version", Some((ids, &frame)));
        return Err(());
    }
    let Ok(api_key) = ApiKey::try_from(ids.api_key) else {
        frame_error(broker, entry, "unknown api key", Some((ids, &frame)));
        return Err(());
    };
    // Before authentication completes only the requests of the exchange
    // itself are served; anything else closes the connection, as Kafka's
    // SASL authenticator does. Plaintext and SSL sessions start
    // authenticated, so this refuses nothing until SASL exists.
    if !session.auth_state().allows(api_key) {
        let reason = format!(
            "{api_key:?} before authentication completed ({:?})",
            session.auth_state()
        );
        frame_error(broker, entry, &reason, Some((ids, &frame)));
        return Err(());
    }
    // KIP-368: once a SASL session has expired, only a re-authentication
    // may be sent; anything else closes the connection.
    if api_key != ApiKey::SaslHandshake && session.expired(now_ms()) {
        let reason =
            format!("{api_key:?} after the SASL session expired (the client did not re-authenticate)");
        frame_error(broker, entry, &reason, Some((ids, &frame)));
        return Err(());
    }
    // A refcount, not a copy: kept only to name the client if decoding fails.
    let raw = frame.clone();
    let (header, body) = decode_header(api_key, ids.api_version, frame)
        .map_err(|e| frame_error(broker, entry, &e, Some((ids, &raw))))?;
    // Recorded once: the text formatter appends a field each time it is
    // recorded, and clients keep one client id per connection.
    if !session.client_id_recorded.replace(true) {
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("client_id", header.client_id.as_deref().unwrap_or_default());
        }
    }
    debug!(
        target: "chronik_protocol",
        conn = entry.id(),
        api = ?api_key,
        api_version = ids.api_version,
        correlation_id = ids.correlation_id,
        "request"
    );
    let request_span = tracing::debug_span!(
        target: "chronik_protocol",
        "request",
        api = ?api_key,
        api_version = ids.api_version,
        correlation_id = ids.correlation_id,
    );
    let wait = ProtocolWait::default();
    // request_percentage: with no quota configured, one atomic load.
    let request_quota = match broker.security().quotas.any() {
        true => {
            throttle::request_time_quota(broker, session, header.client_id.as_deref().unwrap_or_default())
        }
        false => None,
    };
    let request = Request {
        wait: wait.clone(),
        header,
        version: ids.api_version,
        body,
        local_addr: session.local_addr,
        listener: session.listener,
        peer: session.peer,
        session: session.clone(),
    };
    let handling = (handler.handle)(broker.clone(), request);
    let handling: handlers::HandlerFuture = match request_quota {
        Some(quota) => Box::pin(throttle::TimedRequest::new(
            handling,
            quota,
            broker.shard().id,
            session.clone(),
        )),
        None => handling,
    };
    let task = glommio::spawn_local(handling.instrument(request_span));
    Ok(Pending {
        api: ids.api_key,
        started,
        wait,
        answer: Answer::Running(task),
        _held: held,
    })
}

/// One bare token of the unframed exchange (after SaslHandshake v0),
/// answered bare: a 4-byte length and the mechanism's token. A failure is
/// never answered in this form; the connection just closes, as in Kafka.
fn unframed_token(broker: &ShardBroker, session: &Session, token: &[u8]) -> ResponseFrame {
    let token = match authenticate::token(broker, session, token) {
        TokenAnswer::Continue(token) | TokenAnswer::Done { token, .. } => token,
        // Nothing is written; the session is closing.
        TokenAnswer::Fail(_) => return ResponseFrame::Spliced(Vec::new()),
    };
    let mut frame = bytes::BytesMut::with_capacity(SIZE_PREFIX + token.len());
    frame.extend_from_slice(&(token.len() as u32).to_be_bytes());
    frame.extend_from_slice(&token);
    ResponseFrame::Whole(frame.freeze())
}

async fn write_responses<W: futures::AsyncWrite + Unpin>(
    broker: &Rc<ShardBroker>,
    entry: &Rc<ConnectionEntry>,
    session: &Session,
    mut writer: W,
    responses: LocalReceiver<Pending>,
    slots: &Semaphore,
) {
    while let Some(pending) = responses.recv().await {
        let outcome = match pending.answer {
            Answer::Ready(frame) => Ok(Some(frame)),
            Answer::Running(task) => {
                // Measured from when the request arrived (or its protocol
                // wait ended), not from when its turn to be written came.
                let safety = broker.config().request_timeout;
                match answered_in_time(task, pending.started, &pending.wait, safety).await {
                    Some(outcome) => outcome,
                    None => {
                        broker.metrics().request_timeout();
                        broker.metrics().request_error(pending.api, "RequestTimedOut");
                        warn!(
                            conn = entry.id(),
                            peer = %entry.peer(),
                            api = pending.api,
                            timeout_secs = safety.as_secs(),
                            "request not answered within REQUEST_TIMEOUT_SECS (after any wait its protocol allows); closing connection"
                        );
                        entry.request_finished();
                        broker.metrics().pending.dec();
                        broker.net().backpressure.finished();
                        return;
                    }
                }
            }
        };
        entry.request_finished();
        broker.metrics().pending.dec();
        broker.net().backpressure.finished();
        slots.signal(1);
        let took = pending.started.elapsed();
        broker.metrics().request_done(pending.api, took);
        debug!(target: "chronik_protocol", api = pending.api, duration_us = took.as_micros() as u64, "request done");
        match outcome {
            Ok(Some(frame)) => {
                let written = write_frame(&mut writer, &frame).await;
                if let Err(e) = written {
                    debug!(conn = entry.id(), peer = %entry.peer(), error = %e, "write failed");
                    return;
                }
                entry.record_written(frame.len());
            }
            Ok(None) => {}
            Err(reason) => {
                broker.metrics().request_error(pending.api, "InvalidRequest");
                frame_error(broker, entry, &reason, None);
                return;
            }
        }
        if session.closing() {
            // A failed authentication: the client gets its answer, then
            // the connection closes after Kafka's default
            // connection.failed.authentication.delay.ms, which slows a
            // password guesser down.
            glommio::timer::sleep(FAILED_AUTHENTICATION_DELAY).await;
            let _ = writer.close().await;
            return;
        }
    }
    let _ = writer.close().await;
}

/// Writes a frame's parts in order. Spliced record sets go to the socket
/// from the memory they were read into; TLS may hold the tail of a record
/// back until flushed, plaintext flush is free.
async fn write_frame<W: futures::AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &ResponseFrame,
) -> std::io::Result<()> {
    for part in frame.parts() {
        writer.write_all(part).await?;
    }
    writer.flush().await
}

/// Logs why a connection is being closed and counts it.
fn frame_error(
    broker: &ShardBroker,
    entry: &ConnectionEntry,
    reason: &str,
    request: Option<(RequestIds, &Bytes)>,
) {
    bump(&broker.net().counters.frame_errors, 1);
    match request {
        Some((ids, frame)) => warn!(
            shard = broker.shard().id,
            conn = entry.id(),
            peer = %entry.peer(),
            client_id = peek_client_id(frame.as_ref()).unwrap_or("-"),
            api_key = ids.api_key,
            api = api_name(ids.api_key),
            api_version = ids.api_version,
            correlation_id = ids.correlation_id,
            "{reason}; closing connection"
        ),
        None => warn!(
            shard = broker.shard().id,
            conn = entry.id(),
            peer = %entry.peer(),
            "malformed request: {reason}; closing connection"
        ),
    }
}

fn api_name(api_key: i16) -> String {
    ApiKey::try_from(api_key).map_or_else(|()| "unknown".to_string(), |k| format!("{k:?}"))
}

//! The metrics endpoint: `GET /metrics` (OpenMetrics text when asked for
//! with `Accept`, as Prometheus does; Prometheus text otherwise), `GET /health`
//! (the process is up), `GET /ready` (every shard has recovered its logs
//! and is serving; 503 until then). A few blocking routes on one thread
//! with tiny_http: the shards never see this traffic.

use super::Metrics;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tiny_http::{Header, Response, Server};
use tracing::{info, warn};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct MetricsServer {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves until dropped; `/ready` asks `readiness`.
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        readiness: Readiness,
    ) -> std::io::Result<MetricsServer> {
        let server = Arc::new(Server::http(addr).map_err(|e| std::io::Error::other(e.to_string()))?);
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("metrics listener has no IP address"))?;
        info!(metrics = %bound, "metrics listening");
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("chronik-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let not_ready = readiness.not_ready();
                    let response = match (request.method(), request.url()) {
                        (tiny_http::Method::Get, "/metrics") => {
                            // OpenMetrics for whoever asks for it (Prometheus does);
                            // the classic text format otherwise (curl, promtool).
                            let openmetrics = request.headers().iter().any(|h| {
                                h.field.equiv("Accept")
                                    && h.value.as_str().contains("application/openmetrics-text")
                            });
                            let (body, content_type) = if openmetrics {
                                (metrics.render(), OPENMETRICS)
                            } else {
                                (metrics.render_prometheus_text(), PROMETHEUS_TEXT)
                            };
                            match body {
                                Ok(text) => {
                                    let mut response = Response::from_string(text);
                                    // A fixed, valid ASCII header: from_bytes cannot fail on it.
                                    if let Ok(header) =
                                        Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
                                    {
                                        response.add_header(header);
                                    }
                                    response
                                }
                                Err(_) => Response::from_string("encoding failed").with_status_code(500),
                            }
                        }
                        (tiny_http::Method::Get, "/health") => Response::from_string("ok\n"),
                        (tiny_http::Method::Get, "/ready") => match not_ready {
                            None => Response::from_string("ready\n"),
                            Some(why) => Response::from_string(why).with_status_code(503),
                        },
                        _ => Response::from_string("not found\n").with_status_code(404),
                    };
                    if let Err(e) = request.respond(response) {
                        warn!(error = %e, "metrics response not sent");
                    }
                }
            })?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What `/ready` waits for.
pub struct Readiness {
    /// Shards that finished recovering their logs, of `shards`.
    pub shards_ready: Arc<AtomicUsize>,
    pub shards: usize,
    /// Cluster mode: whether this broker holds a valid etcd lease.
    pub lease_held: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Readiness {
    /// Why the broker is not ready, if it is not.
    fn not_ready(&self) -> Option<&'static str> {
        if self.shards_ready.load(Ordering::Acquire) < self.shards {
            return Some("starting: log recovery in progress\n");
        }
        match &self.lease_held {
            Some(held) if !held.load(Ordering::Acquire) => {
                Some("not in the cluster: this broker holds no valid etcd lease\n")
            }
            _ => None,
        }
    }
}

//! etcd v3 through its JSON gateway (`/v3/kv/*`, `/v3/lease/*`), over the
//! HTTP client the object store already brings.
//!
//! Why not the `etcd-client` crate: its build runs `protoc`, so every
//! `cargo run` on a fresh machine (the README's first command) would need
//! a protobuf compiler installed, for a feature most brokers never turn
//! on. The gateway is etcd's documented interface for non-gRPC clients and
//! carries the same operations: ranges, leases, and transactions with
//! compares, which are all the cluster needs. Everything here runs on the
//! side tokio runtime, never on a shard.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// One key's value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// What a transaction compares before it acts.
#[derive(Debug, Clone)]
pub(crate) enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key was last written at this revision.
    ModRevision(String, i64),
    /// The key is held under this lease.
    Lease(String, i64),
    /// The key holds exactly these bytes.
    Value(String, Vec<u8>),
}

/// What a transaction does.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Put a value; `lease` 0 = none.
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete(String),
    /// Every key from the first up to (not including) the second.
    DeleteRange(String, String),
    /// Every key that starts with this.
    DeletePrefix(String),
}

#[derive(Debug)]
pub(crate) enum EtcdError {
    /// No endpoint answered.
    Unreachable(String),
    /// An endpoint answered something other than success.
    Refused(String),
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Unreachable(why) => write!(f, "etcd unreachable: {why}"),
            EtcdError::Refused(why) => write!(f, "etcd refused: {why}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// A client for one etcd cluster, tried endpoint by endpoint.
#[derive(Clone)]
pub(crate) struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

/// Each call is bounded, so a hung etcd turns into an error the caller
/// sees well within a lease's lifetime.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Etcd {
    pub(crate) fn new(endpoints: &[String]) -> Result<Etcd, String> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the etcd HTTP client: {e}"))?;
        if endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        Ok(Etcd {
            http,
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
        })
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let body = serde_json::to_vec(&body).map_err(|e| EtcdError::Refused(e.to_string()))?;
        let mut last = String::new();
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}{path}");
            let answer = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match answer {
                Ok(response) => response,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            if !status.is_success() {
                return Err(EtcdError::Refused(format!(
                    "{url}: {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )));
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| EtcdError::Refused(format!("{url}: not JSON: {e}")));
        }
        Err(EtcdError::Unreachable(last))
    }

    /// A new lease of `ttl_secs` seconds.
    pub(crate) async fn grant(&self, ttl_secs: i64) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/lease/grant", json!({ "TTL": ttl_secs })).await?;
        let id = int(&answer["ID"]);
        if id == 0 {
            return Err(EtcdError::Refused(format!("lease grant without an id: {answer}")));
        }
        Ok(id)
    }

    /// Renews a lease; `Ok(false)` when etcd no longer has it (expired).
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(int(&answer["result"]["TTL"]) > 0)
    }

    /// Gives a lease up: every key under it goes at once.
    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(|_| ())
    }

    /// Every key that starts with `prefix`, and the store's revision.
    pub(crate) async fn range_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let answer = self
            .call(
                "/v3/kv/range",
                json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) }),
            )
            .await?;
        Ok((kvs(&answer["kvs"]), int(&answer["header"]["revision"])))
    }

    /// One key.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let answer = self
            .call("/v3/kv/range", json!({ "key": B64.encode(key) }))
            .await?;
        Ok(kvs(&answer["kvs"]).into_iter().next())
    }

    /// Does `success` if every compare holds, else nothing; says which,
    /// and the store's revision after it (that of the writes, if done).
    pub(crate) async fn txn(&self, compares: &[Compare], success: &[Op]) -> Result<(bool, i64), EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => json!({
                    "key": B64.encode(key), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0"
                }),
                Compare::ModRevision(key, revision) => json!({
                    "key": B64.encode(key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": revision.to_string()
                }),
                Compare::Lease(key, lease) => json!({
                    "key": B64.encode(key), "target": "LEASE", "result": "EQUAL",
                    "lease": lease.to_string()
                }),
                Compare::Value(key, value) => json!({
                    "key": B64.encode(key), "target": "VALUE", "result": "EQUAL",
                    "value": B64.encode(value)
                }),
            })
            .collect();
        let success: Vec<Value> = success
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => json!({ "request_put": {
                    "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()
                }}),
                Op::Delete(key) => json!({ "request_delete_range": { "key": B64.encode(key) } }),
                Op::DeleteRange(from, to) => json!({ "request_delete_range": {
                    "key": B64.encode(from), "range_end": B64.encode(to)
                }}),
                Op::DeletePrefix(prefix) => json!({ "request_delete_range": {
                    "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))
                }}),
            })
            .collect();
        let answer = self
            .call("/v3/kv/txn", json!({ "compare": compare, "success": success }))
            .await?;
        // The gateway leaves out fields at their default: no "succeeded"
        // means false.
        Ok((
            answer["succeeded"].as_bool().unwrap_or(false),
            int(&answer["header"]["revision"]),
        ))
    }
}

/// The first key after every key with this prefix (etcd's `range_end`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The gateway writes 64-bit integers as strings, and leaves zeros out.
fn int(value: &Value) -> i64 {
    match value {
        Value::String(text) => text.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kvs(value: &Value) -> Vec<KeyValue> {
    let Some(list) = value.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|kv| {
            let key = B64.decode(kv["key"].as_str()?).ok()?;
            let value = match kv["value"].as_str() {
                Some(text) => B64.decode(text).ok()?,
                None => Vec::new(),
            };
            Some(KeyValue {
                key: String::from_utf8(key).ok()?,
                value,
                create_revision: int(&kv["create_revision"]),
                mod_revision: int(&kv["mod_revision"]),
                lease: int(&kv["lease"]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("ab"), b"ac".to_vec());
    }

    #[test]
    fn gateway_integers_come_as_strings_or_not_at_all() {
        let answer: Value = serde_json::from_str(
            r#"{"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","value":"YmFy","lease":"7"},{"key":"Zm8="}]}"#,
        )
        .unwrap();
        let list = kvs(&answer["kvs"]);
        assert_eq!(list[0].key, "foo");
        assert_eq!(list[0].value, b"bar");
        assert_eq!(
            (list[0].create_revision, list[0].mod_revision, list[0].lease),
            (2, 3, 7)
        );
        assert_eq!(list[1].value, Vec::<u8>::new());
        assert_eq!(list[1].lease, 0);
    }
}

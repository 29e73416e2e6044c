//! The binary with TLS as an operator runs it: SIGHUP swaps certificates
//! for new handshakes while open sessions carry on, a bad file on reload
//! keeps the old one, client identities appear in the log, and unusable TLS
//! settings exit 2 naming the setting.

mod common;

use common::tls::{gen_certs, TlsClient};
use common::{scratch_dir, BrokerProcess, BIN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn sighup(broker: &BrokerProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

fn tls_env(certs: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("TLS_CERT_PATH", certs.join("server.crt").display().to_string()),
        ("TLS_KEY_PATH", certs.join("server.key").display().to_string()),
        ("TLS_CA_PATH", certs.join("ca.crt").display().to_string()),
    ]
}

#[test]
fn sighup_reloads_certificates_without_dropping_sessions() {
    let root = scratch_dir("tls-reload");
    let certs = gen_certs(&root.join("certs"), &[]);
    let env = tls_env(&certs);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let broker = BrokerProcess::start(&root.join("data"), &env);

    let mut before = TlsClient::connect(broker.addr, &certs, Some(&certs)).expect("handshake");
    assert_eq!(before.server_common_name(), "localhost");
    before.api_versions().expect("served");
    // The client certificate's identity is in the connection's log line.
    let line = broker.wait_for_line("TLS session established", Duration::from_secs(10));
    assert!(
        line.contains("principal=\"User:CN=chronik-client,O=Chronik Ingest test\"")
            && line.contains("san=DNS:chronik-client"),
        "{line}"
    );

    // A renewed certificate from the same CA, then SIGHUP.
    gen_certs(&certs, &[("SERVER_CN", "chronik-renewed")]);
    sighup(&broker);
    broker.wait_for_line("TLS certificates reloaded", Duration::from_secs(10));
    let mut after = TlsClient::connect(broker.addr, &certs, Some(&certs)).expect("handshake after reload");
    assert_eq!(after.server_common_name(), "chronik-renewed");
    after.api_versions().expect("served after reload");
    before
        .api_versions()
        .expect("the session from before the reload continues");

    // A broken key on the next reload: logged, and the renewed one stays.
    std::fs::write(certs.join("server.key"), "not a key\n").unwrap();
    sighup(&broker);
    let line = broker.wait_for_line("TLS reload failed", Duration::from_secs(10));
    assert!(line.contains("TLS_KEY_PATH"), "{line}");
    let mut still =
        TlsClient::connect(broker.addr, &certs, Some(&certs)).expect("handshake after failed reload");
    assert_eq!(still.server_common_name(), "chronik-renewed");
    still.api_versions().expect("served after a failed reload");
    before.api_versions().expect("the first session is still there");

    drop(broker);
    let _ = std::fs::remove_dir_all(&root);
}

fn start_expecting_exit_2(env: &[(&str, &str)], names: &[&str]) {
    let out = Command::new(BIN)
        .env_clear()
        .env("BIND_ADDRESS", "127.0.0.1:0")
        .env("METRICS_ADDRESS", "")
        .env("STORAGE_PATH", scratch_dir("tls-bad-config"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
    for name in names {
        assert!(err.contains(name), "{env:?}: {name} missing from: {err}");
    }
}

#[test]
fn unusable_tls_settings_exit_2_naming_them() {
    let root = scratch_dir("tls-bad-settings");
    let certs = gen_certs(&root, &[]);
    let cert = certs.join("server.crt").display().to_string();
    let key = certs.join("server.key").display().to_string();
    let base = [("TLS_CERT_PATH", cert.as_str()), ("TLS_KEY_PATH", key.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut env: Vec<(&str, &str)> = base.to_vec();
        env.extend_from_slice(extra);
        env
    };
    start_expecting_exit_2(
        &with(&[("TLS_CIPHER_SUITES", "TLS_AES_256_GCM_SHA384,TLS_MADE_UP")]),
        &["TLS_CIPHER_SUITES", "TLS_MADE_UP"],
    );
    start_expecting_exit_2(&with(&[("TLS_VERSIONS", "1.1")]), &["TLS_VERSIONS", "1.1"]);
    start_expecting_exit_2(
        &with(&[("TLS_REQUIRE_CLIENT_CERT", "true")]),
        &["TLS_REQUIRE_CLIENT_CERT", "TLS_CA_PATH"],
    );
    start_expecting_exit_2(
        &[
            ("TLS_CERT_PATH", "/nonexistent/server.crt"),
            ("TLS_KEY_PATH", key.as_str()),
        ],
        &["TLS_CERT_PATH", "/nonexistent/server.crt"],
    );
    // The CA's key is not the server certificate's key.
    let ca_key = certs.join("ca.key").display().to_string();
    start_expecting_exit_2(
        &[
            ("TLS_CERT_PATH", cert.as_str()),
            ("TLS_KEY_PATH", ca_key.as_str()),
        ],
        &["TLS_KEY_PATH"],
    );
    start_expecting_exit_2(
        &[("LISTENERS", "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0")],
        &["LISTENERS", "TLS_CERT_PATH"],
    );
    let _ = std::fs::remove_dir_all(&root);
}

//! The `chronik-ingest` binary as an operator runs it: configuration errors,
//! --help, refusing a data directory or port already in use, and a graceful
//! SIGTERM with idle clients connected.

mod common;

use chronik_ingest::config::SETTINGS;
use common::{scratch_dir, BrokerProcess, RawClient, BIN};
use kafka_protocol::messages::ApiVersionsRequest;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run binary")
}

#[test]
fn help_lists_every_setting_with_its_default() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for setting in SETTINGS {
        assert!(help.contains(setting.name), "--help lacks {}", setting.name);
    }
    assert!(help.contains("--config"));
    assert!(help.contains("default: 127.0.0.1:9092"));
}

#[test]
fn an_invalid_setting_exits_2_naming_it() {
    let out = run(&[], &[("MAX_CONNECTIONS", "abc")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MAX_CONNECTIONS") && err.contains("abc"), "{err}");

    let dir = scratch_dir("bad-config");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "shutdown_timeout_secs = \"soon\"\n").unwrap();
    let out = run(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHUTDOWN_TIMEOUT_SECS"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_config_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml = root.join("config/chronik-ingest.toml");
    chronik_ingest::ServerConfig::load(Some(&toml)).expect("config/chronik-ingest.toml");
    let env = std::fs::read_to_string(root.join("config/chronik-ingest.env")).unwrap();
    let vars = env
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            assert!(
                SETTINGS.iter().any(|s| s.name == k),
                "unknown setting {k} in the env example"
            );
            (k.to_string(), v.to_string())
        });
    chronik_ingest::ServerConfig::default()
        .apply_vars(vars)
        .expect("config/chronik-ingest.env");
    let dashboard = std::fs::read_to_string(root.join("config/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 4));
    let unit = std::fs::read_to_string(root.join("config/chronik-ingest.service")).unwrap();
    for needed in [
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "Restart=",
        "TimeoutStopSec=",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(needed), "systemd unit lacks {needed}");
    }
}

#[test]
fn a_second_broker_on_the_same_data_dir_or_port_is_refused() {
    let dir = scratch_dir("refuse");
    let first = BrokerProcess::start(&dir, &[]);

    let out = run(
        &[],
        &[
            ("STORAGE_PATH", dir.to_str().unwrap()),
            ("BIND_ADDRESS", "127.0.0.1:0"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));

    let other = scratch_dir("refuse-port");
    let port = first.addr.to_string();
    let out = run(
        &[],
        &[("STORAGE_PATH", other.to_str().unwrap()), ("BIND_ADDRESS", &port)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn sigterm_with_100_idle_connections_exits_0_within_the_shutdown_timeout() {
    let dir = scratch_dir("sigterm");
    let timeout = Duration::from_secs(5);
    let mut broker = BrokerProcess::start(&dir, &[("SHUTDOWN_TIMEOUT_SECS", "5"), ("SHARDS", "2")]);
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(broker.addr).unwrap())
        .collect();
    // One live exchange proves the broker is serving, not just listening.
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(client.call(3, &ApiVersionsRequest::default()).error_code, 0);

    let started = Instant::now();
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(broker.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = broker
        .wait_exit(timeout + Duration::from_secs(5))
        .expect("broker exited after SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < timeout, "took {took:?}, shutdown timeout is {timeout:?}");
    // Every idle connection was closed by the broker.
    for conn in &mut idle {
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut byte = [0u8; 1];
        let n = std::io::Read::read(conn, &mut byte).unwrap_or(0);
        assert_eq!(n, 0);
    }
    let log = broker.log_lines().join("\n");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("chronik-ingest stopped"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// At the open-file limit accept fails at once, every time. The broker must
/// back off and say so (not spin, not crash), and serve again once
/// descriptors free up.
#[test]
fn accept_at_the_open_file_limit_backs_off_and_recovers() {
    let dir = scratch_dir("emfile");
    let broker = BrokerProcess::start_with_fd_limit(&dir, &[("SHARDS", "1")], Some(64));
    let flood: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(broker.addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("accept failed; backing off"))
    {
        let line = broker
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no back-off log line; saw: {seen:#?}"));
        seen.push(line);
    }
    drop(flood);
    // Back-off is capped at 1 s; the backlog drains and new clients are served.
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(client.call(3, &ApiVersionsRequest::default()).error_code, 0);
    let mut broker = broker;
    assert!(broker.child.try_wait().unwrap().is_none(), "broker died");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_frame_is_logged_with_the_client_and_api() {
    let dir = scratch_dir("log-line");
    let broker = BrokerProcess::start(&dir, &[]);
    let mut client = RawClient::connect(broker.addr);
    // Metadata v99 from client "bad-client".
    let body = [&[0u8, 3, 0, 99, 0, 0, 0, 5, 0, 10][..], b"bad-client"].concat();
    let frame = [&(body.len() as i32).to_be_bytes()[..], &body].concat();
    std::io::Write::write_all(&mut client.stream, &frame).unwrap();
    assert!(client.closed_by_broker());
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let line = broker
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a log line about the bad request");
        if line.contains("closing connection") {
            break line;
        }
    };
    for needle in [
        "client_id=\"bad-client\"",
        "api=\"Metadata\"",
        "api_version=99",
        "unsupported api version",
    ] {
        assert!(line.contains(needle), "{needle} missing from: {line}");
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

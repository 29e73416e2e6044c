//! Metadata writes are durable: the real broker binary runs under
//! `strace`, and after the rename that replaces `producer-id-block` or
//! `topics.json` the data directory itself must be fsynced. Without that
//! sync the rename lives only in the page cache, and after a power loss the
//! producer-id block can revert and ids be handed out twice.
//!
//! Needs `strace` (scripts/test installs it) and permission to ptrace a
//! child process.

mod common;

use common::{scratch_dir, BrokerProcess, RawClient};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, InitProducerIdRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One finished system call of the trace.
#[derive(Debug)]
struct Call {
    pid: u32,
    name: String,
    args: String,
    result: i64,
}

/// Parses `strace -f` output into finished calls, in the order they
/// finished, joining `<unfinished ...>` with `<... resumed>` lines.
fn parse_trace(text: &str) -> Vec<Call> {
    let mut pending: HashMap<u32, (String, String)> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            if let Some((name, args)) = start.split_once('(') {
                pending.insert(pid, (name.to_string(), args.to_string()));
            }
            continue;
        }
        let (name, args, tail) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((_, args)) = pending.remove(&pid) else {
                continue;
            };
            (name.to_string(), args, tail.to_string())
        } else {
            let Some((name, args)) = rest.split_once('(') else {
                continue;
            };
            (name.to_string(), args.to_string(), String::new())
        };
        let whole = format!("{args}{tail}");
        // strace pads short calls: `fsync(63)        = 0`.
        let Some((args, result)) = whole.rsplit_once(" = ") else {
            continue;
        };
        let Some(args) = args.trim_end().strip_suffix(')') else {
            continue;
        };
        let result = result.split_whitespace().next().and_then(|r| r.parse().ok());
        if let Some(result) = result {
            calls.push(Call {
                pid,
                name,
                args: args.to_string(),
                result,
            });
        }
    }
    calls
}

/// Checks that each successful rename onto `dir/document` is followed, on
/// the same thread and before its next rename, by an fsync of a descriptor
/// opened on `dir`. Returns how many such renames there were.
fn check_dir_synced_after_rename(calls: &[Call], dir: &Path, document: &str) -> usize {
    let target = format!("\"{}\"", dir.join(document).display());
    let dir_arg = format!("\"{}\"", dir.display());
    let mut renames = 0;
    for (i, call) in calls.iter().enumerate() {
        let is_rename = call.name.starts_with("rename") && call.result == 0;
        if !is_rename || !call.args.trim_end().ends_with(&target) {
            continue;
        }
        renames += 1;
        let mut dir_fds = Vec::new();
        let mut synced = false;
        for later in calls[i + 1..].iter().filter(|c| c.pid == call.pid) {
            if later.name.starts_with("rename") {
                break;
            }
            if later.name == "openat" && later.args.contains(&format!("{dir_arg},")) && later.result >= 0 {
                dir_fds.push(later.result);
            }
            if (later.name == "fsync" || later.name == "fdatasync")
                && later.result == 0
                && dir_fds.iter().any(|fd| later.args.trim() == fd.to_string())
            {
                synced = true;
                break;
            }
        }
        assert!(
            synced,
            "rename onto {target} (thread {}) is not followed by an fsync of {dir_arg}",
            call.pid
        );
    }
    renames
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

#[test]
fn metadata_renames_are_followed_by_a_directory_fsync() {
    let dir = scratch_dir("durable-meta");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.with_extension("strace");
    let tracer: Vec<String> = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "signal=none",
        "-e",
        "trace=openat,rename,renameat,renameat2,fsync,fdatasync",
        "-o",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([trace.to_string_lossy().to_string()])
    .collect();
    // Needs strace, and permission to ptrace (scripts/test installs it).
    let mut broker = BrokerProcess::start_wrapped(&dir, &[("SHARDS", "1")], &tracer);
    let addr = broker.addr;

    let mut client = RawClient::connect(addr);
    let init = client.call(4, &InitProducerIdRequest::default().with_transactional_id(None));
    assert_eq!(init.error_code, 0);
    let created = client.call(
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name("durable"))
                .with_num_partitions(1)
                .with_replication_factor(1)]),
    );
    assert_eq!(created.topics[0].error_code, 0);
    drop(client);

    // Stop the broker itself (its pid is in the lock file) so strace ends
    // with it and the trace is complete.
    let pid = std::fs::read_to_string(dir.join(".lock")).unwrap();
    let status = Command::new("kill").args(["-TERM", pid.trim()]).status().unwrap();
    assert!(status.success(), "kill {pid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            let _ = broker.child.kill();
            let _ = broker.child.wait();
            panic!("broker did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = parse_trace(&text);
    let pid_renames = check_dir_synced_after_rename(&calls, &dir, "producer-id-block");
    assert_eq!(pid_renames, 1, "one producer-id block was written");
    let topic_renames = check_dir_synced_after_rename(&calls, &dir, "topics.json");
    assert_eq!(topic_renames, 1, "one catalog change was written");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&trace);
}

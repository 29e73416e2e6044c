//! Many connections, each producing a little: the "10,000 clients at a low
//! rate" load. Every connection sends one Produce (acks=1, one record) per
//! interval, the sends spread evenly over the interval; responses are read
//! and their error codes counted. One thread, non-blocking sockets and
//! poll(2), so the load generator stays light next to the broker.
//!
//! cargo run --release --example many_producers -- --bootstrap 127.0.0.1:9092 \
//!     --connections 10000 --seconds 30 --interval-ms 1000 --topic many [--record-size 100]
//!
//! Prints one line: connections, requests sent, answered, errors, the
//! answer rate, and the slowest answer seen.

#[path = "support/produce.rs"]
mod produce;

use chronik_ingest::log::batch::build_batch;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

struct Args {
    bootstrap: SocketAddr,
    connections: usize,
    seconds: u64,
    interval: Duration,
    topic: String,
    record_size: usize,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: many_producers --bootstrap HOST:PORT --connections N --seconds S \
         --interval-ms MS --topic TOPIC [--record-size BYTES]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        bootstrap: SocketAddr::from(([127, 0, 0, 1], 9092)),
        connections: 10_000,
        seconds: 30,
        interval: Duration::from_secs(1),
        topic: "many".into(),
        record_size: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("bad {flag} {value}")))
        };
        match flag.as_str() {
            "--bootstrap" => args.bootstrap = value.parse().unwrap_or_else(|_| usage("bad --bootstrap")),
            "--connections" => args.connections = number() as usize,
            "--seconds" => args.seconds = number(),
            "--interval-ms" => args.interval = Duration::from_millis(number()),
            "--record-size" => args.record_size = number() as usize,
            "--topic" => args.topic = value,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    args
}

/// One Produce request frame: acks=1, partition 0, one record.
fn produce_frame(topic: &str, record_size: usize) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let value = vec![b'x'; record_size];
    let batch = build_batch(0, now, &[(&b""[..], &value[..])]);
    produce::produce_frame(topic, 0, 1, "many-producers", batch).unwrap_or_else(|e| usage(&e))
}

/// A connection's unread response bytes and when its oldest unanswered
/// request went out.
struct Conn {
    stream: TcpStream,
    inbox: Vec<u8>,
    sent_at: std::collections::VecDeque<Instant>,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    answered: u64,
    errors: u64,
    write_stalls: u64,
    slowest: Duration,
}

/// Takes every whole response frame off `conn.inbox`.
fn take_responses(conn: &mut Conn, tally: &mut Tally) {
    loop {
        let Some(size) = conn
            .inbox
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return;
        };
        let end = 4 + size.max(0) as usize;
        if conn.inbox.len() < end {
            return;
        }
        let frame = bytes::Bytes::copy_from_slice(&conn.inbox[4..end]);
        conn.inbox.drain(..end);
        tally.answered += 1;
        if let Some(sent) = conn.sent_at.pop_front() {
            tally.slowest = tally.slowest.max(sent.elapsed());
        }
        if !produce::answer_ok(frame) {
            tally.errors += 1;
        }
    }
}

/// Reads whatever has arrived on any connection (poll with no wait).
fn drain(conns: &mut [Conn], tally: &mut Tally, wait: Duration) {
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a live, correctly sized array of pollfd for the
    // duration of the call; poll only writes the revents fields.
    let ready = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            wait.as_millis() as i32,
        )
    };
    if ready <= 0 {
        return;
    }
    let mut chunk = [0u8; 4096];
    for (conn, fd) in conns.iter_mut().zip(&fds) {
        if fd.revents == 0 {
            continue;
        }
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => conn.inbox.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        take_responses(conn, tally);
    }
}

fn main() {
    let args = parse_args();
    let frame = produce_frame(&args.topic, args.record_size);
    let mut conns = Vec::with_capacity(args.connections);
    let connecting = Instant::now();
    for i in 0..args.connections {
        let stream = TcpStream::connect(args.bootstrap)
            .unwrap_or_else(|e| usage(&format!("connection {i} to {}: {e}", args.bootstrap)));
        let _ = stream.set_nodelay(true);
        conns.push(Conn {
            stream,
            inbox: Vec::new(),
            sent_at: Default::default(),
        });
    }
    let connect_time = connecting.elapsed();
    // The first request creates the topic; the rest start once it exists.
    let mut tally = Tally::default();
    if let Some(first) = conns.first_mut() {
        let _ = first.stream.write_all(&frame);
        first.sent_at.push_back(Instant::now());
        tally.sent += 1;
        first.stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut size = [0u8; 4];
        if first.stream.read_exact(&mut size).is_ok() {
            let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
            if first.stream.read_exact(&mut body).is_ok() {
                first.inbox.extend_from_slice(&size);
                first.inbox.extend_from_slice(&body);
                take_responses(first, &mut tally);
            }
        }
    }
    for conn in &conns {
        let _ = conn.stream.set_nonblocking(true);
    }

    let start = Instant::now();
    let run = Duration::from_secs(args.seconds);
    let per_request = args.interval.as_secs_f64() / args.connections.max(1) as f64;
    let mut next = 0u64;
    while start.elapsed() < run {
        let due = (start.elapsed().as_secs_f64() / per_request) as u64;
        while next < due {
            let conn = &mut conns[(next % args.connections as u64) as usize];
            next += 1;
            match conn.stream.write(&frame) {
                Ok(n) if n == frame.len() => {
                    conn.sent_at.push_back(Instant::now());
                    tally.sent += 1;
                }
                // A full socket buffer means the broker is not keeping up;
                // a partial frame would corrupt the stream, so stop here.
                Ok(_) => usage("partial write; the broker is not reading"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => tally.write_stalls += 1,
                Err(e) => usage(&format!("write: {e}")),
            }
        }
        drain(&mut conns, &mut tally, Duration::from_millis(5));
    }
    let settle = Instant::now();
    while tally.answered < tally.sent && settle.elapsed() < Duration::from_secs(10) {
        drain(&mut conns, &mut tally, Duration::from_millis(50));
    }
    println!(
        "{} connections (connected in {:.1} s), {} requests sent, {} answered, {} errors, {} write stalls, \
         {:.0} answers/s, slowest answer {:.1} ms",
        conns.len(),
        connect_time.as_secs_f64(),
        tally.sent,
        tally.answered,
        tally.errors,
        tally.write_stalls,
        tally.answered as f64 / start.elapsed().as_secs_f64(),
        tally.slowest.as_secs_f64() * 1000.0
    );
    if tally.answered < tally.sent || tally.errors > 0 {
        std::process::exit(1);
    }
}

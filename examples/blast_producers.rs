//! A producer load that leaves the broker the CPU: each connection sends
//! one pre-encoded batch (RECORDS x RECORD_SIZE, built once) to its own
//! partition over and over, keeping DEPTH requests in flight, and checks
//! every answer's error code. Per record the client does nothing, so on a
//! small machine the broker, not the client, is what gets measured (used
//! for SHARDS scaling, where librdkafka's clients need a core themselves).
//!
//! cargo run --release --example blast_producers -- --bootstrap 127.0.0.1:9092 \
//!     --topic blast --connections 8 --seconds 10 [--record-size 1024] \
//!     [--records 1000] [--depth 2] [--acks 1]
//!
//! Connection i writes partition i; the topic must have at least as many
//! partitions. Prints one line: records/s, MB/s, requests, errors.

#[path = "support/produce.rs"]
mod produce;

use chronik_ingest::log::batch::build_batch;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

struct Args {
    bootstrap: SocketAddr,
    topic: String,
    connections: usize,
    seconds: u64,
    record_size: usize,
    records: usize,
    depth: usize,
    acks: i16,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: blast_producers --bootstrap HOST:PORT --topic TOPIC --connections N --seconds S \
         [--record-size BYTES] [--records PER_REQUEST] [--depth IN_FLIGHT] [--acks 1|-1]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        bootstrap: SocketAddr::from(([127, 0, 0, 1], 9092)),
        topic: "blast".into(),
        connections: 8,
        seconds: 10,
        record_size: 1024,
        records: 1000,
        depth: 2,
        acks: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse::<i64>()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number")))
        };
        match flag.as_str() {
            "--bootstrap" => {
                args.bootstrap = value
                    .parse()
                    .unwrap_or_else(|_| usage("--bootstrap: want HOST:PORT with an IP"))
            }
            "--topic" => args.topic = value.clone(),
            "--connections" => args.connections = number().max(1) as usize,
            "--seconds" => args.seconds = number().max(1) as u64,
            "--record-size" => args.record_size = number().max(0) as usize,
            "--records" => args.records = number().max(1) as usize,
            "--depth" => args.depth = number().max(1) as usize,
            "--acks" => args.acks = number() as i16,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    args
}

fn produce_frame(args: &Args, partition: i32) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let value = vec![b'x'; args.record_size];
    let records: Vec<(&[u8], &[u8])> = (0..args.records).map(|_| (&b""[..], &value[..])).collect();
    let batch = build_batch(0, now, &records);
    produce::produce_frame(&args.topic, partition, args.acks, "blast-producers", batch)
        .unwrap_or_else(|e| usage(&e))
}

/// Reads one response; `Ok(true)` if every partition answered without error.
fn read_answer(stream: &mut TcpStream) -> std::io::Result<bool> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    stream.read_exact(&mut body)?;
    let ok = produce::answer_ok(bytes::Bytes::from(body));
    Ok(ok)
}

/// One connection's loop: (requests answered, errors).
fn blast(args: &Args, partition: i32, until: Instant) -> (u64, u64) {
    let frame = produce_frame(args, partition);
    let mut stream = TcpStream::connect(args.bootstrap)
        .unwrap_or_else(|e| usage(&format!("connect to {}: {e}", args.bootstrap)));
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let (mut answered, mut errors, mut in_flight) = (0u64, 0u64, 0usize);
    loop {
        while in_flight < args.depth && Instant::now() < until {
            if stream.write_all(&frame).is_err() {
                return (answered, errors + 1);
            }
            in_flight += 1;
        }
        if in_flight == 0 {
            return (answered, errors);
        }
        match read_answer(&mut stream) {
            Ok(true) => answered += 1,
            Ok(false) => errors += 1,
            Err(_) => return (answered, errors + in_flight as u64),
        }
        in_flight -= 1;
    }
}

fn main() {
    let args = parse_args();
    // The first request has the broker create the topic (answered with an
    // error while it does); the load starts once it is accepted.
    let mut first = TcpStream::connect(args.bootstrap)
        .unwrap_or_else(|e| usage(&format!("connect to {}: {e}", args.bootstrap)));
    let _ = first.set_read_timeout(Some(Duration::from_secs(10)));
    let probe = produce_frame(&args, 0);
    let accepted = (0..50).any(|_| {
        let ok = first.write_all(&probe).is_ok() && matches!(read_answer(&mut first), Ok(true));
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    if !accepted {
        usage("produce requests are refused (does the topic have enough partitions?)");
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let results: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|i| {
                let args = &args;
                scope.spawn(move || blast(args, i as i32, until))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or((0, 1))).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let requests: u64 = results.iter().map(|r| r.0).sum();
    let errors: u64 = results.iter().map(|r| r.1).sum();
    let records = requests * args.records as u64;
    println!(
        "{:.0} records/s, {:.1} MB/s, {} requests of {} x {} B on {} connections, {} errors",
        records as f64 / elapsed,
        (records * args.record_size as u64) as f64 / elapsed / 1e6,
        requests,
        args.records,
        args.record_size,
        args.connections,
        errors
    );
    if errors > 0 {
        std::process::exit(1);
    }
}

//! One listening socket per shard on the same address, with SO_REUSEPORT so
//! the kernel spreads incoming connections across shards.
//!
//! All sockets are bound here, on the starting thread, before any executor
//! exists: a bind error (address in use, bad address) surfaces from
//! `Runtime::start` instead of inside a shard, and with port 0 the first
//! socket's ephemeral port is reused by the others so every shard listens on
//! the same port.

use procfs::net::TcpState;
use procfs::process::FDTarget;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Binds `count` listeners on `addr`; returns them and the bound address.
pub(crate) fn bind_shard_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    if addr.port() != 0 {
        refuse_if_port_taken(addr)?;
    }
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = reuseport_listener(bound, backlog)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        }
        fds.push(OwnedFd::from(socket));
    }
    Ok((fds, bound))
}

fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_cloexec(true)?;
    // Accepted sockets inherit this, so every connection gets TCP_NODELAY
    // even before the shard sets it explicitly.
    socket.set_nodelay(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(backlog)?;
    // Left blocking: glommio drives accept through io_uring and its own
    // non-blocking attempt, and expects the fd as `bind` would leave it.
    Ok(socket)
}

/// How long a start waits for a port still held by the listening socket of
/// a process that has exited.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// SO_REUSEPORT lets a second process of the same user bind the same port and
/// silently take half the connections (a stale broker, a second copy
/// started by mistake). A bind *without* SO_REUSEPORT fails if anyone is
/// listening there, so try one first and turn that into a clear error.
///
/// Right after a broker is killed (`kill -9`, a crash) its listening
/// sockets outlive it briefly: io_uring requests still reference them until
/// the kernel tears the ring down. No process owns them then, so a restart
/// (a supervisor's, say) waits for their release, up to [`RELEASE_WAIT`],
/// instead of failing; a socket a live process holds is refused at once.
fn refuse_if_port_taken(addr: SocketAddr) -> io::Result<()> {
    let started = Instant::now();
    let mut waiting = false;
    loop {
        match exclusive_probe(addr) {
            Ok(()) => {
                if waiting {
                    info!(%addr, waited_ms = started.elapsed().as_millis() as u64, "port released");
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if started.elapsed() >= RELEASE_WAIT || held_by_live_process(addr) {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{addr} is already in use by another process"),
                    ));
                }
                if !waiting {
                    warn!(
                        %addr,
                        wait_secs = RELEASE_WAIT.as_secs(),
                        "port held by a listening socket no running process owns \
                         (a process that just exited, being torn down); waiting for its release"
                    );
                    waiting = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn exclusive_probe(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&SockAddr::from(addr))
}

/// Whether a running process (one whose descriptors we may read: ours, or
/// any as root) holds a socket listening where `addr` would listen.
fn held_by_live_process(addr: SocketAddr) -> bool {
    let overlaps = |local: &SocketAddr| {
        local.port() == addr.port()
            && (local.ip() == addr.ip() || local.ip().is_unspecified() || addr.ip().is_unspecified())
    };
    let listening: HashSet<u64> = [procfs::net::tcp(), procfs::net::tcp6()]
        .into_iter()
        .flatten()
        .flatten()
        .filter(|s| s.state == TcpState::Listen && s.inode != 0 && overlaps(&s.local_address))
        .map(|s| s.inode)
        .collect();
    if listening.is_empty() {
        return false;
    }
    let Ok(processes) = procfs::process::all_processes() else {
        return false;
    };
    processes
        .flatten()
        .filter_map(|p| p.fd().ok())
        .flat_map(|fds| fds.flatten())
        .any(|fd| matches!(fd.target, FDTarget::Socket(inode) if listening.contains(&inode)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_port_is_shared_by_all_shards() {
        let (fds, bound) = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(bound.port(), 0);
        for fd in fds {
            let socket = Socket::from(fd);
            assert_eq!(socket.local_addr().unwrap().as_socket(), Some(bound));
        }
    }

    #[test]
    fn a_port_held_by_someone_else_is_refused() {
        let (_held, bound) = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 1, 128).unwrap();
        let started = Instant::now();
        let err = bind_shard_listeners(bound, 2, 128).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Held by a live process (this one): refused without waiting.
        assert!(started.elapsed() < RELEASE_WAIT / 2, "{:?}", started.elapsed());
        assert!(held_by_live_process(bound));
        assert!(held_by_live_process(SocketAddr::from((
            [0, 0, 0, 0],
            bound.port()
        ))));
    }

    #[test]
    fn a_released_port_is_not_held() {
        let (held, bound) = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 1, 128).unwrap();
        drop(held);
        assert!(!held_by_live_process(bound));
        assert!(refuse_if_port_taken(bound).is_ok());
    }
}

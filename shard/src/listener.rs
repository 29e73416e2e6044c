//! One listening socket per shard on the same address, with SO_REUSEPORT so
//! the kernel spreads incoming connections across shards.
//!
//! All sockets are bound here, on the starting thread, before any executor
//! exists: a bind error (address in use, bad address) surfaces from
//! `Runtime::start` instead of inside a shard, and with port 0 the first
//! socket's ephemeral port is reused by the others so every shard listens on
//! the same port.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

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

/// SO_REUSEPORT lets a second process of the same user bind the same port and
/// silently take half the connections (a stale broker, a second copy
/// started by mistake). A bind *without* SO_REUSEPORT fails if anyone is
/// listening there, so try one first and turn that into a clear error.
fn refuse_if_port_taken(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&SockAddr::from(addr)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use by another process"),
        )),
        Err(e) => Err(e),
    }
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
        let err = bind_shard_listeners(bound, 2, 128).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}

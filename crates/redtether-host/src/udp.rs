//! UDP sockets for QUIC endpoints that take bursts: a hub whose fleet reconnects at once (its
//! other hub went away) receives hundreds of handshake packets within milliseconds, more than
//! the kernel's default receive buffer (about 208 KiB) holds; what overflows is dropped, and
//! each dropped handshake costs its device a retransmission timeout (one second, then two, …).

use std::net::{SocketAddr, UdpSocket};

/// The receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Binds `addr` with the receive buffer widened; returns the socket and the buffer granted.
pub fn bind_wide(addr: SocketAddr) -> std::io::Result<(UdpSocket, usize)> {
    let socket = UdpSocket::bind(addr)?;
    let granted = widen_receive_buffer(&socket);
    Ok((socket, granted))
}

/// Asks for [`RECEIVE_BUFFER`]; returns what the kernel granted (for the log: a host whose
/// `rmem_max` is lower keeps a smaller one, and works, with slower bursts).
pub fn widen_receive_buffer(socket: &UdpSocket) -> usize {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::RcvBuf};
    let _ = setsockopt(socket, RcvBuf, &RECEIVE_BUFFER);
    getsockopt(socket, RcvBuf).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_grows_past_the_default() {
        let default = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::RcvBuf).unwrap()
        };
        let (_socket, granted) = bind_wide("127.0.0.1:0".parse().unwrap()).unwrap();
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap().trim().parse().unwrap();
        // Linux reports twice what it was asked for (its bookkeeping), up to twice rmem_max.
        assert!(granted >= default.min(2 * rmem_max), "{granted} < {default}");
        if rmem_max >= RECEIVE_BUFFER {
            assert!(granted >= RECEIVE_BUFFER, "{granted}");
        }
    }
}

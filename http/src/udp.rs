//! UDP socket set-up for QUIC.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer by default. A QUIC endpoint that
//! serves (or downloads) 128 KiB chunks over many connections overflows that within a
//! millisecond of scheduling delay: the kernel drops datagrams (`RcvbufErrors` in
//! `/proc/net/snmp`), QUIC counts them as losses, retransmits and shrinks its congestion
//! window. TCP has no such problem because its buffers auto-tune. So every QUIC socket we open
//! asks for [`QUIC_SOCKET_BUFFER`] each way; the kernel caps the request at
//! `net.core.rmem_max` / `wmem_max`, and when the cap is lower we say so once, with the sysctl
//! that lifts it (docs/edge.md, "Kernel settings").

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Receive and send buffer asked for on every QUIC socket (the kernel doubles the value for
/// its bookkeeping and caps it at `net.core.rmem_max` / `net.core.wmem_max`).
pub const QUIC_SOCKET_BUFFER: usize = 4 << 20;

/// Effective buffer sizes of a socket after [`size_buffers`], as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    /// `SO_RCVBUF` as read back.
    pub recv: usize,
    /// `SO_SNDBUF` as read back.
    pub send: usize,
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Asks for `want` bytes of receive and send buffer on `socket` and returns what the kernel
/// granted. Never fails: a socket whose buffers cannot be raised still works, only less well
/// under load, and that is logged once per process.
pub fn size_buffers(socket: &impl AsFd, want: usize) -> BufferSizes {
    use rustix::net::sockopt;
    let fd = socket.as_fd();
    // The kernel reports twice what was granted (half is its own overhead), so compare halves.
    if sockopt::socket_recv_buffer_size(fd).unwrap_or(0) / 2 < want {
        let _ = sockopt::set_socket_recv_buffer_size(fd, want);
        if sockopt::socket_recv_buffer_size(fd).unwrap_or(0) / 2 < want {
            // Privileged processes (CAP_NET_ADMIN) may exceed rmem_max; others get EPERM.
            let _ = sockopt::set_socket_recv_buffer_size_force(fd, want);
        }
    }
    if sockopt::socket_send_buffer_size(fd).unwrap_or(0) / 2 < want {
        let _ = sockopt::set_socket_send_buffer_size(fd, want);
        if sockopt::socket_send_buffer_size(fd).unwrap_or(0) / 2 < want {
            let _ = sockopt::set_socket_send_buffer_size_force(fd, want);
        }
    }
    let sizes = BufferSizes {
        recv: sockopt::socket_recv_buffer_size(fd).unwrap_or(0),
        send: sockopt::socket_send_buffer_size(fd).unwrap_or(0),
    };
    if (sizes.recv / 2 < want || sizes.send / 2 < want) && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            wanted = want,
            recv = sizes.recv / 2,
            send = sizes.send / 2,
            "UDP socket buffers capped by the kernel; QUIC may drop packets under load \
             (raise with: sysctl -w net.core.rmem_max={want} net.core.wmem_max={want})"
        );
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_never_shrink_and_the_call_never_fails() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = rustix::net::sockopt::socket_recv_buffer_size(&socket).unwrap();
        let sizes = size_buffers(&socket, QUIC_SOCKET_BUFFER);
        assert!(sizes.recv >= before, "{sizes:?} < {before}");
        assert!(sizes.send > 0);
        // Asking again for less changes nothing.
        assert_eq!(size_buffers(&socket, 1024), sizes);
    }
}

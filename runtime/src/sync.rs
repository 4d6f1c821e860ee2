//! The parent ↔ init handshake over a SOCK_SEQPACKET pair: one message per packet, EOF when the other side
//! exits or execs (the sockets are close-on-exec).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::error::{Error, Result};

pub struct Channel(pub OwnedFd);

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(Error::sys("socketpair"))?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub fn send(&self, msg: &str) -> Result<()> {
        send(self.0.as_raw_fd(), msg.as_bytes(), MsgFlags::empty())
            .map(drop)
            .map_err(Error::sys("sync send"))
    }

    /// The next message, or `None` at EOF.
    pub fn recv(&self) -> Result<Option<String>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => return Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    return Err(Error::Sys {
                        what: "sync recv".into(),
                        source: e,
                    })
                }
            }
        }
    }
}

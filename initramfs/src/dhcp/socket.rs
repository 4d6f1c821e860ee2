//! The client's UDP socket: port 68 on one interface. The broadcast flag in our requests makes servers
//! broadcast their replies, so they arrive before the interface has an address; once bound, renewals and their
//! replies are plain unicast.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};

use super::machine::Dest;

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;

pub struct Socket {
    sock: UdpSocket,
}

impl Socket {
    /// Binds port 68 on `iface` (in the calling thread's network namespace).
    pub fn open(iface: &str) -> io::Result<Socket> {
        // SAFETY: a fresh descriptor, owned by the UdpSocket from here on.
        let sock = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            UdpSocket::from_raw_fd(fd)
        };
        let fd = sock.as_raw_fd();
        setsockopt(fd, libc::SO_REUSEADDR, &1i32.to_ne_bytes())?;
        setsockopt(fd, libc::SO_BROADCAST, &1i32.to_ne_bytes())?;
        // Broadcasts must leave by this interface and only its traffic may reach us.
        setsockopt(fd, libc::SO_BINDTODEVICE, iface.as_bytes())?;
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = CLIENT_PORT.to_be();
        // SAFETY: a valid sockaddr_in of the size given.
        if unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { sock })
    }

    pub fn send(&self, packet: &[u8], dest: Dest) -> io::Result<()> {
        let to = match dest {
            Dest::Broadcast => Ipv4Addr::BROADCAST,
            Dest::Server(ip) => ip,
        };
        self.sock
            .send_to(packet, SocketAddrV4::new(to, SERVER_PORT))
            .map(|_| ())
    }

    /// One datagram, if one is waiting.
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<&'b [u8]>> {
        // SAFETY: receiving into a buffer we own, without blocking.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(&buf[..n as usize]))
    }

    pub fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// The interface's hardware address (SIOCGIFHWADDR), read in the socket's network namespace.
    pub fn hardware_address(&self, iface: &str) -> io::Result<[u8; 6]> {
        // SAFETY: an ifreq we own, name NUL-terminated within IFNAMSIZ.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if iface.len() >= req.ifr_name.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {iface:?} is too long"),
            ));
        }
        for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of the ifreq passed.
        if unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel filled the hwaddr member of the union.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != libc::ARPHRD_ETHER {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{iface} is not an ethernet interface (ARP type {})",
                    hw.sa_family
                ),
            ));
        }
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *m = *b as u8;
        }
        Ok(mac)
    }
}

fn setsockopt(fd: i32, opt: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: value outlives the call and its length is passed.
    if unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

//! The rtnetlink requests the node's uplink needs: set a link up, add, replace and delete an IPv4 address,
//! add, replace and delete the IPv4 default route.
//!
//! Kept here rather than taken from `basalt_cni::netlink` so that PID 1 does not depend on the CNI crate's
//! internals (and its churn); the message layout follows rtnetlink(7).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_CACHEINFO: u16 = 6;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
/// The route's gateway is on the link even if no address's prefix covers it (`ip route … onlink`).
const RTNH_F_ONLINK: u32 = 4;
/// `proto dhcp` in `ip route`: routes a DHCP client installed.
pub const RTPROT_DHCP: u8 = 16;
/// `forever` in `ip addr`'s lifetimes.
const INFINITY_LIFE_TIME: u32 = u32::MAX;

pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        // SAFETY: plain socket call; the fd is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        Ok(Rtnl {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            seq: 0,
        })
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut body = ifinfomsg(index);
        body[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        body[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        self.request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, body.to_vec())
    }

    /// Adds `addr/prefix`; already present is fine.
    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        self.create(RTM_NEWADDR, ifaddrmsg(index, addr, prefix))
    }

    /// Sets `addr/prefix` with the subnet's broadcast address, valid and preferred for `lifetime` (`None`:
    /// forever): added, or its lifetimes refreshed if present. The kernel removes it when the lifetime runs
    /// out, so an address whose lease nobody renews does not outlive the lease.
    pub fn replace_addr(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        lifetime: Option<Duration>,
    ) -> io::Result<()> {
        let mut body = ifaddrmsg(index, addr, prefix);
        attr(&mut body, IFA_BROADCAST, &broadcast(addr, prefix).octets());
        // The kernel refuses a zero lifetime; a lease that is about to end gets its last second.
        let secs = lifetime.map_or(INFINITY_LIFE_TIME, |l| {
            l.as_secs().clamp(1, u64::from(INFINITY_LIFE_TIME - 1)) as u32
        });
        // struct ifa_cacheinfo: preferred, valid, then two timestamps the kernel fills in.
        let mut info = [0u8; 16];
        info[0..4].copy_from_slice(&secs.to_ne_bytes());
        info[4..8].copy_from_slice(&secs.to_ne_bytes());
        attr(&mut body, IFA_CACHEINFO, &info);
        self.request(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            body,
        )
    }

    /// Removes `addr/prefix`; already gone is fine.
    pub fn del_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        match self.request(
            RTM_DELADDR,
            NLM_F_REQUEST | NLM_F_ACK,
            ifaddrmsg(index, addr, prefix),
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            r => r,
        }
    }

    /// Adds the default route via `gw` out of `index`; already present is fine.
    pub fn add_default_route(&mut self, gw: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut body = default_route(libc::RTPROT_BOOT, 0);
        attr(&mut body, RTA_GATEWAY, &gw.octets());
        attr(&mut body, RTA_OIF, &index.to_ne_bytes());
        self.create(RTM_NEWROUTE, body)
    }

    /// Makes the main table's default route go via `gw` out of `index` from `src` (tagged `proto`), replacing
    /// whatever default route was there. A gateway outside `src/prefix` (a /32 lease) is declared on-link.
    pub fn replace_default_route(
        &mut self,
        gw: Ipv4Addr,
        index: u32,
        src: Ipv4Addr,
        prefix: u8,
        proto: u8,
    ) -> io::Result<()> {
        let flags = if same_subnet(gw, src, prefix) {
            0
        } else {
            RTNH_F_ONLINK
        };
        let mut body = default_route(proto, flags);
        attr(&mut body, RTA_GATEWAY, &gw.octets());
        attr(&mut body, RTA_OIF, &index.to_ne_bytes());
        attr(&mut body, RTA_PREFSRC, &src.octets());
        self.request(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            body,
        )
    }

    /// Removes the default route via `gw` out of `index`; already gone (the kernel drops it with the
    /// address that made the gateway reachable) is fine.
    pub fn del_default_route(&mut self, gw: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut body = default_route(0, 0);
        attr(&mut body, RTA_GATEWAY, &gw.octets());
        attr(&mut body, RTA_OIF, &index.to_ne_bytes());
        match self.request(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, body) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r,
        }
    }

    fn create(&mut self, ty: u16, body: Vec<u8>) -> io::Result<()> {
        match self.request(
            ty,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            body,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    fn request(&mut self, ty: u16, flags: u16, body: Vec<u8>) -> io::Result<()> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        // SAFETY: sending a buffer we own to the kernel (a zeroed sockaddr_nl means "the kernel").
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: receiving into a buffer we own.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut p = &buf[..n as usize];
            while p.len() >= 16 {
                let len = u32::from_ne_bytes(p[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(p[4..6].try_into().unwrap());
                let seq = u32::from_ne_bytes(p[8..12].try_into().unwrap());
                if ty == NLMSG_ERROR && seq == self.seq && p.len() >= 20 {
                    let err = i32::from_ne_bytes(p[16..20].try_into().unwrap());
                    return if err == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-err))
                    };
                }
                if len < 16 || len > p.len() {
                    break;
                }
                p = &p[(len + 3) & !3..];
            }
        }
    }
}

/// struct ifaddrmsg for `addr/prefix` on `index`, with its address attributes.
fn ifaddrmsg(index: u32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, prefix, 0, 0];
    body.extend_from_slice(&index.to_ne_bytes());
    attr(&mut body, IFA_LOCAL, &addr.octets());
    attr(&mut body, IFA_ADDRESS, &addr.octets());
    body
}

/// struct rtmsg of a main-table IPv4 default route.
fn default_route(proto: u8, flags: u32) -> Vec<u8> {
    // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
    let mut body = vec![
        libc::AF_INET as u8,
        0,
        0,
        0,
        libc::RT_TABLE_MAIN,
        proto,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNICAST,
    ];
    body.extend_from_slice(&flags.to_ne_bytes());
    body
}

fn mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

/// The subnet's broadcast address (`ip addr add … brd +`).
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    if prefix >= 31 {
        // Point-to-point and host prefixes have no broadcast address of their own.
        return addr;
    }
    Ipv4Addr::from(u32::from(addr) | !mask(prefix))
}

/// Whether `a` lies in `net/prefix`.
pub fn same_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    (u32::from(a) ^ u32::from(net)) & mask(prefix) == 0
}

fn ifinfomsg(index: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// The interface index of `name` (if_nametoindex).
pub fn index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let mut b = Vec::new();
        attr(&mut b, 3, b"eth0\0");
        assert_eq!(b.len(), 12);
        assert_eq!(&b[0..2], &9u16.to_ne_bytes());
    }

    #[test]
    fn subnets_and_broadcast_addresses() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(broadcast(a, 24), Ipv4Addr::new(10, 0, 2, 255));
        assert_eq!(broadcast(a, 8), Ipv4Addr::new(10, 255, 255, 255));
        assert_eq!(broadcast(a, 32), a);
        assert_eq!(broadcast(a, 0), Ipv4Addr::BROADCAST);
        assert!(same_subnet(Ipv4Addr::new(10, 0, 2, 2), a, 24));
        assert!(!same_subnet(Ipv4Addr::new(10, 0, 3, 2), a, 24));
        assert!(!same_subnet(Ipv4Addr::new(10, 0, 2, 2), a, 32));
        assert!(same_subnet(Ipv4Addr::new(192, 0, 2, 1), a, 0));
    }
}

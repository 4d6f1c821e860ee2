//! A minimal DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK on a UDP socket bound to one interface.
//!
//! The broadcast flag asks the server to broadcast its replies, so they arrive before the interface has an
//! address. No renewal yet: the lease time is reported and the address kept (qemu's user network leases for
//! a day); renewal is a follow-up.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const COOKIE: [u8; 4] = [99, 130, 83, 99];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
}

#[derive(Debug, Default)]
struct Reply {
    kind: u8,
    yiaddr: Option<Ipv4Addr>,
    mask: Option<Ipv4Addr>,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    server: Option<Ipv4Addr>,
    lease: Option<u32>,
}

/// Asks for an address on `iface` (hardware address `mac`) until `timeout`.
pub fn acquire(iface: &str, mac: [u8; 6], hostname: &str, timeout: Duration) -> io::Result<Lease> {
    let sock = socket(iface)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let xid =
        u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ (super::log::uptime() * 1e6) as u32;
    let deadline = Instant::now() + timeout;
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut buf = [0u8; 1500];
    // One DISCOVER per round; a round ends at the first matching reply or after 2 s.
    while Instant::now() < deadline {
        sock.send_to(&packet(DISCOVER, xid, mac, None, hostname), dest)?;
        let Some(offer) = wait_for(
            &sock,
            &mut buf,
            xid,
            OFFER,
            deadline.min(Instant::now() + Duration::from_secs(2)),
        )?
        else {
            continue;
        };
        let (Some(addr), Some(server)) = (offer.yiaddr, offer.server) else {
            continue;
        };
        sock.send_to(
            &packet(REQUEST, xid, mac, Some((addr, server)), hostname),
            dest,
        )?;
        let Some(ack) = wait_for(
            &sock,
            &mut buf,
            xid,
            ACK,
            deadline.min(Instant::now() + Duration::from_secs(2)),
        )?
        else {
            continue;
        };
        let mask = ack
            .mask
            .or(offer.mask)
            .unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
        return Ok(Lease {
            addr: ack.yiaddr.unwrap_or(addr),
            prefix: u32::from(mask).count_ones() as u8,
            gateway: ack.router.or(offer.router),
            dns: if ack.dns.is_empty() {
                offer.dns
            } else {
                ack.dns
            },
            server,
            lease_secs: ack.lease.or(offer.lease),
        });
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no DHCP answer on {iface} within {timeout:?}"),
    ))
}

fn wait_for(
    sock: &UdpSocket,
    buf: &mut [u8],
    xid: u32,
    want: u8,
    until: Instant,
) -> io::Result<Option<Reply>> {
    while Instant::now() < until {
        match sock.recv_from(buf) {
            Ok((n, _)) => {
                if let Some(r) = parse(&buf[..n], xid) {
                    if r.kind == want {
                        return Ok(Some(r));
                    }
                    if r.kind == NAK {
                        return Ok(None);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn socket(iface: &str) -> io::Result<UdpSocket> {
    // SAFETY: plain socket calls on a fd we own; option values outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_BROADCAST] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                4,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr().cast(),
            iface.len() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = 68u16.to_be();
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}

fn packet(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    request: Option<(Ipv4Addr, Ipv4Addr)>,
    hostname: &str,
) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // broadcast replies
    b[28..34].copy_from_slice(&mac);
    b.extend_from_slice(&COOKIE);
    b.extend_from_slice(&[53, 1, kind]);
    b.extend_from_slice(&[61, 7, 1]);
    b.extend_from_slice(&mac);
    if let Some((addr, server)) = request {
        b.extend_from_slice(&[50, 4]);
        b.extend_from_slice(&addr.octets());
        b.extend_from_slice(&[54, 4]);
        b.extend_from_slice(&server.octets());
    }
    let name = &hostname.as_bytes()[..hostname.len().min(63)];
    if !name.is_empty() {
        b.extend_from_slice(&[12, name.len() as u8]);
        b.extend_from_slice(name);
    }
    b.extend_from_slice(&[55, 4, 1, 3, 6, 51, 255]);
    b
}

fn parse(p: &[u8], xid: u32) -> Option<Reply> {
    if p.len() < 240 || p[0] != 2 || p[4..8] != xid.to_be_bytes() || p[236..240] != COOKIE {
        return None;
    }
    let ip = |d: &[u8]| <[u8; 4]>::try_from(d).ok().map(Ipv4Addr::from);
    let mut r = Reply {
        yiaddr: ip(&p[16..20]).filter(|a| !a.is_unspecified()),
        ..Reply::default()
    };
    let mut o = &p[240..];
    while let Some(&code) = o.first() {
        match code {
            0 => {
                o = &o[1..];
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = *o.get(1)? as usize;
        let d = o.get(2..2 + len)?;
        match code {
            1 => r.mask = ip(d),
            3 => r.router = d.get(..4).and_then(ip),
            6 => r.dns = d.chunks_exact(4).filter_map(ip).collect(),
            51 => r.lease = d.try_into().ok().map(u32::from_be_bytes),
            53 => r.kind = *d.first()?,
            54 => r.server = ip(d),
            _ => {}
        }
        o = &o[2 + len..];
    }
    (r.kind != 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_built_like_ours_parses_back() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let mut p = packet(
            REQUEST,
            7,
            mac,
            Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))),
            "n1",
        );
        assert!(parse(&p, 7).is_none(), "a request is not a reply");
        p[0] = 2;
        p[16..20].copy_from_slice(&[10, 0, 2, 15]);
        let r = parse(&p, 7).unwrap();
        assert_eq!(r.kind, REQUEST);
        assert_eq!(r.yiaddr, Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(r.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert!(parse(&p, 8).is_none(), "other transaction");
    }
}

//! DHCPv4 messages on the wire (RFC 2131 §2, options from RFC 2132): the requests a client sends and the
//! replies it reads.

use std::net::Ipv4Addr;

const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header before the magic cookie.
const HEADER: usize = 236;
/// BOOTP relays may drop anything shorter (RFC 1542 §2.1).
const MIN_LEN: usize = 300;
/// What we accept (option 57): an ethernet frame's worth, well above RFC 2131's 576.
pub const MAX_LEN: u16 = 1500;

const OPT_PAD: u8 = 0;
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_DOMAIN: u8 = 15;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETERS: u8 = 55;
const OPT_MESSAGE: u8 = 56;
const OPT_MAX_SIZE: u8 = 57;
const OPT_T1: u8 = 58;
const OPT_T2: u8 = 59;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

/// Option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Discover,
            2 => Kind::Offer,
            3 => Kind::Request,
            4 => Kind::Decline,
            5 => Kind::Ack,
            6 => Kind::Nak,
            7 => Kind::Release,
            _ => return None,
        })
    }
}

/// A message from the client. Which fields a kind carries in which state is RFC 2131 table 5; the state
/// machine fills them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    pub kind: Kind,
    pub xid: u32,
    /// Seconds since this acquisition or renewal began.
    pub secs: u16,
    /// Ask the server to broadcast its reply: we cannot receive unicast before the address is configured.
    pub broadcast: bool,
    /// Our address once bound (RENEWING, REBINDING, RELEASE), else unspecified.
    pub ciaddr: Ipv4Addr,
    pub mac: [u8; 6],
    /// Option 50: the offered address (SELECTING).
    pub requested: Option<Ipv4Addr>,
    /// Option 54: the chosen server (SELECTING, RELEASE).
    pub server: Option<Ipv4Addr>,
    pub hostname: &'a str,
}

impl Outgoing<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0] = 1; // BOOTREQUEST
        b[1] = 1; // htype: ethernet
        b[2] = 6; // hlen
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        if self.broadcast {
            b[10] = 0x80;
        }
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[28..34].copy_from_slice(&self.mac);
        b.extend_from_slice(&COOKIE);
        b.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, self.kind as u8]);
        // Client identifier: hardware type and address, as udhcpc and dnsmasq's clients send it.
        b.extend_from_slice(&[OPT_CLIENT_ID, 7, 1]);
        b.extend_from_slice(&self.mac);
        if let Some(addr) = self.requested {
            b.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
            b.extend_from_slice(&addr.octets());
        }
        if let Some(server) = self.server {
            b.extend_from_slice(&[OPT_SERVER_ID, 4]);
            b.extend_from_slice(&server.octets());
        }
        if self.kind != Kind::Release {
            let name = &self.hostname.as_bytes()[..self.hostname.len().min(63)];
            if !name.is_empty() {
                b.extend_from_slice(&[OPT_HOSTNAME, name.len() as u8]);
                b.extend_from_slice(name);
            }
            b.extend_from_slice(&[OPT_MAX_SIZE, 2]);
            b.extend_from_slice(&MAX_LEN.to_be_bytes());
            b.extend_from_slice(&[
                OPT_PARAMETERS,
                7,
                OPT_MASK,
                OPT_ROUTER,
                OPT_DNS,
                OPT_DOMAIN,
                OPT_LEASE_TIME,
                OPT_T1,
                OPT_T2,
            ]);
        }
        b.push(OPT_END);
        if b.len() < MIN_LEN {
            b.resize(MIN_LEN, OPT_PAD);
        }
        b
    }
}

/// A server's reply, with the options we use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Option<Kind>,
    pub xid: u32,
    pub yiaddr: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub server: Option<Ipv4Addr>,
    /// Option 51, seconds; `u32::MAX` is infinite.
    pub lease_secs: Option<u32>,
    pub t1_secs: Option<u32>,
    pub t2_secs: Option<u32>,
    /// Option 56: why a NAK was sent.
    pub message: Option<String>,
}

/// Reads a BOOTREPLY addressed to `mac`; anything else (requests, other clients' replies, garbage) is `None`.
pub fn parse(p: &[u8], mac: [u8; 6]) -> Option<Reply> {
    if p.len() < HEADER + COOKIE.len()
        || p[0] != 2
        || p[1] != 1
        || p[28..34] != mac
        || p[HEADER..HEADER + 4] != COOKIE
    {
        return None;
    }
    let ip = |d: &[u8]| <[u8; 4]>::try_from(d).ok().map(Ipv4Addr::from);
    let secs = |d: &[u8]| <[u8; 4]>::try_from(d).ok().map(u32::from_be_bytes);
    let text = |d: &[u8]| Some(String::from_utf8_lossy(d).trim_end_matches('\0').to_owned());
    let mut r = Reply {
        xid: u32::from_be_bytes(p[4..8].try_into().ok()?),
        yiaddr: ip(&p[16..20]).filter(|a| !a.is_unspecified()),
        ..Reply::default()
    };
    let mut o = &p[HEADER + 4..];
    while let Some(&code) = o.first() {
        match code {
            OPT_PAD => {
                o = &o[1..];
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let len = *o.get(1)? as usize;
        let d = o.get(2..2 + len)?;
        match code {
            OPT_MESSAGE_TYPE => r.kind = d.first().copied().and_then(Kind::from_byte),
            OPT_MASK => r.mask = ip(d),
            OPT_ROUTER => r.routers = d.chunks_exact(4).filter_map(ip).collect(),
            OPT_DNS => r.dns = d.chunks_exact(4).filter_map(ip).collect(),
            OPT_DOMAIN => r.domain = text(d).filter(|s| !s.is_empty()),
            OPT_SERVER_ID => r.server = ip(d),
            OPT_LEASE_TIME => r.lease_secs = secs(d),
            OPT_T1 => r.t1_secs = secs(d),
            OPT_T2 => r.t2_secs = secs(d),
            OPT_MESSAGE => r.message = text(d),
            _ => {}
        }
        o = &o[2 + len..];
    }
    r.kind.is_some().then_some(r)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server's reply as dnsmasq lays it out.
    pub fn reply(kind: Kind, xid: u32, yiaddr: Ipv4Addr, options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER];
        p[0] = 2;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[16..20].copy_from_slice(&yiaddr.octets());
        p[28..34].copy_from_slice(&MAC);
        p.extend_from_slice(&COOKIE);
        p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, kind as u8]);
        for (code, data) in options {
            p.extend_from_slice(&[*code, data.len() as u8]);
            p.extend_from_slice(data);
        }
        p.push(OPT_END);
        p
    }

    #[test]
    fn requests_carry_what_rfc_2131_table_5_asks() {
        let out = Outgoing {
            kind: Kind::Request,
            xid: 0x01020304,
            secs: 3,
            broadcast: false,
            ciaddr: Ipv4Addr::new(10, 0, 2, 15),
            mac: MAC,
            requested: None,
            server: None,
            hostname: "n1",
        };
        let p = out.encode();
        assert_eq!(p.len(), MIN_LEN, "padded to the BOOTP minimum");
        assert_eq!(&p[4..8], &[1, 2, 3, 4]);
        assert_eq!(&p[8..10], &[0, 3]);
        assert_eq!(p[10], 0, "no broadcast flag once bound");
        assert_eq!(&p[12..16], &[10, 0, 2, 15]);
        assert_eq!(&p[28..34], &MAC);
        let opts = &p[HEADER + 4..];
        assert_eq!(&opts[..3], &[53, 1, 3]);
        assert!(!opts.windows(2).any(|w| w == [50, 4]), "no requested-ip");
        assert!(parse(&p, MAC).is_none(), "a request is not a reply");

        let p = Outgoing {
            kind: Kind::Discover,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(Ipv4Addr::new(10, 0, 2, 15)),
            server: Some(Ipv4Addr::new(10, 0, 2, 2)),
            ..out
        }
        .encode();
        assert_eq!(p[10], 0x80);
        let opts = &p[HEADER + 4..];
        assert!(opts.windows(6).any(|w| w == [50, 4, 10, 0, 2, 15]));
        assert!(opts.windows(6).any(|w| w == [54, 4, 10, 0, 2, 2]));
        assert!(opts.windows(4).any(|w| w == [12, 2, b'n', b'1']));
    }

    #[test]
    fn replies_parse_with_their_options() {
        let p = reply(
            Kind::Ack,
            7,
            Ipv4Addr::new(10, 0, 2, 15),
            &[
                (54, &[10, 0, 2, 2]),
                (51, &120u32.to_be_bytes()),
                (58, &30u32.to_be_bytes()),
                (59, &90u32.to_be_bytes()),
                (1, &[255, 255, 255, 0]),
                (3, &[10, 0, 2, 2, 10, 0, 2, 1]),
                (6, &[10, 0, 2, 3, 1, 1, 1, 1]),
                (15, b"example.org\0"),
            ],
        );
        let r = parse(&p, MAC).unwrap();
        assert_eq!(r.kind, Some(Kind::Ack));
        assert_eq!(r.xid, 7);
        assert_eq!(r.yiaddr, Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(r.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.routers[0], Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(r.dns.len(), 2);
        assert_eq!(
            (r.lease_secs, r.t1_secs, r.t2_secs),
            (Some(120), Some(30), Some(90))
        );
        assert_eq!(r.domain.as_deref(), Some("example.org"));
        assert!(parse(&p, [2, 0, 0, 0, 0, 1]).is_none(), "another client's");
        assert!(parse(&p[..p.len() - 8], MAC).is_none(), "truncated option");
        assert!(parse(&p[..200], MAC).is_none());
    }
}

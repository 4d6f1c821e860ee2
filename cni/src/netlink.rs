//! A small synchronous netlink client: request/ack and dumps over a `netlink-sys` socket with
//! `netlink-packet-core` framing, the rtnetlink link, address and route operations the bridge plugin
//! needs (message types from `netlink-packet-route`), and a raw attribute builder for nf_tables, which
//! has no such crate. Sockets are bound to the network namespace of the thread that opened them, which
//! is how we act inside a pod's netns (see `netns`).

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use netlink_packet_core::{
    DecodeError, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    LinkProtoInfoBridge,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::spec::IpNet;

/// IFLA_BRPORT_MODE: the hairpin flag of a bridge port (the crate has no variant for it).
const IFLA_BRPORT_MODE: u16 = 4;

/// The body of a message of a family without a crate of its own (nf_tables): type and raw payload.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub ty: u16,
    pub payload: Vec<u8>,
}

impl NetlinkSerializable for RawMessage {
    fn message_type(&self) -> u16 {
        self.ty
    }

    fn buffer_len(&self) -> usize {
        self.payload.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[..self.payload.len()].copy_from_slice(&self.payload);
    }
}

impl NetlinkDeserializable for RawMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(RawMessage {
            ty: header.message_type,
            payload: payload.to_vec(),
        })
    }
}

/// One raw message under construction: fixed family header, then attributes (nested ones by
/// `begin`/`end`).
pub struct Message {
    flags: u16,
    body: RawMessage,
    nests: Vec<usize>,
}

impl Message {
    pub fn new(ty: u16, flags: u16) -> Message {
        Message {
            flags,
            body: RawMessage {
                ty,
                payload: Vec::new(),
            },
            nests: Vec::new(),
        }
    }

    /// Appends a fixed family header (nfgenmsg, ...).
    pub fn header(&mut self, data: &[u8]) -> &mut Self {
        self.body.payload.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.body.payload.len().is_multiple_of(4) {
            self.body.payload.push(0);
        }
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let buf = &mut self.body.payload;
        buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    pub fn attr_be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d)
    }

    pub fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.body.payload.len());
        self.attr(ty | NLA_F_NESTED, &[])
    }

    pub fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("end() matches begin()");
        let len = (self.body.payload.len() - start) as u16;
        self.body.payload[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Frames the message with sequence number `seq` and returns the wire bytes.
    pub fn finish(self, seq: u32) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unbalanced nested attributes");
        frame(self.flags, seq, self.body)
    }
}

fn frame<I: NetlinkSerializable>(flags: u16, seq: u32, inner: I) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Iterates the attributes in `data`, yielding (type without flags, payload).
pub fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        let adv = (len + 3) & !3;
        data = &data[adv.min(data.len())..];
        Some((ty, payload))
    })
}

fn decode_err(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

pub struct Socket {
    sock: netlink_sys::Socket,
    seq: u32,
}

impl Socket {
    /// Opens a netlink socket of `protocol` in the calling thread's network namespace.
    pub fn open(protocol: i32) -> io::Result<Socket> {
        let mut sock = netlink_sys::Socket::new(protocol as isize)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // A kernel that never answers must not hang the plugin forever.
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(10, 0))?;
        Ok(Socket { sock, seq: 1 })
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        self.sock.send(buf, 0).map(drop)
    }

    /// Receives one datagram and splits it into messages.
    pub fn recv<I: NetlinkDeserializable>(&self) -> io::Result<Vec<NetlinkMessage<I>>> {
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            match self.sock.recv(&mut buf, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        let mut out = Vec::new();
        let mut data = &buf[..];
        while !data.is_empty() {
            let len = NetlinkBuffer::new_checked(data)
                .map_err(decode_err)?
                .length() as usize;
            out.push(NetlinkMessage::deserialize(&data[..len]).map_err(decode_err)?);
            data = &data[((len + 3) & !3).min(data.len())..];
        }
        Ok(out)
    }

    /// Sends a request and returns the replies before its ack or end of dump (for GET requests, the
    /// answer); an error reply becomes the matching `io::Error`.
    pub fn request<I>(&mut self, flags: u16, inner: I) -> io::Result<Vec<I>>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
    {
        let seq = self.next_seq();
        self.send(&frame(NLM_F_REQUEST | flags, seq, inner))?;
        let mut replies = Vec::new();
        loop {
            for m in self.recv::<I>()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(i) => replies.push(i),
                    _ => {}
                }
            }
        }
    }

    /// `request` for a raw message built with [`Message`].
    pub fn request_raw(&mut self, msg: Message) -> io::Result<Vec<RawMessage>> {
        assert!(msg.nests.is_empty(), "unbalanced nested attributes");
        self.request(msg.flags, msg.body)
    }
}

/// A network interface as rtnetlink reports it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub master: Option<u32>,
    pub mac: String,
    pub kind: Option<String>,
}

fn parse_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        master: None,
        mac: String::new(),
        kind: None,
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Controller(i) => link.master = Some(i),
            LinkAttribute::Address(mac) => {
                link.mac = mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn up(mut msg: LinkMessage) -> LinkMessage {
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg
}

fn by_name(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

fn by_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn family(ipv4: bool) -> AddressFamily {
    if ipv4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// `Ok(None)` for an absent device instead of ENODEV.
fn absent_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// EEXIST is success for requests whose result may already be in place.
fn exists_is_ok(r: io::Result<Vec<RouteNetlinkMessage>>) -> io::Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

const CREATE: u16 = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

/// rtnetlink operations on one namespace.
pub struct Route(pub Socket);

impl Route {
    pub fn open() -> io::Result<Route> {
        Socket::open(libc::NETLINK_ROUTE).map(Route)
    }

    fn first_link(&mut self, query: LinkMessage) -> io::Result<Option<Link>> {
        let replies = absent_is_none(
            self.0
                .request(NLM_F_ACK, RouteNetlinkMessage::GetLink(query)),
        )?;
        Ok(replies.into_iter().flatten().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
            _ => None,
        }))
    }

    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        self.first_link(by_name(name))
    }

    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        self.first_link(by_index(index))
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let r = self.0.request(
            NLM_F_DUMP,
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(r.into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates an up bridge; `Ok(false)` if one of that name already exists.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> io::Result<bool> {
        let mut m = up(by_name(name));
        m.attributes.extend(mtu.map(LinkAttribute::Mtu));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        exists_is_ok(self.0.request(CREATE, RouteNetlinkMessage::NewLink(m)))
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.0
            .request(NLM_F_ACK, RouteNetlinkMessage::SetLink(up(by_index(index))))
            .map(drop)
    }

    /// Creates a veth pair: `host` here and up, enslaved to `master`, and `peer` directly inside the
    /// namespace `peer_netns` (so there is no window where it exists under a temporary name).
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: &impl AsRawFd,
        mtu: Option<u32>,
        master: u32,
    ) -> io::Result<()> {
        // The peer cannot be set up here: veth refuses to open before both ends are linked (ENOTCONN).
        let mut p = by_name(peer);
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        p.attributes.extend(mtu.map(LinkAttribute::Mtu));
        let mut m = up(by_name(host));
        m.attributes.push(LinkAttribute::Controller(master));
        m.attributes.extend(mtu.map(LinkAttribute::Mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.0
            .request(CREATE, RouteNetlinkMessage::NewLink(m))
            .map(drop)
    }

    pub fn set_hairpin(&mut self, index: u32, on: bool) -> io::Result<()> {
        let mut m = by_index(index);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::ProtoInfoBridge(vec![
            LinkProtoInfoBridge::Other(netlink_packet_core::DefaultNla::new(
                IFLA_BRPORT_MODE,
                vec![on as u8],
            )),
        ]));
        self.0
            .request(NLM_F_ACK, RouteNetlinkMessage::SetLink(m))
            .map(drop)
    }

    /// Deletes a link by name; `Ok(false)` if there was none.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        match self
            .0
            .request(NLM_F_ACK, RouteNetlinkMessage::DelLink(by_name(name)))
        {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENOENT)) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Adds an address; an address already present is fine. IPv6 skips DAD so the pod can use it at once.
    pub fn add_addr(&mut self, index: u32, net: IpNet) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(net.is_ipv4());
        m.header.prefix_len = net.prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(net.addr));
        m.attributes.push(AddressAttribute::Address(net.addr));
        if !net.is_ipv4() {
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        exists_is_ok(self.0.request(CREATE, RouteNetlinkMessage::NewAddress(m))).map(drop)
    }

    /// Addresses on interface `index`.
    pub fn addrs(&mut self, index: u32) -> io::Result<Vec<IpNet>> {
        let r = self.0.request(
            NLM_F_DUMP,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?;
        let mut out = Vec::new();
        for m in r {
            let RouteNetlinkMessage::NewAddress(m) = m else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            for a in m.attributes {
                if let AddressAttribute::Address(ip) = a {
                    out.extend(IpNet::new(ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Adds a route in the main table; an identical route already present is fine.
    pub fn add_route(&mut self, dst: IpNet, gw: Option<IpAddr>, oif: u32) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst.is_ipv4());
        m.header.destination_prefix_length = dst.prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        if dst.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(dst.network().addr.into()));
        }
        if let Some(gw) = gw {
            m.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        exists_is_ok(self.0.request(CREATE, RouteNetlinkMessage::NewRoute(m))).map(drop)
    }

    /// Routes of the main table in one family: (destination, gateway).
    pub fn routes(&mut self, ipv4: bool) -> io::Result<Vec<(IpNet, Option<IpAddr>)>> {
        let mut q = RouteMessage::default();
        q.header.address_family = family(ipv4);
        let r = self
            .0
            .request(NLM_F_DUMP, RouteNetlinkMessage::GetRoute(q))?;
        let any: IpAddr = if ipv4 {
            [0u8; 4].into()
        } else {
            [0u8; 16].into()
        };
        let mut out = Vec::new();
        for m in r {
            let RouteNetlinkMessage::NewRoute(m) = m else {
                continue;
            };
            if m.header.address_family != family(ipv4)
                || m.header.table != RouteHeader::RT_TABLE_MAIN
            {
                continue;
            }
            let (mut dst, mut gw) = (any, None);
            for a in m.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = route_ip(d).unwrap_or(any),
                    RouteAttribute::Gateway(g) => gw = route_ip(g),
                    _ => {}
                }
            }
            out.extend(IpNet::new(dst, m.header.destination_prefix_length).map(|n| (n, gw)));
        }
        Ok(out)
    }
}

fn route_ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(a.into()),
        RouteAddress::Inet6(a) => Some(a.into()),
        _ => None,
    }
}

pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

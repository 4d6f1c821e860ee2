//! nftables over netlink (no `nft` binary): one `inet` table per network with NAT chains for masquerade
//! (postrouting) and hostPort DNAT (prerouting). Every rule carries a comment naming the attachment
//! (container ID and ifname) in the same userdata layout the `nft` CLI uses, so DEL removes exactly the
//! rules ADD made, and `nft list ruleset` shows whose they are.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};

use crate::netlink::{attrs, Message, RawMessage, Socket};
use crate::spec::{IpNet, PortMapping};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_NAT_DNAT: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NF_INET_LOCAL_OUT: u32 = 3;
/// NFTNL_UDATA_RULE_COMMENT: what `nft ... comment "..."` stores.
const UDATA_RULE_COMMENT: u8 = 0;

pub const CHAIN_POSTROUTING: &str = "postrouting";
pub const CHAIN_PREROUTING: &str = "prerouting";
/// hostPort DNAT for connections the node itself opens to its own address.
pub const CHAIN_OUTPUT: &str = "output";

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn nfgen(ty: u16, flags: u16, family: u8) -> Message {
    let mut m = Message::new(ty, NLM_F_REQUEST | flags);
    m.header(&[family, 0, 0, 0]);
    m
}

/// The table name for a network.
pub fn table_name(network: &str) -> String {
    let mut t = format!("basalt-cni-{network}");
    t.truncate(200);
    t
}

/// The comment that ties a rule to an attachment.
pub fn tag(container_id: &str, ifname: &str) -> String {
    let mut t = format!("basalt-cni {container_id} {ifname}");
    t.truncate(250);
    t
}

fn userdata(tag: &str) -> Vec<u8> {
    let mut v = vec![UDATA_RULE_COMMENT, (tag.len() + 1) as u8];
    v.extend_from_slice(tag.as_bytes());
    v.push(0);
    v
}

/// Appends one expression to a rule message.
type ExprWriter = Box<dyn Fn(&mut Message)>;

/// Builds the expressions of one rule.
#[derive(Default)]
struct Exprs(Vec<ExprWriter>);

impl Exprs {
    fn push(&mut self, name: &'static str, body: impl Fn(&mut Message) + 'static) -> &mut Self {
        self.0.push(Box::new(move |m: &mut Message| {
            m.begin(NFTA_LIST_ELEM)
                .attr_str(NFTA_EXPR_NAME, name)
                .begin(NFTA_EXPR_DATA);
            body(m);
            m.end().end();
        }));
        self
    }

    fn meta(&mut self, key: u32) -> &mut Self {
        // NFTA_META_DREG = 1, NFTA_META_KEY = 2
        self.push("meta", move |m| {
            m.attr_be32(1, NFT_REG_1).attr_be32(2, key);
        })
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        // NFTA_PAYLOAD_DREG = 1, BASE = 2, OFFSET = 3, LEN = 4
        self.push("payload", move |m| {
            m.attr_be32(1, NFT_REG_1)
                .attr_be32(2, base)
                .attr_be32(3, offset)
                .attr_be32(4, len);
        })
    }

    fn cmp(&mut self, op: u32, data: Vec<u8>) -> &mut Self {
        // NFTA_CMP_SREG = 1, OP = 2, DATA = 3
        self.push("cmp", move |m| {
            m.attr_be32(1, NFT_REG_1)
                .attr_be32(2, op)
                .begin(3)
                .attr(NFTA_DATA_VALUE, &data)
                .end();
        })
    }

    /// reg1 = reg1 & mask (xor 0): the network part of an address.
    fn mask(&mut self, mask: Vec<u8>) -> &mut Self {
        // NFTA_BITWISE_SREG = 1, DREG = 2, LEN = 3, MASK = 4, XOR = 5
        self.push("bitwise", move |m| {
            let zero = vec![0u8; mask.len()];
            m.attr_be32(1, NFT_REG_1)
                .attr_be32(2, NFT_REG_1)
                .attr_be32(3, mask.len() as u32);
            m.begin(4)
                .attr(NFTA_DATA_VALUE, &mask)
                .end()
                .begin(5)
                .attr(NFTA_DATA_VALUE, &zero)
                .end();
        })
    }

    fn immediate(&mut self, reg: u32, data: Vec<u8>) -> &mut Self {
        // NFTA_IMMEDIATE_DREG = 1, DATA = 2
        self.push("immediate", move |m| {
            m.attr_be32(1, reg)
                .begin(2)
                .attr(NFTA_DATA_VALUE, &data)
                .end();
        })
    }

    fn nfproto(&mut self, ip: IpAddr) -> &mut Self {
        let p = if ip.is_ipv4() {
            NFPROTO_IPV4
        } else {
            NFPROTO_IPV6
        };
        self.meta(NFT_META_NFPROTO).cmp(NFT_CMP_EQ, vec![p])
    }

    fn addr_field(&mut self, ip: IpAddr, dst: bool) -> &mut Self {
        let (off, len) = match (ip.is_ipv4(), dst) {
            (true, false) => (12, 4),
            (true, true) => (16, 4),
            (false, false) => (8, 16),
            (false, true) => (24, 16),
        };
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, off, len)
    }

    /// `daddr != net`
    fn daddr_not_in(&mut self, net: IpNet) -> &mut Self {
        let width = if net.is_ipv4() { 4 } else { 16 };
        let mask = net.mask().to_be_bytes()[16 - width..].to_vec();
        self.addr_field(net.addr, true)
            .mask(mask)
            .cmp(NFT_CMP_NEQ, crate::netlink::ip_bytes(net.network().addr))
    }
}

/// The masquerade rule for one pod address: traffic leaving its subnet (and not multicast) gets the
/// node's address.
fn masquerade_rule(pod: IpNet) -> Exprs {
    let mut e = Exprs::default();
    e.nfproto(pod.addr);
    e.addr_field(pod.addr, false)
        .cmp(NFT_CMP_EQ, crate::netlink::ip_bytes(pod.addr));
    e.daddr_not_in(pod.network());
    let multicast: IpNet = if pod.is_ipv4() {
        "224.0.0.0/4"
    } else {
        "ff00::/8"
    }
    .parse()
    .expect("constant");
    e.daddr_not_in(multicast);
    e.push("masq", |_| {});
    e
}

/// The DNAT rule for one hostPort mapping to `pod`.
fn dnat_rule(pod: IpAddr, pm: &PortMapping) -> io::Result<Exprs> {
    let l4 = match pm.protocol.to_ascii_lowercase().as_str() {
        "tcp" => 6u8,
        "udp" => 17,
        "sctp" => 132,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("protocol {other:?} is not tcp, udp or sctp"),
            ))
        }
    };
    let mut e = Exprs::default();
    e.nfproto(pod);
    if let Some(host_ip) = pm.host_ip.filter(|ip| !ip.is_unspecified()) {
        if host_ip.is_ipv4() != pod.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "hostIP family differs from the pod address",
            ));
        }
        e.addr_field(host_ip, true)
            .cmp(NFT_CMP_EQ, crate::netlink::ip_bytes(host_ip));
    } else {
        // Only traffic to the node's own addresses: a pod talking to port hostPort elsewhere is left alone.
        // NFTA_FIB_DREG = 1, RESULT = 2, FLAGS = 3; the address type is a host-order u32.
        e.push("fib", |m| {
            m.attr_be32(1, NFT_REG_1)
                .attr_be32(2, NFT_FIB_RESULT_ADDRTYPE)
                .attr_be32(3, NFTA_FIB_F_DADDR);
        });
        e.cmp(NFT_CMP_EQ, (libc::RTN_LOCAL as u32).to_ne_bytes().to_vec());
    }
    e.meta(NFT_META_L4PROTO).cmp(NFT_CMP_EQ, vec![l4]);
    e.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
        .cmp(NFT_CMP_EQ, pm.host_port.to_be_bytes().to_vec());
    e.immediate(NFT_REG_1, crate::netlink::ip_bytes(pod));
    e.immediate(NFT_REG_2, pm.container_port.to_be_bytes().to_vec());
    let family = if pod.is_ipv4() {
        NFPROTO_IPV4
    } else {
        NFPROTO_IPV6
    } as u32;
    // NFTA_NAT_TYPE = 1, FAMILY = 2, REG_ADDR_MIN = 3, REG_PROTO_MIN = 5
    e.push("nat", move |m| {
        m.attr_be32(1, NFT_NAT_DNAT)
            .attr_be32(2, family)
            .attr_be32(3, NFT_REG_1)
            .attr_be32(5, NFT_REG_2);
    });
    Ok(e)
}

/// The masquerade rules for what reaches `pod` through its hostPorts from where its replies would not find
/// their way back un-DNATed: the pod itself (hairpin: it would answer itself over `lo`) and, for IPv4, the
/// node's loopback (a 127.0.0.1 source is no address the pod can answer; routed out at all only with
/// `route_localnet` on the bridge). As the reference `portmap` plugin does.
fn hostport_masquerade_rules(pod: IpAddr) -> Vec<Exprs> {
    let me = crate::netlink::ip_bytes(pod);
    let mut hairpin = Exprs::default();
    hairpin.nfproto(pod);
    hairpin.addr_field(pod, false).cmp(NFT_CMP_EQ, me.clone());
    hairpin.addr_field(pod, true).cmp(NFT_CMP_EQ, me.clone());
    hairpin.push("masq", |_| {});
    let mut rules = vec![hairpin];
    if pod.is_ipv4() {
        let mut local = Exprs::default();
        local.nfproto(pod);
        local.addr_field(pod, true).cmp(NFT_CMP_EQ, me);
        local
            .addr_field(pod, false)
            .mask(vec![255, 0, 0, 0])
            .cmp(NFT_CMP_EQ, vec![127, 0, 0, 0]);
        local.push("masq", |_| {});
        rules.push(local);
    }
    rules
}

/// One rule to add: which chain and what it does.
pub enum RuleSpec {
    Masquerade(IpNet),
    Dnat(IpAddr, PortMapping),
    /// The masquerades a pod with hostPorts needs (see [`hostport_masquerade_rules`]), once per address.
    HostPortMasquerade(IpAddr),
}

pub struct Nft(Socket);

impl Nft {
    pub fn open() -> io::Result<Nft> {
        Socket::open(libc::NETLINK_NETFILTER).map(Nft)
    }

    /// Sends messages as one atomic batch and waits for every ack; the first error wins.
    fn batch(&mut self, msgs: Vec<Message>) -> io::Result<()> {
        let mut begin = Message::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST);
        begin.header(&[
            0,
            0,
            (NFNL_SUBSYS_NFTABLES >> 8) as u8,
            NFNL_SUBSYS_NFTABLES as u8,
        ]);
        let mut wire = begin.finish(self.0.next_seq());
        let mut pending = std::collections::HashSet::new();
        for m in msgs {
            let seq = self.0.next_seq();
            pending.insert(seq);
            wire.extend(m.finish(seq));
        }
        let mut end = Message::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST);
        end.header(&[
            0,
            0,
            (NFNL_SUBSYS_NFTABLES >> 8) as u8,
            NFNL_SUBSYS_NFTABLES as u8,
        ]);
        wire.extend(end.finish(self.0.next_seq()));
        self.0.send(&wire)?;
        while !pending.is_empty() {
            for m in self.0.recv::<RawMessage>()? {
                if let NetlinkPayload::Error(e) = m.payload {
                    if e.code.is_some() {
                        return Err(e.to_io());
                    }
                    pending.remove(&m.header.sequence_number);
                }
            }
        }
        Ok(())
    }

    /// Adds rules for an attachment, creating the network's table and chains if needed, in one batch.
    pub fn add(&mut self, network: &str, tag: &str, rules: &[RuleSpec]) -> io::Result<()> {
        if rules.is_empty() {
            return Ok(());
        }
        let table = table_name(network);
        let mut msgs = Vec::new();
        let mut t = nfgen(
            nft_type(NFT_MSG_NEWTABLE),
            NLM_F_CREATE | NLM_F_ACK,
            NFPROTO_INET,
        );
        t.attr_str(NFTA_TABLE_NAME, &table);
        msgs.push(t);
        for (chain, hook, prio) in [
            (CHAIN_POSTROUTING, NF_INET_POST_ROUTING, 100i32),
            (CHAIN_PREROUTING, NF_INET_PRE_ROUTING, -100),
            (CHAIN_OUTPUT, NF_INET_LOCAL_OUT, -100),
        ] {
            let mut c = nfgen(
                nft_type(NFT_MSG_NEWCHAIN),
                NLM_F_CREATE | NLM_F_ACK,
                NFPROTO_INET,
            );
            c.attr_str(NFTA_CHAIN_TABLE, &table)
                .attr_str(NFTA_CHAIN_NAME, chain);
            c.begin(NFTA_CHAIN_HOOK)
                .attr_be32(NFTA_HOOK_HOOKNUM, hook)
                .attr_be32(NFTA_HOOK_PRIORITY, prio as u32)
                .end();
            c.attr_str(NFTA_CHAIN_TYPE, "nat");
            msgs.push(c);
        }
        let mut placed = Vec::new();
        for rule in rules {
            match rule {
                RuleSpec::Masquerade(pod) => {
                    placed.push((CHAIN_POSTROUTING, masquerade_rule(*pod)))
                }
                RuleSpec::Dnat(pod, pm) => {
                    placed.push((CHAIN_PREROUTING, dnat_rule(*pod, pm)?));
                    placed.push((CHAIN_OUTPUT, dnat_rule(*pod, pm)?));
                }
                RuleSpec::HostPortMasquerade(pod) => placed.extend(
                    hostport_masquerade_rules(*pod)
                        .into_iter()
                        .map(|r| (CHAIN_POSTROUTING, r)),
                ),
            }
        }
        for (chain, exprs) in placed {
            let mut r = nfgen(
                nft_type(NFT_MSG_NEWRULE),
                NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
                NFPROTO_INET,
            );
            r.attr_str(NFTA_RULE_TABLE, &table)
                .attr_str(NFTA_RULE_CHAIN, chain);
            r.begin(NFTA_RULE_EXPRESSIONS);
            for e in &exprs.0 {
                e(&mut r);
            }
            r.end();
            r.attr(NFTA_RULE_USERDATA, &userdata(tag));
            msgs.push(r);
        }
        self.batch(msgs)
    }

    /// Rules in the network's table: (chain, handle, comment). An absent table has none.
    pub fn rules(&mut self, network: &str) -> io::Result<Vec<(String, u64, String)>> {
        let mut m = nfgen(nft_type(NFT_MSG_GETRULE), NLM_F_DUMP, NFPROTO_INET);
        m.attr_str(NFTA_RULE_TABLE, &table_name(network));
        let replies = match self.0.request_raw(m) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for r in replies {
            if r.payload.len() < 4 {
                continue;
            }
            let (mut chain, mut handle, mut comment) = (String::new(), 0u64, String::new());
            for (ty, d) in attrs(&r.payload[4..]) {
                match ty {
                    NFTA_RULE_CHAIN => chain = cstr(d),
                    NFTA_RULE_HANDLE if d.len() == 8 => {
                        handle = u64::from_be_bytes(d.try_into().expect("8 bytes"))
                    }
                    NFTA_RULE_USERDATA => comment = parse_comment(d),
                    _ => {}
                }
            }
            out.push((chain, handle, comment));
        }
        Ok(out)
    }

    /// Deletes the rules tagged `tag` for which `keep` is false; returns how many went.
    pub fn delete_where(
        &mut self,
        network: &str,
        drop_if: impl Fn(&str) -> bool,
    ) -> io::Result<usize> {
        let table = table_name(network);
        let doomed: Vec<_> = self
            .rules(network)?
            .into_iter()
            .filter(|(_, _, c)| drop_if(c))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut msgs = Vec::new();
        for (chain, handle, _) in &doomed {
            let mut m = nfgen(nft_type(NFT_MSG_DELRULE), NLM_F_ACK, NFPROTO_INET);
            m.attr_str(NFTA_RULE_TABLE, &table)
                .attr_str(NFTA_RULE_CHAIN, chain);
            m.attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
            msgs.push(m);
        }
        match self.batch(msgs) {
            Ok(()) => Ok(doomed.len()),
            // Someone else removed one meanwhile (a concurrent DEL of the same attachment): done anyway.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(doomed.len()),
            Err(e) => Err(e),
        }
    }

    pub fn delete_tagged(&mut self, network: &str, tag: &str) -> io::Result<usize> {
        self.delete_where(network, |c| c == tag)
    }
}

fn cstr(d: &[u8]) -> String {
    String::from_utf8_lossy(d.split(|b| *b == 0).next().unwrap_or(d)).into_owned()
}

fn parse_comment(mut d: &[u8]) -> String {
    while d.len() >= 2 {
        let (ty, len) = (d[0], d[1] as usize);
        if d.len() < 2 + len {
            break;
        }
        if ty == UDATA_RULE_COMMENT {
            return cstr(&d[2..2 + len]);
        }
        d = &d[2 + len..];
    }
    String::new()
}

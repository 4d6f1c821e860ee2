//! The `bridge` plugin verbs: a Linux bridge in the calling namespace, a veth pair per attachment with
//! its peer inside the pod's namespace, host-local addresses and routes, and nftables NAT rules.

use std::collections::HashSet;
use std::fs::File;
use std::net::IpAddr;

use crate::env::Env;
use crate::error::{CniError, Code, Result};
use crate::ipam::Ipam;
use crate::netlink::Route;
use crate::nft::{self, Nft, RuleSpec};
use crate::spec::{CniResult, Interface, IpConfig, IpNet, NetConf};
use crate::{netns, spec};

/// The host-side veth name: derived from the attachment so DEL finds it even after a crash during ADD.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("veth{:08x}", (h ^ (h >> 32)) as u32)
}

fn ipam_of(conf: &NetConf) -> Result<Option<Ipam>> {
    match &conf.ipam {
        None => Ok(None),
        Some(i) if i.kind == "host-local" => Ipam::from_conf(i).map(Some),
        Some(i) if i.kind.is_empty() => Ok(None),
        Some(i) => Err(CniError::new(
            Code::UnsupportedField,
            format!(
                "field \"ipam.type\": {:?} is not supported (only the built-in \"host-local\")",
                i.kind
            ),
        )),
    }
}

fn nl(what: &str) -> impl FnOnce(std::io::Error) -> CniError + '_ {
    move |e| CniError::netlink(what, e)
}

pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult> {
    let ipam = ipam_of(conf)?;
    let ns_path = env.netns.as_deref().expect("checked in Env");
    let ns = netns::open(ns_path)
        .map_err(|e| CniError::io(format!("CNI_NETNS {}", ns_path.display()), e))?
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidEnv,
                format!("CNI_NETNS {} does not exist", ns_path.display()),
            )
        })?;
    let mut pod =
        Route(netns::socket_in(&ns, libc::NETLINK_ROUTE).map_err(nl("open rtnetlink in the pod"))?);
    // Checked before any change: the rollback below deletes CNI_IFNAME in the pod, which must then be ours.
    if pod
        .link(&env.ifname)
        .map_err(nl("look up CNI_IFNAME in the pod"))?
        .is_some()
    {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!(
                "CNI_IFNAME {:?} already exists in {}",
                env.ifname,
                ns_path.display()
            ),
        ));
    }
    // Anything that fails after the first change is undone by the idempotent DEL path.
    let result = add_inner(env, conf, ipam.as_ref(), &ns, &mut pod);
    if result.is_err() {
        let _ = teardown(env, conf, ipam.as_ref());
    }
    result
}

fn add_inner(
    env: &Env,
    conf: &NetConf,
    ipam: Option<&Ipam>,
    ns: &File,
    pod: &mut Route,
) -> Result<CniResult> {
    let ips = match ipam {
        Some(ipam) => ipam.allocate(&conf.name, &env.container_id, &env.ifname)?,
        None => Vec::new(),
    };
    let is_gw = conf.is_gateway || conf.is_default_gateway;
    let mut host = Route::open().map_err(nl("open rtnetlink"))?;

    let bridge = ensure_bridge(&mut host, conf)?;
    if is_gw {
        for ip in &ips {
            if let Some(gw) = ip.gateway {
                let net = IpNet {
                    addr: gw,
                    prefix: ip.address.prefix,
                };
                host.add_addr(bridge.index, net)
                    .map_err(nl(&format!("add {net} to bridge {}", conf.bridge)))?;
            }
        }
        enable_forwarding(&ips)?;
    }

    let host_name = host_veth_name(&env.container_id, &env.ifname);
    host.create_veth(&host_name, &env.ifname, ns, conf.mtu, bridge.index)
        .map_err(|e| {
            let code = if e.raw_os_error() == Some(libc::EEXIST) {
                Code::InvalidEnv
            } else {
                Code::Netlink
            };
            CniError::new(
                code,
                format!(
                    "create veth {host_name} / {} (CNI_IFNAME) in the pod",
                    env.ifname
                ),
            )
            .with_details(e)
        })?;
    let host_link = host
        .link(&host_name)
        .map_err(nl("read host veth"))?
        .ok_or_else(|| {
            CniError::new(
                Code::Netlink,
                format!("veth {host_name} vanished right after creation"),
            )
        })?;
    if conf.hairpin_mode {
        host.set_hairpin(host_link.index, true)
            .map_err(nl("set hairpin mode"))?;
    }

    let pod_link = pod
        .link(&env.ifname)
        .map_err(nl("read pod interface"))?
        .ok_or_else(|| {
            CniError::new(
                Code::Netlink,
                format!("{} did not appear in the pod", env.ifname),
            )
        })?;
    pod.set_up(pod_link.index)
        .map_err(nl("set the pod interface up"))?;
    for ip in &ips {
        pod.add_addr(pod_link.index, ip.address)
            .map_err(nl(&format!("add {} to the pod", ip.address)))?;
    }
    let mut routes = ipam.map(Ipam::result_routes).unwrap_or_default();
    if conf.is_default_gateway {
        for ip in &ips {
            if let Some(gw) = ip.gateway {
                let any = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                routes.push(spec::Route {
                    dst: any.parse().expect("constant"),
                    gw: Some(gw),
                });
            }
        }
    }
    for r in &routes {
        let gw = r.gw.or_else(|| {
            ips.iter()
                .find(|i| i.address.is_ipv4() == r.dst.is_ipv4())
                .and_then(|i| i.gateway)
        });
        pod.add_route(r.dst, gw, pod_link.index)
            .map_err(nl(&format!("add route to {} in the pod", r.dst)))?;
    }

    let mut rules = Vec::new();
    if conf.ip_masq {
        rules.extend(ips.iter().map(|ip| RuleSpec::Masquerade(ip.address)));
    }
    for pm in &conf.runtime_config.port_mappings {
        for ip in ips.iter().filter(|ip| {
            pm.host_ip
                .is_none_or(|h| h.is_ipv4() == ip.address.is_ipv4())
        }) {
            rules.push(RuleSpec::Dnat(ip.address.addr, pm.clone()));
        }
    }
    if !conf.runtime_config.port_mappings.is_empty() {
        rules.extend(
            ips.iter()
                .map(|ip| RuleSpec::HostPortMasquerade(ip.address.addr)),
        );
        // A hostPort on 127.0.0.1 is DNATed in the node's output path with its loopback source, which the
        // kernel routes out of a non-loopback interface only with route_localnet on it.
        if ips.iter().any(|ip| ip.address.is_ipv4()) {
            let knob = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", conf.bridge);
            std::fs::write(&knob, "1")
                .map_err(|e| CniError::io(format!("enable route_localnet in {knob}"), e))?;
        }
    }
    if !rules.is_empty() {
        Nft::open()
            .and_then(|mut n| {
                n.add(
                    &conf.name,
                    &nft::tag(&env.container_id, &env.ifname),
                    &rules,
                )
            })
            .map_err(nl("add nftables rules"))?;
    }

    // The bridge's MAC changes when its first port joins, so read it last.
    let bridge = host
        .link_by_index(bridge.index)
        .map_err(nl("read bridge"))?
        .unwrap_or(bridge);
    let ours = CniResult {
        interfaces: vec![
            Interface {
                name: bridge.name,
                mac: bridge.mac,
                sandbox: String::new(),
            },
            Interface {
                name: host_name,
                mac: host_link.mac,
                sandbox: String::new(),
            },
            Interface {
                name: env.ifname.clone(),
                mac: pod_link.mac,
                sandbox: env
                    .netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            },
        ],
        ips: ips
            .into_iter()
            .map(|i| IpConfig {
                interface: Some(2),
                ..i
            })
            .collect(),
        routes,
        dns: conf.dns.clone(),
    };
    chain(conf, ours)
}

/// Chaining: a plugin after others extends their result (`prevResult`) instead of replacing it.
fn chain(conf: &NetConf, ours: CniResult) -> Result<CniResult> {
    let Some(prev) = conf.prev_result.as_ref() else {
        return Ok(ours);
    };
    let mut merged = CniResult::from_json(prev)?;
    let offset = merged.interfaces.len();
    merged.interfaces.extend(ours.interfaces);
    merged.ips.extend(ours.ips.into_iter().map(|i| IpConfig {
        interface: i.interface.map(|n| n + offset),
        ..i
    }));
    merged.routes.extend(ours.routes);
    if ours.dns != spec::Dns::default() {
        merged.dns = ours.dns;
    }
    Ok(merged)
}

fn ensure_bridge(host: &mut Route, conf: &NetConf) -> Result<crate::netlink::Link> {
    if let Some(link) = host.link(&conf.bridge).map_err(nl("look up bridge"))? {
        if link.kind.as_deref() != Some("bridge") {
            return Err(CniError::config(format!(
                "field \"bridge\": {:?} exists and is not a bridge (it is {})",
                conf.bridge,
                link.kind.as_deref().unwrap_or("a plain device")
            )));
        }
        host.set_up(link.index).map_err(nl("set bridge up"))?;
        return Ok(link);
    }
    // A concurrent ADD may create it between our look-up and create: EEXIST is fine.
    host.create_bridge(&conf.bridge, conf.mtu)
        .map_err(nl(&format!("create bridge {}", conf.bridge)))?;
    host.link(&conf.bridge)
        .map_err(nl("look up bridge"))?
        .ok_or_else(|| {
            CniError::new(
                Code::Netlink,
                format!("bridge {} vanished after creation", conf.bridge),
            )
        })
}

/// A gateway bridge routes between the pod subnet and the node, as the reference plugin does.
fn enable_forwarding(ips: &[IpConfig]) -> Result<()> {
    let mut files = HashSet::new();
    for ip in ips {
        files.insert(if ip.address.is_ipv4() {
            "/proc/sys/net/ipv4/ip_forward"
        } else {
            "/proc/sys/net/ipv6/conf/all/forwarding"
        });
    }
    for f in files {
        if std::fs::read_to_string(f)
            .map(|v| v.trim() == "1")
            .unwrap_or(false)
        {
            continue;
        }
        std::fs::write(f, "1").map_err(|e| CniError::io(format!("enable forwarding in {f}"), e))?;
    }
    Ok(())
}

/// Removes everything ADD may have made for this attachment; absent pieces are not errors.
fn teardown(env: &Env, conf: &NetConf, ipam: Option<&Ipam>) -> Result<()> {
    let mut first_err = None;
    if let Some(ipam) = ipam {
        if let Err(e) = ipam
            .store(&conf.name)
            .and_then(|s| s.release(&env.container_id, &env.ifname))
        {
            first_err.get_or_insert(e);
        }
    }
    if let Some(ns) = env
        .netns
        .as_deref()
        .and_then(|p| netns::open(p).ok().flatten())
    {
        if let Ok(sock) = netns::socket_in(&ns, libc::NETLINK_ROUTE) {
            if let Err(e) = Route(sock).delete_link(&env.ifname) {
                first_err.get_or_insert(CniError::netlink(
                    format!("delete {} in the pod", env.ifname),
                    e,
                ));
            }
        }
    }
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    if let Err(e) = Route::open().and_then(|mut r| r.delete_link(&host_name)) {
        first_err.get_or_insert(CniError::netlink(format!("delete {host_name}"), e));
    }
    if let Err(e) = Nft::open()
        .and_then(|mut n| n.delete_tagged(&conf.name, &nft::tag(&env.container_id, &env.ifname)))
    {
        first_err.get_or_insert(CniError::netlink("delete nftables rules", e));
    }
    first_err.map_or(Ok(()), Err)
}

pub fn del(env: &Env, conf: &NetConf) -> Result<()> {
    let ipam = ipam_of(conf)?;
    teardown(env, conf, ipam.as_ref())
}

pub fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let fail = |msg: String| CniError::new(Code::CheckFailed, msg);
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("field \"prevResult\" is required for CHECK"))
        .and_then(CniResult::from_json)?;
    let ipam = ipam_of(conf)?;
    let ns_path = env.netns.as_deref().expect("checked in Env");
    let ns = netns::open(ns_path)
        .map_err(|e| CniError::io(format!("CNI_NETNS {}", ns_path.display()), e))?
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidEnv,
                format!("CNI_NETNS {} does not exist", ns_path.display()),
            )
        })?;
    let mut host = Route::open().map_err(nl("open rtnetlink"))?;
    let bridge = host
        .link(&conf.bridge)
        .map_err(nl("look up bridge"))?
        .ok_or_else(|| fail(format!("bridge {} is missing", conf.bridge)))?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let veth = host
        .link(&host_name)
        .map_err(nl("look up veth"))?
        .ok_or_else(|| fail(format!("veth {host_name} is missing")))?;
    if veth.master != Some(bridge.index) {
        return Err(fail(format!(
            "veth {host_name} is not attached to bridge {}",
            conf.bridge
        )));
    }
    let mut pod =
        Route(netns::socket_in(&ns, libc::NETLINK_ROUTE).map_err(nl("open rtnetlink in the pod"))?);
    let link = pod
        .link(&env.ifname)
        .map_err(nl("look up pod interface"))?
        .ok_or_else(|| {
            fail(format!(
                "{} is missing in {}",
                env.ifname,
                ns_path.display()
            ))
        })?;
    if let Some(want) = prev
        .interfaces
        .iter()
        .find(|i| i.name == env.ifname && !i.sandbox.is_empty())
    {
        if !want.mac.is_empty() && want.mac != link.mac {
            return Err(fail(format!(
                "{} has MAC {} but prevResult says {}",
                env.ifname, link.mac, want.mac
            )));
        }
    }
    let have = pod.addrs(link.index).map_err(nl("read pod addresses"))?;
    let held: Vec<IpAddr> = match &ipam {
        Some(i) => i
            .store(&conf.name)?
            .held_by(&env.container_id, &env.ifname)?,
        None => Vec::new(),
    };
    for ip in &prev.ips {
        if !have.contains(&ip.address) {
            return Err(fail(format!(
                "{} lacks address {} from prevResult",
                env.ifname, ip.address
            )));
        }
        if ipam.is_some() && !held.contains(&ip.address.addr) {
            return Err(fail(format!(
                "address {} is not reserved for this container",
                ip.address.addr
            )));
        }
    }
    for want in &prev.routes {
        let have = pod
            .routes(want.dst.is_ipv4())
            .map_err(nl("read pod routes"))?;
        let found = have
            .iter()
            .any(|(dst, gw)| *dst == want.dst.network() && (want.gw.is_none() || *gw == want.gw));
        if !found {
            return Err(fail(format!(
                "route to {} from prevResult is missing in the pod",
                want.dst
            )));
        }
    }
    if conf.ip_masq {
        let tag = nft::tag(&env.container_id, &env.ifname);
        let n = Nft::open()
            .and_then(|mut n| n.rules(&conf.name))
            .map_err(nl("read nftables rules"))?;
        if !n
            .iter()
            .any(|(c, _, t)| c == nft::CHAIN_POSTROUTING && *t == tag)
        {
            return Err(fail("the masquerade rule is missing".into()));
        }
    }
    Ok(())
}

/// GC: releases reservations and rules of attachments not in `cni.dev/valid-attachments`.
pub fn gc(conf: &NetConf) -> Result<()> {
    let valid: HashSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    if let Some(ipam) = ipam_of(conf)? {
        ipam.store(&conf.name)?.retain(&valid)?;
    }
    let tags: HashSet<String> = valid.iter().map(|(id, ifn)| nft::tag(id, ifn)).collect();
    Nft::open()
        .and_then(|mut n| {
            n.delete_where(&conf.name, |c| {
                c.starts_with("basalt-cni ") && !tags.contains(c)
            })
        })
        .map_err(nl("garbage-collect nftables rules"))?;
    Ok(())
}

/// STATUS: ready when the reservation directory is usable.
pub fn status(conf: &NetConf) -> Result<()> {
    if let Some(ipam) = ipam_of(conf)? {
        let dir = ipam.data_dir.join(&conf.name);
        ipam.store(&conf.name).map_err(|e| {
            CniError::new(
                Code::PluginNotAvailable,
                format!("IPAM store {} is not usable", dir.display()),
            )
            .with_details(e)
        })?;
    }
    Ok(())
}

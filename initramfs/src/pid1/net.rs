//! Bringing up the node's network: loopback, then the first ethernet interface, statically or by DHCPv4.
//! Addresses and routes go through rtnetlink (`basalt_cni::netlink`); the image has no `ip` binary.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::config::{Network, Settings};
use super::dhcp;
use crate::rtnl::{self, Rtnl};

/// What the node ended up with, for the console.
#[derive(Debug, Clone)]
pub struct Up {
    pub iface: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub how: &'static str,
}

impl std::fmt::Display for Up {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} on {} ({})",
            self.addr, self.prefix, self.iface, self.how
        )?;
        if let Some(gw) = self.gateway {
            write!(f, ", gateway {gw}")?;
        }
        Ok(())
    }
}

pub fn loopback_up() -> Result<(), String> {
    let mut rt = Rtnl::open().map_err(|e| format!("netlink: {e}"))?;
    let lo = rtnl::index("lo").map_err(|e| format!("lo: {e}"))?;
    rt.set_up(lo).map_err(|e| format!("lo up: {e}"))
}

pub fn bring_up(s: &Settings) -> Result<Up, String> {
    let iface = match &s.init.interface {
        Some(i) => i.clone(),
        None => first_ethernet(Duration::from_secs(5))?,
    };
    let mut rt = Rtnl::open().map_err(|e| format!("netlink: {e}"))?;
    let index = rtnl::index(&iface).map_err(|e| format!("interface {iface}: {e}"))?;
    rt.set_up(index).map_err(|e| format!("{iface} up: {e}"))?;
    let (addr, prefix, gateway, dns, how) = match &s.network {
        Network::Static {
            addr,
            prefix,
            gateway,
            dns,
        } => (*addr, *prefix, *gateway, dns.clone(), "static"),
        Network::Dhcp => {
            let mac = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
                .ok()
                .and_then(|m| parse_mac(m.trim()))
                .ok_or_else(|| format!("{iface}: no MAC address"))?;
            let lease = dhcp::acquire(&iface, mac, s.hostname(), Duration::from_secs(30))
                .map_err(|e| format!("DHCP on {iface}: {e}"))?;
            super::log::info(format!(
                "DHCP: {}/{} from {}, lease {}s",
                lease.addr,
                lease.prefix,
                lease.server,
                lease.lease_secs.map_or("?".into(), |l| l.to_string())
            ));
            (lease.addr, lease.prefix, lease.gateway, lease.dns, "dhcp")
        }
    };
    rt.add_addr(index, addr, prefix)
        .map_err(|e| format!("{iface}: adding {addr}/{prefix}: {e}"))?;
    if let Some(gw) = gateway {
        rt.add_default_route(gw, index)
            .map_err(|e| format!("{iface}: default route via {gw}: {e}"))?;
    }
    let resolv: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    std::fs::write("/etc/resolv.conf", resolv).map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    Ok(Up {
        iface,
        addr,
        prefix,
        gateway,
        how,
    })
}

/// The first interface backed by a device (not virtual) of ARP type ethernet, by name; waits for drivers.
fn first_ethernet(wait: Duration) -> Result<String, String> {
    let deadline = Instant::now() + wait;
    loop {
        let mut found: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map_err(|e| format!("/sys/class/net: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                let dir = Path::new("/sys/class/net").join(n);
                dir.join("device").exists()
                    && std::fs::read_to_string(dir.join("type")).is_ok_and(|t| t.trim() == "1")
            })
            .collect();
        found.sort();
        if let Some(first) = found.into_iter().next() {
            return Ok(first);
        }
        if Instant::now() >= deadline {
            return Err(format!("no ethernet interface appeared within {wait:?}"));
        }
        // Device probing has no event we can wait on without udev; poll sysfs.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

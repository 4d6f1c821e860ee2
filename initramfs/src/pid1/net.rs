//! Bringing up the node's network: loopback, then the first ethernet interface, statically or by DHCPv4, and
//! keeping it: the DHCP client renews the lease for as long as the node runs and gives it back at power-off.
//! Addresses and routes go through rtnetlink; the image has no `ip` binary.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::config::{Network as Addressing, Settings};
use super::log;
use crate::dhcp;
use crate::rtnl::{self, Rtnl};

/// How long power-off waits for the DHCP release to go out.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's network as PID 1 keeps it: what the console shows, the address the agent gets, and the DHCP
/// client to release at power-off. Changes call the `wake` given to [`Network::start`].
#[derive(Clone)]
pub struct Network(Arc<Mutex<State>>);

struct State {
    shown: String,
    addr: Option<Ipv4Addr>,
    /// The first attempt has an outcome: an address, or a failure to even start.
    settled: bool,
    dhcp: Option<dhcp::Client>,
    lease: Option<dhcp::Lease>,
    iface: String,
}

impl Network {
    /// Brings the network up in the background.
    pub fn start(s: &Settings, wake: impl Fn() + Send + Sync + 'static) -> Network {
        let net = Network(Arc::new(Mutex::new(State {
            shown: "configuring".into(),
            addr: None,
            settled: false,
            dhcp: None,
            lease: None,
            iface: String::new(),
        })));
        let wake = Arc::new(wake);
        let (bg, settings) = (net.clone(), s.clone());
        std::thread::spawn(move || {
            if let Err(e) = bg.bring_up(&settings, wake.clone()) {
                log::error(format!("network: {e}"));
                let mut st = bg.lock();
                st.shown = format!("down ({e})");
                st.settled = true;
                drop(st);
                wake();
            }
        });
        net
    }

    /// The console's `ip:` line.
    pub fn shown(&self) -> String {
        self.lock().shown.clone()
    }

    /// The node's address now, if it has one.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.lock().addr
    }

    /// Whether the first attempt to get an address has an outcome (the agent waits for it, for a while).
    pub fn settled(&self) -> bool {
        self.lock().settled
    }

    /// Gives a DHCP lease back to its server and removes its address (at power-off, when nothing uses it).
    pub fn release(&self) {
        let Some(client) = self.lock().dhcp.take() else {
            return;
        };
        if let Err(e) = client.release(RELEASE_TIMEOUT) {
            log::error(format!("DHCP: {e}"));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bring_up(
        &self,
        s: &Settings,
        wake: Arc<impl Fn() + Send + Sync + 'static>,
    ) -> Result<(), String> {
        let iface = match &s.init.interface {
            Some(i) => i.clone(),
            None => first_ethernet(Duration::from_secs(5))?,
        };
        let mut rt = Rtnl::open().map_err(|e| format!("netlink: {e}"))?;
        let index = rtnl::index(&iface).map_err(|e| format!("interface {iface}: {e}"))?;
        rt.set_up(index).map_err(|e| format!("{iface} up: {e}"))?;
        self.lock().iface = iface.clone();
        match &s.network {
            Addressing::Static {
                addr,
                prefix,
                gateway,
                dns,
            } => {
                rt.add_addr(index, *addr, *prefix)
                    .map_err(|e| format!("{iface}: adding {addr}/{prefix}: {e}"))?;
                if let Some(gw) = gateway {
                    rt.add_default_route(*gw, index)
                        .map_err(|e| format!("{iface}: default route via {gw}: {e}"))?;
                }
                write_resolv_conf(dns, None);
                let shown = describe(*addr, *prefix, &iface, "static", *gateway);
                log::info(format!("network ready: {shown}"));
                let mut st = self.lock();
                st.shown = shown;
                st.addr = Some(*addr);
                st.settled = true;
            }
            Addressing::Dhcp => {
                let config = dhcp::Config {
                    interface: iface.clone(),
                    hostname: s.hostname().to_owned(),
                };
                let me = self.clone();
                let client = dhcp::Client::start(config, move |event| {
                    me.on_dhcp(event);
                    wake();
                })
                .map_err(|e| format!("DHCP: {e}"))?;
                let mut st = self.lock();
                st.shown = format!("asking DHCP on {iface}");
                st.dhcp = Some(client);
                return Ok(());
            }
        }
        wake();
        Ok(())
    }

    fn on_dhcp(&self, event: dhcp::Event) {
        let mut st = self.lock();
        let iface = st.iface.clone();
        match event {
            dhcp::Event::Bound(lease) => {
                log::info(format!(
                    "DHCP: {}/{} from {}, lease {}",
                    lease.addr,
                    lease.prefix,
                    lease.server,
                    lease_time(&lease)
                ));
                if let Some(old) = st.addr.filter(|a| *a != lease.addr) {
                    log::info(format!("node address changed from {old} to {}", lease.addr));
                }
                write_resolv_conf(&lease.dns, lease.domain.as_deref());
                st.shown = describe(lease.addr, lease.prefix, &iface, "dhcp", lease.gateway);
                log::info(format!("network ready: {}", st.shown));
                st.addr = Some(lease.addr);
                st.settled = true;
                st.lease = Some(lease);
            }
            dhcp::Event::Renewed { lease, rebinding } => {
                let changed = st.lease.as_ref().is_none_or(|old| {
                    (&old.gateway, &old.dns, &old.domain)
                        != (&lease.gateway, &lease.dns, &lease.domain)
                });
                if rebinding || changed {
                    log::info(format!(
                        "DHCP: {} {} by {}, lease {}",
                        lease.addr,
                        if rebinding { "rebound" } else { "renewed" },
                        lease.server,
                        lease_time(&lease)
                    ));
                }
                if changed {
                    write_resolv_conf(&lease.dns, lease.domain.as_deref());
                    st.shown = describe(lease.addr, lease.prefix, &iface, "dhcp", lease.gateway);
                }
                st.lease = Some(lease);
            }
            dhcp::Event::Lost(lease, why) => {
                let why = match why {
                    dhcp::Loss::Refused(Some(m)) => format!("refused by {} ({m})", lease.server),
                    dhcp::Loss::Refused(None) => format!("refused by {}", lease.server),
                    dhcp::Loss::Expired => "lease expired".into(),
                    dhcp::Loss::Released => "released".into(),
                };
                log::error(format!("DHCP: lost {}: {why}; asking again", lease.addr));
                st.shown = format!("down (lost {}: {why}; asking DHCP on {iface})", lease.addr);
                st.addr = None;
                st.lease = None;
            }
            dhcp::Event::Released(lease) => {
                log::info(format!("DHCP: released {} to {}", lease.addr, lease.server));
                st.shown = format!("released {}", lease.addr);
                st.addr = None;
                st.lease = None;
            }
            dhcp::Event::Error(e) => log::error(format!("DHCP: {e}")),
        }
    }
}

pub fn loopback_up() -> Result<(), String> {
    let mut rt = Rtnl::open().map_err(|e| format!("netlink: {e}"))?;
    let lo = rtnl::index("lo").map_err(|e| format!("lo: {e}"))?;
    rt.set_up(lo).map_err(|e| format!("lo up: {e}"))
}

/// `10.0.2.15/24 on eth0 (dhcp), gateway 10.0.2.2`: the console line and the "network ready" message.
fn describe(addr: Ipv4Addr, prefix: u8, iface: &str, how: &str, gw: Option<Ipv4Addr>) -> String {
    let mut s = format!("{addr}/{prefix} on {iface} ({how})");
    if let Some(gw) = gw {
        s.push_str(&format!(", gateway {gw}"));
    }
    s
}

fn lease_time(lease: &dhcp::Lease) -> String {
    match lease.duration {
        Some(d) => format!("{}s", d.as_secs()),
        None => "infinite".into(),
    }
}

fn write_resolv_conf(dns: &[Ipv4Addr], domain: Option<&str>) {
    let mut text: String = domain.map(|d| format!("search {d}\n")).unwrap_or_default();
    for d in dns {
        text.push_str(&format!("nameserver {d}\n"));
    }
    // Whole or not at all: a pod started now copies it.
    let tmp = "/etc/resolv.conf.new";
    if let Err(e) =
        std::fs::write(tmp, text).and_then(|()| std::fs::rename(tmp, "/etc/resolv.conf"))
    {
        log::error(format!("/etc/resolv.conf: {e}"));
    }
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

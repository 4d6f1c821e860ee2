//! host-local IPAM: range sets, and reservations on disk in the reference plugin's layout:
//! `<dataDir>/<network>/<ip>` holding `<containerID>\r\n<ifname>`, `last_reserved_ip.<rangeset-index>`,
//! and a `lock` file taken with flock(2) around every change.
//!
//! Crash safety: a reservation is written to a temporary file and then hard-linked to its final name, so
//! a reservation file is either absent or complete; temporaries left by a killed process are removed the
//! next time the lock is taken (whoever holds the lock is the only writer).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{CniError, Code, Result};
use crate::spec::{from_u128, to_u128, IpConfig, IpNet, IpamConf, Route};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LINE_BREAK: &str = "\r\n";
const TMP_PREFIX: &str = ".tmp-";

/// One usable address range inside a subnet.
#[derive(Debug, Clone)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(ip)
            && to_u128(ip) >= to_u128(self.start)
            && to_u128(ip) <= to_u128(self.end)
    }
}

/// A validated IPAM configuration: one address is allocated from each range set.
#[derive(Debug, Clone)]
pub struct Ipam {
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
}

impl Ipam {
    pub fn from_conf(conf: &IpamConf) -> Result<Ipam> {
        let mut sets = conf.ranges.clone();
        if let Some(subnet) = conf.subnet {
            sets.insert(
                0,
                vec![crate::spec::RangeConf {
                    subnet,
                    range_start: conf.range_start,
                    range_end: conf.range_end,
                    gateway: conf.gateway,
                }],
            );
        }
        if sets.is_empty() || sets.iter().any(Vec::is_empty) {
            return Err(CniError::config(
                "field \"ipam.ranges\": no address range configured",
            ));
        }
        let mut range_sets = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            let mut ranges = Vec::new();
            for (j, r) in set.iter().enumerate() {
                let field = format!("ipam.ranges[{i}][{j}]");
                let subnet = r.subnet.network();
                let v4 = subnet.is_ipv4();
                let host_bits = if v4 { 32 } else { 128 } - subnet.prefix as u32;
                if host_bits < 2 {
                    return Err(CniError::config(format!(
                        "field \"{field}.subnet\": {} is too small",
                        r.subnet
                    )));
                }
                let net = to_u128(subnet.addr);
                let last = to_u128(subnet.last());
                let start = r.range_start.map(to_u128).unwrap_or(net + 1);
                let end = r
                    .range_end
                    .map(to_u128)
                    .unwrap_or(if v4 { last - 1 } else { last });
                for (name, ip) in [
                    ("rangeStart", r.range_start),
                    ("rangeEnd", r.range_end),
                    ("gateway", r.gateway),
                ] {
                    if let Some(ip) = ip {
                        if !subnet.contains(ip) {
                            return Err(CniError::config(format!(
                                "field \"{field}.{name}\": {ip} is not in subnet {subnet}"
                            )));
                        }
                    }
                }
                if start > end || start <= net || (v4 && end >= last) {
                    return Err(CniError::config(format!(
                        "field \"{field}\": range {}-{} is empty or covers the network/broadcast address",
                        from_u128(subnet.addr, start),
                        from_u128(subnet.addr, end)
                    )));
                }
                ranges.push(Range {
                    subnet,
                    start: from_u128(subnet.addr, start),
                    end: from_u128(subnet.addr, end),
                    gateway: Some(r.gateway.unwrap_or(from_u128(subnet.addr, net + 1))),
                });
            }
            range_sets.push(ranges);
        }
        Ok(Ipam {
            range_sets,
            routes: conf.routes.clone(),
            data_dir: conf
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        })
    }

    pub fn store(&self, network: &str) -> Result<Store> {
        Store::open(&self.data_dir.join(network))
    }

    /// Allocates one address per range set for (id, ifname). A second ADD for the same attachment gets the
    /// addresses it already holds, so a runtime retrying after a crash does not leak.
    pub fn allocate(&self, network: &str, id: &str, ifname: &str) -> Result<Vec<IpConfig>> {
        let store = self.store(network)?;
        let held = store.held_by(id, ifname)?;
        let mut out = Vec::new();
        let mut taken = Vec::new();
        for (idx, set) in self.range_sets.iter().enumerate() {
            let ip = match held.iter().find(|ip| set.iter().any(|r| r.contains(**ip))) {
                Some(ip) => *ip,
                None => match self.next_free(&store, idx, set, id, ifname) {
                    Ok(ip) => ip,
                    Err(e) => {
                        for ip in taken {
                            let _ = store.remove(ip);
                        }
                        return Err(e);
                    }
                },
            };
            taken.push(ip);
            let range = set
                .iter()
                .find(|r| r.contains(ip))
                .expect("allocated from this set");
            out.push(IpConfig {
                interface: None,
                address: IpNet {
                    addr: ip,
                    prefix: range.subnet.prefix,
                },
                gateway: range.gateway,
            });
        }
        Ok(out)
    }

    fn next_free(
        &self,
        store: &Store,
        idx: usize,
        set: &[Range],
        id: &str,
        ifname: &str,
    ) -> Result<IpAddr> {
        let last = store.last_reserved(idx);
        // Resume after the last reserved address, as the reference does, so addresses are not reused at once.
        let (mut r, mut cur) =
            match last.and_then(|ip| set.iter().position(|r| r.contains(ip)).map(|p| (p, ip))) {
                Some((p, ip)) => (p, to_u128(ip) + 1),
                None => (0, to_u128(set[0].start)),
            };
        // Visit every candidate exactly once, cyclically through the ranges of the set.
        let total = set
            .iter()
            .map(|r| to_u128(r.end) - to_u128(r.start) + 1)
            .fold(0u128, u128::saturating_add);
        let mut visited = 0u128;
        while visited < total {
            if cur > to_u128(set[r].end) {
                r = (r + 1) % set.len();
                cur = to_u128(set[r].start);
            }
            let ip = from_u128(set[r].subnet.addr, cur);
            if Some(ip) != set[r].gateway && store.reserve(ip, id, ifname)? {
                store.set_last_reserved(idx, ip)?;
                return Ok(ip);
            }
            cur += 1;
            visited += 1;
        }
        Err(CniError::new(
            Code::NoFreeAddress,
            format!("no free address in range set {idx} of \"ipam.ranges\""),
        )
        .with_details(format!("{}-{}", set[0].start, set[set.len() - 1].end)))
    }

    /// Routes for the result, as configured; a route without `gw` is installed via its family's gateway.
    pub fn result_routes(&self) -> Vec<Route> {
        self.routes.clone()
    }
}

/// The reservation directory of one network, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir)
            .map_err(|e| CniError::io(format!("cannot create {}", dir.display()), e))?;
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| CniError::io(format!("cannot open {}/lock", dir.display()), e))?;
        // Released when the file is closed, including by process death.
        let lock = loop {
            match Flock::lock(lock, FlockArg::LockExclusive) {
                Ok(l) => break l,
                Err((f, Errno::EINTR)) => lock = f,
                Err((_, e)) => {
                    return Err(CniError::io(
                        format!("cannot lock {}/lock", dir.display()),
                        e.into(),
                    ))
                }
            }
        };
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        store.remove_stale_temporaries();
        Ok(store)
    }

    fn remove_stale_temporaries(&self) {
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    fn io_err(&self, e: io::Error) -> CniError {
        CniError::io(format!("IPAM store {}", self.dir.display()), e)
    }

    /// Reserves `ip`; `Ok(false)` if someone holds it.
    pub fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> Result<bool> {
        let path = self.dir.join(ip.to_string());
        if path.exists() {
            return Ok(false);
        }
        let tmp = self.dir.join(format!("{TMP_PREFIX}{ip}"));
        let mut f = File::create(&tmp).map_err(|e| self.io_err(e))?;
        f.write_all(format!("{id}{LINE_BREAK}{ifname}").as_bytes())
            .map_err(|e| self.io_err(e))?;
        drop(f);
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io_err(e)),
        }
    }

    pub fn remove(&self, ip: IpAddr) -> Result<()> {
        match fs::remove_file(self.dir.join(ip.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io_err(e)),
            _ => Ok(()),
        }
    }

    pub fn last_reserved(&self, idx: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("last_reserved_ip.{idx}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn set_last_reserved(&self, idx: usize, ip: IpAddr) -> Result<()> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}last_reserved_ip.{idx}"));
        fs::write(&tmp, ip.to_string()).map_err(|e| self.io_err(e))?;
        fs::rename(&tmp, self.dir.join(format!("last_reserved_ip.{idx}")))
            .map_err(|e| self.io_err(e))
    }

    /// All reservations: (ip, containerID, ifname).
    pub fn reservations(&self) -> Result<Vec<(IpAddr, String, String)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)
            .map_err(|e| self.io_err(e))?
            .flatten()
        {
            let Ok(ip) = e.file_name().to_string_lossy().parse::<IpAddr>() else {
                continue;
            };
            let Ok(content) = fs::read_to_string(e.path()) else {
                continue;
            };
            let mut lines = content.split(LINE_BREAK);
            let id = lines.next().unwrap_or("").trim().to_string();
            let ifname = lines.next().unwrap_or("").trim().to_string();
            out.push((ip, id, ifname));
        }
        Ok(out)
    }

    pub fn held_by(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|(_, i, n)| i == id && n == ifname)
            .map(|(ip, ..)| ip)
            .collect())
    }

    /// Releases everything (id, ifname) holds; releasing nothing is not an error.
    pub fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let ips = self.held_by(id, ifname)?;
        for ip in &ips {
            self.remove(*ip)?;
        }
        Ok(ips)
    }

    /// GC: releases every reservation whose attachment is not in `valid`.
    pub fn retain(&self, valid: &HashSet<(String, String)>) -> Result<Vec<IpAddr>> {
        let mut released = Vec::new();
        for (ip, id, ifname) in self.reservations()? {
            if !valid.contains(&(id, ifname)) {
                self.remove(ip)?;
                released.push(ip);
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(ranges: serde_json::Value, dir: &Path) -> Result<Ipam> {
        let conf: IpamConf = serde_json::from_value(
            serde_json::json!({"type": "host-local", "ranges": ranges, "dataDir": dir}),
        )
        .unwrap();
        Ipam::from_conf(&conf)
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("basalt-ipam-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn addrs(v: &[IpConfig]) -> Vec<String> {
        v.iter().map(|i| i.address.to_string()).collect()
    }

    #[test]
    fn allocates_in_order_skipping_gateway_and_resumes_after_last() {
        let d = tmp("order");
        let i = ipam(serde_json::json!([[{"subnet": "10.9.0.0/29"}]]), &d).unwrap();
        assert_eq!(
            addrs(&i.allocate("n", "a", "eth0").unwrap()),
            ["10.9.0.2/29"]
        );
        assert_eq!(
            addrs(&i.allocate("n", "b", "eth0").unwrap()),
            ["10.9.0.3/29"]
        );
        // The same attachment again keeps its address.
        assert_eq!(
            addrs(&i.allocate("n", "a", "eth0").unwrap()),
            ["10.9.0.2/29"]
        );
        i.store("n").unwrap().release("a", "eth0").unwrap();
        // Not reused at once: the search resumes after the last reservation.
        assert_eq!(
            addrs(&i.allocate("n", "c", "eth0").unwrap()),
            ["10.9.0.4/29"]
        );
        assert_eq!(
            fs::read_to_string(d.join("n/last_reserved_ip.0")).unwrap(),
            "10.9.0.4"
        );
        assert_eq!(
            fs::read_to_string(d.join("n/10.9.0.4")).unwrap(),
            "c\r\neth0"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn wraps_around_and_reports_exhaustion() {
        let d = tmp("full");
        // .1 is the gateway; .2-.6 usable (5 addresses).
        let i = ipam(serde_json::json!([[{"subnet": "10.9.1.0/29"}]]), &d).unwrap();
        for n in 0..5 {
            i.allocate("n", &format!("c{n}"), "eth0").unwrap();
        }
        let e = i.allocate("n", "c5", "eth0").unwrap_err();
        assert_eq!(e.code, Code::NoFreeAddress as u32);
        assert!(e.msg.contains("ipam.ranges"), "{e}");
        i.store("n").unwrap().release("c1", "eth0").unwrap();
        assert_eq!(
            addrs(&i.allocate("n", "c6", "eth0").unwrap()),
            ["10.9.1.3/29"]
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn range_sets_dual_stack_and_multiple_ranges() {
        let d = tmp("dual");
        let i = ipam(
            serde_json::json!([
                [{"subnet": "fd00:9::/120"}],
                [{"subnet": "10.9.2.0/24", "rangeStart": "10.9.2.10", "rangeEnd": "10.9.2.10"},
                 {"subnet": "10.9.3.0/24", "rangeStart": "10.9.3.20", "rangeEnd": "10.9.3.20"}]
            ]),
            &d,
        )
        .unwrap();
        let a = i.allocate("n", "a", "eth0").unwrap();
        assert_eq!(addrs(&a), ["fd00:9::2/120", "10.9.2.10/24"]);
        assert_eq!(a[0].gateway, Some("fd00:9::1".parse().unwrap()));
        assert_eq!(a[1].gateway, Some("10.9.2.1".parse().unwrap()));
        assert_eq!(
            addrs(&i.allocate("n", "b", "eth0").unwrap()),
            ["fd00:9::3/120", "10.9.3.20/24"]
        );
        // The IPv4 set is full: the failed allocation must not keep the IPv6 address it got first.
        assert_eq!(
            i.allocate("n", "c", "eth0").unwrap_err().code,
            Code::NoFreeAddress as u32
        );
        assert_eq!(i.store("n").unwrap().reservations().unwrap().len(), 4);
        assert!(i
            .store("n")
            .unwrap()
            .held_by("c", "eth0")
            .unwrap()
            .is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let d = tmp("bad");
        let e = ipam(
            serde_json::json!([[{"subnet": "10.9.0.0/24", "rangeStart": "10.8.0.5"}]]),
            &d,
        )
        .unwrap_err();
        assert!(
            e.msg.contains("ipam.ranges[0][0].rangeStart") && e.msg.contains("10.8.0.5"),
            "{e}"
        );
        let e = ipam(serde_json::json!([[{"subnet": "10.9.0.0/31"}]]), &d).unwrap_err();
        assert!(e.msg.contains("ipam.ranges[0][0].subnet"), "{e}");
        let e = ipam(serde_json::json!([]), &d).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig as u32);
    }

    #[test]
    fn stale_temporaries_are_removed_and_gc_keeps_valid() {
        let d = tmp("gc");
        let i = ipam(serde_json::json!([[{"subnet": "10.9.4.0/24"}]]), &d).unwrap();
        i.allocate("n", "keep", "eth0").unwrap();
        i.allocate("n", "drop", "eth0").unwrap();
        fs::write(d.join("n/.tmp-10.9.4.9"), "half").unwrap();
        let s = i.store("n").unwrap();
        assert!(!d.join("n/.tmp-10.9.4.9").exists());
        let valid = HashSet::from([("keep".to_string(), "eth0".to_string())]);
        assert_eq!(
            s.retain(&valid).unwrap(),
            ["10.9.4.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.held_by("keep", "eth0").unwrap().len(), 1);
        drop(s);
        let _ = fs::remove_dir_all(&d);
    }
}

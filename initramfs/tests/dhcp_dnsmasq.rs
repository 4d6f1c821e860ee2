//! The node image's DHCP client (`basalt_initramfs::dhcp`, what `basalt init` runs on the uplink) against a
//! real server: Debian's dnsmasq in a network namespace this test creates, the client in another, a veth pair
//! between them. dnsmasq's shortest lease is two minutes, so it is told to send T1 = 2 s and T2 = 3 s: the
//! client lives through renewals, a rebinding, a moved reservation and the release in about ten seconds.
//!
//! Everything the test creates (both namespaces and so the veth pair, the dnsmasq process, its lease and log
//! files) is removed at the end and checked gone.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use basalt_initramfs::dhcp::{Client, Config, Event, Loss};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const RESERVED: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 50);
const MOVED: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 60);
const NEW_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 254);
const MAC: &str = "02:b5:d4:00:00:01";
/// Longer than any step needs (a step waits for at most a T1 or a T2 of the server's).
const STEP: Duration = Duration::from_secs(15);

#[test]
fn renews_rebinds_follows_a_moved_reservation_and_releases_against_dnsmasq() -> Result<()> {
    let started = Instant::now();
    let dnsmasq = basalt_testsupport::require_tool("dnsmasq", "dnsmasq-base")?;
    basalt_testsupport::require_tool("ip", "iproute2")?;
    basalt_testsupport::require_tool("nft", "nftables")?;
    let mut lab = Lab::new(&dnsmasq)?;
    let result = lab.run();
    let cleanup = lab.tear_down();
    result?;
    cleanup?;
    eprintln!(
        "dhcp against dnsmasq: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Lab {
    id: String,
    dir: PathBuf,
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    dnsmasq: Option<Child>,
    dnsmasq_pid: u32,
}

impl Lab {
    fn new(dnsmasq: &Path) -> Result<Lab> {
        let id = format!("{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("basalt-dhcp-{id}"));
        let mut lab = Lab {
            server_ns: format!("basalt-dhcps-{id}"),
            client_ns: format!("basalt-dhcpc-{id}"),
            server_if: format!("bds{id}"),
            client_if: format!("bdc{id}"),
            id,
            dir,
            dnsmasq: None,
            dnsmasq_pid: 0,
        };
        // Any failure from here on is cleaned up by Drop.
        std::fs::create_dir_all(&lab.dir)?;
        ip(&["netns", "add", &lab.server_ns])?;
        ip(&["netns", "add", &lab.client_ns])?;
        ip(&[
            "link",
            "add",
            &lab.server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
            "address",
            MAC,
        ])?;
        ip(&[
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            "10.213.0.1/24",
            "dev",
            &lab.server_if,
        ])?;
        ip(&["-n", &lab.server_ns, "link", "set", &lab.server_if, "up"])?;
        ip(&["-n", &lab.client_ns, "link", "set", &lab.client_if, "up"])?;
        lab.reserve(RESERVED, SERVER)?;
        let log = File::create(lab.dir.join("dnsmasq.out"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.server_ns])
            .arg(dnsmasq)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--pid-file=",
                "--user=root",
                "--bind-interfaces",
                "--no-ping",
                "--log-dhcp",
            ])
            .arg(format!("--interface={}", lab.server_if))
            .arg("--dhcp-range=10.213.0.100,10.213.0.150,255.255.255.0,2m")
            // dnsmasq's floor is a two-minute lease; the timers make the client renew within seconds.
            .args(["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,3"])
            .arg(format!(
                "--dhcp-hostsfile={}",
                lab.dir.join("hosts").display()
            ))
            .arg(format!(
                "--dhcp-optsfile={}",
                lab.dir.join("opts").display()
            ))
            .arg(format!(
                "--dhcp-leasefile={}",
                lab.dir.join("leases").display()
            ))
            .arg(format!("--log-facility={}", lab.dir.join("log").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dnsmasq")?;
        // `ip netns exec` execs dnsmasq in place: this is dnsmasq's pid.
        lab.dnsmasq_pid = child.id();
        lab.dnsmasq = Some(child);
        wait_until("dnsmasq listening", STEP, || {
            Ok(lab.server_log().contains("DHCP, sockets bound exclusively"))
        })?;
        Ok(lab)
    }

    fn run(&mut self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        let config = Config {
            interface: self.client_if.clone(),
            hostname: "node-1".into(),
        };
        let client = in_netns(&self.client_ns, move || {
            Client::start(config, move |e| {
                let _ = tx.send(e);
            })
        })??;
        let mut events = Events { rx };

        // Acquired: the reserved address, the server's router and DNS, on the interface with the lease's
        // lifetime, and the default route through the router from that address.
        let lease = events.expect("the first lease", |e| match e {
            Event::Bound(l) => Some(l.clone()),
            _ => None,
        })?;
        let bound_at = Instant::now();
        eprintln!(
            "bound {}/{} from {}: lease {:?}, T1 {:?}, T2 {:?}",
            lease.addr, lease.prefix, lease.server, lease.duration, lease.t1, lease.t2
        );
        ensure!(
            (lease.addr, lease.prefix, lease.gateway, lease.server)
                == (RESERVED, 24, Some(SERVER), SERVER),
            "{lease:?}"
        );
        ensure!(lease.dns == [Ipv4Addr::new(10, 213, 0, 53)], "{lease:?}");
        ensure!(lease.domain.as_deref() == Some("lab.test"), "{lease:?}");
        ensure!(
            lease.duration == Some(Duration::from_secs(120))
                && lease.t1 == Duration::from_secs(2)
                && lease.t2 == Duration::from_secs(3),
            "{lease:?}"
        );
        self.expect_configured(RESERVED, SERVER)?;

        // Renewals at T1, by unicast to the server: the address stays, the server's lease is extended.
        for n in 1..=2 {
            let renewed = events.expect("a renewal", |e| match e {
                Event::Renewed { lease, rebinding } => Some((lease.clone(), *rebinding)),
                _ => None,
            })?;
            ensure!(
                renewed.0.addr == RESERVED && !renewed.1,
                "renewal {n}: {renewed:?}"
            );
            ensure!(
                renewed.0.start > lease.start,
                "a renewal restarts the lease clock"
            );
        }
        self.expect_configured(RESERVED, SERVER)?;
        // Each renewal gave the address the lease's full lifetime again: without that, the kernel's count would
        // be down by the seconds since the first lease.
        let since_bound = bound_at.elapsed().as_secs();
        let valid = self.client_addresses()?[0].2;
        ensure!(
            valid > 120 - since_bound,
            "lifetime {valid} s, {since_bound} s after the first lease: not refreshed by the renewals"
        );
        ensure!(
            self.lease_of_server().as_deref() == Some(&RESERVED.to_string()[..]),
            "dnsmasq's leases: {}",
            self.leases()
        );

        // The server cannot be reached by unicast: the renewal goes unanswered, and at T2 the client rebinds by
        // broadcast, keeping its address.
        self.nft(&format!(
            "add table ip basalt_dhcp_test; add chain ip basalt_dhcp_test input {{ type filter hook input priority 0; }}; \
             add rule ip basalt_dhcp_test input ip daddr {SERVER} udp dport 67 counter drop"
        ))?;
        let rebound = events.expect("a rebinding", |e| match e {
            Event::Renewed {
                lease,
                rebinding: true,
            } => Some(lease.clone()),
            _ => None,
        })?;
        ensure!(rebound.addr == RESERVED, "{rebound:?}");
        let rules = self.nft_out("list table ip basalt_dhcp_test")?;
        ensure!(
            !rules.contains("counter packets 0 "),
            "the unicast renewal never reached the server's filter:\n{rules}"
        );
        self.nft("delete table ip basalt_dhcp_test")?;
        self.expect_configured(RESERVED, SERVER)?;

        // The reservation moves and the router changes: the server refuses the old address at the next renewal,
        // and the client takes the new one, with the default route through the new router.
        self.reserve(MOVED, NEW_GATEWAY)?;
        // SAFETY: signalling the dnsmasq we started and have not reaped.
        unsafe { libc::kill(self.dnsmasq_pid as i32, libc::SIGHUP) };
        let (lost, why) = events.expect("the refusal of the old address", |e| match e {
            Event::Lost(l, why) => Some((l.clone(), why.clone())),
            _ => None,
        })?;
        ensure!(
            lost.addr == RESERVED && matches!(why, Loss::Refused(_)),
            "{lost:?} {why:?}"
        );
        eprintln!("{} refused: {why:?}", lost.addr);
        let moved = events.expect("the moved lease", |e| match e {
            Event::Bound(l) => Some(l.clone()),
            _ => None,
        })?;
        ensure!(
            (moved.addr, moved.gateway) == (MOVED, Some(NEW_GATEWAY)),
            "{moved:?}"
        );
        self.expect_configured(MOVED, NEW_GATEWAY)?;
        let addrs = self.client_addresses()?;
        ensure!(
            !addrs.iter().any(|(a, _, _)| *a == RESERVED),
            "the old address is still there: {addrs:?}"
        );

        // Power-off: the release reaches the server, which drops the lease; the address and route are gone.
        client
            .release(Duration::from_secs(5))
            .context("releasing")?;
        let released = events.expect("the release", |e| match e {
            Event::Released(l) => Some(l.clone()),
            _ => None,
        })?;
        ensure!(released.addr == MOVED, "{released:?}");
        wait_until("dnsmasq to log the release", STEP, || {
            Ok(self
                .server_log()
                .contains(&format!("DHCPRELEASE({}) {MOVED} {MAC}", self.server_if)))
        })?;
        wait_until("dnsmasq to drop the lease", STEP, || {
            Ok(self.lease_of_server().is_none())
        })?;
        let addrs = self.client_addresses()?;
        ensure!(
            addrs.is_empty(),
            "addresses left after the release: {addrs:?}"
        );
        ensure!(
            self.default_route()?.is_none(),
            "default route left after the release"
        );
        ensure!(
            events.rest().is_empty(),
            "events after the release: {:?}",
            events.rest()
        );
        Ok(())
    }

    /// The client's interface has `addr/24` with a lease lifetime, and the default route goes via `gw` from it.
    fn expect_configured(&self, addr: Ipv4Addr, gw: Ipv4Addr) -> Result<()> {
        let addrs = self.client_addresses()?;
        let Some((_, prefix, valid)) = addrs.iter().find(|(a, _, _)| *a == addr) else {
            bail!("{addr} is not on {}: {addrs:?}", self.client_if);
        };
        ensure!(*prefix == 24, "{addrs:?}");
        ensure!(
            *valid > 100 && *valid <= 120,
            "the address's lifetime is not the lease's: {addrs:?}"
        );
        let route = self.default_route()?.context("no default route")?;
        ensure!(
            route["gateway"] == gw.to_string()
                && route["prefsrc"] == addr.to_string()
                && route["protocol"] == "dhcp"
                && route["dev"] == self.client_if,
            "default route: {route}"
        );
        Ok(())
    }

    /// (address, prefix, valid lifetime in seconds) of every IPv4 address on the client's interface.
    fn client_addresses(&self) -> Result<Vec<(Ipv4Addr, u8, u64)>> {
        let out = ip_out(&[
            "-n",
            &self.client_ns,
            "-j",
            "-4",
            "addr",
            "show",
            "dev",
            &self.client_if,
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let mut found = Vec::new();
        for a in v[0]["addr_info"].as_array().into_iter().flatten() {
            found.push((
                a["local"].as_str().context("local")?.parse()?,
                a["prefixlen"].as_u64().context("prefixlen")? as u8,
                a["valid_life_time"].as_u64().context("valid_life_time")?,
            ));
        }
        Ok(found)
    }

    fn default_route(&self) -> Result<Option<serde_json::Value>> {
        let out = ip_out(&[
            "-n",
            &self.client_ns,
            "-j",
            "-4",
            "route",
            "show",
            "default",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v.as_array().and_then(|a| a.first()).cloned())
    }

    /// Points the client's reservation (by MAC) at `addr` and the router option at `gw`; dnsmasq reads both
    /// files again on SIGHUP.
    fn reserve(&self, addr: Ipv4Addr, gw: Ipv4Addr) -> Result<()> {
        std::fs::write(self.dir.join("hosts"), format!("{MAC},{addr}\n"))?;
        std::fs::write(
            self.dir.join("opts"),
            format!(
                "option:router,{gw}\noption:dns-server,10.213.0.53\noption:domain-name,lab.test\n"
            ),
        )?;
        Ok(())
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.join("leases")).unwrap_or_default()
    }

    /// The address dnsmasq's lease file holds for our MAC.
    fn lease_of_server(&self) -> Option<String> {
        self.leases()
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(MAC))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
    }

    fn nft(&self, script: &str) -> Result<()> {
        self.nft_out(script).map(|_| ())
    }

    fn nft_out(&self, script: &str) -> Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.server_ns, "nft"])
            .arg(script))
    }

    /// Stops dnsmasq, deletes both namespaces (and with them the veth pair) and the files, then checks each
    /// is gone.
    fn tear_down(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.dnsmasq.take() {
            // SAFETY: signalling our child before reaping it.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            match child.wait() {
                Ok(_) => {}
                Err(e) => problems.push(format!("waiting for dnsmasq: {e}")),
            }
        }
        for ns in [&self.server_ns, &self.client_ns] {
            if Path::new("/run/netns").join(ns).exists() {
                if let Err(e) = ip(&["netns", "del", ns]) {
                    problems.push(e.to_string());
                }
            }
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                problems.push(format!("{}: {e}", self.dir.display()));
            }
        }
        // What is left, looked up afresh.
        if self.dnsmasq_pid != 0 && Path::new(&format!("/proc/{}", self.dnsmasq_pid)).exists() {
            let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", self.dnsmasq_pid))
                .unwrap_or_default();
            if cmdline.contains(&self.server_if) {
                problems.push(format!("dnsmasq (pid {}) still running", self.dnsmasq_pid));
            }
        }
        let namespaces = ip_out(&["netns", "list"]).unwrap_or_default();
        for ns in [&self.server_ns, &self.client_ns] {
            if namespaces
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns))
            {
                problems.push(format!("network namespace {ns} left"));
            }
        }
        for link in [&self.server_if, &self.client_if] {
            if Path::new("/sys/class/net").join(link).exists() {
                problems.push(format!("interface {link} left in the host's namespace"));
            }
        }
        if self.dir.exists() {
            problems.push(format!("{} left", self.dir.display()));
        }
        self.id.clear();
        ensure!(problems.is_empty(), "cleaning up: {}", problems.join("; "));
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            let _ = self.tear_down();
        }
    }
}

/// The client's events, one step at a time; an error event fails the step.
struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    fn expect<T>(&mut self, what: &str, mut want: impl FnMut(&Event) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + STEP;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.rx.recv_timeout(left) {
                Ok(e) => e,
                Err(_) => bail!("no {what} within {STEP:?}; events meanwhile: {seen:?}"),
            };
            if let Event::Error(e) = &event {
                bail!("waiting for {what}: the client reported an error: {e}");
            }
            if let Some(t) = want(&event) {
                return Ok(t);
            }
            seen.push(event);
        }
    }

    /// Events already sent and not taken.
    fn rest(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }
}

/// Runs `f` on a thread that joined network namespace `ns` (threads it starts stay there).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = Path::new("/run/netns").join(ns);
    let file = File::open(&path).with_context(|| path.display().to_string())?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid namespace descriptor; only this thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {ns}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        ensure!(Instant::now() < deadline, "no {what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    ip_out(args).map(|_| ())
}

fn ip_out(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

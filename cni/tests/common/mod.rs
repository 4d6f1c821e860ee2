//! Test scaffolding shared by the plugin tests and the benchmark: throw-away network namespaces (a "node"
//! where bridges live, pods, an "outside"), the plugin binary (this very executable behind a symlink named
//! `bridge` / `host-local`), and leak checks. Nothing here touches the host's own network namespace.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// If this executable was started as a plugin (argv[0] `bridge` / `host-local`), runs it and exits.
pub fn dispatch_plugin() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let kind = match name.as_str() {
        "bridge" => basalt_cni::PluginKind::Bridge,
        "host-local" => basalt_cni::PluginKind::HostLocal,
        _ => return,
    };
    let code = basalt_cni::plugin_main(kind);
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `f` until it is true or `secs` pass.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns {
            name: name.to_string(),
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    pub fn exec_ok(&self, cmd: &str) -> bool {
        sh_ok(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// Names of veth devices here.
    pub fn veths(&self) -> Vec<String> {
        sh(&format!("ip -n {} -o link show type veth", self.name))
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_string())
            })
            .collect()
    }

    pub fn ruleset(&self) -> String {
        self.exec("nft list ruleset")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("basalt-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Our plugins: symlinks to this test executable, which `dispatch_plugin` turns into the plugin.
pub fn our_plugin_dir(tmp: &TempDir) -> PathBuf {
    let dir = tmp.0.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    for name in ["bridge", "host-local"] {
        let _ = std::fs::remove_file(dir.join(name));
        std::os::unix::fs::symlink(&exe, dir.join(name)).unwrap();
    }
    dir
}

pub struct Invocation<'a> {
    pub plugin: &'a Path,
    pub node: &'a Netns,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub conf: &'a str,
    pub cni_path: Option<&'a Path>,
}

/// Runs a plugin binary inside the node namespace with the CNI environment.
pub fn spawn_plugin(inv: &Invocation) -> std::process::Child {
    let node_ns = File::open(inv.node.path()).unwrap();
    let mut cmd = Command::new(inv.plugin);
    cmd.env_clear()
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_IFNAME", inv.ifname)
        .env(
            "CNI_PATH",
            inv.cni_path.unwrap_or(inv.plugin.parent().unwrap()),
        )
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = inv.netns {
        cmd.env("CNI_NETNS", ns);
    }
    let fd = node_ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; the child joins the node namespace before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(inv.conf.as_bytes())
        .unwrap();
    child
}

pub fn run_plugin(inv: &Invocation) -> Output {
    spawn_plugin(inv).wait_with_output().unwrap()
}

/// Runs and requires success; returns stdout parsed as JSON (Null when empty).
pub fn run_ok(inv: &Invocation) -> serde_json::Value {
    let out = run_plugin(inv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {} failed: {stdout} {}",
        inv.plugin.display(),
        inv.command,
        String::from_utf8_lossy(&out.stderr)
    );
    if stdout.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap()
    }
}

/// Reservation files (named after an IP) left in a host-local directory.
pub fn reservations(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses (CIDR) a result assigned.
pub fn result_ips(res: &serde_json::Value) -> Vec<String> {
    res["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}

pub fn addr_only(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

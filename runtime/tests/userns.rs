//! A container that joins an existing user namespace by path (as a pod's containers join the pod's) gets
//! new namespaces owned by that user namespace: its root can set up the rootfs and mount /proc in them.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use basalt_runtime::container::{Container, CreateOptions};

/// A process in a new user namespace that maps container ids 0..65536 to host ids 100000.., killed on drop.
struct UserNs(Child);

impl UserNs {
    fn start() -> UserNs {
        let child = Command::new("unshare")
            .args(["-U", "sleep", "infinity"])
            .spawn()
            .expect("unshare -U");
        let ns = UserNs(child);
        let ours = std::fs::metadata("/proc/self/ns/user").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let theirs = std::fs::metadata(ns.path()).unwrap();
            if std::os::unix::fs::MetadataExt::ino(&theirs)
                != std::os::unix::fs::MetadataExt::ino(&ours)
            {
                break;
            }
            assert!(Instant::now() < deadline, "unshare -U did not take effect");
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = ns.0.id();
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 100000 65536\n").unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 100000 65536\n").unwrap();
        ns
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/user", self.0.id())
    }
}

impl Drop for UserNs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn joined_user_namespace_owns_the_new_namespaces() {
    if !is_root() || !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: needs root and /bin/busybox");
        return;
    }
    let userns = UserNs::start();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    // A host directory only the host's root may write to: the container's root (host uid 100000) can
    // only through an idmapped mount.
    let vol = tmp.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    for d in ["bin", "proc", "tmp", "dev", "vol"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let id = format!("userns-join-{}", std::process::id());
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin"],
            "args": ["/bin/busybox", "sh", "-c",
                "/bin/busybox cat /proc/self/uid_map; /bin/busybox cat /proc/1/cmdline | /bin/busybox tr '\\0' ' '; echo; \
                 /bin/busybox touch /tmp/ok && echo tmp-ok; /bin/busybox id -u; \
                 /bin/busybox touch /vol/made-inside && /bin/busybox stat -c %u /vol/made-inside"],
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/vol", "type": "bind", "source": vol, "options": ["rbind"],
             "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
             "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
        ],
        "linux": {
            "namespaces": [
                {"type": "user", "path": userns.path()},
                {"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"},
            ],
            "cgroupsPath": format!("/{id}"),
        },
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();

    let (mut out_rd, out_wr) = std::io::pipe().unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let opts = CreateOptions {
        root: tmp.path().join("state"),
        id,
        bundle: bundle.clone(),
        stdio: Some([null.as_raw_fd(), out_wr.as_raw_fd(), out_wr.as_raw_fd()]),
        ..Default::default()
    };
    let mut c = Container::create(&opts).expect("create in the joined user namespace");
    drop(out_wr);
    let pid = nix::unistd::Pid::from_raw(c.pid());
    // The init is our child even though an intermediate process cloned it.
    let started = c.start();
    let mut out = String::new();
    out_rd.read_to_string(&mut out).unwrap();
    let status = nix::sys::wait::waitpid(pid, None).expect("the init is our child");
    let c = Container::load(&opts.root, &opts.id).unwrap();
    c.delete(true).unwrap();
    started.unwrap();
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{status:?}: {out}"
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "uid_map: {out}");
    assert!(lines[1].starts_with("/bin/busybox sh"), "{out}");
    assert_eq!(lines[2], "tmp-ok", "{out}");
    assert_eq!(lines[3], "0", "{out}");
    // Root inside owns what it made, and so does the host's root on disk: the mount maps one to the other.
    assert_eq!(lines[4], "0", "{out}");
    let made =
        std::fs::metadata(vol.join("made-inside")).expect("file made through the idmapped mount");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), 0);
    assert!(!opts.root.join(&opts.id).exists(), "state dir left behind");
    // The cgroup, in whichever hierarchies this host has (`/<id>` on v2, `/<controller>/<id>` on v1).
    let cgroup_root = std::path::Path::new("/sys/fs/cgroup");
    let left: Vec<_> = std::iter::once(cgroup_root.to_path_buf())
        .chain(
            std::fs::read_dir(cgroup_root)
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        )
        .map(|h| h.join(&opts.id))
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

//! A generated spec run for real by runc (the reference runtime): the process gets the user, groups, mounts,
//! security settings and cgroup limits the spec says, and nothing is left behind.

use std::path::Path;
use std::process::Command;

use basalt_cri_oci::{container_spec, Container, Image, Options, Sandbox};
use basalt_images::{ImageConfig, RuntimeConfig};
use basalt_proto::cri::{
    security_profile::ProfileType, ContainerConfig, ContainerMetadata, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, SecurityProfile,
};

const SCRIPT: &str =
    "id; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; echo host=$HOSTNAME; \
    cat /data/hello; touch /data/x 2>/dev/null || echo data-ro; \
    cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
    touch /ro/sub/y && echo ro-submount-rw; touch /rro/sub/z 2>/dev/null || echo rro-submount-ro";

/// A tmpfs mounted on the host for the test, lazily unmounted however the test ends.
struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn new(at: &Path) -> TmpfsMount {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs at {}", at.display());
        TmpfsMount(at.to_owned())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn runc_runs_the_generated_spec() {
    let runc = basalt_testsupport::require_tool("runc", "runc").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    basalt_testsupport::bundle::busybox_rootfs(&rootfs).unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nstaff:x:50:user\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello"), "hello-from-host\n").unwrap();
    // A tree with a submount: `readonly` alone leaves the submount writable, `recursive_read_only` does not.
    let tree = dir.path().join("tree");
    let sub = TmpfsMount::new(&tree.join("sub"));

    let image = ImageConfig {
        config: RuntimeConfig {
            user: "user".into(),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec![SCRIPT.into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let pod = PodSandboxConfig {
        hostname: "cri-oci-test".into(),
        ..Default::default()
    };
    let own = NamespaceMode::Container as i32;
    let cfg = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        mounts: vec![
            Mount {
                container_path: "/data".into(),
                host_path: data.to_str().unwrap().into(),
                readonly: true,
                ..Default::default()
            },
            Mount {
                container_path: "/ro".into(),
                host_path: tree.to_str().unwrap().into(),
                readonly: true,
                ..Default::default()
            },
            Mount {
                container_path: "/rro".into(),
                host_path: tree.to_str().unwrap().into(),
                readonly: true,
                recursive_read_only: true,
                ..Default::default()
            },
        ],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                // Fresh namespaces: nothing of the host is shared with the test container.
                namespace_options: Some(NamespaceOption {
                    network: own,
                    pid: own,
                    ipc: own,
                    ..Default::default()
                }),
                supplemental_groups: vec![5000],
                no_new_privs: true,
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let id = format!("basalt-cri-oci-{}", std::process::id());
    let opts = Options {
        // A cgroup directly under each hierarchy's root: runc removes it on delete, leaving nothing behind.
        cgroup_parent_default: "/".into(),
        ..Options::default()
    };
    let generated = container_spec(
        &Container::new(&id, &cfg),
        &Sandbox::new("sb", &pod),
        &Image {
            config: &image,
            rootfs: &rootfs,
        },
        &opts,
    )
    .unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&generated.spec).unwrap(),
    )
    .unwrap();

    let state = dir.path().join("runc-state");
    let out = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc run: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            // The kernel keeps the group list sorted.
            "uid=1000(user) gid=1000(user) groups=50(staff),1000(user),5000",
            "NoNewPrivs:\t1",
            "Seccomp:\t2",
            "host=cri-oci-test",
            "hello-from-host",
            "data-ro",
            "67108864",
            "ro-submount-rw",
            "rro-submount-ro",
        ],
        "{stdout}"
    );
    assert_eq!(generated.user.supplemental_groups, [1000, 50, 5000]);
    assert!(tree.join("sub/y").exists() && !tree.join("sub/z").exists());
    drop(sub);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(tree.to_str().unwrap()),
        "test tmpfs left mounted"
    );

    // runc run deletes the container when it exits: no state, no cgroup.
    let list = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .arg("list")
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");
    for hierarchy in ["memory", "pids", "devices", "unified", ""] {
        let p = Path::new("/sys/fs/cgroup").join(hierarchy).join(&id);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

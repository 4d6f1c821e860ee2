use std::path::{Path, PathBuf};

use basalt_cri_oci::{
    container_spec, Container, Error, ErrorKind, Generated, Image, Options, Sandbox,
};
use basalt_images::{ImageConfig, RuntimeConfig};
use basalt_proto::cri::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    PodSandboxConfig, PodSandboxMetadata,
};
use oci_spec::runtime::{Mount, Process, Spec};

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment, and a malformed line next
broken
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
";

pub const GROUP: &str = "root:x:0:
wheel:x:10:root,alice
alice:x:1000:
bob:x:1001:
staff:x:50:alice,bob
audio:x:63:bob
";

/// A pod with an image rootfs in a tempdir; tests change the public fields, then call [`Env::run`].
pub struct Env {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub image: ImageConfig,
    pub pod: PodSandboxConfig,
    pub opts: Options,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
        let hostname = dir.path().join("host-hostname");
        std::fs::write(&hostname, "node-1\n").unwrap();
        let image = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: RuntimeConfig {
                env: vec![
                    "PATH=/image/bin:/bin".into(),
                    "IMAGE_ONLY=1".into(),
                    "SHARED=image".into(),
                ],
                entrypoint: vec!["/entry".into()],
                cmd: vec!["image-cmd".into()],
                working_dir: "/srv".into(),
                ..Default::default()
            },
        };
        let pod = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-0".into(),
            log_directory: "/var/log/pods/default_web_uid-1".into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/besteffort/poduid-1".into(),
                security_context: Some(LinuxSandboxSecurityContext::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = Options {
            host_hostname_file: hostname,
            seccomp_profile_root: dir.path().join("seccomp"),
            // Not whatever this test process happens to hold: tests that care set it.
            host_capabilities: None,
            ..Options::default()
        };
        Env {
            dir,
            rootfs,
            image,
            pod,
            opts,
        }
    }

    pub fn run(&self, cfg: &ContainerConfig) -> Result<Generated, Error> {
        self.run_with(
            &Container::new("ctr-1", cfg),
            &Sandbox::new("sb-1", &self.pod),
        )
    }

    pub fn run_with(&self, c: &Container, sb: &Sandbox) -> Result<Generated, Error> {
        let image = Image {
            config: &self.image,
            rootfs: &self.rootfs,
        };
        container_spec(c, sb, &image, &self.opts)
    }

    pub fn spec(&self, cfg: &ContainerConfig) -> Spec {
        self.run(cfg).unwrap().spec
    }

    pub fn err(&self, cfg: &ContainerConfig) -> Error {
        self.run(cfg).expect_err("request should be rejected")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

pub fn config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "docker.io/library/busybox:latest".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn sc(cfg: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cfg.linux
        .get_or_insert_with(LinuxContainerConfig::default)
        .security_context
        .get_or_insert_with(Default::default)
}

pub fn process(spec: &Spec) -> &Process {
    spec.process().as_ref().unwrap()
}

pub fn mount<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

pub fn options(m: &Mount) -> Vec<&str> {
    m.options()
        .as_ref()
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect()
}

/// The error has `kind` and its message names the field and the quoted value.
pub fn assert_err(e: &Error, kind: ErrorKind, field: &str, value: &str) {
    assert_eq!(e.kind, kind, "{e}");
    assert!(
        e.message.contains(field) && e.message.contains(value),
        "{:?} should name {field} and {value}",
        e.message
    );
}

//! The fixture images every test suite uses, built from the host's `/bin/busybox` (Debian `busybox-static`).
//!
//! | name        | reference                            | what it is for                                        |
//! |-------------|--------------------------------------|-------------------------------------------------------|
//! | `busybox`   | `docker.io/library/busybox:latest`   | the default image; `Cmd ["sh"]` as Docker's busybox   |
//! | `nonroot`   | `docker.io/basalt/nonroot:latest`    | `User 1000:1000`                                      |
//! | `configured`| `docker.io/basalt/configured:latest` | `Env`, `WorkingDir`, `Labels`, `ExposedPorts`         |
//! | `layered`   | `docker.io/basalt/layered:latest`    | three layers: a whiteout, an opaque dir, ownership    |
//! | `large`     | `docker.io/basalt/large:latest`      | 5 × 10 MiB random (incompressible) layers, for pulls  |
//! | `pause`     | `docker.io/basalt/pause:latest`      | a CRI sandbox image: sleeps forever, exits 0 on TERM  |

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::{RngCore, SeedableRng};
use serde_json::json;

use crate::image::{ImageBuilder, LayerBuilder, OciImage};

pub const BUSYBOX: &str = "busybox";
pub const NONROOT: &str = "nonroot";
pub const CONFIGURED: &str = "configured";
pub const LAYERED: &str = "layered";
pub const LARGE: &str = "large";
pub const PAUSE: &str = "pause";

/// The `pause` fixture's entrypoint: a shell that sleeps until TERM/INT and then exits 0. As PID 1 of a pod it
/// would otherwise ignore TERM (the kernel drops default-action signals to a namespace's init), hence the trap.
pub const PAUSE_SCRIPT: &str =
    "trap 'exit 0' TERM INT; while :; do sleep 2147483647 & wait $!; done";

/// In the `layered` image: paths that must exist in a correctly unpacked root…
pub const LAYERED_PRESENT: &[&str] = &["data/keep", "data/new", "opq/fresh", "owned", "bin/sh"];
/// …and paths that an earlier layer wrote but a later one deleted (whiteout) or hid (opaque dir).
pub const LAYERED_ABSENT: &[&str] = &["data/gone", "opq/old1", "opq/old2"];
/// In the `layered` image, `/owned` belongs to 1000:1000 with mode 0640.
pub const LAYERED_OWNED: (&str, u32, u32, u32) = ("owned", 1000, 1000, 0o640);

const LARGE_LAYERS: usize = 5;
const LARGE_LAYER_BYTES: usize = 10 << 20;

/// One fixture image on disk in all three formats.
#[derive(Debug)]
pub struct Fixture {
    pub name: &'static str,
    pub image: OciImage,
    /// An OCI image layout directory.
    pub oci_layout: PathBuf,
    /// The same layout as a tar (`oci-archive:`).
    pub oci_archive: PathBuf,
    /// A classic `docker save` archive (`docker-archive:`).
    pub docker_archive: PathBuf,
}

/// The fixture set, written under a temporary directory that is removed on drop.
pub struct Fixtures {
    _dir: tempfile::TempDir,
    pub all: Vec<Fixture>,
}

impl Fixtures {
    /// The four small fixtures (about 1 MiB each compressed).
    pub fn build() -> Result<Fixtures> {
        Self::build_set(false, false)
    }

    /// The small fixtures plus `large` (50 MiB of random layers).
    pub fn build_with_large() -> Result<Fixtures> {
        Self::build_set(true, false)
    }

    /// The small fixtures plus `pause`, the sandbox image CRI runtimes need.
    pub fn build_with_pause() -> Result<Fixtures> {
        Self::build_set(false, true)
    }

    fn build_set(large: bool, pause: bool) -> Result<Fixtures> {
        let dir = tempfile::Builder::new()
            .prefix("basalt-fixtures-")
            .tempdir()?;
        let busybox = std::fs::read("/bin/busybox")
            .context("reading /bin/busybox: install Debian's busybox-static")?;
        let applets = applets()?;
        let base = || base_layer(&busybox, &applets);
        let mut images = vec![
            (
                BUSYBOX,
                ImageBuilder::new("docker.io/library/busybox", "latest")
                    .layer(base()?)
                    .config("Cmd", json!(["sh"]))
                    .config("Env", json!([PATH_ENV])),
            ),
            (
                NONROOT,
                ImageBuilder::new("docker.io/basalt/nonroot", "latest")
                    .layer(base()?)
                    .config("User", json!("1000:1000"))
                    .config("Cmd", json!(["id"]))
                    .config("Env", json!([PATH_ENV])),
            ),
            (
                CONFIGURED,
                ImageBuilder::new("docker.io/basalt/configured", "latest")
                    .layer(base()?)
                    .layer(
                        LayerBuilder::new()
                            .dir("srv/app", 0o755, 0, 0)?
                            .file("srv/app/index.html", 0o644, 0, 0, b"hello from basalt\n")?
                            .finish()?,
                    )
                    .config(
                        "Env",
                        json!([PATH_ENV, "GREETING=hello from basalt", "EMPTY="]),
                    )
                    .config("WorkingDir", json!("/srv/app"))
                    .config(
                        "Labels",
                        json!({"org.basalt.fixture": "configured", "maintainer": "basalt"}),
                    )
                    .config("ExposedPorts", json!({"8080/tcp": {}, "9090/udp": {}}))
                    .config("Entrypoint", json!(["sh", "-c"]))
                    .config("Cmd", json!(["echo \"$GREETING\" from $(pwd)"])),
            ),
            (
                LAYERED,
                ImageBuilder::new("docker.io/basalt/layered", "latest")
                    .layer(layered_first(&busybox, &applets)?)
                    .layer(
                        LayerBuilder::new()
                            .whiteout("data/gone")?
                            .file("data/new", 0o644, 0, 0, b"added by layer 2\n")?
                            .finish()?,
                    )
                    .layer(
                        LayerBuilder::new()
                            .dir("opq", 0o755, 0, 0)?
                            .opaque("opq")?
                            .file("opq/fresh", 0o644, 0, 0, b"only file left in /opq\n")?
                            .finish()?,
                    )
                    .config("Cmd", json!(["sh"]))
                    .config("Env", json!([PATH_ENV])),
            ),
        ];
        if large {
            let mut b = ImageBuilder::new("docker.io/basalt/large", "latest").layer(base()?);
            let mut rng = rand::rngs::StdRng::seed_from_u64(0xba5a17);
            for i in 0..LARGE_LAYERS {
                let mut data = vec![0u8; LARGE_LAYER_BYTES];
                rng.fill_bytes(&mut data);
                b = b.layer(
                    LayerBuilder::new()
                        .dir("data", 0o755, 0, 0)?
                        .file(&format!("data/random-{i}"), 0o644, 0, 0, &data)?
                        .finish()?,
                );
            }
            images.push((
                LARGE,
                b.config("Cmd", json!(["sh"]))
                    .config("Env", json!([PATH_ENV])),
            ));
        }
        if pause {
            images.push((
                PAUSE,
                ImageBuilder::new("docker.io/basalt/pause", "latest")
                    .layer(base()?)
                    .config("Entrypoint", json!(["sh", "-c", PAUSE_SCRIPT]))
                    .config("Env", json!([PATH_ENV])),
            ));
        }
        let mut all = Vec::new();
        for (name, builder) in images {
            all.push(write_fixture(dir.path(), name, builder.build()?)?);
        }
        Ok(Fixtures { _dir: dir, all })
    }

    pub fn get(&self, name: &str) -> &Fixture {
        self.all.iter().find(|f| f.name == name).unwrap_or_else(|| {
            panic!("no fixture named {name:?} (is it built? `large` needs build_with_large)")
        })
    }
}

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn write_fixture(root: &Path, name: &'static str, image: OciImage) -> Result<Fixture> {
    let oci_layout = root.join(format!("{name}.oci"));
    let oci_archive = root.join(format!("{name}.oci.tar"));
    let docker_archive = root.join(format!("{name}.docker.tar"));
    image.write_oci_layout(&oci_layout)?;
    image.write_oci_archive(&oci_archive)?;
    image.write_docker_archive(&docker_archive)?;
    Ok(Fixture {
        name,
        image,
        oci_layout,
        oci_archive,
        docker_archive,
    })
}

/// Applet names of the host's busybox, as `busybox --list` prints them.
fn applets() -> Result<Vec<String>> {
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .context("running /bin/busybox --list")?;
    anyhow::ensure!(out.status.success(), "/bin/busybox --list failed");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "busybox" && !n.contains('/'))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// A root filesystem like Docker's busybox image: one binary, every applet a hard link to it in `/bin`.
fn base_layer(busybox: &[u8], applets: &[String]) -> Result<Vec<u8>> {
    populate_base(LayerBuilder::new(), busybox, applets)?.finish()
}

fn populate_base(mut l: LayerBuilder, busybox: &[u8], applets: &[String]) -> Result<LayerBuilder> {
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("var", 0o755),
    ] {
        l = l.dir(dir, mode, 0, 0)?;
    }
    l = l
        .dir("home/user", 0o755, 1000, 1000)?
        .file("bin/busybox", 0o755, 0, 0, busybox)?;
    for a in applets {
        l = l.hardlink(&format!("bin/{a}"), "bin/busybox")?;
    }
    // Scripts say `#!/usr/bin/env sh`.
    l.symlink("usr/bin/env", "/bin/env")?
    .file(
        "etc/passwd",
        0o644,
        0,
        0,
        b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?
    .file(
        "etc/group",
        0o644,
        0,
        0,
        b"root:x:0:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n",
    )
}

fn layered_first(busybox: &[u8], applets: &[String]) -> Result<Vec<u8>> {
    populate_base(LayerBuilder::new(), busybox, applets)?
        .dir("data", 0o755, 0, 0)?
        .file("data/keep", 0o644, 0, 0, b"kept\n")?
        .file("data/gone", 0o644, 0, 0, b"deleted by layer 2\n")?
        .dir("opq", 0o755, 0, 0)?
        .file("opq/old1", 0o644, 0, 0, b"hidden by layer 3\n")?
        .file("opq/old2", 0o644, 0, 0, b"hidden by layer 3\n")?
        .file(
            LAYERED_OWNED.0,
            LAYERED_OWNED.3,
            1000,
            1000,
            b"owned by 1000\n",
        )?
        .finish()
}

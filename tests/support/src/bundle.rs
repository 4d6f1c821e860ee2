//! OCI bundles for runtime tests: a busybox root filesystem and runc's own default `config.json`
//! (`runc spec`), adjusted per test. Using runc's template keeps the comparison with runc honest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

pub struct TestBundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl TestBundle {
    /// A bundle under `dir` whose process runs `sh -c script`, with no terminal.
    pub fn busybox(dir: &Path, script: &str) -> Result<TestBundle> {
        std::fs::create_dir_all(dir)?;
        busybox_rootfs(&dir.join("rootfs"))?;
        let out = Command::new(crate::require_tool("runc", "runc")?)
            .args(["spec", "--bundle"])
            .arg(dir)
            .output()
            .context("runc spec")?;
        ensure!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        let mut b = TestBundle {
            dir: dir.to_owned(),
            config,
        };
        b.save()?;
        Ok(b)
    }

    pub fn save(&mut self) -> Result<()> {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config)?,
        )?;
        Ok(())
    }
}

/// `/bin/busybox` with every applet as a relative symlink, `/etc/passwd` and `/etc/group` with a user 1000.
pub fn busybox_rootfs(root: &Path) -> Result<()> {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(root.join("etc"))?;
    // The mount points every image has (a runtime in a user namespace may not create them).
    for d in ["tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .context("copying /bin/busybox (busybox-static)")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n")?;
    Ok(())
}

//! The hostpath CSI plugin's volume lifecycle on its unix socket, as the kubelet and external-provisioner
//! drive it: CreateVolume + NodePublishVolume + NodeUnpublishVolume + DeleteVolume, 50 times each for a
//! filesystem volume and a raw block volume; prints the median of each call and of the whole cycle.
//!
//! No peer runs here: the reference (kubernetes-csi's csi-driver-host-path) ships as a container image only,
//! not as a Debian or PyPI package, so there is no ratio to print. Under `cargo test` (debug build) the cycle
//! runs twice, to keep the benchmark's own code working; the numbers come from `cargo bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use basalt_csi::testing::{self, block_cap, create, mount_cap, publish, unpublish, PluginProcess};
use basalt_csi::{api, Client};

const RUNS: usize = 50;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn cycle(c: &mut Client, dir: &Path, runs: usize, block: bool) -> Result<[Vec<Duration>; 5]> {
    let mut t: [Vec<Duration>; 5] = Default::default();
    let cap = if block { block_cap() } else { mount_cap() };
    for i in 0..runs {
        let target = dir.join(format!("pods/{i}/{}", if block { "dev" } else { "mount" }));
        let start = Instant::now();
        let v = c
            .controller
            .create_volume(create(&format!("bench-{block}-{i}"), 16 << 20, cap.clone()))
            .await?
            .into_inner()
            .volume
            .unwrap();
        let created = Instant::now();
        c.node
            .node_publish_volume(publish(&v.volume_id, &target, cap.clone(), false))
            .await?;
        let published = Instant::now();
        c.node
            .node_unpublish_volume(unpublish(&v.volume_id, &target))
            .await?;
        let unpublished = Instant::now();
        c.controller
            .delete_volume(api::DeleteVolumeRequest {
                volume_id: v.volume_id,
                ..Default::default()
            })
            .await?;
        let deleted = Instant::now();
        for (k, d) in [
            created - start,
            published - created,
            unpublished - published,
            deleted - unpublished,
            deleted - start,
        ]
        .into_iter()
        .enumerate()
        {
            t[k].push(d);
        }
    }
    Ok(t)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let measuring = std::env::args().any(|a| a == "--bench");
    let runs = if measuring { RUNS } else { 2 };
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("base");
    let mut plugin = PluginProcess::start(
        Path::new(env!("CARGO_BIN_EXE_basalt")),
        dir.path(),
        &base,
        &[],
    )
    .await?;
    let mut c = plugin.client().await?;
    let backend = if plugin.log().contains("project quotas:") {
        "project-quota"
    } else {
        "ext4 image"
    };
    for block in [false, true] {
        let [create, publish, unpublish, delete, total] =
            cycle(&mut c, dir.path(), runs, block).await?;
        let kind = if block {
            "block (sparse file + loop device)"
        } else {
            backend
        };
        if measuring {
            println!(
                "csi {kind} volume, median of {runs}: Create+Publish+Unpublish+Delete {} (Create {}, Publish {}, \
                 Unpublish {}, Delete {}); no peer in this run (see the file's header)",
                ms(median(total)),
                ms(median(create)),
                ms(median(publish)),
                ms(median(unpublish)),
                ms(median(delete)),
            );
        }
    }
    let st = plugin.stop()?;
    ensure!(st.success(), "basalt csi exited {st}:\n{}", plugin.log());
    let left = testing::leftovers(dir.path());
    ensure!(
        left.is_empty() && testing::base_entries(&base).is_empty(),
        "the benchmark left {left:?}"
    );
    Ok(())
}

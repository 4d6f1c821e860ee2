//! ADD+DEL cycle time of our `bridge` (built-in host-local) against Debian's reference `bridge` +
//! `host-local`, interleaved in the same run and the same throw-away node namespace, the order alternating
//! cycle by cycle. Ours is the shipped `basalt` linked as `bridge`, as a node has it in /opt/cni/bin (not this
//! bench executable). Prints both medians and the ratio ours/reference (the aim is at most 0.5).
//! `cargo bench -p basalt-cni --bench add_del`; under `cargo test` it runs a few cycles of the bench
//! executable's own plugin only, as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn conf(name: &str, br: &str, subnet: &str, data: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": br,
        "isGateway": true, "isDefaultGateway": true,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": subnet}]]}
    })
    .to_string()
}

/// One ADD and one DEL; returns their durations.
fn cycle(plugin: &Path, node: &Netns, pod: &Path, conf: &str) -> (Duration, Duration) {
    let mut times = [Duration::ZERO; 2];
    for (t, command) in times.iter_mut().zip(["ADD", "DEL"]) {
        let start = Instant::now();
        run_ok(&Invocation {
            plugin,
            node,
            command,
            container_id: "bench",
            netns: Some(pod),
            ifname: "eth0",
            conf,
            cni_path: None,
        });
        *t = start.elapsed();
    }
    (times[0], times[1])
}

/// `<tmp>/shipped/bridge`, a link to the release `basalt` (`$BASALT_BIN`, else the one next to this bench's
/// target directory, which tests/bench.sh builds first): what a node runs as its CNI plugin.
fn shipped_bridge(tmp: &TempDir) -> std::path::PathBuf {
    let bin = std::env::var_os("BASALT_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .and_then(|d| d.parent())
                .unwrap()
                .join("basalt")
        });
    assert!(
        bin.is_file(),
        "{} not found: build the release binary first (tests/bench.sh does) or set BASALT_BIN",
        bin.display()
    );
    let dir = tmp.0.join("shipped");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("bridge");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    link
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    dispatch_plugin();
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 30 } else { 3 };
    let tmp = TempDir::new("bench");
    let ours = if full {
        shipped_bridge(&tmp)
    } else {
        our_plugin_dir(&tmp).join("bridge")
    };
    let reference = Path::new("/usr/lib/cni/bridge");
    let node = Netns::new(&format!("bcn-bench-{}", std::process::id()));
    let pod = Netns::new(&format!("bcp-bench-{}", std::process::id()));
    let data = tmp.0.join("ipam");
    let our_conf = conf("bench-ours", "br-ours", "10.199.8.0/24", &data);
    let ref_conf = conf("bench-ref", "br-ref", "10.199.9.0/24", &data);
    // Warm-up: bridges exist and binaries are in the page cache for both.
    cycle(&ours, &node, &pod.path(), &our_conf);
    cycle(reference, &node, &pod.path(), &ref_conf);
    let (mut ours_runs, mut ref_runs) = (Vec::new(), Vec::new());
    for i in 0..n {
        // Whoever goes second runs right after the other's DEL: take turns.
        if i % 2 == 0 {
            ours_runs.push(cycle(&ours, &node, &pod.path(), &our_conf));
            ref_runs.push(cycle(reference, &node, &pod.path(), &ref_conf));
        } else {
            ref_runs.push(cycle(reference, &node, &pod.path(), &ref_conf));
            ours_runs.push(cycle(&ours, &node, &pod.path(), &our_conf));
        }
    }
    assert!(node.veths().is_empty(), "veths left: {:?}", node.veths());
    assert!(
        reservations(&data.join("bench-ours")).is_empty()
            && reservations(&data.join("bench-ref")).is_empty()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let stats = |runs: &[(Duration, Duration)]| {
        (
            median(runs.iter().map(|r| r.0 + r.1).collect()),
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
        )
    };
    let (o, o_add, o_del) = stats(&ours_runs);
    let (r, r_add, r_del) = stats(&ref_runs);
    println!("median over {n} cycles (ms)      ADD+DEL     ADD     DEL");
    let ours_label = if full {
        "basalt bridge (shipped binary)"
    } else {
        "basalt bridge (bench's own)"
    };
    println!(
        "{ours_label:<30} {:8.2} {:7.2} {:7.2}",
        ms(o),
        ms(o_add),
        ms(o_del)
    );
    println!(
        "reference bridge+host-local    {:8.2} {:7.2} {:7.2}",
        ms(r),
        ms(r_add),
        ms(r_del)
    );
    println!(
        "ratio basalt/reference: ADD+DEL {:.3}x (aim <= 0.5x), ADD {:.3}x, DEL {:.3}x",
        o.as_secs_f64() / r.as_secs_f64(),
        o_add.as_secs_f64() / r_add.as_secs_f64(),
        o_del.as_secs_f64() / r_del.as_secs_f64()
    );
}

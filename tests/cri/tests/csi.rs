//! A CSI volume in a pod: `basalt csi` publishes a volume (as the kubelet will ask it to), a container started
//! through our CRI gets the published path as a bind mount and writes to it, up to the volume's capacity
//! (ENOSPC past it, inside the pod); after the pod is removed, unpublish and delete leave nothing mounted and
//! nothing in the plugin's base directory.

use std::time::{Duration, Instant};

use basalt_cri_tests::endpoint::basalt_bin;
use basalt_cri_tests::{api, Harness};
use basalt_csi::testing::{self, create, mount_cap, publish, unpublish, PluginProcess};
use basalt_testsupport::fixtures::BUSYBOX;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_writes_to_a_published_csi_volume_and_teardown_leaves_nothing() {
    let Some(h) = Harness::start_basalt_only("csi_volume").await else {
        return;
    };
    let dir = h.dir().join("csi");
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base");
    let mut plugin = PluginProcess::start(&basalt_bin(), &dir, &base, &[])
        .await
        .unwrap();
    let mut c = plugin.client().await.unwrap();
    let v = c
        .controller
        .create_volume(create("pod-volume", 16 << 20, mount_cap()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let target = dir.join("pods/uid/volumes/kubernetes.io~csi/pv-1/mount");
    c.node
        .node_publish_volume(publish(&v.volume_id, &target, mount_cap(), false))
        .await
        .unwrap();

    h.pull(BUSYBOX).await;
    let pod = h.run_pod("csi-writer").await;
    let mut config = h.container_config(
        "writer",
        BUSYBOX,
        &[
            "sh",
            "-c",
            "echo from-the-pod > /data/hello; dd if=/dev/zero of=/data/big bs=1M count=32 2>/data/dd.err; \
             echo $? > /data/dd.rc.tmp; mv /data/dd.rc.tmp /data/dd.rc; exec sleep 3600",
        ],
    );
    config.mounts.push(api::Mount {
        container_path: "/data".into(),
        host_path: target.display().to_string(),
        ..Default::default()
    });
    h.create_start(&pod, config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !target.join("dd.rc").exists() {
        assert!(
            Instant::now() < deadline,
            "the container never finished writing\n{}",
            h.daemon_log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = |f: &str| std::fs::read_to_string(target.join(f)).unwrap();
    assert_eq!(read("hello"), "from-the-pod\n");
    assert_ne!(
        read("dd.rc").trim(),
        "0",
        "dd wrote 32 MiB into a 16 MiB volume"
    );
    assert!(
        read("dd.err").contains("No space left on device"),
        "{}",
        read("dd.err")
    );
    let big = std::fs::metadata(target.join("big")).unwrap().len();
    assert!(big < 16 << 20, "{big} bytes in a 16 MiB volume");

    h.remove_pod(&pod).await;
    c.node
        .node_unpublish_volume(unpublish(&v.volume_id, &target))
        .await
        .unwrap();
    c.controller
        .delete_volume(testing::delete(&v.volume_id))
        .await
        .unwrap();
    let st = plugin.stop().unwrap();
    assert!(st.success(), "{st}: {}", plugin.log());
    assert_eq!(testing::leftovers(&dir), Vec::<String>::new());
    assert_eq!(testing::base_entries(&base), Vec::<String>::new());
    assert!(!target.exists(), "the target path is still there");
    h.assert_empty().await;
}

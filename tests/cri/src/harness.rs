//! One private CRI server with its own registry, fixtures, network and directories, plus the client-side
//! helpers the tests share. Dropping a harness removes every pod, stops the daemon and cleans the host.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use basalt_testsupport::fixtures::{self, Fixtures};
use basalt_testsupport::{Registry, RegistryMode};
use tonic::Status;

use crate::api;
use crate::client::Cri;
use crate::daemon::Daemon;
use crate::endpoint::Endpoint;
use crate::leaks::{self, Footprint};
use crate::network::Network;

/// Top of every cgroup parent the harnesses give their pods: `/basalt-critests/<harness>/pod<uid>`.
pub const CGROUP_ROOT: &str = "/basalt-critests";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pod this harness started.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: api::PodSandboxConfig,
}

impl Pod {
    pub fn cgroup_parent(&self) -> &str {
        self.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .unwrap_or_default()
    }

    pub fn log_directory(&self) -> &Path {
        Path::new(&self.config.log_directory)
    }
}

pub struct Harness {
    pub endpoint: Endpoint,
    pub cri: Cri,
    /// Unique per harness: part of pod names, namespaces and the cgroup parent.
    pub token: String,
    pub net: Network,
    pub registry: Registry,
    daemon: Daemon,
    _fixtures: Fixtures,
    /// Bind mounts of pod network namespaces seen (inode, mount point), for the last-resort cleanup.
    netns_seen: Mutex<Vec<(u64, String)>>,
    dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a private instance of `endpoint`, or panics with the daemon's log.
    /// For a test of something only Basalt has: its harness, or `None` (after saying why) when the agent cannot
    /// run here.
    pub async fn start_basalt_only(test: &str) -> Option<Harness> {
        if crate::endpoint::skip_unavailable(Endpoint::Basalt, test) {
            return None;
        }
        Some(Self::start(Endpoint::Basalt).await)
    }

    pub async fn start(endpoint: Endpoint) -> Harness {
        match Self::try_start(endpoint).await {
            Ok(h) => h,
            Err(e) => panic!("starting the {} harness: {e:#}", endpoint.name()),
        }
    }

    pub async fn try_start(endpoint: Endpoint) -> Result<Harness> {
        let token = unique("h");
        let dir = tempfile::Builder::new().prefix("basalt-cri-").tempdir()?;
        // Searchable by all, as a node's /var/lib and /run are: the root of a pod user namespace (an
        // unmapped host uid) must reach the container's rootfs under it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )?;
        let fixtures = Fixtures::build_with_pause()?;
        let registry = Registry::start(RegistryMode::Plain)?;
        for name in [fixtures::BUSYBOX, fixtures::NONROOT, fixtures::PAUSE] {
            let f = fixtures.get(name);
            registry.push(f, f.image.path_in_registry(), &f.image.tag)?;
        }
        let net = Network::create(dir.path())?;
        let pause = image_ref(&registry, &fixtures, fixtures::PAUSE);
        let daemon = Daemon::start(endpoint, dir.path(), &net, &registry.host(), &pause)?;
        let cri = match Cri::wait_ready(&daemon.socket, Duration::from_secs(30)).await {
            Ok(c) => c,
            Err(e) => bail!(
                "{e:#}\n--- {} log ---\n{}",
                endpoint.name(),
                daemon.log_text()
            ),
        };
        Ok(Harness {
            endpoint,
            cri,
            token,
            net,
            registry,
            daemon,
            _fixtures: fixtures,
            netns_seen: Mutex::new(Vec::new()),
            dir,
        })
    }

    /// SIGKILLs the CRI server and starts it again on the same directories (crash-only: it must recover its
    /// pods and containers from disk), then reconnects.
    pub async fn restart_daemon(&mut self) {
        self.kill_daemon();
        self.start_daemon_again().await;
    }

    /// SIGKILLs the CRI server (and waits for it to be gone); its pods are left as they are.
    pub fn kill_daemon(&mut self) {
        self.daemon.kill();
    }

    /// Starts the CRI server again on the same directories after [`Harness::kill_daemon`], and reconnects.
    pub async fn start_daemon_again(&mut self) {
        let pause = self.image(fixtures::PAUSE);
        self.daemon = Daemon::start(
            self.endpoint,
            self.dir.path(),
            &self.net,
            &self.registry.host(),
            &pause,
        )
        .unwrap_or_else(|e| panic!("restarting {}: {e:#}", self.endpoint.name()));
        self.cri = match Cri::wait_ready(&self.daemon.socket, Duration::from_secs(30)).await {
            Ok(c) => c,
            Err(e) => panic!("{e:#}\n{}", self.daemon_log_tail()),
        };
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The fixture images this harness built (archives for air-gap tests).
    pub fn fixtures(&self) -> &Fixtures {
        &self._fixtures
    }

    /// The CRI socket of the running daemon (for a kubelet to connect to).
    pub fn socket(&self) -> &Path {
        &self.daemon.socket
    }

    /// PID of the CRI daemon (for RSS measurements).
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn daemon_log(&self) -> String {
        self.daemon.log_text()
    }

    /// `127.0.0.1:PORT/library/busybox:latest` for the fixture `name` in this harness's registry.
    pub fn image(&self, name: &str) -> String {
        image_ref(&self.registry, &self._fixtures, name)
    }

    /// PullImage of the fixture `name`; returns the image reference the runtime answered.
    pub async fn pull(&self, name: &str) -> String {
        let image = self.image(name);
        match self.pull_image(&image).await {
            Ok(image_ref) => image_ref,
            Err(e) => panic!("PullImage {image}: {e}"),
        }
    }

    /// The first repo digest (`name@sha256:…`) ImageStatus gives for the fixture `name`, once pulled.
    pub async fn repo_digest(&self, name: &str) -> Option<String> {
        let req = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: self.image(name),
                ..Default::default()
            }),
            verbose: false,
        };
        let answer = self.cri.images.clone().image_status(req).await.ok()?;
        answer.into_inner().image?.repo_digests.into_iter().next()
    }

    /// PullImage of the reference `image`, without credentials: the image reference, or the call's error.
    pub async fn pull_image(&self, image: &str) -> Result<String, Status> {
        let spec = api::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        };
        let pull = api::PullImageRequest {
            image: Some(spec),
            ..Default::default()
        };
        let answer = self.cri.images.clone().pull_image(pull).await?;
        Ok(answer.into_inner().image_ref)
    }

    /// A sandbox config with a unique name, uid, namespace, log directory and cgroup parent.
    pub fn pod_config(&self, name: &str) -> api::PodSandboxConfig {
        let uid = unique("uid-");
        let namespace = format!("critest-{}", self.token);
        let log_directory = self
            .dir()
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.clone(),
                namespace,
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: format!("{CGROUP_ROOT}/{}/pod{uid}", self.token),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `config`; the log directory is created first, as the kubelet does.
    pub async fn run_pod_with(&self, config: api::PodSandboxConfig) -> Result<Pod, Status> {
        std::fs::create_dir_all(&config.log_directory)
            .map_err(|e| Status::internal(format!("creating log dir: {e}")))?;
        let id = self
            .cri
            .runtime
            .clone()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        Ok(Pod { id, config })
    }

    pub async fn run_pod(&self, name: &str) -> Pod {
        let pod = self
            .run_pod_with(self.pod_config(name))
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.daemon_log_tail()));
        self.track(&pod);
        pod
    }

    /// The start of most cases: busybox pulled, pod `name` run, and in it a container `main` that sleeps.
    /// Returns the pod and the container's id.
    pub async fn run_sleeping_pod(&self, name: &str) -> (Pod, String) {
        self.pull(basalt_testsupport::fixtures::BUSYBOX).await;
        let pod = self.run_pod(name).await;
        let id = self
            .create_start(
                &pod,
                self.container_config(
                    "main",
                    basalt_testsupport::fixtures::BUSYBOX,
                    &["sleep", "3600"],
                ),
            )
            .await;
        (pod, id)
    }

    /// Notes where the pod's network namespace is mounted while it lives, so that the leak check after its
    /// removal can tell those mounts apart. [`Harness::run_pod`] does this; a caller that times the CRI calls
    /// alone runs the pod with [`Harness::run_pod_with`] and calls this after the clock stops.
    pub fn track(&self, pod: &Pod) {
        let fp = Footprint::observe(&pod.id, vec![], pod.cgroup_parent(), None, None, None);
        if let Some(ino) = fp.netns_inode {
            let mut seen = self.netns_seen.lock().unwrap();
            seen.extend(fp.netns_mounts.into_iter().map(|m| (ino, m)));
        }
    }

    /// A container config running `cmd` in fixture `image`, logging to `<name>/0.log` in the pod's log dir.
    pub fn container_config(&self, name: &str, image: &str, cmd: &[&str]) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: self.image(image),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            linux: Some(api::LinuxContainerConfig {
                resources: None,
                security_context: Some(api::LinuxContainerSecurityContext::default()),
            }),
            ..Default::default()
        }
    }

    pub async fn create_container(
        &self,
        pod: &Pod,
        config: api::ContainerConfig,
    ) -> Result<String, Status> {
        Ok(self
            .cri
            .runtime
            .clone()
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        self.cri
            .runtime
            .clone()
            .start_container(api::StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// CreateContainer + StartContainer, then waits for RUNNING.
    pub async fn create_start(&self, pod: &Pod, config: api::ContainerConfig) -> String {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let id = self
            .create_container(pod, config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.daemon_log_tail()));
        self.start_container(&id)
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", self.daemon_log_tail()));
        self.wait_state(
            &id,
            api::ContainerState::ContainerRunning,
            Duration::from_secs(30),
        )
        .await;
        id
    }

    /// The runtime's Status (conditions, runtime handlers and their features, runtime features).
    pub async fn runtime_status(&self) -> api::StatusResponse {
        self.cri
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: false })
            .await
            .unwrap_or_else(|e| panic!("Status: {e}"))
            .into_inner()
    }

    pub async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, Status> {
        self.cri
            .runtime
            .clone()
            .container_status(api::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .ok_or_else(|| Status::internal("ContainerStatus without status"))
    }

    /// PodSandboxStatus of the sandbox `id`: its status, or the call's error as it came.
    pub async fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, Status> {
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        let answer = self.cri.runtime.clone().pod_sandbox_status(req).await?;
        let status = answer.into_inner().status;
        status.ok_or_else(|| Status::internal("PodSandboxStatus without status"))
    }

    /// What ListContainers answers for `filter`.
    pub async fn list_containers(&self, filter: api::ContainerFilter) -> Vec<api::Container> {
        self.cri
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
    }

    /// The containers of the sandbox `pod_id`, as ListContainers gives them.
    pub async fn containers_of(&self, pod_id: &str) -> Vec<api::Container> {
        self.list_containers(api::ContainerFilter {
            pod_sandbox_id: pod_id.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Polls ContainerStatus until `state` (panics after `limit`, showing the last status).
    pub async fn wait_state(
        &self,
        id: &str,
        state: api::ContainerState,
        limit: Duration,
    ) -> api::ContainerStatus {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.container_status(id).await;
            if let Ok(s) = &st {
                if s.state == state as i32 {
                    return s.clone();
                }
            }
            if Instant::now() >= deadline {
                panic!("container {id} not {state:?} after {limit:?}: {st:?}");
            }
            // Fine-grained: the startup benchmark measures through this wait.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<api::ExecSyncResponse, Status> {
        Ok(self
            .cri
            .runtime
            .clone()
            .exec_sync(api::ExecSyncRequest {
                container_id: id.to_owned(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_secs,
            })
            .await?
            .into_inner())
    }

    /// Where the CRI server writes the log of `config` in `pod`.
    pub fn log_file(&self, pod: &Pod, config: &api::ContainerConfig) -> PathBuf {
        pod.log_directory().join(&config.log_path)
    }

    /// Polls `path` until it contains `needle`; returns the whole content.
    pub async fn wait_log(&self, path: &Path, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} has no {needle:?} after {limit:?}:\n{text}",
                    path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What `pod` owns on the host right now (its containers, processes, netns, veth, lease).
    pub async fn footprint(&self, pod: &Pod) -> Footprint {
        let containers = self
            .containers_of(&pod.id)
            .await
            .into_iter()
            .map(|c| c.id)
            .collect();
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        };
        let answer = self
            .cri
            .runtime
            .clone()
            .pod_sandbox_status(req)
            .await
            .expect("PodSandboxStatus")
            .into_inner();
        let netns = leaks::netns_path_from_info(&answer.info);
        let ip = answer
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty());
        let lease = ip.as_ref().map(|ip| self.net.lease_path(ip));
        Footprint::observe(
            &pod.id,
            containers,
            pod.cgroup_parent(),
            netns.as_deref(),
            ip,
            lease,
        )
    }

    /// StopPodSandbox + RemovePodSandbox, then checks that nothing of the pod is left on the host.
    pub async fn remove_pod(&self, pod: &Pod) {
        let fp = self.footprint(pod).await;
        self.stop_remove_pod(pod).await;
        self.assert_gone(&fp).await;
    }

    /// StopPodSandbox + RemovePodSandbox, no checks.
    pub async fn stop_remove_pod(&self, pod: &Pod) {
        let mut rt = self.cri.runtime.clone();
        rt.stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
        rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    }

    /// Polls until nothing of `fp` is left on the host; panics listing what stayed.
    pub async fn assert_gone(&self, fp: &Footprint) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = fp.leftovers();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: pod {} left behind:\n  {}",
                    self.endpoint.name(),
                    fp.sandbox_id,
                    left.join("\n  ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No pod or container listed, and nothing on the harness bridge.
    pub async fn assert_empty(&self) {
        let mut rt = self.cri.runtime.clone();
        let pods = rt
            .list_pod_sandbox(api::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        let containers = self.list_containers(api::ContainerFilter::default()).await;
        assert!(pods.is_empty(), "pods left: {pods:?}");
        assert!(containers.is_empty(), "containers left: {containers:?}");
        assert_eq!(
            self.net.bridge_ports(),
            Vec::<String>::new(),
            "veths left on {}",
            self.net.bridge
        );
    }

    pub fn daemon_log_tail(&self) -> String {
        let log = self.daemon_log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- last lines of the {} log ---\n{}",
            self.endpoint.name(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

fn image_ref(registry: &Registry, fixtures: &Fixtures, name: &str) -> String {
    let f = fixtures.get(name);
    format!(
        "{}/{}:{}",
        registry.host(),
        f.image.path_in_registry(),
        f.image.tag
    )
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Let the server clean up after itself first, on a fresh connection and runtime (we may be dropped
        // inside the test's runtime, whose workers are busy here).
        let socket = self.daemon.socket.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), remove_all(&socket))
                    .await
                    .ok()
            })
        })
        .join();
        self.daemon.kill();
        // With every pod removed through the API, the daemon must have left nothing of its own behind either.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = self.instance_leftovers();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = self.instance_leftovers();
        }
        self.last_resort_cleanup();
        if !left.is_empty() && !std::thread::panicking() {
            panic!(
                "{} left behind after all pods were removed:\n  {}",
                self.endpoint.name(),
                left.join("\n  ")
            );
        }
    }
}

async fn remove_all(socket: &Path) -> Result<()> {
    let mut cri = Cri::connect(socket).await?;
    let pods = cri
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    for p in pods {
        let id = p.id;
        let _ = cri
            .runtime
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        cri.runtime
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .with_context(|| format!("RemovePodSandbox {id}"))?;
    }
    Ok(())
}

impl Harness {
    /// What this instance left once every pod was removed through the API and the daemon is gone: processes
    /// naming its directory (shims) or in its cgroups, cgroups below the pod level, pod network namespaces
    /// still mounted, ports on its bridge, mounts under its directory. Checked for every case, kubelet cases
    /// included, before the last-resort cleanup touches anything.
    fn instance_leftovers(&self) -> Vec<String> {
        let dir = self.dir().to_string_lossy().into_owned();
        let cg = format!("{CGROUP_ROOT}/{}", self.token);
        let mut left = Vec::new();
        for pid in leaks::pids_naming(&dir) {
            left.push(format!("process {pid} ({})", leaks::comm(pid)));
        }
        for pid in leaks::pids_in_cgroup(&cg) {
            left.push(format!("process {pid} ({}) in {cg}", leaks::comm(pid)));
        }
        for top in leaks::cgroup_dirs(&cg) {
            for d in cgroups_below(&top) {
                let rel = d.strip_prefix(&top).unwrap_or(&d);
                // The harness's own levels: a pod's cgroup parent (`pod<uid>`, which the harness names as a
                // kubelet would, and a runtime makes on demand) and the kubelet suite's QoS levels (its node
                // removes them). Anything deeper is a container's, or a pod cgroup a kubelet left.
                let own = rel.components().count() == 1
                    && rel.to_str().is_some_and(|r| r.starts_with("pod"))
                    || ["kubepods", "kubepods/burstable", "kubepods/besteffort"]
                        .iter()
                        .any(|q| rel == Path::new(q));
                if !own {
                    left.push(format!("cgroup {}", d.display()));
                }
            }
        }
        let seen = self
            .netns_seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        for m in leaks::mountinfo() {
            if m.mount_point.starts_with(&dir) {
                left.push(format!("mount {} ({})", m.mount_point, m.fs_type));
            } else if seen
                .iter()
                .any(|(i, mp)| m.root == format!("net:[{i}]") && m.mount_point == *mp)
            {
                left.push(format!("pod network namespace {}", m.mount_point));
            }
        }
        for port in self.net.bridge_ports() {
            left.push(format!("veth {port} on {}", self.net.bridge));
        }
        left
    }

    /// After the daemon is gone: kill what it left (shims, pod processes), unmount what is under our
    /// directory or is a pod netns we saw, remove our cgroups. A no-op when everything went well.
    fn last_resort_cleanup(&self) {
        let dir = self.dir().to_string_lossy().into_owned();
        let cg = format!("{CGROUP_ROOT}/{}", self.token);
        let in_cgroup = leaks::pids_in_cgroup(&cg);
        for pid in leaks::pids_naming(&dir).into_iter().chain(in_cgroup) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let seen = self
            .netns_seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let netns: Vec<(String, String)> = seen
            .iter()
            .map(|(i, m)| (format!("net:[{i}]"), m.clone()))
            .collect();
        let mut mounts: Vec<String> = leaks::mountinfo()
            .into_iter()
            .filter(|m| {
                m.mount_point.starts_with(&dir)
                    || netns.contains(&(m.root.clone(), m.mount_point.clone()))
            })
            .map(|m| m.mount_point)
            .collect();
        // Deepest first, each once.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        mounts.dedup();
        for m in &mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            if !m.starts_with(&dir) {
                let _ = std::fs::remove_file(m);
            }
        }
        for top in leaks::cgroup_dirs(&cg) {
            remove_cgroup_tree(&top);
        }
        // `/basalt-critests` itself stays: other harnesses may be using it.
    }
}

/// Every cgroup directory below `dir`, parents before children.
fn cgroups_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for child in crate::network::list_dir(dir) {
        let p = dir.join(child);
        if p.is_dir() {
            out.push(p.clone());
            out.extend(cgroups_below(&p));
        }
    }
    out
}

/// rmdir bottom-up (cgroup directories can only be removed empty, and only with rmdir).
fn remove_cgroup_tree(dir: &Path) {
    for child in crate::network::list_dir(dir) {
        let p = dir.join(child);
        if p.is_dir() {
            remove_cgroup_tree(&p);
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes the QoS cgroups (`burstable`, `besteffort`) and the root a kubelet made under `root` in every
/// hierarchy, once its pods are gone (each pod's own cgroup is the leak checker's to find).
pub fn remove_kubelet_cgroups(root: &str) {
    for base in crate::leaks::cgroup_dirs(root) {
        for d in [base.join("burstable"), base.join("besteffort"), base] {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

//! The pod monitor with the real runtime, real namespaces and busybox containers. This binary is also the
//! monitor itself: the tests re-execute it as `<this binary> shim ARGS`, the way the agent runs `basalt shim`
//! (hence `harness = false`, with libtest-mimic as the harness).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use basalt_shim::client::{Client, ClientError};
use basalt_shim::protocol::{
    ContainerStatus, CreateRequest, ErrorKind, Frame, Request, Response, State,
};
use basalt_shim::{Namespace, SpawnOptions, Spawned};
use basalt_testsupport::bundle::TestBundle;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::json;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        // As `basalt` hands it over: the command's name, then its arguments.
        Some("shim") => return basalt_shim::main(args[1..].to_vec()),
        Some("exec-client") => return exec_client(&args[2], &args[3]),
        Some("agent") => return agent(&args[2], &args[3]),
        _ => {}
    }
    let tests: Vec<(&str, Test)> = vec![
        (
            "spawn_pins_namespaces_and_shutdown_leaves_nothing",
            spawn_pins_and_shutdown,
        ),
        ("startup_errors_leave_nothing", startup_errors_leave_nothing),
        ("logs_are_in_the_cri_format", logs_are_in_the_cri_format),
        ("containers_of_a_pod_share_the_network", pod_shares_network),
        ("exits_are_recorded_and_stop_escalates", exits_and_stop),
        ("exec_sync_output_code_and_timeout", exec_sync),
        ("exec_streams_frames_with_and_without_tty", exec_stream),
        ("attach_stdin_and_reopen_log", attach_and_reopen_log),
        ("attach_to_a_terminal_container", attach_tty),
        (
            "a_killed_exec_client_does_not_hurt_the_monitor",
            killed_exec_client,
        ),
        ("oom_kill_is_reported", oom_killed),
        ("pods_outlive_a_sigkilled_agent", pods_outlive_the_agent),
        ("sigterm_shuts_the_monitor_down", sigterm_shuts_down),
        ("bad_requests_get_errors_naming_the_field", bad_requests),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, f))
        .collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

// ---------------------------------------------------------------------------------------------------------
// Fixture: one monitor, its directory and bundles in a temp dir.

type R = Result<(), Failed>;
type Test = fn() -> R;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Pod {
    _tmp: Option<tempfile::TempDir>,
    base: PathBuf,
    dir: PathBuf,
    root: PathBuf,
    sandbox: String,
    ready: Spawned,
    rt: tokio::runtime::Runtime,
    shut_down: bool,
}

fn options(base: &Path, sandbox: &str) -> SpawnOptions {
    let mut o = SpawnOptions::new(sandbox, base.join("shim"), base.join("runtime"));
    o.program = std::env::current_exe().unwrap();
    o
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

impl Pod {
    fn start(name: &str, tweak: impl FnOnce(&mut SpawnOptions)) -> Pod {
        let tmp = tempfile::tempdir().unwrap();
        let mut pod = Pod::start_at(tmp.path(), &unique(name), tweak);
        pod._tmp = Some(tmp);
        pod
    }

    /// A monitor for `sandbox` with its files under `base` (which the caller cleans up).
    fn start_at(base: &Path, sandbox: &str, tweak: impl FnOnce(&mut SpawnOptions)) -> Pod {
        let mut o = options(base, sandbox);
        tweak(&mut o);
        let ready = basalt_shim::spawn(&o).unwrap();
        Pod::adopt(base, sandbox, ready)
    }

    /// The monitor someone else started (an agent that since died).
    fn adopt(base: &Path, sandbox: &str, ready: Spawned) -> Pod {
        let o = options(base, sandbox);
        Pod {
            dir: o.dir.clone(),
            root: o.runtime_root.clone(),
            base: base.to_owned(),
            _tmp: None,
            sandbox: sandbox.to_owned(),
            ready,
            rt: rt(),
            shut_down: false,
        }
    }

    fn sock(&self) -> PathBuf {
        basalt_shim::paths::socket(&self.dir)
    }

    fn call(&self, req: Request) -> Result<Response, ClientError> {
        self.rt.block_on(async {
            let mut c = Client::connect(self.sock()).await?;
            c.call(req).await
        })
    }

    fn ok(&self, req: Request) {
        let r = self.call(req.clone());
        assert!(matches!(r, Ok(Response::Ok)), "{req:?} -> {r:?}");
    }

    fn cid(&self, id: &str) -> String {
        format!("{}-{id}", self.sandbox)
    }

    /// A busybox bundle running `sh -c script` in the pod's pinned namespaces.
    fn bundle(
        &self,
        id: &str,
        script: &str,
        tweak: impl FnOnce(&mut serde_json::Value),
    ) -> PathBuf {
        let dir = self.base.join("bundles").join(id);
        let mut b = TestBundle::busybox(&dir, script).unwrap();
        let ns = &self.ready.namespaces;
        let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "mount"})];
        for (name, typ) in [("net", "network"), ("ipc", "ipc"), ("uts", "uts")] {
            match ns.get(name) {
                Some(p) => namespaces.push(json!({"type": typ, "path": p})),
                None => namespaces.push(json!({"type": typ})),
            }
        }
        b.config["linux"]["namespaces"] = json!(namespaces);
        // The pod's hostname is the pinned uts namespace's.
        b.config.as_object_mut().unwrap().remove("hostname");
        tweak(&mut b.config);
        b.save().unwrap();
        dir
    }

    /// Creates (and starts) container `id` running `script`; its log is `<base>/<id>.log`.
    fn run(&self, id: &str, script: &str) -> String {
        let bundle = self.bundle(id, script, |_| {});
        self.create(id, bundle, false, false)
    }

    fn create(&self, id: &str, bundle: PathBuf, tty: bool, stdin: bool) -> String {
        self.create_once(id, bundle, tty, stdin, false)
    }

    fn create_once(&self, id: &str, bundle: PathBuf, tty: bool, stdin: bool, once: bool) -> String {
        let cid = self.cid(id);
        let r = self.call(Request::Create(CreateRequest {
            id: cid.clone(),
            bundle,
            log_path: Some(self.log(id)),
            tty,
            stdin,
            stdin_once: once,
        }));
        assert!(
            matches!(r, Ok(Response::Created { pid }) if pid > 0),
            "{r:?}"
        );
        self.ok(Request::Start { id: cid.clone() });
        cid
    }

    fn log(&self, id: &str) -> PathBuf {
        self.base.join(format!("{id}.log"))
    }

    fn status(&self, cid: &str) -> ContainerStatus {
        match self.call(Request::Status { id: cid.into() }) {
            Ok(Response::Status(s)) => s,
            r => panic!("status {cid}: {r:?}"),
        }
    }

    fn wait_exited(&self, cid: &str, limit: Duration) -> ContainerStatus {
        let mut last = None;
        poll(limit, &format!("{cid} to exit"), || {
            let s = self.status(cid);
            let done = s.state == State::Exited;
            last = Some(s);
            done
        });
        last.unwrap()
    }

    /// The log's records as (stream, tag, content).
    fn records(&self, id: &str) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.log(id))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let p: Vec<&str> = l.splitn(4, ' ').collect();
                assert!(
                    chrono_like(p[0]),
                    "record {l:?} does not start with an RFC 3339 time"
                );
                (
                    p[1].to_owned(),
                    p[2].to_owned(),
                    p.get(3).unwrap_or(&"").to_string(),
                )
            })
            .collect()
    }

    /// Shuts the monitor down and checks that nothing of it is left.
    fn shutdown_and_check(&mut self, cids: &[&str]) {
        self.stop_and_check(cids, |pod| pod.ok(Request::Shutdown));
    }

    /// Ends the monitor with `stop` and checks that nothing of it is left.
    fn stop_and_check(&mut self, cids: &[&str], stop: impl FnOnce(&Pod)) {
        let cgroups: Vec<String> = cids.iter().map(|c| self.status(c).cgroup_path).collect();
        let pids: Vec<i32> = cids.iter().map(|c| self.status(c).pid).collect();
        let holder = std::fs::read_to_string(self.dir.join("ns/holder.pid")).ok();
        stop(self);
        self.shut_down = true;
        poll(
            Duration::from_secs(20),
            "the monitor's directory to go",
            || !self.dir.exists(),
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(self.dir.to_str().unwrap()),
            "a mount under {} is left",
            self.dir.display()
        );
        for cg in cgroups {
            let p = Path::new("/sys/fs/cgroup/memory").join(cg.trim_start_matches('/'));
            assert!(!p.exists(), "cgroup {} is left", p.display());
        }
        for cid in cids {
            assert!(
                !self.root.join(cid).exists(),
                "runtime state of {cid} is left"
            );
        }
        let mut gone = pids;
        gone.push(self.ready.pid);
        if let Some(h) = holder {
            gone.push(h.trim().parse().unwrap());
        }
        for pid in gone {
            poll(
                Duration::from_secs(10),
                &format!("process {pid} to end"),
                || !alive(pid),
            );
        }
        assert!(
            processes_mentioning(&self.sandbox).is_empty(),
            "processes of {} are left",
            self.sandbox
        );
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the monitor saw, for whoever reads the failure.
            let log =
                std::fs::read_to_string(basalt_shim::paths::log(&self.dir)).unwrap_or_default();
            eprintln!("--- {} shim.log ---\n{log}", self.sandbox);
            for e in std::fs::read_dir(&self.base)
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let c = std::fs::read_to_string(e.path()).unwrap_or_default();
                    eprintln!("--- {} ---\n{c}", e.path().display());
                }
            }
        }
        if !self.shut_down {
            let _ = self.call(Request::Shutdown);
        }
    }
}

fn chrono_like(ts: &str) -> bool {
    // 2026-11-26T19:31:53.123456789Z
    ts.len() == 30 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z') && ts.as_bytes()[19] == b'.'
}

fn poll(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Running (not a zombie waiting for its parent to collect it).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn remote_kind(r: Result<Response, ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Remote { kind, message }) => (kind, message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------

fn spawn_pins_and_shutdown() -> R {
    let mut pod = Pod::start("pins", |o| {
        o.pin = vec![
            Namespace::Net,
            Namespace::Ipc,
            Namespace::Uts,
            Namespace::Pid,
        ];
        o.hostname = Some("pod-a".into());
        o.sysctls = vec![
            ("net.ipv4.ip_unprivileged_port_start".into(), "1024".into()),
            ("kernel.shmmni".into(), "1234".into()),
        ];
    });
    match pod.call(Request::Ping) {
        Ok(Response::Pong { sandbox_id, pid }) => {
            assert_eq!(sandbox_id, pod.sandbox);
            assert_eq!(pid, pod.ready.pid);
        }
        r => panic!("{r:?}"),
    }
    let pid_file = std::fs::read_to_string(basalt_shim::paths::pid_file(&pod.dir)).unwrap();
    assert_eq!(pid_file.trim(), pod.ready.pid.to_string());
    // Every pin is an nsfs bind mount at the reported path, of a namespace that is not ours.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for name in ["net", "ipc", "uts", "pid"] {
        let path = &pod.ready.namespaces[name];
        assert_eq!(*path, pod.dir.join("ns").join(name));
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
            .unwrap_or_else(|| panic!("{} is not a mount point", path.display()));
        assert!(line.contains(" - nsfs "), "{line}");
        use std::os::unix::fs::MetadataExt;
        let pinned = std::fs::metadata(path).unwrap().ino();
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"))
            .unwrap()
            .ino();
        assert_ne!(pinned, ours, "{name} is the host's namespace");
    }
    // A container in the pod sees the hostname and sysctls set on the pinned namespaces.
    let c = pod.run(
        "probe",
        "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni",
    );
    let s = pod.wait_exited(&c, Duration::from_secs(20));
    assert_eq!(s.exit_code, 0);
    let out: Vec<String> = pod.records("probe").into_iter().map(|r| r.2).collect();
    assert_eq!(out, ["pod-a", "1024", "1234"]);
    // The host's hostname is untouched.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "pod-a"
    );
    // A container joining the pinned pid namespace is not its init: the holder is.
    let pid_ns = pod.ready.namespaces["pid"].clone();
    let bundle = pod.bundle("shared-pid", "echo $$", |c| {
        c["linux"]["namespaces"][0] = json!({"type": "pid", "path": pid_ns});
    });
    let shared = pod.create("shared-pid", bundle, false, false);
    pod.wait_exited(&shared, Duration::from_secs(20));
    poll(Duration::from_secs(5), "the pid record", || {
        !pod.records("shared-pid").is_empty()
    });
    let pid: i32 = pod.records("shared-pid")[0].2.parse().unwrap();
    assert!(pid > 1, "pid {pid} in the shared pid namespace");
    let running = pod.run("sleeper", "while true; do sleep 1; done");
    pod.shutdown_and_check(&[&c, &shared, &running]);
    Ok(())
}

fn startup_errors_leave_nothing() -> R {
    let tmp = tempfile::tempdir().unwrap();
    // Refused before anything is made: not a namespaced sysctl.
    let sandbox = unique("badsysctl");
    let mut o = options(tmp.path(), &sandbox);
    o.sysctls = vec![("kernel.pid_max".into(), "4096".into())];
    let e = basalt_shim::spawn(&o).unwrap_err().to_string();
    assert!(
        e.contains("kernel.pid_max") && e.contains("not namespaced"),
        "{e}"
    );
    assert!(!o.dir.exists());
    // Refused by the kernel after the namespaces were made: a sysctl that does not exist.
    o.sysctls = vec![("net.ipv4.no_such_knob".into(), "1".into())];
    let e = basalt_shim::spawn(&o).unwrap_err().to_string();
    assert!(e.contains("net.ipv4.no_such_knob"), "{e}");
    assert!(!o.dir.exists(), "{} is left", o.dir.display());
    // An existing, non-empty directory is someone else's.
    std::fs::create_dir_all(o.dir.join("x")).unwrap();
    o.sysctls.clear();
    let e = basalt_shim::spawn(&o).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    assert!(o.dir.join("x").exists());
    // Unknown namespace names are refused by the argument parser.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["shim", "--sandbox-id", &sandbox, "--dir"])
        .arg(tmp.path().join("other"))
        .args(["--runtime-root", "/tmp/x", "--pin", "net,time"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("time"));
    assert!(!tmp.path().join("other").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(tmp.path().to_str().unwrap()),
        "a mount is left"
    );
    assert!(
        processes_mentioning(&sandbox).is_empty(),
        "a process is left"
    );
    Ok(())
}

fn logs_are_in_the_cri_format() -> R {
    let mut pod = Pod::start("logs", |_| {});
    let c = pod.run(
        "printer",
        "echo one; echo two >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; printf partial; exit 3",
    );
    let s = pod.wait_exited(&c, Duration::from_secs(20));
    assert_eq!(s.exit_code, 3);
    assert!(s.created_at > 0 && s.started_at >= s.created_at && s.finished_at >= s.started_at);
    // Output written before the exit may be drained just after it: poll for the last record of stdout.
    // (Records of the two streams interleave in whatever order the monitor read them.)
    poll(Duration::from_secs(10), "the last log record", || {
        pod.records("printer").iter().any(|r| r.2 == "partial")
    });
    let r = pod.records("printer");
    let shape: Vec<(&str, &str, usize)> = r
        .iter()
        .map(|(s, t, c)| (s.as_str(), t.as_str(), c.len()))
        .collect();
    let mut stdout: Vec<_> = shape.iter().filter(|r| r.0 == "stdout").cloned().collect();
    let stderr: Vec<_> = shape.iter().filter(|r| r.0 == "stderr").cloned().collect();
    assert_eq!(stderr, [("stderr", "F", 3)]);
    assert_eq!(r.iter().find(|r| r.0 == "stdout").unwrap().2, "one");
    stdout.remove(0);
    assert_eq!(
        stdout,
        [
            ("stdout", "P", 16 * 1024),
            ("stdout", "F", 20000 - 16 * 1024),
            ("stdout", "P", 7),
        ]
    );
    // The exit is on disk for an agent that comes back without the monitor.
    let on_disk: ContainerStatus =
        serde_json::from_slice(&std::fs::read(basalt_shim::paths::status(&pod.dir, &c)).unwrap())
            .unwrap();
    assert_eq!(on_disk, s);
    pod.ok(Request::Delete { id: c.clone() });
    assert!(!basalt_shim::paths::status(&pod.dir, &c).exists());
    let (kind, _) = remote_kind(pod.call(Request::Status { id: c.clone() }));
    assert_eq!(kind, ErrorKind::NotFound);
    pod.shutdown_and_check(&[]);
    Ok(())
}

fn pod_shares_network() -> R {
    let mut pod = Pod::start("net", |o| o.log_level = "debug".into());
    let server_bundle = pod.bundle("server", "nc -l -p 8080", |_| {});
    // stdin stays open (a pipe nobody writes), so nc waits for the peer.
    let server = pod.create("server", server_bundle, false, true);
    let client = pod.run(
        "client",
        "until echo hello-from-the-pod | nc 127.0.0.1 8080; do sleep 0.1; done",
    );
    poll(
        Duration::from_secs(20),
        "the message to reach the server",
        || {
            pod.records("server")
                .iter()
                .any(|r| r.2 == "hello-from-the-pod")
        },
    );
    // The host's loopback is another namespace: nothing listens on 8080 there.
    assert!(std::net::TcpStream::connect("127.0.0.1:8080").is_err());
    for c in [&server, &client] {
        pod.ok(Request::Stop {
            id: c.clone(),
            timeout_secs: 0,
            signal: None,
        });
        assert_eq!(pod.status(c).state, State::Exited);
    }
    pod.shutdown_and_check(&[&server, &client]);
    Ok(())
}

fn exits_and_stop() -> R {
    let mut pod = Pod::start("stop", |_| {});
    let polite = pod.run(
        "polite",
        "trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done",
    );
    let stubborn = pod.run(
        "stubborn",
        "trap '' TERM; echo up; while true; do sleep 0.1; done",
    );
    let quick = pod.run("quick", "exit 4");
    for id in ["polite", "stubborn"] {
        poll(Duration::from_secs(20), "the trap to be set", || {
            pod.records(id).iter().any(|r| r.2 == "up")
        });
    }
    // The agent is away while `quick` exits; a new connection sees the real code and time.
    let s = pod.wait_exited(&quick, Duration::from_secs(20));
    assert_eq!((s.state, s.exit_code), (State::Exited, 4));
    assert!(s.finished_at >= s.started_at && s.started_at > 0);

    let t = Instant::now();
    pod.ok(Request::Stop {
        id: polite.clone(),
        timeout_secs: 30,
        signal: None,
    });
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "SIGTERM was not enough"
    );
    assert_eq!(pod.status(&polite).exit_code, 0);

    let t = Instant::now();
    pod.ok(Request::Stop {
        id: stubborn.clone(),
        timeout_secs: 1,
        signal: None,
    });
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "stopped before the grace period"
    );
    let s = pod.status(&stubborn);
    assert_eq!((s.state, s.exit_code), (State::Exited, 137));
    // Stopping again is fine; signalling an exited container is not.
    pod.ok(Request::Stop {
        id: stubborn.clone(),
        timeout_secs: 1,
        signal: None,
    });
    let (kind, msg) = remote_kind(pod.call(Request::Kill {
        id: stubborn.clone(),
        signal: 15,
        all: false,
    }));
    assert_eq!(kind, ErrorKind::FailedPrecondition);
    assert!(msg.contains(&stubborn), "{msg}");
    match pod.call(Request::List) {
        Ok(Response::List { containers }) => {
            let mut ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
            ids.sort();
            let mut want = vec![polite.as_str(), stubborn.as_str(), quick.as_str()];
            want.sort();
            assert_eq!(ids, want);
        }
        r => panic!("{r:?}"),
    }
    pod.shutdown_and_check(&[&polite, &stubborn, &quick]);
    Ok(())
}

fn exec_sync() -> R {
    let mut pod = Pod::start("execsync", |_| {});
    let c = pod.run("box", "while true; do sleep 1; done");
    let run = |cmd: &[&str], timeout_secs, max| {
        pod.call(Request::ExecSync {
            id: c.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout_secs,
            max_output_bytes: max,
        })
    };
    match run(&["sh", "-c", "echo out; echo err >&2; exit 7"], 10, 1 << 20) {
        Ok(Response::ExecSync {
            stdout,
            stderr,
            exit_code,
        }) => {
            assert_eq!(stdout, b"out\n");
            assert_eq!(stderr, b"err\n");
            assert_eq!(exit_code, 7);
        }
        r => panic!("{r:?}"),
    }
    match run(&["head", "-c", "100000", "/dev/zero"], 10, 1000) {
        Ok(Response::ExecSync {
            stdout, exit_code, ..
        }) => {
            assert_eq!(stdout.len(), 1000);
            assert_eq!(exit_code, 0);
        }
        r => panic!("{r:?}"),
    }
    let t = Instant::now();
    let (kind, msg) = remote_kind(run(&["sleep", "1002"], 1, 1000));
    assert_eq!(kind, ErrorKind::DeadlineExceeded);
    assert!(msg.contains(&c), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let cg = pod.status(&c).cgroup_path;
    poll(
        Duration::from_secs(10),
        "the timed-out process to be killed",
        || cgroup_cmdlines(&cg).iter().all(|c| c != "sleep 1002"),
    );
    let (kind, msg) = remote_kind(run(&["no-such-program"], 10, 1000));
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(msg.contains("no-such-program"), "{msg}");
    pod.shutdown_and_check(&[&c]);
    Ok(())
}

/// The command lines of the processes in a container's (v1 pids) cgroup.
fn cgroup_cmdlines(cgroup: &str) -> Vec<String> {
    let procs = Path::new("/sys/fs/cgroup/pids")
        .join(cgroup.trim_start_matches('/'))
        .join("cgroup.procs");
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .map(|pid| {
            String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
            .trim_end_matches('\0')
            .replace('\0', " ")
        })
        .collect()
}

async fn collect(
    mut r: basalt_shim::client::FrameReader,
) -> (Vec<u8>, Vec<u8>, Option<Result<i32, String>>) {
    let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(f) = tokio::time::timeout(Duration::from_secs(30), r.next())
        .await
        .expect("a frame in time")
        .unwrap()
    {
        match f {
            Frame::Stdout(d) => out.extend(d),
            Frame::Stderr(d) => err.extend(d),
            Frame::Exit(e) => exit = Some(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    (out, err, exit)
}

fn exec_stream() -> R {
    let mut pod = Pod::start("exec", |_| {});
    let c = pod.run("box", "while true; do sleep 1; done");
    pod.rt.block_on(async {
        // A terminal: resize, then a shell reports the size and exits with a code of its own.
        let client = Client::connect(pod.sock()).await.unwrap();
        let (r, mut w) = client
            .stream(Request::Exec {
                id: c.clone(),
                cmd: vec!["sh".into()],
                tty: true,
                stdin: true,
            })
            .await
            .unwrap();
        w.send(&Frame::Resize {
            width: 101,
            height: 31,
        })
        .await
        .unwrap();
        w.send(&Frame::Stdin(b"stty size; tty; exit 5\n".to_vec()))
            .await
            .unwrap();
        let (out, err, exit) = collect(r).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("31 101"), "{out:?}");
        assert!(out.contains("/dev/pts/"), "{out:?}");
        assert!(err.is_empty());
        assert_eq!(exit, Some(Ok(5)));

        // Pipes: stdin through to stdout, its end closes stdin, stderr stays apart.
        let client = Client::connect(pod.sock()).await.unwrap();
        let (r, mut w) = client
            .stream(Request::Exec {
                id: c.clone(),
                cmd: vec!["sh".into(), "-c".into(), "cat; echo done >&2".into()],
                tty: false,
                stdin: true,
            })
            .await
            .unwrap();
        w.send(&Frame::Stdin(b"abc\n".to_vec())).await.unwrap();
        w.send(&Frame::Stdin(Vec::new())).await.unwrap();
        let (out, err, exit) = collect(r).await;
        assert_eq!(out, b"abc\n");
        assert_eq!(err, b"done\n");
        assert_eq!(exit, Some(Ok(0)));

        // Exec into an unknown container is refused before the stream starts.
        let client = Client::connect(pod.sock()).await.unwrap();
        match client
            .stream(Request::Exec {
                id: "nope".into(),
                cmd: vec!["true".into()],
                tty: false,
                stdin: false,
            })
            .await
        {
            Err(ClientError::Remote { kind, message }) => {
                assert_eq!(kind, ErrorKind::NotFound);
                assert!(message.contains("nope"));
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("exec into nothing was accepted"),
        }
    });
    pod.shutdown_and_check(&[&c]);
    Ok(())
}

fn attach_and_reopen_log() -> R {
    let mut pod = Pod::start("attach", |o| o.log_level = "debug".into());
    let bundle = pod.bundle(
        "echo",
        "while read l; do echo \"got $l\"; done; exit 9",
        |_| {},
    );
    let c = pod.create_once("echo", bundle, false, true, true);
    pod.rt.block_on(async {
        let client = Client::connect(pod.sock()).await.unwrap();
        let (mut r, mut w) = client
            .stream(Request::Attach {
                id: c.clone(),
                stdin: true,
            })
            .await
            .unwrap();
        w.send(&Frame::Stdin(b"one\n".to_vec())).await.unwrap();
        let f = tokio::time::timeout(Duration::from_secs(20), r.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f, Some(Frame::Stdout(b"got one\n".to_vec())));
        // The agent rotates the log and asks for a new file.
        poll(Duration::from_secs(5), "the first record", || {
            pod.records("echo").iter().any(|r| r.2 == "got one")
        });
        std::fs::rename(pod.log("echo"), pod.base.join("echo.log.1")).unwrap();
        let mut c2 = Client::connect(pod.sock()).await.unwrap();
        assert!(matches!(
            c2.call(Request::ReopenLog { id: c.clone() }).await,
            Ok(Response::Ok)
        ));
        w.send(&Frame::Stdin(b"two\n".to_vec())).await.unwrap();
        w.send(&Frame::Stdin(Vec::new())).await.unwrap();
        let (out, _, exit) = collect(r).await;
        assert_eq!(out, b"got two\n");
        assert_eq!(exit, Some(Ok(9)));
    });
    let recs: Vec<String> = pod.records("echo").into_iter().map(|r| r.2).collect();
    assert_eq!(recs, ["got two"]);
    let old = std::fs::read_to_string(pod.base.join("echo.log.1")).unwrap();
    assert!(
        old.contains("stdout F got one") && !old.contains("two"),
        "{old}"
    );
    assert_eq!(pod.status(&c).exit_code, 9);
    pod.shutdown_and_check(&[&c]);
    Ok(())
}

/// In a separate process: start an exec of `sleep 1003` and hang on to the stream until killed.
fn exec_client(sock: &OsString, id: &OsString) -> ExitCode {
    rt().block_on(async {
        let client = Client::connect(Path::new(sock)).await.unwrap();
        let (_r, _w) = client
            .stream(Request::Exec {
                id: id.to_string_lossy().into_owned(),
                cmd: vec!["sleep".into(), "1003".into()],
                tty: false,
                stdin: true,
            })
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
    ExitCode::SUCCESS
}

fn killed_exec_client() -> R {
    let mut pod = Pod::start("execkill", |_| {});
    let c = pod.run("box", "while true; do sleep 1; done");
    let cg = pod.status(&c).cgroup_path;
    let mut client = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("exec-client")
        .arg(pod.sock())
        .arg(&c)
        .spawn()
        .unwrap();
    poll(Duration::from_secs(20), "the exec'd process", || {
        cgroup_cmdlines(&cg).iter().any(|c| c == "sleep 1003")
    });
    client.kill().unwrap();
    client.wait().unwrap();
    poll(
        Duration::from_secs(10),
        "the orphaned exec to be ended",
        || cgroup_cmdlines(&cg).iter().all(|c| c != "sleep 1003"),
    );
    // The monitor and the container carry on.
    assert!(matches!(pod.call(Request::Ping), Ok(Response::Pong { .. })));
    assert_eq!(pod.status(&c).state, State::Running);
    match pod.call(Request::ExecSync {
        id: c.clone(),
        cmd: vec!["echo".into(), "still here".into()],
        timeout_secs: 10,
        max_output_bytes: 100,
    }) {
        Ok(Response::ExecSync { stdout, .. }) => assert_eq!(stdout, b"still here\n"),
        r => panic!("{r:?}"),
    }
    pod.shutdown_and_check(&[&c]);
    Ok(())
}

fn oom_killed() -> R {
    let mut pod = Pod::start("oom", |_| {});
    let bundle = pod.bundle("hog", "exec tail /dev/zero", |c| {
        c["linux"]["resources"]["memory"] =
            json!({"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024});
    });
    let c = pod.create("hog", bundle, false, false);
    let s = pod.wait_exited(&c, Duration::from_secs(60));
    assert!(s.oom_killed, "{s:?}");
    assert_eq!(s.exit_code, 137);
    // A container that ends normally is not reported as OOM-killed.
    let fine = pod.run("fine", "true");
    let s = pod.wait_exited(&fine, Duration::from_secs(20));
    assert!(!s.oom_killed);
    pod.shutdown_and_check(&[&c, &fine]);
    Ok(())
}

fn bad_requests() -> R {
    let mut pod = Pod::start("bad", |o| o.log_level = "debug".into());
    // Garbage, then a request cut off by a vanished client: the monitor answers the one, shrugs off the
    // other, and keeps serving.
    pod.rt.block_on(async {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::UnixStream::connect(pod.sock()).await.unwrap();
        s.write_all(b"{\"op\":\"fly\"}\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(&mut s).read_line(&mut line).await.unwrap();
        assert!(
            line.contains("invalid_argument") && line.contains("fly"),
            "{line}"
        );
        let mut s = tokio::net::UnixStream::connect(pod.sock()).await.unwrap();
        s.write_all(b"{\"op\":\"sta").await.unwrap();
        drop(s);
    });
    assert!(matches!(pod.call(Request::Ping), Ok(Response::Pong { .. })));
    let bundle = pod.bundle("b", "true", |_| {});
    let create = |id: &str, tty: bool, log: PathBuf| {
        pod.call(Request::Create(CreateRequest {
            id: id.into(),
            bundle: bundle.clone(),
            log_path: Some(log),
            tty,
            stdin: false,
            stdin_once: false,
        }))
    };
    let (kind, msg) = remote_kind(create("tty-mismatch", true, pod.log("b")));
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(msg.contains("tty") && msg.contains("tty-mismatch"), "{msg}");
    let (kind, msg) = remote_kind(create("nolog", false, "/nonexistent/dir/x.log".into()));
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(
        msg.contains("log_path") && msg.contains("/nonexistent/dir"),
        "{msg}"
    );
    let (kind, msg) = remote_kind(create("../escape", false, pod.log("b")));
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(msg.contains("../escape"), "{msg}");
    assert!(
        !pod.log("b").exists(),
        "the log of a container never made is left"
    );
    let (kind, _) = remote_kind(pod.call(Request::Start { id: "ghost".into() }));
    assert_eq!(kind, ErrorKind::NotFound);
    let (kind, msg) = remote_kind(pod.call(Request::Update {
        id: "ghost".into(),
        resources: json!({}),
    }));
    assert_eq!(kind, ErrorKind::NotFound);
    assert!(msg.contains("ghost"));
    let c = pod.run("b2", "while true; do sleep 1; done");
    let (kind, msg) = remote_kind(pod.call(Request::Update {
        id: c.clone(),
        resources: json!({"memory": {"limit": "lots"}}),
    }));
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(msg.contains("resources"), "{msg}");
    pod.ok(Request::Update {
        id: c.clone(),
        resources: json!({"memory": {"limit": 64 * 1024 * 1024}}),
    });
    let limit = std::fs::read_to_string(
        Path::new("/sys/fs/cgroup/memory")
            .join(pod.status(&c).cgroup_path.trim_start_matches('/'))
            .join("memory.limit_in_bytes"),
    )
    .unwrap();
    assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string());
    let (kind, _) = remote_kind(pod.call(Request::Kill {
        id: c.clone(),
        signal: 99,
        all: false,
    }));
    assert_eq!(kind, ErrorKind::InvalidArgument);
    // Deleting a running container kills it first.
    pod.ok(Request::Delete { id: c.clone() });
    assert!(!pod.root.join(&c).exists());
    pod.shutdown_and_check(&[]);
    Ok(())
}

/// In a separate process: the agent. Starts a pod with two containers, reports the monitor, waits to be killed.
fn agent(base: &OsString, sandbox: &OsString) -> ExitCode {
    let pod = Pod::start_at(Path::new(base), &sandbox.to_string_lossy(), |_| {});
    pod.run(
        "ticker",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
    );
    // Exits once the test drops /go into its root filesystem, i.e. while no agent is around.
    pod.run("ender", "until [ -e /go ]; do sleep 0.05; done; exit 6");
    println!("{}", serde_json::to_string(&pod.ready).unwrap());
    // SIGKILL is the only way out: nothing of the pod may be undone here.
    std::mem::forget(pod);
    loop {
        std::thread::park();
    }
}

fn pods_outlive_the_agent() -> R {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let sandbox = unique("agentkill");
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("agent")
        .arg(tmp.path())
        .arg(&sandbox)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Spawned = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    agent.kill().unwrap();
    agent.wait().unwrap();

    // The agent comes back: the same pod, its containers still there and running.
    let mut pod = Pod::adopt(tmp.path(), &sandbox, ready);
    let (ticker, ender) = (pod.cid("ticker"), pod.cid("ender"));
    match pod.call(Request::List) {
        Ok(Response::List { containers }) => {
            let states: Vec<(&str, State)> = containers
                .iter()
                .map(|c| (c.id.as_str(), c.state))
                .collect();
            assert_eq!(
                states,
                [
                    (ender.as_str(), State::Running),
                    (ticker.as_str(), State::Running)
                ]
            );
        }
        r => panic!("{r:?}"),
    }
    // Its log goes on.
    let n = pod.records("ticker").len();
    poll(Duration::from_secs(20), "more log records", || {
        pod.records("ticker").len() > n + 3
    });
    // One exits while nobody listens; its real code and time are there afterwards.
    std::fs::write(tmp.path().join("bundles/ender/rootfs/go"), "").unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let s = pod.wait_exited(&ender, Duration::from_secs(20));
    assert_eq!(s.exit_code, 6);
    assert!(s.finished_at >= before, "{s:?}");
    pod.shutdown_and_check(&[&ticker, &ender]);
    Ok(())
}

fn attach_tty() -> R {
    let mut pod = Pod::start("attachtty", |_| {});
    let bundle = pod.bundle("term", "exec sh", |c| {
        c["process"]["terminal"] = json!(true);
    });
    let c = pod.create("term", bundle, true, true);
    pod.rt.block_on(async {
        let client = Client::connect(pod.sock()).await.unwrap();
        let (r, mut w) = client
            .stream(Request::Attach {
                id: c.clone(),
                stdin: true,
            })
            .await
            .unwrap();
        w.send(&Frame::Resize {
            width: 77,
            height: 22,
        })
        .await
        .unwrap();
        w.send(&Frame::Stdin(b"stty size; exit 3\n".to_vec()))
            .await
            .unwrap();
        let (out, err, exit) = collect(r).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("22 77"), "{out:?}");
        assert!(err.is_empty());
        assert_eq!(exit, Some(Ok(3)));
    });
    // A terminal has one stream: everything is logged as stdout.
    poll(Duration::from_secs(5), "the size in the log", || {
        pod.records("term")
            .iter()
            .any(|r| r.0 == "stdout" && r.2.contains("22 77"))
    });
    assert!(pod.records("term").iter().all(|r| r.0 == "stdout"));
    pod.shutdown_and_check(&[&c]);
    Ok(())
}

fn sigterm_shuts_down() -> R {
    let mut pod = Pod::start("sigterm", |o| {
        o.pin = vec![Namespace::Net, Namespace::Uts, Namespace::Pid];
    });
    let c = pod.run("sleeper", "while true; do sleep 1; done");
    let pid = pod.ready.pid;
    pod.stop_and_check(&[&c], |_| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap()
    });
    Ok(())
}

//! Real filters in the kernel. Each case re-executes this test binary as a child (selected by an environment
//! variable) so the filter never lands on the test harness itself.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixListener;
use std::process::Command;

use basalt_seccomp::notify::send_listener_fd;
use basalt_seccomp::{install, Profile};
use serde_json::json;

const CHILD_ENV: &str = "BASALT_SECCOMP_TEST_CHILD";

/// Runs the test named `case` in a child with `CHILD_ENV=case` and returns its stdout; the child must exit 0.
fn in_child(case: &str, extra_env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {case} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn is_child(case: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(case)
}

/// The acceptance item: a rule that makes mkdir fail with EPERM, while the process goes on.
#[test]
fn mkdir_fails_with_eperm_under_a_real_filter() {
    let dir = tempfile::tempdir().unwrap();
    if !is_child("mkdir_fails_with_eperm_under_a_real_filter") {
        let out = in_child(
            "mkdir_fails_with_eperm_under_a_real_filter",
            &[("TARGET_DIR", dir.path().to_str().unwrap())],
        );
        assert!(out.contains("CHILD-OK"), "{out}");
        return;
    }
    let target = std::path::PathBuf::from(std::env::var("TARGET_DIR").unwrap());
    let p = Profile::from_json(
        &serde_json::to_vec(&json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .unwrap(),
    )
    .unwrap();
    let prog = p.compile().unwrap();
    basalt_seccomp::install::set_no_new_privs().unwrap();
    assert!(install(&prog, p.filter_flags).unwrap().is_none());
    let e = std::fs::create_dir(target.join("x")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(!target.join("x").exists());
    // Everything else still works.
    std::fs::write(target.join("file"), b"still alive").unwrap();
    println!("CHILD-OK");
}

/// The `RuntimeDefault` profile in the kernel: unshare is refused, ordinary work goes on.
#[test]
fn runtime_default_denies_unshare_in_the_kernel() {
    if !is_child("runtime_default_denies_unshare_in_the_kernel") {
        let out = in_child("runtime_default_denies_unshare_in_the_kernel", &[]);
        assert!(out.contains("CHILD-OK"), "{out}");
        return;
    }
    let p = Profile::from_oci(&basalt_seccomp::runtime_default()).unwrap();
    basalt_seccomp::install::set_no_new_privs().unwrap();
    install(&p.compile().unwrap(), p.filter_flags).unwrap();
    // SAFETY: plain syscall; it is expected to fail.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM))
    );
    // A child process (clone without namespace flags, execve) still runs.
    let out = Command::new("/bin/sh")
        .args(["-c", "echo hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    println!("CHILD-OK");
}

/// SCMP_ACT_NOTIFY: the listener fd comes back from install, goes to the agent at listenerPath with the
/// container state, and the agent answers the notified syscall.
#[test]
fn notify_hands_the_listener_to_the_agent() {
    if !is_child("notify_hands_the_listener_to_the_agent") {
        let out = in_child("notify_hands_the_listener_to_the_agent", &[]);
        assert!(out.contains("CHILD-OK"), "{out}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let p = Profile::from_json(
        &serde_json::to_vec(&json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "listenerMetadata": "pod=a",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .unwrap(),
    )
    .unwrap();
    basalt_seccomp::install::set_no_new_privs().unwrap();
    let fd = install(&p.compile().unwrap(), p.filter_flags)
        .unwrap()
        .expect("a listener fd");
    send_listener_fd(
        p.listener_path.as_deref().unwrap(),
        fd.as_fd(),
        42,
        "pod=a",
        &json!({"id": "c1"}),
    )
    .unwrap();
    drop(fd);

    // The agent: receives the state and the fd, then answers one notification with errno 77.
    let (conn, _) = listener.accept().unwrap();
    let (state, agent_fd) = recv_with_fd(&conn);
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["pid"], 42);
    assert_eq!(state["metadata"], "pod=a");
    assert_eq!(state["state"]["id"], "c1");
    let agent = std::thread::spawn(move || answer_one(agent_fd, 77));
    // SAFETY: plain syscall, answered by the agent thread.
    let rc = unsafe { libc::syscall(libc::SYS_getppid) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(77))
    );
    agent.join().unwrap();
    println!("CHILD-OK");
}

fn recv_with_fd(conn: &std::os::unix::net::UnixStream) -> (Vec<u8>, std::os::fd::OwnedFd) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this fd for us.
            fd = Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    (buf, fd.expect("an fd in SCM_RIGHTS"))
}

#[repr(C)]
#[derive(Default)]
struct NotifReq {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

fn answer_one(fd: std::os::fd::OwnedFd, errno: i32) {
    // _IOWR('!', 0, struct seccomp_notif) and _IOWR('!', 1, struct seccomp_notif_resp).
    const RECV: libc::c_ulong = 0xc0502100;
    const SEND: libc::c_ulong = 0xc0182101;
    let mut req = NotifReq::default();
    // SAFETY: the ioctls read/write exactly these kernel structs.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), RECV, &mut req as *mut NotifReq) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(req.nr as i64, libc::SYS_getppid);
    let resp = NotifResp {
        id: req.id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: as above.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SEND, &resp as *const NotifResp) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

//! The pure cgroup v2 test VM: boots the host kernel under qemu (TCG) and runs a command there.

use std::ffi::OsString;

use basalt_initramfs::testvm::{TestVm, VmError};

fn vm() -> Option<TestVm> {
    match TestVm::new() {
        Ok(vm) => Some(vm),
        Err(VmError::Unavailable(why)) => {
            basalt_testsupport::vm_unavailable("cgroup_v2_vm", &why);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn argv(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn guest_has_a_pure_cgroup_v2_hierarchy_with_controllers() {
    let Some(vm) = vm() else { return };
    let out = vm
        .run(
            &argv(&[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/cgroup.controllers; stat -f -c %T /sys/fs/cgroup; \
                 cat /sys/fs/cgroup/cgroup.subtree_control; echo to-stderr >&2; exit 3",
            ]),
            std::path::Path::new("/"),
        )
        .unwrap();
    assert_eq!(out.exit_code, 3, "{out:?}");
    let mut lines = out.stdout.lines();
    let controllers: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    for c in ["cpu", "memory", "pids"] {
        assert!(controllers.contains(&c), "{c} missing from {controllers:?}");
    }
    assert_eq!(lines.next(), Some("cgroup2fs"), "{}", out.stdout);
    let delegated: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    for c in ["cpu", "memory", "pids"] {
        assert!(delegated.contains(&c), "{c} not delegated: {delegated:?}");
    }
    assert_eq!(out.stderr.trim(), "to-stderr");
}

#[test]
fn guest_runs_host_binaries_in_the_callers_directory_and_writes_stay_in_the_guest() {
    let Some(vm) = vm() else { return };
    // A directory under /tmp, where CI clones and tempdirs live: the guest must see it as the host does.
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().to_owned();
    let marker = "basalt-vm-marker-that-must-not-reach-the-host";
    let out = vm
        .env("BASALT_VM_TEST", "it's \"quoted\"")
        .run(
            &argv(&[
                "sh",
                "-c",
                &format!("pwd; echo \"$BASALT_VM_TEST\"; touch {marker} && echo written"),
            ]),
            &here,
        )
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [here.to_str().unwrap(), "it's \"quoted\"", "written"]
    );
    assert!(
        !here.join(marker).exists(),
        "a write in the guest reached the host"
    );
}

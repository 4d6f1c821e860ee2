//! The `RuntimeDefault` profile, judged in the interpreter on every architecture it lists.

use basalt_seccomp::arch::Arch;
use basalt_seccomp::bpf::*;
use basalt_seccomp::default_profile::CLONE_NAMESPACE_FLAGS;
use basalt_seccomp::interp::{run, run_counted, SeccompData};
use basalt_seccomp::{runtime_default, Profile};

#[test]
fn runtime_default_allows_ordinary_work_and_denies_escapes() {
    let p = Profile::from_oci(&runtime_default()).unwrap();
    let prog = p.compile().unwrap();
    assert!(p.arches.len() >= 2, "{:?}", p.arches);
    println!(
        "RuntimeDefault: {} rules, {} BPF instructions",
        p.rules.len(),
        prog.len()
    );
    let mut checked = 0;
    for &arch in &p.arches {
        let ret = |name: &str, args: [u64; 6]| {
            arch.syscall_nr(name)
                .map(|nr| run(&prog, &SeccompData::new(arch.audit_arch(), nr, args)).unwrap())
        };
        for name in [
            "read",
            "write",
            "exit_group",
            "execve",
            "openat",
            "mmap",
            "futex",
            "wait4",
            "getpid",
        ] {
            assert_eq!(ret(name, [0; 6]), Some(SECCOMP_RET_ALLOW), "{arch} {name}");
            checked += 1;
        }
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "kexec_load",
            "kexec_file_load",
            "bpf",
            "perf_event_open",
            "ptrace",
            "keyctl",
            "add_key",
            "request_key",
            "reboot",
            "init_module",
            "finit_module",
            "delete_module",
            "swapon",
            "settimeofday",
            "clock_settime",
            "open_by_handle_at",
            "userfaultfd",
            "acct",
            "syslog",
            "quotactl",
            "fsopen",
            "move_mount",
            "open_tree",
            "iopl",
        ] {
            if let Some(r) = ret(name, [0; 6]) {
                assert_eq!(r, SECCOMP_RET_ERRNO | libc::EPERM as u32, "{arch} {name}");
                checked += 1;
            }
        }
        // clone: plain fork/thread flags pass, any namespace flag is refused.
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS) as u64;
        assert_eq!(
            ret("clone", [fork_flags, 0, 0, 0, 0, 0]),
            Some(SECCOMP_RET_ALLOW),
            "{arch}"
        );
        assert_eq!(
            ret("clone", [thread_flags, 0, 0, 0, 0, 0]),
            Some(SECCOMP_RET_ALLOW),
            "{arch}"
        );
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                ret("clone", [fork_flags | ns as u64, 0, 0, 0, 0, 0]),
                Some(SECCOMP_RET_ERRNO | libc::EPERM as u32),
                "{arch} {ns:#x}"
            );
            assert_ne!(ns as u64 & CLONE_NAMESPACE_FLAGS, 0);
        }
        for (persona, ok) in [
            (0u64, true),
            (0xffff_ffff, true),
            (0x8, true),
            (libc::ADDR_NO_RANDOMIZE as u64, false),
        ] {
            let want = if ok {
                SECCOMP_RET_ALLOW
            } else {
                SECCOMP_RET_ERRNO | libc::EPERM as u32
            };
            assert_eq!(
                ret("personality", [persona, 0, 0, 0, 0, 0]),
                Some(want),
                "{arch} {persona:#x}"
            );
        }
        if let Some(r) = ret("io_uring_setup", [0; 6]) {
            assert_eq!(r, SECCOMP_RET_ERRNO | libc::EPERM as u32, "{arch}");
        }
        // clone3 hides its flags in memory: ENOSYS makes libcs fall back to clone.
        assert_eq!(
            ret("clone3", [0; 6]),
            Some(SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
            "{arch}"
        );
    }
    assert!(checked > 60, "{checked}");
}

#[test]
fn runtime_default_lists_the_native_architecture() {
    let p = Profile::from_oci(&runtime_default()).unwrap();
    assert_eq!(p.arches[0], Arch::native());
}

/// Hundreds of allowed syscalls must not mean hundreds of comparisons per syscall: the dispatch is a binary
/// search, so every syscall number costs a few dozen instructions at most.
#[test]
fn runtime_default_costs_few_instructions_per_syscall() {
    let p = Profile::from_oci(&runtime_default()).unwrap();
    let prog = p.compile().unwrap();
    let mut worst = 0;
    for &arch in &p.arches {
        let base = if arch == Arch::X32 {
            basalt_seccomp::arch::X32_SYSCALL_BIT
        } else {
            0
        };
        for nr in 0..600 {
            let (_, steps) = run_counted(
                &prog,
                &SeccompData::new(arch.audit_arch(), base + nr, [0; 6]),
            )
            .unwrap();
            worst = worst.max(steps);
        }
    }
    println!(
        "RuntimeDefault: at most {worst} instructions per syscall ({} in the program)",
        prog.len()
    );
    assert!(worst < 40, "{worst}");
}

//! Basalt's `RuntimeDefault` profile: deny (EPERM) by default, allow what ordinary container workloads use,
//! and keep out what reaches beyond the container: new namespaces, mounts, module and kexec loading, eBPF,
//! perf, ptrace, the kernel keyring, clock and swap changes, reboot, and io_uring (a large attack surface
//! that bypasses syscall filtering).
//!
//! Our own list, grouped by purpose. Calls that need a capability the container may lack (chroot, mknod) are
//! allowed here and left to the capability check.

use oci_spec::runtime::LinuxSeccomp;
use serde_json::json;

use crate::arch::Arch;

/// clone flags that create namespaces; `clone` is allowed only without them.
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

#[rustfmt::skip]
const FILES: &[&str] = &[
    "access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd", "chmod", "fchmod", "fchmodat", "chown",
    "fchown", "lchown", "fchownat", "close", "close_range", "creat", "open", "openat", "openat2", "dup", "dup2",
    "dup3", "fcntl", "fcntl64", "flock", "fadvise64", "fadvise64_64", "arm_fadvise64_64", "fallocate", "fsync",
    "fdatasync", "sync", "syncfs", "sync_file_range", "ftruncate", "ftruncate64", "truncate", "truncate64",
    "getdents", "getdents64", "link", "linkat", "symlink", "symlinkat", "readlink", "readlinkat", "unlink",
    "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "mknod", "mknodat", "lseek",
    "_llseek", "read", "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev",
    "pwritev2", "sendfile", "sendfile64", "splice", "tee", "vmsplice", "copy_file_range", "stat", "stat64", "lstat",
    "lstat64", "fstat", "fstat64", "newfstatat", "fstatat64", "statx", "statfs", "statfs64", "fstatfs", "fstatfs64",
    "umask", "utime", "utimes", "utimensat", "utimensat_time64", "futimesat", "getxattr", "lgetxattr", "fgetxattr",
    "setxattr", "lsetxattr", "fsetxattr", "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr",
    "fremovexattr", "ioctl", "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "fanotify_mark", "pipe", "pipe2", "chroot", "memfd_create",
];

#[rustfmt::skip]
const MEMORY: &[&str] = &[
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "msync", "madvise", "mincore", "mlock", "mlock2",
    "munlock", "mlockall", "munlockall", "membarrier", "remap_file_pages", "get_mempolicy", "set_mempolicy",
    "mbind", "pkey_alloc", "pkey_free", "pkey_mprotect",
];

#[rustfmt::skip]
const PROCESSES: &[&str] = &[
    "execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid", "waitpid", "getpid", "getppid",
    "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "getuid", "getuid32", "geteuid", "geteuid32",
    "getgid", "getgid32", "getegid", "getegid32", "getresuid", "getresuid32", "getresgid", "getresgid32",
    "getgroups", "getgroups32", "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32", "setregid",
    "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32", "setfsuid", "setfsuid32", "setfsgid",
    "setfsgid32", "setgroups", "setgroups32", "capget", "capset", "prctl", "arch_prctl", "set_tid_address",
    "set_robust_list", "get_robust_list", "rseq", "futex", "futex_time64", "getpriority", "setpriority",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_getattr", "sched_setattr", "getrlimit",
    "ugetrlimit", "setrlimit", "prlimit64", "getrusage", "times", "uname", "sysinfo", "getcpu", "ioprio_get",
    "ioprio_set", "set_thread_area", "get_thread_area", "set_tls", "cacheflush", "breakpoint", "restart_syscall",
    "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "process_mrelease", "kcmp", "getrandom", "futex_waitv",
    "map_shadow_stack", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "process_madvise",
];

#[rustfmt::skip]
const SIGNALS_AND_TIME: &[&str] = &[
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaction", "sigprocmask",
    "sigreturn", "sigpending", "sigsuspend", "sigaltstack", "signal", "signalfd", "signalfd4", "pause", "alarm",
    "nanosleep", "clock_nanosleep", "clock_nanosleep_time64", "clock_gettime", "clock_gettime64", "clock_getres",
    "clock_getres_time64", "gettimeofday", "time", "getitimer", "setitimer", "timer_create", "timer_delete",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timer_getoverrun", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
];

#[rustfmt::skip]
const IO_AND_EVENTS: &[&str] = &[
    "select", "_newselect", "pselect6", "pselect6_time64", "poll", "ppoll", "ppoll_time64", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "io_setup",
    "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
];

#[rustfmt::skip]
const NETWORK_AND_IPC: &[&str] = &[
    "socket", "socketpair", "socketcall", "bind", "listen", "accept", "accept4", "connect", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "shutdown", "send", "sendto", "sendmsg", "sendmmsg", "recv",
    "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time64", "ipc", "shmget", "shmat", "shmdt", "shmctl", "semget",
    "semop", "semtimedop", "semtimedop_time64", "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open",
    "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64", "mq_notify",
    "mq_getsetattr",
];

/// The `RuntimeDefault` profile for the native architecture (and its 32-bit companions).
pub fn runtime_default() -> LinuxSeccomp {
    let arches: &[Arch] = match Arch::native() {
        Arch::X86_64 | Arch::X86 | Arch::X32 => &[Arch::X86_64, Arch::X86, Arch::X32],
        Arch::Aarch64 | Arch::Arm => &[Arch::Aarch64, Arch::Arm],
    };
    // Names unknown on every architecture of this build (e.g. ARM-only calls on x86) are left out, so the
    // profile passes our own "unknown syscall" check.
    let allowed: Vec<&str> = [
        FILES,
        MEMORY,
        PROCESSES,
        SIGNALS_AND_TIME,
        IO_AND_EVENTS,
        NETWORK_AND_IPC,
    ]
    .into_iter()
    .flatten()
    .copied()
    .filter(|n| arches.iter().any(|a| a.knows(n)))
    .collect();
    let arch_names: Vec<&str> = arches.iter().map(|a| a.oci_name()).collect();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": arch_names,
        "syscalls": [
            { "names": allowed, "action": "SCMP_ACT_ALLOW" },
            // clone without namespace flags; clone3 hides its flags in memory, so it gets ENOSYS and libcs fall
            // back to clone.
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{ "index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }]
            },
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS },
            // personality: the query and the harmless execution domains only (not e.g. ADDR_NO_RANDOMIZE).
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": PERSONALITIES.iter().map(|p| json!({ "index": 0, "value": p, "op": "SCMP_CMP_EQ" })).collect::<Vec<_>>()
            },
        ]
    });
    serde_json::from_value(profile).expect("the built-in profile matches the OCI schema")
}

/// PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query the current persona).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

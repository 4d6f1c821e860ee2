//! The architectures we compile for: their audit tokens (`seccomp_data.arch`), their syscall tables and
//! whether their syscall arguments are 64 bits wide.

use std::str::FromStr;

/// An architecture a filter can match. x86_64 and x32 share one audit token and are told apart by the
/// `__X32_SYSCALL_BIT` of the syscall number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    X86,
    X32,
    Aarch64,
    Arm,
}

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
pub const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// x32 syscalls whose argument layout differs from x86_64, so they got their own numbers from 512 up.
const X32_OWN_NUMBERS: &[(&str, u32)] = &[
    ("rt_sigaction", 512),
    ("rt_sigreturn", 513),
    ("ioctl", 514),
    ("readv", 515),
    ("writev", 516),
    ("recvfrom", 517),
    ("sendmsg", 518),
    ("recvmsg", 519),
    ("execve", 520),
    ("ptrace", 521),
    ("rt_sigpending", 522),
    ("rt_sigtimedwait", 523),
    ("rt_sigqueueinfo", 524),
    ("sigaltstack", 525),
    ("timer_create", 526),
    ("mq_notify", 527),
    ("kexec_load", 528),
    ("waitid", 529),
    ("set_robust_list", 530),
    ("get_robust_list", 531),
    ("vmsplice", 532),
    ("move_pages", 533),
    ("preadv", 534),
    ("pwritev", 535),
    ("rt_tgsigqueueinfo", 536),
    ("recvmmsg", 537),
    ("sendmmsg", 538),
    ("process_vm_readv", 539),
    ("process_vm_writev", 540),
    ("setsockopt", 541),
    ("getsockopt", 542),
    ("io_setup", 543),
    ("io_submit", 544),
    ("execveat", 545),
    ("preadv2", 546),
    ("pwritev2", 547),
];

/// x86_64 syscalls that x32 does not have at all.
const NOT_ON_X32: &[&str] = &[
    "_sysctl",
    "create_module",
    "epoll_ctl_old",
    "epoll_wait_old",
    "get_kernel_syms",
    "get_thread_area",
    "map_shadow_stack",
    "nfsservctl",
    "query_module",
    "set_thread_area",
    "uselib",
    "vserver",
];

/// x86 (32-bit) reaches the socket and SysV IPC calls also through the `socketcall` (102) and `ipc` (117)
/// multiplexers, with the call number in the first argument; a rule on such a call must cover that way in too
/// (libseccomp does the same).
const X86_SOCKETCALL: u32 = 102;
const X86_IPC: u32 = 117;
const X86_MULTIPLEXED: &[(&str, u32, u32)] = &[
    ("socket", X86_SOCKETCALL, 1),
    ("bind", X86_SOCKETCALL, 2),
    ("connect", X86_SOCKETCALL, 3),
    ("listen", X86_SOCKETCALL, 4),
    ("accept", X86_SOCKETCALL, 5),
    ("getsockname", X86_SOCKETCALL, 6),
    ("getpeername", X86_SOCKETCALL, 7),
    ("socketpair", X86_SOCKETCALL, 8),
    ("send", X86_SOCKETCALL, 9),
    ("recv", X86_SOCKETCALL, 10),
    ("sendto", X86_SOCKETCALL, 11),
    ("recvfrom", X86_SOCKETCALL, 12),
    ("shutdown", X86_SOCKETCALL, 13),
    ("setsockopt", X86_SOCKETCALL, 14),
    ("getsockopt", X86_SOCKETCALL, 15),
    ("sendmsg", X86_SOCKETCALL, 16),
    ("recvmsg", X86_SOCKETCALL, 17),
    ("accept4", X86_SOCKETCALL, 18),
    ("recvmmsg", X86_SOCKETCALL, 19),
    ("sendmmsg", X86_SOCKETCALL, 20),
    ("semop", X86_IPC, 1),
    ("semget", X86_IPC, 2),
    ("semctl", X86_IPC, 3),
    ("semtimedop", X86_IPC, 4),
    ("msgsnd", X86_IPC, 11),
    ("msgrcv", X86_IPC, 12),
    ("msgget", X86_IPC, 13),
    ("msgctl", X86_IPC, 14),
    ("shmat", X86_IPC, 21),
    ("shmdt", X86_IPC, 22),
    ("shmget", X86_IPC, 23),
    ("shmctl", X86_IPC, 24),
];

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::X86_64, Arch::X86, Arch::X32, Arch::Aarch64, Arch::Arm];

    /// The architecture this binary runs on, which every filter matches (as libseccomp does).
    pub const fn native() -> Arch {
        if cfg!(target_arch = "x86_64") {
            if cfg!(target_pointer_width = "32") {
                Arch::X32
            } else {
                Arch::X86_64
            }
        } else if cfg!(target_arch = "x86") {
            Arch::X86
        } else if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else if cfg!(target_arch = "arm") {
            Arch::Arm
        } else {
            panic!("basalt-seccomp: unsupported native architecture")
        }
    }

    /// The OCI name (`SCMP_ARCH_*`).
    pub const fn oci_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::X86 => "SCMP_ARCH_X86",
            Arch::X32 => "SCMP_ARCH_X32",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
            Arch::Arm => "SCMP_ARCH_ARM",
        }
    }

    /// Maps the OCI architecture; `None` for architectures we cannot compile for.
    pub fn from_oci(arch: oci_spec::runtime::Arch) -> Option<Arch> {
        use oci_spec::runtime::Arch as O;
        Some(match arch {
            O::ScmpArchNative => Arch::native(),
            O::ScmpArchX86_64 => Arch::X86_64,
            O::ScmpArchX86 => Arch::X86,
            O::ScmpArchX32 => Arch::X32,
            O::ScmpArchAarch64 => Arch::Aarch64,
            O::ScmpArchArm => Arch::Arm,
            _ => return None,
        })
    }

    /// The value the kernel puts in `seccomp_data.arch`.
    pub const fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 | Arch::X32 => AUDIT_ARCH_X86_64,
            Arch::X86 => AUDIT_ARCH_I386,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
            Arch::Arm => AUDIT_ARCH_ARM,
        }
    }

    /// Whether syscall arguments are compared on all 64 bits; on 32-bit ABIs (x32 included, as libseccomp
    /// does) only the low word carries the argument.
    pub const fn args_are_64bit(self) -> bool {
        matches!(self, Arch::X86_64 | Arch::Aarch64)
    }

    /// The syscall number of `name` on this architecture, `None` if it has no such syscall.
    pub fn syscall_nr(self, name: &str) -> Option<u32> {
        match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name)
                .ok()
                .map(|s| s.id() as u32),
            Arch::X86 => syscalls::x86::Sysno::from_str(name)
                .ok()
                .map(|s| s.id() as u32),
            // The generic table's 64-bit-time calls (403..=423) and sync_file_range2 exist only for 32-bit
            // ABIs; on arm64 those numbers are unassigned.
            Arch::Aarch64 if name.ends_with("time64") || name == "sync_file_range2" => None,
            Arch::Aarch64 => syscalls::aarch64::Sysno::from_str(name)
                .ok()
                .map(|s| s.id() as u32),
            Arch::Arm => syscalls::arm::Sysno::from_str(name)
                .ok()
                .map(|s| s.id() as u32),
            Arch::X32 => {
                if let Some((_, nr)) = X32_OWN_NUMBERS.iter().find(|(n, _)| *n == name) {
                    return Some(nr | X32_SYSCALL_BIT);
                }
                if NOT_ON_X32.contains(&name) {
                    return None;
                }
                let nr = syscalls::x86_64::Sysno::from_str(name).ok()?.id() as u32;
                // The x86_64-only variants of the calls x32 renumbered must not resolve on x32.
                (nr < 512).then_some(nr | X32_SYSCALL_BIT)
            }
        }
    }

    /// The multiplexer (`socketcall` or `ipc`) and call number through which `name` is also reachable.
    pub fn multiplexed(self, name: &str) -> Option<(u32, u32)> {
        if self != Arch::X86 {
            return None;
        }
        X86_MULTIPLEXED
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, mux, call)| (mux, call))
    }

    /// Whether a rule on `name` filters anything on this architecture.
    pub fn knows(self, name: &str) -> bool {
        self.syscall_nr(name).is_some() || self.multiplexed(name).is_some()
    }

    /// Every syscall name this architecture knows.
    pub fn syscall_names(self) -> Vec<&'static str> {
        let names: Vec<&'static str> = match self {
            Arch::X86_64 | Arch::X32 => syscalls::x86_64::Sysno::iter().map(|s| s.name()).collect(),
            Arch::X86 => syscalls::x86::Sysno::iter().map(|s| s.name()).collect(),
            Arch::Aarch64 => syscalls::aarch64::Sysno::iter().map(|s| s.name()).collect(),
            Arch::Arm => syscalls::arm::Sysno::iter().map(|s| s.name()).collect(),
        };
        names
            .into_iter()
            .filter(|n| self.syscall_nr(n).is_some())
            .collect()
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::X86 => "x86",
            Arch::X32 => "x32",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_tables() {
        assert_eq!(Arch::X86_64.syscall_nr("mkdir"), Some(83));
        assert_eq!(Arch::X86.syscall_nr("mkdir"), Some(39));
        assert_eq!(Arch::Aarch64.syscall_nr("mkdirat"), Some(34));
        assert_eq!(Arch::Aarch64.syscall_nr("mkdir"), None);
        assert_eq!(Arch::X32.syscall_nr("mkdir"), Some(83 | X32_SYSCALL_BIT));
        assert_eq!(Arch::X32.syscall_nr("ioctl"), Some(514 | X32_SYSCALL_BIT));
        assert_eq!(Arch::X32.syscall_nr("uselib"), None);
        assert_eq!(Arch::Aarch64.syscall_nr("futex_time64"), None);
        assert_eq!(Arch::X86.syscall_nr("futex_time64"), Some(422));
        assert_eq!(Arch::X86_64.syscall_nr("no_such_call"), None);
    }
}

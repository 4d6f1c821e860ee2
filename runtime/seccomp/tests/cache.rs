//! Compiled programs cached on disk by profile hash.

use basalt_seccomp::arch::Arch;
use basalt_seccomp::bpf::SockFilter;
use basalt_seccomp::cache::{cache_path, compile_cached_for};
use basalt_seccomp::runtime_default;
use oci_spec::runtime::LinuxSeccomp;

fn section(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).unwrap()
}

#[test]
fn compiled_programs_are_stored_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("seccomp");
    let oci = runtime_default();
    let (profile, first) = compile_cached_for(&oci, Arch::X86_64, &cache).unwrap();
    assert_eq!(first, profile.compile().unwrap());
    let path = cache_path(&oci, Arch::X86_64, &cache);
    assert_eq!(std::fs::read(&path).unwrap(), SockFilter::to_bytes(&first));
    // Only the one file, no temporary left behind.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    // A present, well-formed file is what gets returned (proved by planting a different program).
    let planted = vec![SockFilter::stmt(0x06, 0x7fff_0000)];
    std::fs::write(&path, SockFilter::to_bytes(&planted)).unwrap();
    assert_eq!(
        compile_cached_for(&oci, Arch::X86_64, &cache).unwrap().1,
        planted
    );

    // A torn file (length not a multiple of 8) is ignored and replaced.
    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    assert_eq!(
        compile_cached_for(&oci, Arch::X86_64, &cache).unwrap().1,
        first
    );
    assert_eq!(std::fs::read(&path).unwrap().len(), first.len() * 8);
}

#[test]
fn the_key_covers_profile_and_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let a = section(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    let b = section(serde_json::json!({"defaultAction": "SCMP_ACT_LOG"}));
    assert_ne!(
        cache_path(&a, Arch::X86_64, dir.path()),
        cache_path(&b, Arch::X86_64, dir.path())
    );
    assert_ne!(
        cache_path(&a, Arch::X86_64, dir.path()),
        cache_path(&a, Arch::Aarch64, dir.path())
    );
    assert_eq!(
        cache_path(&a, Arch::X86_64, dir.path()),
        cache_path(&a.clone(), Arch::X86_64, dir.path())
    );
}

#[test]
fn a_bad_profile_is_refused_even_with_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bad = section(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["frobnicate"], "action": "SCMP_ACT_ERRNO"}]}));
    assert!(compile_cached_for(&bad, Arch::X86_64, dir.path()).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written for a bad profile"
    );
}

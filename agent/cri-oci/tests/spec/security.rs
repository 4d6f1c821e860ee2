//! Capabilities, privileged, seccomp, AppArmor, no_new_privs, masked and read-only paths.

use std::collections::HashSet;

use basalt_cri_oci::security::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
use basalt_cri_oci::ErrorKind;
use basalt_proto::cri::{
    security_profile::ProfileType, Capability as CriCaps, ContainerConfig,
    LinuxSandboxSecurityContext, SecurityProfile,
};
use oci_spec::runtime::{Capability, LinuxCapabilities};

use crate::fixture::{assert_err, config, process, sc, Env};

fn caps(env: &Env, c: &ContainerConfig) -> LinuxCapabilities {
    process(&env.spec(c)).capabilities().clone().unwrap()
}

fn names(set: &Option<HashSet<Capability>>) -> Vec<String> {
    let mut v: Vec<String> = set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
    v.sort();
    v
}

fn with_caps(add: &[&str], drop: &[&str], ambient: &[&str]) -> ContainerConfig {
    let mut c = config();
    sc(&mut c).capabilities = Some(CriCaps {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        add_ambient_capabilities: ambient.iter().map(|s| s.to_string()).collect(),
    });
    c
}

fn privileged_env() -> Env {
    let mut env = Env::new();
    env.pod.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    env
}

fn privileged() -> ContainerConfig {
    let mut c = config();
    sc(&mut c).privileged = true;
    c
}

#[test]
fn default_capabilities_are_containerds_fourteen() {
    let env = Env::new();
    let c = caps(&env, &config());
    let mut expected: Vec<String> = basalt_cri_oci::security::DEFAULT_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 14);
    assert_eq!(names(c.bounding()), expected);
    assert_eq!(names(c.effective()), expected);
    assert_eq!(names(c.permitted()), expected);
    assert_eq!(names(c.inheritable()), Vec::<String>::new());
    assert_eq!(names(c.ambient()), Vec::<String>::new());
}

#[test]
fn add_and_drop_capabilities() {
    let env = Env::new();
    let c = caps(
        &env,
        &with_caps(&["SYS_ADMIN", "cap_net_admin"], &["CHOWN", "CAP_KILL"], &[]),
    );
    let b = names(c.bounding());
    assert!(b.contains(&"CAP_SYS_ADMIN".into()) && b.contains(&"CAP_NET_ADMIN".into()));
    assert!(!b.contains(&"CAP_CHOWN".into()) && !b.contains(&"CAP_KILL".into()));
    assert_eq!(b.len(), 14);

    // ALL first, then the named ones: everything but CHOWN; nothing but NET_BIND_SERVICE.
    let all_but = names(caps(&env, &with_caps(&["ALL"], &["CHOWN"], &[])).bounding());
    assert!(all_but.contains(&"CAP_SYS_ADMIN".into()) && !all_but.contains(&"CAP_CHOWN".into()));
    assert!(all_but.len() > 30);
    let only = names(caps(&env, &with_caps(&["NET_BIND_SERVICE"], &["ALL"], &[])).bounding());
    assert_eq!(only, ["CAP_NET_BIND_SERVICE"]);
}

#[test]
fn ambient_capabilities_go_into_every_set() {
    let env = Env::new();
    let c = caps(&env, &with_caps(&[], &[], &["NET_ADMIN"]));
    for set in [
        c.bounding(),
        c.effective(),
        c.permitted(),
        c.inheritable(),
        c.ambient(),
    ] {
        assert!(names(set).contains(&"CAP_NET_ADMIN".into()));
    }
    assert_eq!(names(c.ambient()), ["CAP_NET_ADMIN"]);
}

#[test]
fn unknown_capability_names_the_list_entry() {
    let env = Env::new();
    let e = env.err(&with_caps(&["CHOWN", "CAP_FLY"], &[], &[]));
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "linux.security_context.capabilities.add_capabilities[1]",
        "\"CAP_FLY\"",
    );
    let e = env.err(&with_caps(&[], &["NOPE"], &[]));
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "drop_capabilities[0]",
        "\"NOPE\"",
    );
}

#[test]
fn privileged_gets_everything_unrestricted() {
    let mut env = privileged_env();
    env.opts.cap_last_cap = Some(40);
    let mut c = privileged();
    sc(&mut c).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    sc(&mut c).no_new_privs = true;
    let spec = env.spec(&c);
    let p = process(&spec);
    assert_eq!(
        names(p.capabilities().as_ref().unwrap().bounding()).len(),
        41
    );
    assert_eq!(p.no_new_privileges(), Some(false));
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
    assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
    // cap_last_cap bounds "all" to what the kernel knows.
    env.opts.cap_last_cap = Some(37);
    assert_eq!(
        names(
            process(&env.spec(&c))
                .capabilities()
                .as_ref()
                .unwrap()
                .bounding()
        )
        .len(),
        38
    );
    // …and so does what the node itself holds: a node without CAP_SYS_MODULE (16) cannot hand it on.
    env.opts.host_capabilities = Some(!(1 << 16));
    let caps = names(
        process(&env.spec(&c))
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding(),
    );
    assert_eq!(caps.len(), 37, "{caps:?}");
    assert!(!caps.iter().any(|c| c.contains("SYS_MODULE")), "{caps:?}");
}

#[test]
fn privileged_container_needs_a_privileged_sandbox() {
    let env = Env::new();
    let e = env.err(&privileged());
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "linux.security_context.privileged",
        "true",
    );
    assert!(e.message.contains("sb-1"), "{}", e.message);
}

fn seccomp(profile_type: ProfileType, r: &str) -> ContainerConfig {
    let mut c = config();
    sc(&mut c).seccomp = Some(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: r.into(),
    });
    c
}

fn seccomp_of(env: &Env, c: &ContainerConfig) -> Option<oci_spec::runtime::LinuxSeccomp> {
    env.spec(c).linux().as_ref().unwrap().seccomp().clone()
}

#[test]
fn seccomp_runtime_default_unconfined_and_unset() {
    let mut env = Env::new();
    let default = basalt_seccomp::runtime_default();
    assert_eq!(
        seccomp_of(&env, &seccomp(ProfileType::RuntimeDefault, "")),
        Some(default.clone())
    );
    assert_eq!(
        seccomp_of(&env, &seccomp(ProfileType::Unconfined, "")),
        None
    );
    // Unset is unconfined as the CRI says, unless the node defaults to RuntimeDefault.
    assert_eq!(seccomp_of(&env, &config()), None);
    env.opts.seccomp_default = true;
    assert_eq!(seccomp_of(&env, &config()), Some(default.clone()));
    // The deprecated string field of old kubelets.
    env.opts.seccomp_default = false;
    let mut c = config();
    #[allow(deprecated)]
    {
        sc(&mut c).seccomp_profile_path = "runtime/default".into();
    }
    assert_eq!(seccomp_of(&env, &c), Some(default));
}

const PROFILE: &str = r#"{
    "defaultAction": "SCMP_ACT_ERRNO",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
    "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]
}"#;

#[test]
fn seccomp_localhost_reads_the_nodes_profile() {
    let env = Env::new();
    std::fs::create_dir_all(&env.opts.seccomp_profile_root).unwrap();
    let file = env.opts.seccomp_profile_root.join("audit.json");
    std::fs::write(&file, PROFILE).unwrap();
    let expected: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(PROFILE).unwrap();
    let abs = seccomp(ProfileType::Localhost, file.to_str().unwrap());
    assert_eq!(seccomp_of(&env, &abs), Some(expected.clone()));
    assert_eq!(
        seccomp_of(&env, &seccomp(ProfileType::Localhost, "audit.json")),
        Some(expected)
    );

    let e = env.err(&seccomp(ProfileType::Localhost, "/no/such/profile.json"));
    assert_err(
        &e,
        ErrorKind::NotFound,
        "linux.security_context.seccomp.localhost_ref",
        "\"/no/such/profile.json\"",
    );
    std::fs::write(&file, "{not json").unwrap();
    let e = env.err(&seccomp(ProfileType::Localhost, "audit.json"));
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "seccomp.localhost_ref",
        "\"audit.json\"",
    );
    // Well-formed JSON our compiler refuses fails here, not at start.
    std::fs::write(&file, r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["no_such_call"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap();
    let e = env.err(&seccomp(ProfileType::Localhost, "audit.json"));
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "seccomp.localhost_ref",
        "\"audit.json\"",
    );
    let e = env.err(&seccomp(ProfileType::Localhost, "../etc/shadow"));
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "seccomp.localhost_ref",
        "\"../etc/shadow\"",
    );
}

fn apparmor(profile_type: ProfileType, r: &str) -> ContainerConfig {
    let mut c = config();
    sc(&mut c).apparmor = Some(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: r.into(),
    });
    c
}

#[test]
fn apparmor_profiles() {
    let mut env = Env::new();
    let profile = |env: &Env, c: &ContainerConfig| process(&env.spec(c)).apparmor_profile().clone();
    // No AppArmor on the node: defaults are no profile, a named one cannot be honoured.
    assert_eq!(
        profile(&env, &apparmor(ProfileType::RuntimeDefault, "")),
        None
    );
    let e = env.err(&apparmor(ProfileType::Localhost, "k8s-nginx"));
    assert_err(
        &e,
        ErrorKind::FailedPrecondition,
        "linux.security_context.apparmor.localhost_ref",
        "\"k8s-nginx\"",
    );

    env.opts.apparmor_default_profile = Some("basalt-default".into());
    assert_eq!(
        profile(&env, &apparmor(ProfileType::RuntimeDefault, "")),
        Some("basalt-default".into())
    );
    assert_eq!(profile(&env, &config()), Some("basalt-default".into()));
    assert_eq!(profile(&env, &apparmor(ProfileType::Unconfined, "")), None);
    assert_eq!(
        profile(&env, &apparmor(ProfileType::Localhost, "k8s-nginx")),
        Some("k8s-nginx".into())
    );
    let mut c = config();
    #[allow(deprecated)]
    {
        sc(&mut c).apparmor_profile = "localhost/k8s-old".into();
    }
    assert_eq!(profile(&env, &c), Some("k8s-old".into()));
}

#[test]
fn no_new_privs_follows_the_request() {
    let env = Env::new();
    let mut c = config();
    assert_eq!(process(&env.spec(&c)).no_new_privileges(), Some(false));
    sc(&mut c).no_new_privs = true;
    assert_eq!(process(&env.spec(&c)).no_new_privileges(), Some(true));
}

#[test]
fn masked_and_readonly_paths() {
    let env = Env::new();
    let spec = env.spec(&config());
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.masked_paths().clone().unwrap(), DEFAULT_MASKED_PATHS);
    assert_eq!(
        linux.readonly_paths().clone().unwrap(),
        DEFAULT_READONLY_PATHS
    );
    let mut c = config();
    sc(&mut c).masked_paths = vec!["/proc/kcore".into()];
    sc(&mut c).readonly_paths = vec!["/proc/sys".into()];
    let spec = env.spec(&c);
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.masked_paths().clone().unwrap(), ["/proc/kcore"]);
    assert_eq!(linux.readonly_paths().clone().unwrap(), ["/proc/sys"]);
}

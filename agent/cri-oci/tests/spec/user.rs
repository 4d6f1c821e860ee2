//! uid, gid and supplemental groups from the security context or the image's User, resolved in the rootfs.

use basalt_cri_oci::{Container, ErrorKind, Sandbox};
use basalt_proto::cri::{Int64Value, LinuxContainerUser, SupplementalGroupsPolicy};

use crate::fixture::{assert_err, config, process, sc, Env};

/// (uid, gid, additionalGids in the spec), checked against what is reported as the effective user.
fn ids(env: &Env, cfg: &basalt_proto::cri::ContainerConfig) -> (u32, u32, Vec<u32>) {
    let g = env.run(cfg).unwrap();
    let u = process(&g.spec).user();
    let groups = u.additional_gids().clone().unwrap();
    assert_eq!(
        (g.user.uid, g.user.gid, &g.user.supplemental_groups),
        (u.uid(), u.gid(), &groups)
    );
    (u.uid(), u.gid(), groups)
}

fn image_user(user: &str) -> Result<(u32, u32, Vec<u32>), basalt_cri_oci::Error> {
    let mut env = Env::new();
    env.image.config.user = user.into();
    env.run(&config())
        .map(|g| (g.user.uid, g.user.gid, g.user.supplemental_groups))
}

#[test]
fn image_user_forms() {
    // Root is a member of wheel (10) in the image's /etc/group; Merge adds it.
    assert_eq!(image_user("").unwrap(), (0, 0, vec![0, 10]));
    assert_eq!(
        image_user("alice").unwrap(),
        (1000, 1000, vec![1000, 10, 50])
    );
    assert_eq!(
        image_user("1001").unwrap(),
        (1001, 1001, vec![1001, 50, 63])
    );
    assert_eq!(image_user("alice:staff").unwrap(), (1000, 50, vec![50, 10]));
    assert_eq!(image_user("1000:63").unwrap(), (1000, 63, vec![63, 10, 50]));
    // A uid the image does not know: gid 0 and no image groups, as Docker does.
    assert_eq!(image_user("4242").unwrap(), (4242, 0, vec![0]));
    assert_eq!(image_user("4242:4343").unwrap(), (4242, 4343, vec![4343]));
}

#[test]
fn unknown_image_user_or_group_names_the_field() {
    let e = image_user("carol").unwrap_err();
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "image config User",
        "\"carol\"",
    );
    let e = image_user("alice:nogroup").unwrap_err();
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "image config User",
        "\"alice:nogroup\"",
    );
    assert!(e.message.contains("/etc/group"), "{}", e.message);
}

#[test]
fn run_as_user_and_group_override_the_image() {
    let mut env = Env::new();
    env.image.config.user = "alice".into();
    let mut c = config();
    sc(&mut c).run_as_user = Some(Int64Value { value: 1001 });
    assert_eq!(ids(&env, &c), (1001, 1001, vec![1001, 50, 63]));
    sc(&mut c).run_as_group = Some(Int64Value { value: 2000 });
    assert_eq!(ids(&env, &c), (1001, 2000, vec![2000, 50, 63]));
    sc(&mut c).run_as_user = Some(Int64Value { value: 0 });
    sc(&mut c).run_as_group = None;
    assert_eq!(ids(&env, &c), (0, 0, vec![0, 10]));
}

#[test]
fn run_as_username_is_looked_up_in_the_image() {
    let env = Env::new();
    let mut c = config();
    sc(&mut c).run_as_username = "bob".into();
    assert_eq!(ids(&env, &c), (1001, 1001, vec![1001, 50, 63]));
    sc(&mut c).run_as_username = "mallory".into();
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "linux.security_context.run_as_username",
        "\"mallory\"",
    );
}

#[test]
fn contradictory_or_out_of_range_ids_are_rejected() {
    let env = Env::new();
    let mut c = config();
    sc(&mut c).run_as_group = Some(Int64Value { value: 5 });
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "linux.security_context.run_as_group",
        "5",
    );
    let mut c = config();
    sc(&mut c).run_as_user = Some(Int64Value { value: 1 });
    sc(&mut c).run_as_username = "bob".into();
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "run_as_username",
        "\"bob\"",
    );
    let mut c = config();
    sc(&mut c).run_as_user = Some(Int64Value { value: -1 });
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "linux.security_context.run_as_user",
        "-1",
    );
    let mut c = config();
    sc(&mut c).supplemental_groups = vec![7, 1 << 40];
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "linux.security_context.supplemental_groups[1]",
        "1099511627776",
    );
}

#[test]
fn supplemental_groups_policy_merge_and_strict() {
    let env = Env::new();
    let mut c = config();
    sc(&mut c).run_as_user = Some(Int64Value { value: 1000 });
    sc(&mut c).supplemental_groups = vec![5000, 50];
    // Merge (the default): the image's groups of alice, then the pod's, without duplicates.
    assert_eq!(ids(&env, &c), (1000, 1000, vec![1000, 10, 50, 5000]));
    sc(&mut c).supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    assert_eq!(ids(&env, &c), (1000, 1000, vec![1000, 5000, 50]));
    let g = env.run(&c).unwrap();
    assert_eq!(
        LinuxContainerUser::from(&g.user),
        LinuxContainerUser {
            uid: 1000,
            gid: 1000,
            supplemental_groups: vec![1000, 5000, 50]
        }
    );
    sc(&mut c).supplemental_groups_policy = 7;
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "supplemental_groups_policy",
        "7",
    );
}

#[test]
fn passwd_symlinked_out_of_the_rootfs_is_read_inside_it() {
    let env = Env::new();
    // A host-side file with a user the image does not have.
    std::fs::write(env.path("evil-passwd"), "evil:x:666:666::/:/bin/sh\n").unwrap();
    let passwd = env.rootfs.join("etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    std::os::unix::fs::symlink("../../evil-passwd", &passwd).unwrap();
    let mut c = config();
    sc(&mut c).run_as_username = "evil".into();
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "run_as_username",
        "\"evil\"",
    );
    // Absolute symlinks are resolved against the rootfs too.
    std::fs::remove_file(&passwd).unwrap();
    std::os::unix::fs::symlink(env.path("evil-passwd"), &passwd).unwrap();
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "run_as_username",
        "\"evil\"",
    );
    // A symlink that stays inside the rootfs is followed.
    std::fs::write(
        env.rootfs.join("etc/passwd.real"),
        "evil:x:666:666::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::remove_file(&passwd).unwrap();
    std::os::unix::fs::symlink("/etc/passwd.real", &passwd).unwrap();
    assert_eq!(env.run(&c).unwrap().user.uid, 666);
}

#[test]
fn image_without_passwd_runs_numeric_users() {
    let mut env = Env::new();
    std::fs::remove_dir_all(env.rootfs.join("etc")).unwrap();
    env.image.config.user = "1234:5678".into();
    assert_eq!(ids(&env, &config()), (1234, 5678, vec![5678]));
}

#[test]
fn run_as_non_root_rejects_a_root_user_like_the_kubelet() {
    let mut env = Env::new();
    let c = config();
    let mut ctr = Container::new("ctr-1", &c);
    ctr.run_as_non_root = true;
    let sb = Sandbox::new("sb-1", &env.pod);
    let e = env.run_with(&ctr, &sb).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert_eq!(
        e.message,
        "container has runAsNonRoot and image will run as root (pod: \"web_default(uid-1)\", container: app)"
    );
    // A user name resolving to uid 0 is root too.
    env.image.config.user = "root".into();
    let sb = Sandbox::new("sb-1", &env.pod);
    assert_eq!(
        env.run_with(&ctr, &sb).unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    env.image.config.user = "alice".into();
    let sb = Sandbox::new("sb-1", &env.pod);
    assert_eq!(env.run_with(&ctr, &sb).unwrap().user.uid, 1000);
}

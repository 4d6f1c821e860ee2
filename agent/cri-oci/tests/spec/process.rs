//! Command line, environment, working directory, terminal, log path and annotations.

use basalt_cri_oci::ErrorKind;
use basalt_proto::cri::KeyValue;

use crate::fixture::{assert_err, config, process, Env};

fn args(env: &Env, command: &[&str], args: &[&str]) -> Vec<String> {
    let mut c = config();
    c.command = command.iter().map(|s| s.to_string()).collect();
    c.args = args.iter().map(|s| s.to_string()).collect();
    process(&env.spec(&c)).args().clone().unwrap()
}

#[test]
fn command_and_args_follow_cri_semantics() {
    let env = Env::new();
    assert_eq!(args(&env, &[], &[]), ["/entry", "image-cmd"]);
    assert_eq!(args(&env, &[], &["a", "b"]), ["/entry", "a", "b"]);
    // Only command: the image's cmd belonged to the replaced entrypoint and is dropped.
    assert_eq!(args(&env, &["/bin/sh"], &[]), ["/bin/sh"]);
    assert_eq!(
        args(&env, &["/bin/sh"], &["-c", "true"]),
        ["/bin/sh", "-c", "true"]
    );
}

#[test]
fn no_command_anywhere_is_rejected() {
    let mut env = Env::new();
    env.image.config.entrypoint.clear();
    env.image.config.cmd.clear();
    let e = env.err(&config());
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "command",
        "no command given",
    );
}

#[test]
fn env_merges_image_then_pod_and_adds_hostname() {
    let env = Env::new();
    let mut c = config();
    c.envs = vec![
        KeyValue {
            key: "SHARED".into(),
            value: "pod".into(),
        },
        KeyValue {
            key: "POD_ONLY".into(),
            value: "a=b".into(),
        },
    ];
    let e = process(&env.spec(&c)).env().clone().unwrap();
    assert_eq!(
        e,
        [
            "HOSTNAME=web-0",
            "PATH=/image/bin:/bin",
            "IMAGE_ONLY=1",
            "SHARED=pod",
            "POD_ONLY=a=b"
        ]
    );
}

#[test]
fn env_gets_a_default_path_and_the_node_hostname_on_host_network() {
    let mut env = Env::new();
    env.image.config.env.clear();
    env.pod.hostname.clear();
    let e = process(&env.spec(&config())).env().clone().unwrap();
    assert_eq!(
        e,
        [
            "HOSTNAME=node-1",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
}

#[test]
fn env_with_a_bad_key_names_the_entry() {
    let env = Env::new();
    let mut c = config();
    c.envs = vec![
        KeyValue {
            key: "OK".into(),
            value: "1".into(),
        },
        KeyValue {
            key: "A=B".into(),
            value: "1".into(),
        },
    ];
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "envs[1].key",
        "\"A=B\"",
    );
}

#[test]
fn working_dir_from_config_then_image_then_root() {
    let mut env = Env::new();
    let mut c = config();
    c.working_dir = "/data".into();
    assert_eq!(process(&env.spec(&c)).cwd().to_str(), Some("/data"));
    assert_eq!(process(&env.spec(&config())).cwd().to_str(), Some("/srv"));
    env.image.config.working_dir.clear();
    assert_eq!(process(&env.spec(&config())).cwd().to_str(), Some("/"));
    c.working_dir = "data".into();
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "working_dir",
        "\"data\"",
    );
}

#[test]
fn tty_sets_the_terminal() {
    let env = Env::new();
    let mut c = config();
    assert_eq!(process(&env.spec(&c)).terminal(), Some(false));
    c.tty = true;
    assert_eq!(process(&env.spec(&c)).terminal(), Some(true));
}

#[test]
fn log_path_is_joined_onto_the_sandbox_log_directory() {
    let env = Env::new();
    let mut c = config();
    assert_eq!(env.run(&c).unwrap().log_path, None);
    c.log_path = "app/0.log".into();
    assert_eq!(
        env.run(&c).unwrap().log_path.unwrap().to_str(),
        Some("/var/log/pods/default_web_uid-1/app/0.log")
    );
    c.log_path = "../../etc/passwd".into();
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "log_path",
        "\"../../etc/passwd\"",
    );
}

#[test]
fn metadata_name_is_required_and_annotations_name_the_pod() {
    let env = Env::new();
    let mut c = config();
    let spec = env.spec(&c);
    let a = spec.annotations().as_ref().unwrap();
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["io.kubernetes.cri.container-name"], "app");
    assert_eq!(a["io.kubernetes.cri.sandbox-id"], "sb-1");
    assert_eq!(a["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(
        a["io.kubernetes.cri.image-name"],
        "docker.io/library/busybox:latest"
    );
    c.metadata = None;
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "metadata.name",
        "\"\"",
    );
}

#[test]
fn the_spec_passes_the_runtime_parser_and_validator() {
    let env = Env::new();
    let spec = env.spec(&config());
    let json = serde_json::to_vec(&spec).unwrap();
    let parsed = basalt_runtime::spec::parse(&json).unwrap();
    assert_eq!(parsed, spec);
    basalt_runtime::spec::validate(&parsed, env.dir.path()).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().path(), &env.rootfs);
}

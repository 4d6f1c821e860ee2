//! The `basalt` binary's surface: subcommands, argv[0] personalities, config precedence.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_basalt");

fn run(argv0: &Path, args: &[&str]) -> Output {
    Command::new(argv0)
        .args(args)
        .env_remove("BASALT_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand() {
    let out = run(Path::new(BIN), &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for sub in [
        "runtime",
        "agent",
        "server",
        "image",
        "node-image",
        "init",
        "cni",
        "csi",
        "version",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "`{sub}` missing from --help:\n{help}"
        );
    }
}

#[test]
fn argv0_selects_the_personality() {
    let dir = tempfile::tempdir().unwrap();
    let link = |name: &str| {
        let l = dir.path().join(name);
        if !l.exists() {
            symlink(BIN, &l).unwrap();
        }
        l
    };
    // As a CNI plugin it speaks CNI: VERSION from the environment, JSON on stdout.
    for name in ["bridge", "host-local"] {
        let out = Command::new(link(name))
            .env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&"1.1.0".into()),
            "{name}: {v}"
        );
    }
    // As basalt-runc it is the runc-compatible CLI.
    let out = run(&link("basalt-runc"), &["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("basalt-runc "), "{}", stdout(&out));
    let out = run(&link("basalt-runc"), &["--help"]);
    for sub in [
        "create", "start", "run", "exec", "kill", "delete", "state", "list", "pause", "resume",
        "ps",
    ] {
        assert!(
            stdout(&out).contains(&format!("  {sub} ")),
            "basalt-runc --help lacks {sub}"
        );
    }
    // `basalt init` is PID 1 of the node image, and refuses to run as anything else.
    let out = run(Path::new(BIN), &["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only runs as PID 1"),
        "{}",
        stderr(&out)
    );
    // Named init it is PID 1 only as PID 1: the image's /init started again (the agent starts its pod
    // monitors from /proc/self/exe) is the subcommand CLI.
    let out = run(&link("init"), &["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("basalt "), "{}", stdout(&out));
    let out = run(&link("init"), &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("Usage: init"), "{}", stderr(&out));
    // Any other name is the subcommand CLI.
    let out = run(&link("basalt-copy"), &["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("basalt "));
}

#[test]
fn a_bad_server_flag_is_a_usage_error_naming_it() {
    let out = run(Path::new(BIN), &["server", "--no-such-flag"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn csi_refuses_bad_settings_naming_the_key_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "csi:\n  max-volumes-per-node: -3\n").unwrap();
    let data = dir.path().join("data");
    for (args, want) in [
        (vec!["csi", "--csi-address", "tcp://nowhere"], "csi-address"),
        (vec!["csi", "--base-dir", "relative/dir"], "base-dir"),
        (
            vec!["--config", cfg.to_str().unwrap(), "csi"],
            "max-volumes-per-node",
        ),
    ] {
        let mut all = vec!["--data-dir", data.to_str().unwrap()];
        all.extend(args.iter().copied());
        let out = run(Path::new(BIN), &all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!data.exists(), "a refused start made {}", data.display());
}

#[test]
fn flags_override_the_config_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "data-dir: /srv/basalt\nrun-dir: /run/from-file\nlog-format: json\n",
    )
    .unwrap();
    let out = run(
        Path::new(BIN),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--run-dir",
            "/tmp/from-flag",
            "config",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let effective: serde_yaml::Value = serde_yaml::from_str(&stdout(&out)).unwrap();
    assert_eq!(effective["data-dir"].as_str(), Some("/srv/basalt"));
    assert_eq!(effective["run-dir"].as_str(), Some("/tmp/from-flag"));
    assert_eq!(effective["log-format"].as_str(), Some("json"));
    assert_eq!(effective["log-level"].as_str(), Some("info"));
}

#[test]
fn every_config_key_has_a_flag_that_overrides_it() {
    let values = |key: &str| match key {
        "data-dir" => "/d/x",
        "run-dir" => "/r/x",
        "log-level" => "trace",
        "log-format" => "json",
        "node-name" => "node-7",
        other => {
            panic!("config key `{other}` has no test value: add one here and a flag in src/cli.rs")
        }
    };
    for key in basalt_config::Config::keys() {
        let value = values(&key);
        let out = run(Path::new(BIN), &[&format!("--{key}"), value, "config"]);
        assert!(out.status.success(), "--{key}: {}", stderr(&out));
        let effective: serde_yaml::Value = serde_yaml::from_str(&stdout(&out)).unwrap();
        assert_eq!(effective[key.as_str()].as_str(), Some(value), "--{key}");
    }
}

#[test]
fn bad_config_names_the_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "data-dir: var/lib/basalt\n").unwrap();
    let out = run(
        Path::new(BIN),
        &["--config", cfg.to_str().unwrap(), "version"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("data-dir") && err.contains("var/lib/basalt"),
        "{err}"
    );

    let out = run(Path::new(BIN), &["--log-format", "xml", "version"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("xml"), "{}", stderr(&out));
}

#[test]
fn json_logs_are_json() {
    let out = run(
        Path::new(BIN),
        &[
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--data-dir",
            "/tmp/basalt-log-test",
            "config",
        ],
    );
    assert!(out.status.success());
    let line = stderr(&out)
        .lines()
        .find(|l| l.contains("configuration loaded"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no debug log line in {}", stderr(&out)));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "DEBUG");
    assert_eq!(v["fields"]["data_dir"], "/tmp/basalt-log-test");
}

#[test]
fn the_binary_is_static_and_holds_no_libseccomp() {
    // No dynamic section: nothing for a loader to find on a node image, and no libseccomp.so to load.
    let out = Command::new("readelf")
        .args(["-d", BIN])
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success(), "{}", stderr(&out));
    let dynamic = stdout(&out);
    assert!(dynamic.contains("no dynamic section"), "{dynamic}");
    // A static binary could still carry libseccomp's archive: its entry points would be in the symbol table,
    // next to our own compiler's.
    let out = Command::new("readelf")
        .args(["-s", "--wide", BIN])
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success(), "{}", stderr(&out));
    let symbols = stdout(&out);
    let named = |n: &str| {
        symbols
            .lines()
            .any(|l| l.split_whitespace().last() == Some(n))
    };
    assert!(
        symbols.contains("basalt_seccomp"),
        "no symbol table to check (stripped?)"
    );
    for libseccomp in ["seccomp_init", "seccomp_rule_add", "seccomp_load"] {
        assert!(!named(libseccomp), "the binary holds {libseccomp}");
    }
}

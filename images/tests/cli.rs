//! `basalt image …` end to end, in-process: pull (with `--insecure-registry` and `--registry-config`), ls,
//! inspect, export, rm, import, prune, with `--output json`.

mod common;

use basalt_images::cli::{execute, ImageArgs};
use basalt_testsupport::{fixtures, Registry, RegistryMode};
use clap::Parser;
use common::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    image: ImageArgs,
}

fn run(config: &basalt_config::Config, args: &[&str]) -> Result<String, String> {
    let cli = Cli::try_parse_from(std::iter::once("image").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    execute(cli.image, config, &mut out).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out).unwrap())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn the_command_line_is_well_formed() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    let e = run(&Default::default(), &["pull"]).unwrap_err();
    assert!(e.contains("<IMAGE>"), "{e}");
}

#[test]
fn image_commands_end_to_end() {
    let fx = fixtures();
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    reg.push_all(&fx.all).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = basalt_config::Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    let host = reg.host();
    let layered = format!("{host}/basalt/layered:latest");

    // Plain HTTP needs --insecure-registry: without it, HTTPS to a plain server fails.
    let e = run(&config, &["pull", &layered]).unwrap_err();
    assert!(e.contains(&host), "{e}");
    let out = run(
        &config,
        &[
            "pull",
            "--insecure-registry",
            &host,
            "--output",
            "json",
            &layered,
        ],
    )
    .unwrap();
    let rec = json(&out);
    assert_eq!(rec["name"], layered.as_str());
    assert_eq!(
        rec["config"],
        fx.get(fixtures::LAYERED).image.config.digest.as_str()
    );
    assert!(dir.path().join("data/images/blobs/sha256").is_dir());

    // Through a mirror from the registries file, by the short Docker Hub name.
    let regfile = dir.path().join("registries.yaml");
    std::fs::write(
        &regfile,
        format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{host}\"]\n"),
    )
    .unwrap();
    // Never fall back to Docker Hub from a test.
    let mirror = [
        "pull",
        "--disable-default-endpoint",
        "--registry-config",
        regfile.to_str().unwrap(),
    ];
    run(&config, &[&mirror[..], &["busybox"]].concat()).unwrap();
    let e = run(&config, &[&mirror[..], &["busybox:missing"]].concat()).unwrap_err();
    assert!(
        e.contains("404") && !e.contains("registry-1.docker.io"),
        "{e}"
    );

    let ls = json(&run(&config, &["ls", "--output", "json"]).unwrap());
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [layered.as_str(), "docker.io/library/busybox:latest"]
    );
    let table = run(&config, &["ls"]).unwrap();
    assert!(
        table.starts_with("IMAGE") && table.contains("docker.io/library/busybox:latest"),
        "{table}"
    );

    let inspect = json(&run(&config, &["inspect", "busybox"]).unwrap());
    assert_eq!(inspect["config"]["config"]["Cmd"][0], "sh");

    let archive = dir.path().join("busybox.tar");
    run(&config, &["export", archive.to_str().unwrap(), "busybox"]).unwrap();
    run(&config, &["rm", "busybox"]).unwrap();
    let e = run(&config, &["inspect", "busybox"]).unwrap_err();
    assert!(
        e.contains("docker.io/library/busybox:latest") && e.contains("not found"),
        "{e}"
    );
    let imported = json(
        &run(
            &config,
            &[
                "import",
                "--pin",
                "--output",
                "json",
                archive.to_str().unwrap(),
            ],
        )
        .unwrap(),
    );
    assert_eq!(imported[0]["pinned"], true);

    // Prune removes the unpinned image and its content, keeps the pinned one.
    let pruned = json(&run(&config, &["prune", "--output", "json"]).unwrap());
    assert_eq!(pruned["images"], serde_json::json!([layered]));
    assert!(!pruned["content"]["blobs"].as_array().unwrap().is_empty());
    let ls = json(&run(&config, &["ls", "--output", "json"]).unwrap());
    assert_eq!(ls.as_array().unwrap().len(), 1);
    assert_eq!(ls[0]["name"], "docker.io/library/busybox:latest");

    let e = run(&config, &["pull", "Not/A/Valid:ref:"]).unwrap_err();
    assert!(e.contains("Not/A/Valid:ref:"), "{e}");
}

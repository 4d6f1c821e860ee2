//! `basalt image …`: pull, import, export, ls, inspect, rm, prune.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Subcommand, ValueEnum};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::hosts::{Hosts, RegistriesConfig};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::Store;

/// Arguments of `basalt image`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Registries file (k3s registries.yaml shape: mirrors, rewrites, auth, TLS)
    #[arg(long, value_name = "FILE", global = true)]
    pub registry_config: Option<PathBuf>,
    /// Reach this registry over plain HTTP (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST:PORT", global = true)]
    pub insecure_registry: Vec<String>,
    /// Use only the mirrors of a registry, never the registry itself (for air-gapped nodes)
    #[arg(long, global = true)]
    pub disable_default_endpoint: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from its registry (or a configured mirror)
    Pull { image: String },
    /// Import `docker save` or OCI archives (optionally .gz/.zst)
    Import {
        #[arg(required = true)]
        archives: Vec<PathBuf>,
        /// Keep the imported images through `prune`
        #[arg(long)]
        pin: bool,
        /// Repository for OCI entries named only by a tag (`org.opencontainers.image.ref.name: latest`):
        /// they become BASE:TAG, as with `ctr import --base-name`
        #[arg(long)]
        base_name: Option<String>,
        /// Name the OCI layout's whole index as one image, as with `ctr import --index-name`
        #[arg(long)]
        index_name: Option<String>,
    },
    /// Write images to one OCI archive
    Export {
        /// Archive to write
        file: PathBuf,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// List images
    Ls,
    /// Show an image's record, manifest and config
    Inspect { image: String },
    /// Remove image names (content goes at the next prune)
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove unpinned images no container uses, then unreferenced blobs and snapshots
    Prune {
        /// Only collect unreferenced content; keep every image
        #[arg(long)]
        content_only: bool,
    },
}

pub fn run(args: ImageArgs, config: &basalt_config::Config) -> ExitCode {
    let stdout = std::io::stdout();
    match execute(args, config, &mut stdout.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt image: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The store of a node: `<data-dir>/images`.
pub fn store_for(config: &basalt_config::Config) -> Result<Store> {
    Store::open(config.data_dir.join("images"))
}

fn write_out(out: &mut dyn Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes()).map_err(|e| Error::Io {
        path: "stdout".into(),
        source: e,
    })
}

pub fn execute(args: ImageArgs, config: &basalt_config::Config, out: &mut dyn Write) -> Result<()> {
    let store = store_for(config)?;
    let json = args.output == Output::Json;
    match args.command {
        ImageCommand::Pull { image } => {
            let reference: Reference = image.parse()?;
            let mut hosts = Hosts {
                insecure: args
                    .insecure_registry
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>(),
                disable_default_endpoint: args.disable_default_endpoint,
                ..Default::default()
            };
            if let Some(p) = &args.registry_config {
                hosts.config = RegistriesConfig::load(p)?;
            }
            let client = Client::new(hosts);
            let bar = ProgressBar::new(&reference.to_string());
            let rec = crate::pull::pull(&store, &client, &reference, &|p| bar.update(p))?;
            bar.finish();
            if json {
                write_out(
                    out,
                    &format!("{}\n", serde_json::to_string_pretty(&rec).expect("json")),
                )
            } else {
                write_out(out, &format!("{} {}\n", rec.name, rec.digest))
            }
        }
        ImageCommand::Import {
            archives,
            pin,
            base_name,
            index_name,
        } => {
            let opts = crate::archive::ImportOptions {
                pinned: pin,
                base_name,
                index_name,
            };
            let mut all = Vec::new();
            for a in &archives {
                all.extend(crate::archive::import_archive_with(&store, a, &opts)?);
            }
            if json {
                write_out(
                    out,
                    &format!("{}\n", serde_json::to_string_pretty(&all).expect("json")),
                )
            } else {
                for r in &all {
                    write_out(out, &format!("{} {}\n", r.name, r.digest))?;
                }
                Ok(())
            }
        }
        ImageCommand::Export { file, images } => {
            let names = images
                .iter()
                .map(|i| store.find_image(i).map(|r| r.name))
                .collect::<Result<Vec<_>>>()?;
            crate::archive::export(&store, &names, &file)
        }
        ImageCommand::Ls => {
            let images = store.images()?;
            if json {
                return write_out(
                    out,
                    &format!("{}\n", serde_json::to_string_pretty(&images).expect("json")),
                );
            }
            let mut s = format!("{:<60} {:<19} {:>10} PINNED\n", "IMAGE", "DIGEST", "SIZE");
            for i in &images {
                s.push_str(&format!(
                    "{:<60} {:<19} {:>10} {}\n",
                    i.name,
                    format!("sha256:{}", &i.digest.hex()[..12]),
                    human(i.size),
                    if i.pinned { "yes" } else { "no" }
                ));
            }
            write_out(out, &s)
        }
        ImageCommand::Inspect { image } => {
            let rec = store.find_image(&image)?;
            let parse = |d: &Digest| -> Result<serde_json::Value> {
                serde_json::from_slice(&store.read_blob(d)?).map_err(|e| Error::Manifest {
                    digest: d.to_string(),
                    reason: e.to_string(),
                })
            };
            let v = serde_json::json!({
                "record": rec,
                "manifest": parse(&rec.manifest)?,
                "config": parse(&rec.config)?,
            });
            write_out(
                out,
                &format!("{}\n", serde_json::to_string_pretty(&v).expect("json")),
            )
        }
        ImageCommand::Rm { images } => {
            for i in &images {
                let name = store.find_image(i)?.name;
                store.remove_image(&name)?;
                if !json {
                    write_out(out, &format!("removed {name}\n"))?;
                }
            }
            Ok(())
        }
        ImageCommand::Prune { content_only } => {
            let mut removed = Vec::new();
            if !content_only {
                let used: BTreeSet<Digest> = store
                    .container_roots()?
                    .into_iter()
                    .flat_map(|r| r.chain)
                    .collect();
                for i in store.images()? {
                    let chain = crate::snapshot::chain_ids(&i.diff_ids);
                    if !i.pinned && !chain.iter().any(|c| used.contains(c)) {
                        store.remove_image(&i.name)?;
                        removed.push(i.name);
                    }
                }
            }
            let report = store.gc()?;
            if json {
                let v = serde_json::json!({"images": removed, "content": report});
                write_out(
                    out,
                    &format!("{}\n", serde_json::to_string_pretty(&v).expect("json")),
                )
            } else {
                for r in &removed {
                    write_out(out, &format!("removed {r}\n"))?;
                }
                write_out(
                    out,
                    &format!(
                        "removed {} blobs ({}) and {} snapshots\n",
                        report.blobs.len(),
                        human(report.bytes),
                        report.snapshots.len()
                    ),
                )
            }
        }
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `NAME [#####     ] 1.0 MiB / 2.0 MiB (3 layers)`
fn render(name: &str, done: u64, total: u64, layers: usize) -> String {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(0) as usize;
    format!(
        "{name} [{}{}] {} / {} ({layers} layers)",
        "#".repeat(filled),
        " ".repeat(WIDTH as usize - filled),
        human(done),
        human(total),
    )
}

/// One line on stderr, redrawn as bytes arrive: total done/total over all layers. Silent when stderr is not a
/// terminal (scripts read `--output json` from stdout).
#[derive(Default)]
struct BarState {
    /// (done, total) per layer.
    layers: BTreeMap<Digest, (u64, u64)>,
    /// Bytes done at the last redraw.
    drawn: u64,
}

struct ProgressBar {
    name: String,
    enabled: bool,
    state: Mutex<BarState>,
}

impl ProgressBar {
    fn new(name: &str) -> ProgressBar {
        ProgressBar {
            name: name.to_owned(),
            enabled: std::io::stderr().is_terminal(),
            state: Mutex::new(BarState::default()),
        }
    }

    fn update(&self, p: &crate::pull::Progress) {
        if !self.enabled {
            return;
        }
        let mut g = self.state.lock().expect("progress lock");
        g.layers.insert(p.layer.clone(), (p.done, p.total));
        let done: u64 = g.layers.values().map(|v| v.0).sum();
        let total: u64 = g.layers.values().map(|v| v.1).sum();
        // Redraw every 256 KiB at most, and at the end of each layer.
        if done.saturating_sub(g.drawn) < 256 << 10 && p.done != p.total {
            return;
        }
        g.drawn = done;
        eprint!("\r{}", render(&self.name, done, total, g.layers.len()));
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_progress_bar() {
        assert_eq!(
            render("x", 1 << 20, 2 << 20, 3),
            format!(
                "x [{}{}] 1.0 MiB / 2.0 MiB (3 layers)",
                "#".repeat(15),
                " ".repeat(15)
            )
        );
        assert!(render("x", 0, 0, 0).contains(&format!("[{}]", " ".repeat(30))));
        assert_eq!(human(512), "512 B");
    }
}

//! The image store: registry pulls, air-gapped archive imports, a content store addressed by sha256 and
//! overlayfs snapshots; used by the CRI ImageService and by `basalt image …`.
//!
//! It must never make a blob with a wrong digest readable, nor write outside its target while unpacking, and
//! every on-disk change is crash-safe: a SIGKILL at any point leaves a store the next run completes.
//!
//! Layout under the store root (`<data-dir>/images`): `blobs/sha256/<hex>` verified content, `ingest/` partial
//! downloads, `locks/` per-blob and per-snapshot flock files, `images/` one JSON record per image name,
//! `snapshots/<chainID>/fs` unpacked layers, `containers/<id>/` container roots.
//!
//! Entry points: [`Store::open`]; [`pull`] with a [`Client`] built from [`Hosts`] (registries file plus
//! `--insecure-registry`); [`import_archive`], [`import_airgap_dir`] and [`export`]; [`Store::find_image`] and
//! [`Store::image_config`] for the CRI ImageService; [`Store::mount_root`] / [`Store::unmount_root`] for
//! container roots and [`Store::mount_image`] for read-only image volumes; [`Store::gc`]. All blocking: async
//! callers use `spawn_blocking`.

pub mod archive;
pub mod cli;
pub mod config;
pub mod digest;
pub mod error;
pub mod gc;
pub mod hosts;
pub mod index;
mod lock;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use archive::{export, import_airgap_dir, import_archive, import_archive_with, ImportOptions};
pub use config::{ImageConfig, RuntimeConfig};
pub use digest::Digest;
pub use error::{Error, Result};
pub use hosts::{Hosts, RegistriesConfig};
pub use index::ImageRecord;
pub use pull::{pull, Progress};
pub use reference::Reference;
pub use registry::Client;
pub use snapshot::{ContainerRoot, RootKind};
pub use store::Store;

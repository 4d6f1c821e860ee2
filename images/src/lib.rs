//! The image store: registry pulls, air-gapped archive imports, a content store addressed by sha256 and
//! overlayfs snapshots; used by the CRI ImageService and by `basalt image …`.
//!
//! It must never make a blob with a wrong digest readable, nor write outside its target while unpacking.
//!
//! Not built yet: issue #4.

pub mod cli;

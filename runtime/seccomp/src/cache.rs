//! Compiled programs kept on disk, keyed by a hash of the profile, so a node starting many containers with one
//! profile compiles it once (crun does the same).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::bpf::SockFilter;
use crate::error::{Error, Result};
use crate::profile::Profile;

/// The cache file for `oci` compiled on `native`: sha256 of the profile's canonical JSON, the native
/// architecture and this crate's version (a new compiler must not reuse an old one's output).
pub fn cache_path(oci: &LinuxSeccomp, native: Arch, cache_dir: &Path) -> PathBuf {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(oci).expect("the OCI types always serialize"));
    h.update(b"\0");
    h.update(native.to_string());
    h.update(b"\0");
    h.update(env!("CARGO_PKG_VERSION"));
    cache_dir.join(format!("{}.bpf", hex::encode(h.finalize())))
}

/// Checks `oci` (always: a cached program does not excuse a bad profile) and returns its program, from
/// `cache_dir` when present and well-formed, else compiled and stored atomically.
pub fn compile_cached(oci: &LinuxSeccomp, cache_dir: &Path) -> Result<(Profile, Vec<SockFilter>)> {
    compile_cached_for(oci, Arch::native(), cache_dir)
}

pub fn compile_cached_for(
    oci: &LinuxSeccomp,
    native: Arch,
    cache_dir: &Path,
) -> Result<(Profile, Vec<SockFilter>)> {
    let profile = Profile::from_oci_for(oci, native)?;
    let path = cache_path(oci, native, cache_dir);
    if let Ok(bytes) = fs::read(&path) {
        if let Some(program) = SockFilter::from_bytes(&bytes) {
            return Ok((profile, program));
        }
        tracing::warn!(path = %path.display(), len = bytes.len(), "ignoring malformed cached seccomp filter");
    }
    let program = profile.compile()?;
    let file_err = |op, source| Error::File {
        op,
        path: path.clone(),
        source,
    };
    fs::create_dir_all(cache_dir).map_err(|e| file_err("creating cache dir for", e))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&SockFilter::to_bytes(&program))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(file_err("writing", e));
    }
    Ok((profile, program))
}

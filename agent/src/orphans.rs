//! What a CreateContainer cut short by a SIGKILL leaves: container roots (and image-volume roots) mounted in
//! the image store, and bundles, whose container record was never written. Removed when the agent starts,
//! before it serves, so no create is in flight.

use std::collections::HashSet;
use std::path::Path;

use crate::records::Records;

/// Whether a store root id is one the agent makes: a container id (64 hex digits), or one with an
/// `-image<N>` suffix for an image volume. Roots other users of the store make are left alone.
fn agent_root(id: &str) -> bool {
    let (cid, rest) = id.split_at(id.len().min(64));
    cid.len() == 64
        && cid.bytes().all(|b| b.is_ascii_hexdigit())
        && (rest.is_empty()
            || rest
                .strip_prefix("-image")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// Unmounts and removes every agent-made root and bundle no container record names; returns their ids.
pub fn sweep(records: &Records, store: &basalt_images::Store, bundles: &Path) -> Vec<String> {
    let known: HashSet<String> = records
        .containers
        .lock()
        .unwrap()
        .values()
        .flat_map(|c| std::iter::once(c.id.clone()).chain(c.image_roots.iter().cloned()))
        .collect();
    let mut removed = Vec::new();
    let roots = store.container_roots().unwrap_or_else(|e| {
        tracing::warn!("listing the image store's roots: {e}");
        Vec::new()
    });
    for r in roots {
        if agent_root(&r.id) && !known.contains(&r.id) {
            match store.unmount_root(&r.id) {
                Ok(()) => removed.push(r.id),
                Err(e) => tracing::warn!(root = r.id, "removing an orphaned root: {e}"),
            }
        }
    }
    for e in std::fs::read_dir(bundles).into_iter().flatten().flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if agent_root(&id) && !id.contains('-') && !known.contains(&id) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => removed.push(format!("bundle {id}")),
                Err(err) => tracing::warn!(bundle = id, "removing an orphaned bundle: {err}"),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::agent_root;

    #[test]
    fn only_ids_the_agent_makes() {
        let id = "ab".repeat(32);
        assert!(agent_root(&id));
        assert!(agent_root(&format!("{id}-image3")));
        assert!(!agent_root(&format!("{id}-image")));
        assert!(!agent_root(&format!("{id}-other")));
        assert!(!agent_root("keeper"));
        assert!(!agent_root(&"g".repeat(64)));
    }
}

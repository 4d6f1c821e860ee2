//! Start-up recovery: what the agent finds after it was killed (or the node rebooted), and what becomes of
//! it before the CRI socket is served, so that no call is in flight meanwhile.
//!
//! What survives what:
//!
//! | state | the agent SIGKILLed | a reboot |
//! |---|---|---|
//! | sandbox and container records (`<data-dir>/cri`, [`crate::store`]) | kept: each write is a rename, a `.tmp` a cut write left is removed on load | kept if written `Survive::PowerLoss` (an owed CNI DEL, exit statuses, stops); a new object's `Survive::Crash` record may be lost, with the processes and mounts it named |
//! | pod monitors (`basalt shim`) and their containers | keep running; found again by their sockets under `<run-dir>/shims` | gone with the run dir (a tmpfs): their sandboxes read NOTREADY and StopPodSandbox cleans up |
//! | pinned network/ipc/uts/pid namespaces, the pod's `/dev/shm` | kept (bind mounts) | gone |
//! | containers' exit statuses | in the monitor's exit records, read when it is gone | copied into the container records (`PowerLoss`) when the sandbox stopped |
//! | CNI IP leases and rules | kept; a DEL is owed while the record names the network | the same |
//! | container roots and bundles | a create cut short leaves ones no record names: removed here (`sweep`) | the same |
//! | images | the image store's own crash rules | the same |
//!
//! Nothing else is re-established: every request to a monitor is one short connection.

use std::collections::HashSet;
use std::path::Path;

use crate::agent::Agent;
use crate::store::Records;

/// Runs the recovery that is not already in loading the records (see the table above), on the blocking pool.
pub async fn run(agent: &Agent) -> Result<(), tokio::task::JoinError> {
    let (records, images, bundles) = (
        agent.records.clone(),
        agent.images.clone(),
        agent.run_dir.join("bundles"),
    );
    let swept = tokio::task::spawn_blocking(move || sweep(&records, &images, &bundles)).await?;
    if !swept.is_empty() {
        tracing::info!(?swept, "removed what interrupted creates left");
    }
    Ok(())
}

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

/// What a CreateContainer cut short by a SIGKILL leaves: container roots (and image-volume roots) mounted
/// in the image store, and bundles, whose container record was never written. Unmounts and removes every
/// agent-made root and bundle no container record names; returns their ids.
fn sweep(records: &Records, store: &basalt_images::Store, bundles: &Path) -> Vec<String> {
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

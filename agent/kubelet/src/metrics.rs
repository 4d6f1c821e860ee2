use std::sync::atomic::AtomicU64;

/// Counters the `/metrics` endpoint reports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub manifest_errors: AtomicU64,
    pub pod_syncs: AtomicU64,
    /// Container events taken from the runtime's GetContainerEvents stream.
    pub pleg_events: AtomicU64,
    /// Relists of the fallback PLEG.
    pub pleg_relists: AtomicU64,
    /// Exited containers removed by container GC.
    pub containers_gc: AtomicU64,
}

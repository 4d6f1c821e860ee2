//! A compact control plane flashed on the same image: apiserver (embedded SQLite, etcd when a cluster
//! outgrows one machine), scheduler and controllers.
//!
//! It must never be required for a node to run its static pods: the agent works with no apiserver at all.
//!
//! Not built yet.

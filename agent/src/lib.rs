//! The node agent: a native kubelet (static pods, sync loop, probes, volumes) and the CRI gRPC server with its
//! image store and per-pod monitors.
//!
//! It must never lose a running container because it crashed: all it knows is on disk under the data and run
//! directories, and a restart after SIGKILL recovers from there.
//!
//! Not built yet: issues #4 (images), #6 (CRI) and #7 (kubelet).

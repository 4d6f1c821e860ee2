//! Storage: a hostpath CSI plugin (Identity, Controller, Node services) and the kubelet side that mounts
//! CSI volumes into pods.
//!
//! It must never delete or mount outside its configured base directory.
//!
//! Not built yet.

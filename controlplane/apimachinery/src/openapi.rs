//! The embedded OpenAPI definitions of the built-in kinds (see build.rs).

use std::io::Read;

static FULL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi.json.z"));
static COMPACT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/schemas.json.z"));

fn inflate(bytes: &[u8]) -> serde_json::Value {
    let mut text = Vec::new();
    flate2::read::ZlibDecoder::new(bytes)
        .read_to_end(&mut text)
        .expect("the embedded definitions inflate");
    serde_json::from_slice(&text).expect("the embedded definitions are JSON")
}

/// `{"definitions": {name: schema}, "kinds": [...]}` with descriptions: large, read only to serve the
/// OpenAPI documents.
pub fn full() -> serde_json::Value {
    inflate(FULL)
}

/// The same without descriptions, for the type graph.
pub fn compact() -> serde_json::Value {
    inflate(COMPACT)
}

//! `basalt init`: PID 1 of the node image.

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs as PID 1 (or `basalt init`); `args[0]` is the program name.
pub fn main(_args: Vec<OsString>) -> ExitCode {
    eprintln!("basalt: `init`, PID 1 of the node image (issue #8) is not built yet");
    ExitCode::from(69)
}

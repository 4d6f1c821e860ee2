//! `basalt node-image build` and `basalt node-image boot`.

use std::ffi::OsString;
use std::process::ExitCode;

/// `basalt node-image build …`; `args[0]` is the program name.
pub fn build(_args: Vec<OsString>) -> ExitCode {
    eprintln!("basalt: `basalt node-image build` (issue #8) is not built yet");
    ExitCode::from(69)
}

/// `basalt node-image boot …`; `args[0]` is the program name.
pub fn boot(_args: Vec<OsString>) -> ExitCode {
    eprintln!("basalt: `basalt node-image boot` (issue #8) is not built yet");
    ExitCode::from(69)
}

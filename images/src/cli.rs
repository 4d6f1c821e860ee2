//! `basalt image …`.

use std::ffi::OsString;
use std::process::ExitCode;

/// Arguments of `basalt image`.
#[derive(clap::Args)]
pub struct ImageArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<OsString>,
}

pub fn run(_args: ImageArgs, _config: &basalt_config::Config) -> ExitCode {
    eprintln!("basalt: `basalt image` (the image store, issue #4) is not built yet");
    ExitCode::from(69)
}

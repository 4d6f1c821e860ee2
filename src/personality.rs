//! Which program this binary is, judged by the name it was started under.

use std::ffi::OsStr;
use std::path::Path;

use basalt_cni::PluginKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// `basalt` (or any unknown name): the subcommand CLI.
    Basalt,
    /// `bridge` or `host-local`: a CNI plugin, driven by `CNI_*` environment variables.
    CniPlugin(PluginKind),
    /// `basalt-runc`: the runc-compatible OCI runtime CLI.
    Runc,
    /// `init`: PID 1 of the node image.
    Init,
}

impl Personality {
    pub fn from_argv0(argv0: &OsStr) -> Personality {
        let name = Path::new(argv0)
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("");
        match name {
            "bridge" => Personality::CniPlugin(PluginKind::Bridge),
            "host-local" => Personality::CniPlugin(PluginKind::HostLocal),
            "basalt-runc" => Personality::Runc,
            "init" => Personality::Init,
            _ => Personality::Basalt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_personalities() {
        for (argv0, want) in [
            (
                "/opt/cni/bin/bridge",
                Personality::CniPlugin(PluginKind::Bridge),
            ),
            ("host-local", Personality::CniPlugin(PluginKind::HostLocal)),
            ("/usr/local/bin/basalt-runc", Personality::Runc),
            ("/init", Personality::Init),
            ("/usr/bin/basalt", Personality::Basalt),
            ("./target/debug/basalt-something", Personality::Basalt),
            ("", Personality::Basalt),
        ] {
            assert_eq!(Personality::from_argv0(OsStr::new(argv0)), want, "{argv0}");
        }
    }
}

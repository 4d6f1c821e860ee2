use crate::process::ProcessTarget;

/// What an upgraded connection serves, whichever protocol it speaks.
pub(crate) enum Session {
    Process(ProcessTarget),
    /// The pod sandbox whose ports are forwarded.
    PortForward(String),
}

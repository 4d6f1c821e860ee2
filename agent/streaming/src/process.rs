//! Transport-independent half of exec/attach: runs the backend and turns its output into [`Event`]s.
//!
//! A transport (WebSocket or SPDY) feeds [`ClientInput`] from what the client sends and writes the events back
//! in its own framing, so both speak exactly the same semantics.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::backend::{AttachTarget, Backend, ExecTarget, ProcessIo, TermSize};
use crate::status::Outcome;
use crate::wsproto::{STDERR, STDOUT};

#[derive(Clone, Debug)]
pub(crate) enum ProcessTarget {
    Exec(ExecTarget),
    Attach(AttachTarget),
}

impl ProcessTarget {
    fn flags(&self) -> (bool, bool, bool, bool) {
        match self {
            ProcessTarget::Exec(t) => (t.stdin, t.stdout, t.stderr, t.tty),
            ProcessTarget::Attach(t) => (t.stdin, t.stdout, t.stderr, t.tty),
        }
    }

    pub(crate) fn stdin(&self) -> bool {
        self.flags().0
    }
    pub(crate) fn stdout(&self) -> bool {
        self.flags().1
    }
    /// A tty has no separate stderr, whatever was asked.
    pub(crate) fn stderr(&self) -> bool {
        self.flags().2 && !self.flags().3
    }
    pub(crate) fn tty(&self) -> bool {
        self.flags().3
    }
}

/// What the transport's reader pushes client data into. Dropping `stdin` is end-of-file for the process.
pub(crate) struct ClientInput {
    pub(crate) stdin: Option<mpsc::Sender<Bytes>>,
    pub(crate) resize: mpsc::Sender<TermSize>,
}

/// The process's side of [`ClientInput`].
pub(crate) struct ProcessInput {
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: mpsc::Receiver<TermSize>,
}

pub(crate) fn input_channels(target: &ProcessTarget) -> (ClientInput, ProcessInput) {
    let (stdin_tx, stdin_rx) = if target.stdin() {
        let (tx, rx) = mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = mpsc::channel(8);
    (
        ClientInput {
            stdin: stdin_tx,
            resize: resize_tx,
        },
        ProcessInput {
            stdin: stdin_rx,
            resize: resize_rx,
        },
    )
}

/// Something for the transport to write to the client.
#[derive(Debug)]
pub(crate) enum Event {
    /// Output on channel [`STDOUT`] or [`STDERR`].
    Output(u8, Bytes),
    /// The last event: how the process ended.
    Done(Outcome),
}

/// Runs the process until it ends (then emits its remaining output and `Done`) or until `client_gone`
/// resolves (then drops the backend future, which kills an exec'd process or detaches an attach).
pub(crate) async fn run(
    backend: Arc<dyn Backend>,
    target: ProcessTarget,
    input: ProcessInput,
    events: mpsc::Sender<Event>,
    client_gone: impl Future<Output = ()>,
) {
    let (stdout_tx, mut stdout_rx) = mpsc::channel::<Bytes>(16);
    let (stderr_tx, mut stderr_rx) = mpsc::channel::<Bytes>(16);
    let io = ProcessIo {
        stdin: input.stdin,
        stdout: target.stdout().then_some(stdout_tx),
        stderr: target.stderr().then_some(stderr_tx),
        resize: input.resize,
        tty: target.tty(),
    };
    let work = async move {
        match target {
            ProcessTarget::Exec(t) => match backend.exec(t, io).await {
                Ok(code) => Outcome::Exited(code),
                Err(e) => Outcome::Failed(e),
            },
            ProcessTarget::Attach(t) => match backend.attach(t, io).await {
                Ok(()) => Outcome::Detached,
                Err(e) => Outcome::Failed(e),
            },
        }
    };
    tokio::pin!(work);
    tokio::pin!(client_gone);
    let mut outcome = None;
    let (mut stdout_open, mut stderr_open) = (true, true);
    loop {
        tokio::select! {
            o = &mut work, if outcome.is_none() => outcome = Some(o),
            b = stdout_rx.recv(), if stdout_open => match b {
                // A dead writer means the client is gone; client_gone says so too, keep draining until then.
                Some(b) => { let _ = events.send(Event::Output(STDOUT, b)).await; }
                None => stdout_open = false,
            },
            b = stderr_rx.recv(), if stderr_open => match b {
                Some(b) => { let _ = events.send(Event::Output(STDERR, b)).await; }
                None => stderr_open = false,
            },
            () = &mut client_gone, if outcome.is_none() => {
                tracing::debug!("streaming client went away before the process ended");
                return;
            }
            else => break,
        }
    }
    if let Some(o) = outcome {
        let _ = events.send(Event::Done(o)).await;
    }
}

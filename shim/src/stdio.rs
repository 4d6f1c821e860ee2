//! The monitor's ends of a process's stdio: pipes and pty masters, read and written without blocking the
//! single thread, and the pumps that carry a container's output into its log and to attached clients.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use crate::logs::{CriLog, Stream};
use crate::protocol::Frame;

/// A non-blocking descriptor on the event loop (a pipe end or a pty master).
pub struct AsyncPipe(AsyncFd<OwnedFd>);

impl AsyncPipe {
    pub fn new(fd: OwnedFd) -> io::Result<AsyncPipe> {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
        fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
        )?;
        // SAFETY: an OwnedFd keeps its descriptor open and unchanged for as long as the AsyncFd owns it.
        unsafe { AsyncFd::register(fd) }
            .map(AsyncPipe)
            .map_err(|e| e.into_parts().1)
    }

    pub fn raw(&self) -> RawFd {
        self.0.get_ref().as_raw_fd()
    }

    /// Some bytes, or 0 at end of stream. A pty master reports the end (every slave closed) as EIO, which
    /// is mapped to 0. Cancel-safe: nothing is consumed unless the read completes.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Reads from `p`, or waits forever when there is none (a disabled `select!` branch).
pub async fn read_opt(p: Option<&Rc<AsyncPipe>>, buf: &mut [u8]) -> io::Result<usize> {
    match p {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Sets a terminal's size (the pty master's, which the slave side sees, with SIGWINCH).
pub fn set_winsize(fd: RawFd, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on a descriptor we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn dev_null() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

/// Fresh pipes for a process: the child's three descriptors and the monitor's ends. Without `stdin` the
/// child reads /dev/null.
pub struct Pipes {
    pub child: [OwnedFd; 3],
    pub stdin: Option<AsyncPipe>,
    pub stdout: AsyncPipe,
    pub stderr: AsyncPipe,
}

impl Pipes {
    pub fn new(stdin: bool) -> io::Result<Pipes> {
        let (in_child, in_ours) = if stdin {
            let (r, w) = pipe()?;
            (r, Some(AsyncPipe::new(w)?))
        } else {
            (dev_null()?, None)
        };
        let (out_ours, out_child) = pipe()?;
        let (err_ours, err_child) = pipe()?;
        Ok(Pipes {
            child: [in_child, out_child, err_child],
            stdin: in_ours,
            stdout: AsyncPipe::new(out_ours)?,
            stderr: AsyncPipe::new(err_ours)?,
        })
    }

    pub fn child_fds(&self) -> [RawFd; 3] {
        [
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        ]
    }
}

/// Where a container's output goes: its log and every attached client.
pub struct Output {
    pub log: CriLog,
    pub subscribers: Vec<mpsc::Sender<Frame>>,
    /// Pumps still reading.
    open: u8,
    /// True once every pump has reached end of stream.
    pub drained: watch::Sender<bool>,
}

impl Output {
    pub fn new(log: CriLog, pumps: u8) -> Output {
        Output {
            log,
            subscribers: Vec::new(),
            open: pumps,
            drained: watch::channel(pumps == 0).0,
        }
    }
}

/// Copies one output stream of a container into its [`Output`] until end of stream.
pub async fn pump(src: Rc<AsyncPipe>, stream: Stream, out: Rc<RefCell<Output>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, ?stream, "reading container output");
                break;
            }
        };
        let data = &buf[..n];
        let mut o = out.borrow_mut();
        o.log.write(stream, data);
        let frame = match stream {
            Stream::Stdout => Frame::Stdout(data.to_vec()),
            Stream::Stderr => Frame::Stderr(data.to_vec()),
        };
        // A client that does not keep up loses output (the log has all of it); one that left is dropped.
        o.subscribers.retain(|tx| match tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!("attached client is slow: output dropped for it");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
    let mut o = out.borrow_mut();
    o.log.finish(stream);
    o.open = o.open.saturating_sub(1);
    if o.open == 0 {
        o.drained.send_replace(true);
    }
}

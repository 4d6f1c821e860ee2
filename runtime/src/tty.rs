//! Terminals: a pty pair from the container's own devpts, made the process's controlling terminal, with the
//! master handed to whoever asked through `--console-socket` (SCM_RIGHTS, as runc does).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};

nix::ioctl_write_ptr_bad!(tiocsptlck, libc::TIOCSPTLCK, libc::c_int);
nix::ioctl_read_bad!(tiocgptn, libc::TIOCGPTN, libc::c_uint);
nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// A new pty from `/dev/ptmx` (the container's, once inside it): master, slave and the slave's path.
pub fn open_pty(size: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd, String)> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(Error::sys("opening /dev/ptmx"))?;
    // SAFETY: fresh descriptor from open.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: valid descriptor and pointers for these pty ioctls.
    unsafe {
        tiocsptlck(master.as_raw_fd(), &unlock).map_err(Error::sys("unlocking the pty"))?;
        tiocgptn(master.as_raw_fd(), &mut n).map_err(Error::sys("reading the pty number"))?;
    }
    let path = format!("/dev/pts/{n}");
    let slave = nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(Error::sys(format!("opening {path}")))?;
    // SAFETY: fresh descriptor from open.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some((h, w)) = size {
        let ws = libc::winsize {
            ws_row: h,
            ws_col: w,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid descriptor and winsize.
        unsafe { tiocswinsz(slave.as_raw_fd(), &ws) }
            .map_err(Error::sys("setting the console size"))?;
    }
    Ok((master, slave, path))
}

/// Makes `slave` the controlling terminal and stdio of this process (a new session).
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    nix::unistd::setsid().map_err(Error::sys("setsid"))?;
    // SAFETY: TIOCSCTTY on a valid terminal descriptor.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::io("TIOCSCTTY")(std::io::Error::last_os_error()));
    }
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(Error::sys("dup2 onto stdio"))?;
    }
    Ok(())
}

/// Sends `fd` with `name` as data over the unix socket `sock`.
pub fn send_fd(sock: RawFd, name: &str, fd: RawFd) -> Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        sock,
        &[IoSlice::new(name.as_bytes())],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(Error::sys("sending the pty master"))
}

/// Receives one message and the descriptor it carries, if any.
pub fn recv_with_fd(sock: RawFd) -> Result<(String, Option<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(Error::sys("receiving from the init"))?;
    let mut fd = None;
    for c in msg
        .cmsgs()
        .map_err(Error::sys("reading control messages"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed these descriptors for us.
            fd = fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
        }
    }
    let n = msg.bytes;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), fd))
}

/// Hands the pty master to the `--console-socket` listener.
pub fn send_to_console_socket(socket: &Path, master: &OwnedFd) -> Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(Error::io(socket))?;
    send_fd(stream.as_raw_fd(), "/dev/ptmx", master.as_raw_fd())
}

/// Copies between our stdio and a pty master until the container side closes it (runc's behaviour for
/// `run`/`exec -t` without `--console-socket`). Our terminal, if stdin is one, is put in raw mode meanwhile.
pub fn proxy(master: OwnedFd) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    let stdin = std::io::stdin();
    let saved = tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
    }
    let mut m = std::fs::File::from(master);
    let mut out = std::io::stdout();
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    let result = loop {
        let mut fds = vec![PollFd::new(m.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => break Err(Error::sys("polling the terminal")(e)),
            Ok(_) => {}
        }
        let master_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stdin_ready = stdin_open && fds[1].revents().is_some_and(|r| !r.is_empty());
        if master_ready {
            match m.read(&mut buf) {
                // EIO: every slave descriptor is closed, the container side is done.
                Ok(0) | Err(_) => break Ok(()),
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
        }
        if stdin_ready {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => {
                    // End of our input: pass it on as the terminal's EOF character.
                    stdin_open = false;
                    let _ = m.write_all(&[4]);
                }
                Ok(n) => {
                    let _ = m.write_all(&buf[..n]);
                }
            }
        }
    };
    if let Some(t) = &saved {
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, t);
    }
    result
}

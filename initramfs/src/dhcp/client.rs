//! The running client: one thread per interface that owns the socket, the state machine and what it put on the
//! interface, and reports to its owner through a callback.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::link::Link;
use super::machine::{Action, Dest, Lease, Loss, Machine};
use super::message;
use super::socket::Socket;
use crate::rtnl::{self, Rtnl};

/// What to run the client on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub interface: String,
    /// Sent as option 12, so the server (and the DNS it feeds) knows the node by name.
    pub hostname: String,
}

/// What happened, in the order it happened. Every event comes after the interface was changed to match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An address was bound and configured: the first one, or a new one after a loss or a change.
    Bound(Lease),
    /// The lease was extended: by its own server (RENEWING) or, `rebinding`, by a broadcast any server may
    /// answer (REBINDING).
    Renewed { lease: Lease, rebinding: bool },
    /// The address was removed because the server refused it or the lease ran out; the client asks again.
    Lost(Lease, Loss),
    /// The lease was given back and its address removed; the client has stopped.
    Released(Lease),
    /// A step failed (a send, changing the interface); the client carries on and tries again when its timers
    /// say so.
    Error(String),
}

/// A client running on its own thread; dropping it stops the thread and leaves the address in place until
/// its lifetime (the lease's) runs out: crash-only, the kernel ends an abandoned lease by itself.
pub struct Client {
    interface: String,
    control: Option<UnixStream>,
    finished: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

const RELEASE: u8 = b'R';

impl Client {
    /// Starts asking for an address on `config.interface` (which must be up) in the calling thread's network
    /// namespace. `on_event` runs on the client's thread.
    pub fn start(
        config: Config,
        on_event: impl FnMut(Event) + Send + 'static,
    ) -> io::Result<Client> {
        let iface = &config.interface;
        let context =
            |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{iface}: {what}: {e}"));
        let socket = Socket::open(iface).map_err(|e| context("DHCP socket on port 68", e))?;
        let mac = socket
            .hardware_address(iface)
            .map_err(|e| context("hardware address", e))?;
        let index = rtnl::index(iface).map_err(|e| context("interface index", e))?;
        let rtnl = Rtnl::open().map_err(|e| context("netlink", e))?;
        let (control, theirs) = UnixStream::pair()?;
        let (done, finished) = mpsc::channel();
        let mut run = Run {
            machine: Machine::new(mac, &config.hostname, Instant::now()),
            socket,
            link: Link::new(rtnl, index),
            interface: config.interface.clone(),
            on_event: Box::new(on_event),
        };
        let thread = std::thread::Builder::new()
            .name(format!("dhcp {iface}"))
            .spawn(move || {
                run.run(theirs);
                let _ = done.send(());
            })?;
        Ok(Client {
            interface: config.interface,
            control: Some(control),
            finished,
            thread: Some(thread),
        })
    }

    /// Gives the lease back (DHCPRELEASE to its server), removes its address and route, and stops the client;
    /// waits up to `timeout` for that.
    pub fn release(mut self, timeout: Duration) -> io::Result<()> {
        if let Some(c) = self.control.as_mut() {
            c.write_all(&[RELEASE])?;
        }
        match self.finished.recv_timeout(timeout) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                Ok(())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Left running: joining would wait for it after all.
                self.thread = None;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}: DHCP client did not release within {timeout:?}",
                        self.interface
                    ),
                ))
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // End of file on the control socket: the thread stops without releasing.
        drop(self.control.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Run {
    machine: Machine,
    socket: Socket,
    link: Link,
    interface: String,
    on_event: Box<dyn FnMut(Event) + Send>,
}

impl Run {
    fn run(&mut self, mut control: UnixStream) {
        let mut buf = vec![0u8; usize::from(message::MAX_LEN) + 64];
        loop {
            let actions = self.machine.on_timer(Instant::now());
            self.carry_out(actions);
            // Rounded up: waking a little early would only find nothing due and wait again.
            let timeout = self.machine.deadline().map_or(-1, |d| {
                let left = d.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            let mut fds = [
                libc::pollfd {
                    fd: self.socket.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: control.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds for the length given.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    self.report_error(format!("poll: {e}"));
                    std::thread::sleep(Duration::from_secs(1));
                }
                continue;
            }
            if fds[1].revents != 0 {
                let mut b = [0u8; 1];
                if matches!(control.read(&mut b), Ok(1) if b[0] == RELEASE) {
                    let actions = self.machine.release(Instant::now());
                    self.carry_out(actions);
                }
                return;
            }
            if fds[0].revents != 0 {
                loop {
                    match self.socket.recv(&mut buf) {
                        Ok(Some(packet)) => {
                            let actions = self.machine.on_packet(Instant::now(), packet);
                            self.carry_out(actions);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.report_error(format!("receiving: {e}"));
                            break;
                        }
                    }
                }
            }
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            let now = Instant::now();
            match action {
                Action::Send(packet, dest) => {
                    if let Err(e) = self.socket.send(&packet, dest) {
                        let to = match dest {
                            Dest::Broadcast => "broadcast".to_owned(),
                            Dest::Server(s) => s.to_string(),
                        };
                        self.report_error(format!("sending to {to}: {e}"));
                    }
                }
                Action::Configure(lease) => {
                    if let Err(e) = self.link.apply(&lease, now) {
                        self.report_error(format!(
                            "configuring {}/{}: {e}",
                            lease.addr, lease.prefix
                        ));
                    }
                    (self.on_event)(Event::Bound(lease));
                }
                Action::Extend { lease, rebinding } => {
                    if let Err(e) = self.link.apply(&lease, now) {
                        self.report_error(format!(
                            "refreshing {}/{}: {e}",
                            lease.addr, lease.prefix
                        ));
                    }
                    (self.on_event)(Event::Renewed { lease, rebinding });
                }
                Action::Deconfigure(lease, why) => {
                    if let Err(e) = self.link.remove() {
                        self.report_error(format!("removing {}/{}: {e}", lease.addr, lease.prefix));
                    }
                    (self.on_event)(match why {
                        Loss::Released => Event::Released(lease),
                        why => Event::Lost(lease, why),
                    });
                }
            }
        }
    }

    fn report_error(&mut self, what: String) {
        (self.on_event)(Event::Error(format!("{}: {what}", self.interface)));
    }
}

//! Keeping the node's long-running programs (the agent now, the control plane later) alive: start, notice
//! the exit through the reaper, restart with exponential back-off so a program that cannot run costs nothing.
//! A restart PID 1 asks for (the node's address changed) is not a failure: no back-off, and a program that
//! ignores SIGTERM is killed after [`STOP_GRACE`].

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::log;

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A program that ran this long before dying is restarted promptly again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// EX_UNAVAILABLE: `basalt` says the subcommand is not built yet.
const EXIT_NOT_BUILT: i32 = 69;
/// How long a program asked to restart gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Supervised {
    pub name: &'static str,
    program: String,
    args: Vec<String>,
    log_file: String,
    pub pid: Option<i32>,
    started: Instant,
    next_start: Instant,
    backoff: Duration,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Asked to stop for a restart: SIGKILL is due at this time.
    stopping: Option<Instant>,
}

impl Supervised {
    pub fn new(name: &'static str, program: &str, args: &[&str], log_file: &str) -> Supervised {
        Supervised {
            name,
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log_file: log_file.into(),
            pid: None,
            started: Instant::now(),
            next_start: Instant::now(),
            backoff: MIN_BACKOFF,
            restarts: 0,
            last_exit: None,
            stopping: None,
        }
    }

    /// Stops the program (SIGTERM) so that it starts again at once, for `why`.
    pub fn restart(&mut self, why: &str) {
        let Some(pid) = self.pid else {
            return;
        };
        if self.stopping.is_some() {
            return;
        }
        log::info(format!("restarting {} (pid {pid}): {why}", self.name));
        // SAFETY: signalling our child, not yet reaped (the reaper clears `pid`).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.stopping = Some(Instant::now() + STOP_GRACE);
    }

    /// Starts the program if it is due; returns how long until the next start is due, if waiting.
    pub fn tick(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if let Some(pid) = self.pid {
            let due = self.stopping?;
            if now < due {
                return Some(due - now);
            }
            log::error(format!(
                "{} (pid {pid}) still running {STOP_GRACE:?} after SIGTERM; killing it",
                self.name
            ));
            // SAFETY: as in `restart`.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            self.stopping = Some(now + STOP_GRACE);
            return Some(STOP_GRACE);
        }
        if now < self.next_start {
            return Some(self.next_start - now);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file);
        let mut cmd = Command::new(&self.program);
        cmd.arg0("basalt").args(&self.args).stdin(Stdio::null());
        if let Ok(f) = out {
            if let Ok(f2) = f.try_clone() {
                cmd.stdout(f).stderr(f2);
            }
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // PID 1 blocks the signals it waits for; the child must get them normally.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::setsid();
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                self.pid = Some(child.id() as i32);
                self.started = now;
                // The reaper collects it by pid; the Child handle is not needed.
                drop(child);
                log::info(format!(
                    "{} started (pid {})",
                    self.name,
                    self.pid.unwrap_or(0)
                ));
                None
            }
            Err(e) => {
                self.failed(format!("cannot start {}: {e}", self.program));
                Some(self.backoff)
            }
        }
    }

    /// Called by the reaper with the wait status of `pid`; true if it was ours.
    pub fn reaped(&mut self, pid: i32, status: libc::c_int) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        if self.stopping.take().is_some() {
            log::info(format!("{} stopped for a restart", self.name));
            self.next_start = Instant::now();
            return true;
        }
        if self.started.elapsed() >= HEALTHY_RUN {
            self.backoff = MIN_BACKOFF;
        }
        let why = if libc::WIFEXITED(status) {
            match libc::WEXITSTATUS(status) {
                EXIT_NOT_BUILT => "not available in this build (exit 69)".to_owned(),
                c => format!("exited with status {c}"),
            }
        } else {
            format!("killed by signal {}", libc::WTERMSIG(status))
        };
        self.failed(why);
        true
    }

    fn failed(&mut self, why: String) {
        self.restarts += 1;
        log::error(format!(
            "{} {why}; restart #{} in {:?}",
            self.name, self.restarts, self.backoff
        ));
        self.last_exit = Some(why);
        self.next_start = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    pub fn state(&self) -> String {
        match (self.pid, &self.last_exit) {
            (Some(pid), _) => format!("running (pid {pid}, {} restarts)", self.restarts),
            (None, Some(why)) => {
                let wait = self.next_start.saturating_duration_since(Instant::now());
                format!(
                    "{why}; restart #{} in {}s",
                    self.restarts + 1,
                    wait.as_secs()
                )
            }
            (None, None) => "starting".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(pid: i32) -> libc::c_int {
        let mut status = 0;
        // SAFETY: waiting for our own child by pid.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn an_asked_for_restart_is_prompt_and_not_a_failure() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut s = Supervised::new(
            "sleeper",
            "/bin/sleep",
            &["30"],
            log.path().to_str().unwrap(),
        );
        assert_eq!(s.tick(), None);
        let first = s.pid.expect("started");
        s.restart("test");
        assert!(
            s.tick().is_some_and(|d| d <= STOP_GRACE),
            "the kill deadline"
        );
        let status = wait(first);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM);
        assert!(s.reaped(first, status));
        assert_eq!((s.restarts, s.last_exit.as_deref()), (0, None));
        assert_eq!(s.tick(), None, "started again at once");
        let second = s.pid.expect("running again");
        assert_ne!(first, second);

        // A crash, by contrast, counts and backs off.
        // SAFETY: signalling our child.
        unsafe { libc::kill(second, libc::SIGKILL) };
        let status = wait(second);
        assert!(s.reaped(second, status));
        assert_eq!(s.restarts, 1);
        assert!(s.tick().is_some_and(|d| d > Duration::ZERO));
    }
}

//! Keeping the node's long-running programs (the agent now, the control plane later) alive: start, notice
//! the exit through the reaper, restart with exponential back-off so a program that cannot run costs nothing.

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
        }
    }

    /// Starts the program if it is due; returns how long until the next start is due, if waiting.
    pub fn tick(&mut self) -> Option<Duration> {
        if self.pid.is_some() {
            return None;
        }
        let now = Instant::now();
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

//! Restart back-off per container (and image-pull back-off per image): the first retry is immediate, then
//! waits double from `initial` up to `max`; a container that ran longer than `reset_after` starts over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Policy {
    /// kubelet's numbers: 10 s doubling to 5 min, reset after 10 min of running.
    fn default() -> Self {
        Policy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Default)]
pub struct Backoff {
    policy: Policy,
    entries: HashMap<String, (Duration, Instant)>,
}

impl Backoff {
    pub fn new(policy: Policy) -> Backoff {
        Backoff {
            policy,
            entries: HashMap::new(),
        }
    }

    /// `Some(remaining)` while `key` must still wait; `ran_for` is how long the last run lasted.
    pub fn waiting(&mut self, key: &str, now: Instant, ran_for: Duration) -> Option<Duration> {
        if ran_for >= self.policy.reset_after {
            self.entries.remove(key);
        }
        let (delay, since) = self.entries.get(key)?;
        let until = *since + *delay;
        (now < until).then(|| until - now)
    }

    /// Records a restart of `key` at `now`: the next one waits longer.
    pub fn restarted(&mut self, key: &str, now: Instant) {
        let next = match self.entries.get(key) {
            None => self.policy.initial,
            Some((d, _)) => (*d * 2).min(self.policy.max),
        };
        self.entries.insert(key.to_owned(), (next, now));
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Policy::default());
        let t0 = Instant::now();
        let short = Duration::from_secs(1);
        assert_eq!(
            b.waiting("c", t0, short),
            None,
            "first restart is immediate"
        );
        b.restarted("c", t0);
        assert_eq!(b.waiting("c", t0, short), Some(Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.waiting("c", t1, short), None);
        b.restarted("c", t1);
        assert_eq!(b.waiting("c", t1, short), Some(Duration::from_secs(20)));
        let mut t = t1;
        for _ in 0..10 {
            b.restarted("c", t);
            t += Duration::from_secs(1);
        }
        assert_eq!(b.waiting("c", t, short), Some(Duration::from_secs(299)));
        assert_eq!(
            b.waiting("c", t, Duration::from_secs(600)),
            None,
            "reset after a long run"
        );
    }
}

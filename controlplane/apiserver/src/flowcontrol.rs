//! API Priority and Fairness, reduced to upstream's suggested configuration.
//!
//! Every request that is not long-running is classified by who sends it into one of upstream's priority
//! levels (`system`, `node-high`, `leader-election`, `workload-high`, `workload-low`, `global-default`,
//! `catch-all`; `system:masters` and health probes are `exempt`). The server's seats
//! (`--max-requests-inflight` + `--max-mutating-requests-inflight`, as upstream sums them) are split among
//! the levels by upstream's nominal concurrency shares, so a flood from one class — every ServiceAccount of a
//! misbehaving operator — cannot take the seats of the kubelets, the controllers or the admin.
//!
//! Within a level, requests that find no free seat wait in a queue per flow (the user), and a freed seat goes
//! to the flows in turn, not to the longest queue: one noisy user of a level waits behind itself. Queues are
//! bounded (upstream's queue length limit of 50 per flow, and a bound per level), and a wait is bounded (a
//! quarter of the request timeout, as upstream): past either the request gets 429 with Retry-After, before
//! its body is read, so a slow or malicious client holds at most a seat and a few bytes of headers.
//!
//! Upstream's FlowSchema and PriorityLevelConfiguration objects are not served: the configuration is fixed.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::auth::UserInfo;
use crate::request::{RequestInfo, Verb};

/// Upstream's queue length limit of the suggested levels: how many requests of one flow may wait.
const QUEUE_LENGTH_LIMIT: usize = 50;

/// The priority levels of upstream's suggested configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Exempt,
    System,
    NodeHigh,
    LeaderElection,
    WorkloadHigh,
    WorkloadLow,
    GlobalDefault,
    CatchAll,
}

const LIMITED: [Level; 7] = [
    Level::System,
    Level::NodeHigh,
    Level::LeaderElection,
    Level::WorkloadHigh,
    Level::WorkloadLow,
    Level::GlobalDefault,
    Level::CatchAll,
];

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Exempt => "exempt",
            Level::System => "system",
            Level::NodeHigh => "node-high",
            Level::LeaderElection => "leader-election",
            Level::WorkloadHigh => "workload-high",
            Level::WorkloadLow => "workload-low",
            Level::GlobalDefault => "global-default",
            Level::CatchAll => "catch-all",
        }
    }

    /// Upstream's nominalConcurrencyShares.
    fn shares(self) -> usize {
        match self {
            Level::Exempt => 0,
            Level::System => 30,
            Level::NodeHigh => 40,
            Level::LeaderElection => 10,
            Level::WorkloadHigh => 40,
            Level::WorkloadLow => 100,
            Level::GlobalDefault => 20,
            Level::CatchAll => 5,
        }
    }

    /// Upstream's queue count of the level; catch-all rejects rather than queues.
    fn queues(self) -> usize {
        match self {
            Level::Exempt | Level::CatchAll => 0,
            Level::LeaderElection => 16,
            Level::System | Level::NodeHigh => 64,
            Level::WorkloadHigh | Level::WorkloadLow | Level::GlobalDefault => 128,
        }
    }
}

/// The level of a request and its flow (upstream's `ByUser` distinguisher).
pub fn classify(user: &UserInfo, info: &RequestInfo) -> (Level, String) {
    let flow = user.name.clone();
    let level = match info {
        _ if user.in_group(crate::auth::MASTERS) => Level::Exempt,
        RequestInfo::NonResource { path, .. }
            if ["/healthz", "/livez", "/readyz"].iter().any(|p| {
                path.trim_end_matches('/') == *p || path.starts_with(&format!("{p}/"))
            }) =>
        {
            Level::Exempt
        }
        RequestInfo::Resource(r)
            if is_leader_elector(&user.name)
                && r.namespace.as_deref() == Some("kube-system")
                && matches!(r.resource.as_str(), "leases" | "endpoints" | "configmaps")
                && matches!(r.verb, Verb::Get | Verb::Create | Verb::Update) =>
        {
            Level::LeaderElection
        }
        RequestInfo::Resource(r)
            if user.in_group("system:nodes")
                && matches!(r.resource.as_str(), "nodes" | "leases") =>
        {
            Level::NodeHigh
        }
        _ if user.in_group("system:nodes") => Level::System,
        _ if is_leader_elector(&user.name)
            || user.name.starts_with("system:serviceaccount:kube-system:") =>
        {
            Level::WorkloadHigh
        }
        _ if user.in_group("system:serviceaccounts") => Level::WorkloadLow,
        _ if user.in_group(crate::auth::AUTHENTICATED) => Level::GlobalDefault,
        _ => Level::CatchAll,
    };
    (level, flow)
}

fn is_leader_elector(name: &str) -> bool {
    matches!(
        name,
        "system:kube-controller-manager" | "system:kube-scheduler"
    )
}

/// Why a request was not given a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The level's queues are full (or it does not queue).
    QueueFull,
    /// The request waited its allowed time.
    TimedOut,
}

impl Rejected {
    fn label(self) -> &'static str {
        match self {
            Rejected::QueueFull => "queue-full",
            Rejected::TimedOut => "time-out",
        }
    }
}

#[derive(Default)]
struct Queues {
    executing: usize,
    waiting: usize,
    /// The flows with waiters, in the order they get the next free seat.
    turn: VecDeque<String>,
    flows: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    rejected: [u64; 2],
    dispatched: u64,
}

struct LevelState {
    level: Level,
    seats: usize,
    /// Waiters of the whole level, at most.
    queue_limit: usize,
    queues: Mutex<Queues>,
}

impl LevelState {
    /// Hands the seat being freed to the next flow's oldest live waiter, or frees it.
    fn release(&self) {
        let mut q = self.queues.lock().expect("flowcontrol lock");
        while let Some(flow) = q.turn.pop_front() {
            let Some(mut waiters) = q.flows.remove(&flow) else {
                continue;
            };
            let Some(tx) = waiters.pop_front() else {
                continue;
            };
            q.waiting -= 1;
            if !waiters.is_empty() {
                q.flows.insert(flow.clone(), waiters);
                q.turn.push_back(flow);
            }
            if tx.send(()).is_ok() {
                q.dispatched += 1;
                return;
            }
        }
        q.executing -= 1;
    }
}

/// A seat held for the duration of a request; dropping it hands it on.
pub struct Seat {
    level: Option<Arc<LevelState>>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(l) = self.level.take() {
            l.release();
        }
    }
}

pub struct FlowControl {
    levels: Vec<Arc<LevelState>>,
    wait: Duration,
}

impl FlowControl {
    /// `seats` in all (upstream: the two max-inflight flags summed), split by shares; `wait` bounds a queued
    /// request's wait.
    pub fn new(seats: usize, wait: Duration) -> FlowControl {
        let total: usize = LIMITED.iter().map(|l| l.shares()).sum();
        let levels = LIMITED
            .iter()
            .map(|&level| {
                let seats = (seats * level.shares()).div_ceil(total).max(1);
                Arc::new(LevelState {
                    level,
                    seats,
                    queue_limit: level.queues() * QUEUE_LENGTH_LIMIT,
                    queues: Default::default(),
                })
            })
            .collect();
        FlowControl { levels, wait }
    }

    fn state(&self, level: Level) -> Option<&Arc<LevelState>> {
        self.levels.iter().find(|l| l.level == level)
    }

    /// A seat for a request of `flow` at `level`, waiting in the flow's queue when the level is busy.
    pub async fn admit(&self, level: Level, flow: &str) -> Result<Seat, Rejected> {
        let Some(l) = self.state(level) else {
            return Ok(Seat { level: None });
        };
        let rx = {
            let mut q = l.queues.lock().expect("flowcontrol lock");
            if q.executing < l.seats && q.waiting == 0 {
                q.executing += 1;
                q.dispatched += 1;
                return Ok(Seat {
                    level: Some(l.clone()),
                });
            }
            let mine = q.flows.get(flow).map_or(0, VecDeque::len);
            if q.waiting >= l.queue_limit || mine >= QUEUE_LENGTH_LIMIT {
                q.rejected[0] += 1;
                return Err(Rejected::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            if mine == 0 {
                q.turn.push_back(flow.to_string());
            }
            q.flows.entry(flow.to_string()).or_default().push_back(tx);
            q.waiting += 1;
            rx
        };
        let mut rx = rx;
        match tokio::time::timeout(self.wait, &mut rx).await {
            Ok(Ok(())) => Ok(Seat {
                level: Some(l.clone()),
            }),
            _ => {
                rx.close();
                // The seat may have been handed over between the timeout and the close: pass it on.
                if rx.try_recv().is_ok() {
                    l.release();
                }
                let mut q = l.queues.lock().expect("flowcontrol lock");
                if let Some(waiters) = q.flows.get_mut(flow) {
                    let before = waiters.len();
                    waiters.retain(|tx| !tx.is_closed());
                    let (gone, empty) = (before - waiters.len(), waiters.is_empty());
                    q.waiting -= gone;
                    if empty {
                        q.flows.remove(flow);
                        q.turn.retain(|f| f != flow);
                    }
                }
                q.rejected[1] += 1;
                Err(Rejected::TimedOut)
            }
        }
    }

    /// Upstream's APF gauges and counters, for /metrics.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP apiserver_flowcontrol_nominal_limit_seats [BETA] Nominal number of execution seats configured for each priority level");
        let _ = writeln!(
            out,
            "# TYPE apiserver_flowcontrol_nominal_limit_seats gauge"
        );
        for l in &self.levels {
            let _ = writeln!(
                out,
                "apiserver_flowcontrol_nominal_limit_seats{{priority_level=\"{}\"}} {}",
                l.level.name(),
                l.seats
            );
        }
        let snapshot: Vec<_> = self
            .levels
            .iter()
            .map(|l| {
                let q = l.queues.lock().expect("flowcontrol lock");
                (
                    l.level.name(),
                    q.executing,
                    q.waiting,
                    q.rejected,
                    q.dispatched,
                )
            })
            .collect();
        let _ = writeln!(out, "# HELP apiserver_flowcontrol_current_executing_requests [BETA] Number of requests in initial (for a WATCH) or any (for a non-WATCH) execution stage in the API Priority and Fairness subsystem");
        let _ = writeln!(
            out,
            "# TYPE apiserver_flowcontrol_current_executing_requests gauge"
        );
        for (name, executing, ..) in &snapshot {
            let _ = writeln!(out, "apiserver_flowcontrol_current_executing_requests{{priority_level=\"{name}\"}} {executing}");
        }
        let _ = writeln!(out, "# HELP apiserver_flowcontrol_current_inqueue_requests [BETA] Number of requests currently pending in queues of the API Priority and Fairness subsystem");
        let _ = writeln!(
            out,
            "# TYPE apiserver_flowcontrol_current_inqueue_requests gauge"
        );
        for (name, _, waiting, ..) in &snapshot {
            let _ = writeln!(out, "apiserver_flowcontrol_current_inqueue_requests{{priority_level=\"{name}\"}} {waiting}");
        }
        let _ = writeln!(out, "# HELP apiserver_flowcontrol_rejected_requests_total [BETA] Number of requests rejected by API Priority and Fairness subsystem");
        let _ = writeln!(
            out,
            "# TYPE apiserver_flowcontrol_rejected_requests_total counter"
        );
        for (name, _, _, rejected, _) in &snapshot {
            for (i, why) in [Rejected::QueueFull, Rejected::TimedOut].iter().enumerate() {
                let _ = writeln!(out, "apiserver_flowcontrol_rejected_requests_total{{priority_level=\"{name}\",reason=\"{}\"}} {}", why.label(), rejected[i]);
            }
        }
        let _ = writeln!(out, "# HELP apiserver_flowcontrol_dispatched_requests_total [BETA] Number of requests executed by API Priority and Fairness subsystem");
        let _ = writeln!(
            out,
            "# TYPE apiserver_flowcontrol_dispatched_requests_total counter"
        );
        for (name, _, _, _, dispatched) in &snapshot {
            let _ = writeln!(out, "apiserver_flowcontrol_dispatched_requests_total{{priority_level=\"{name}\"}} {dispatched}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn get(resource: &str, ns: Option<&str>) -> RequestInfo {
        RequestInfo::Resource(crate::request::ResourceRequest {
            group: String::new(),
            version: "v1".into(),
            namespace: ns.map(Into::into),
            resource: resource.into(),
            name: Some("x".into()),
            subresource: None,
            rest: vec![],
            verb: Verb::Get,
        })
    }

    #[test]
    fn requests_fall_into_upstreams_levels() {
        let auth = crate::auth::AUTHENTICATED;
        let cases = [
            (
                user("admin", &["system:masters", auth]),
                get("pods", Some("a")),
                Level::Exempt,
            ),
            (
                user("system:node:n1", &["system:nodes", auth]),
                get("nodes", None),
                Level::NodeHigh,
            ),
            (
                user("system:node:n1", &["system:nodes", auth]),
                get("pods", Some("a")),
                Level::System,
            ),
            (
                user("system:kube-scheduler", &[auth]),
                get("leases", Some("kube-system")),
                Level::LeaderElection,
            ),
            (
                user("system:kube-scheduler", &[auth]),
                get("pods", Some("a")),
                Level::WorkloadHigh,
            ),
            (
                user(
                    "system:serviceaccount:kube-system:x",
                    &["system:serviceaccounts", auth],
                ),
                get("pods", Some("a")),
                Level::WorkloadHigh,
            ),
            (
                user(
                    "system:serviceaccount:a:x",
                    &["system:serviceaccounts", auth],
                ),
                get("pods", Some("a")),
                Level::WorkloadLow,
            ),
            (
                user("alice", &[auth]),
                get("pods", Some("a")),
                Level::GlobalDefault,
            ),
            (
                UserInfo::anonymous(),
                get("pods", Some("a")),
                Level::CatchAll,
            ),
            (
                UserInfo::anonymous(),
                RequestInfo::NonResource {
                    path: "/readyz".into(),
                    verb: "get".into(),
                },
                Level::Exempt,
            ),
        ];
        for (u, info, want) in cases {
            assert_eq!(classify(&u, &info).0, want, "{} {:?}", u.name, info);
        }
    }

    #[test]
    fn seats_follow_upstreams_shares() {
        let fc = FlowControl::new(600, Duration::from_secs(1));
        let seats = |l| fc.state(l).unwrap().seats;
        assert_eq!(seats(Level::WorkloadLow), 245);
        assert_eq!(seats(Level::CatchAll), 13);
        assert!(fc.state(Level::Exempt).is_none());
    }

    #[tokio::test]
    async fn a_freed_seat_goes_to_the_flows_in_turn() {
        let fc = Arc::new(FlowControl::new(1, Duration::from_secs(30)));
        let level = Level::WorkloadLow;
        let held = fc.admit(level, "noisy").await.unwrap();
        // The noisy flow queues three, then the quiet one queues one behind them.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, flow) in ["noisy", "noisy", "noisy", "quiet"].into_iter().enumerate() {
            let (fc2, order) = (fc.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let seat = fc2.admit(level, flow).await.unwrap();
                order.lock().unwrap().push(flow);
                drop(seat);
            }));
            // Queue them in this order: wait until this one is counted.
            while fc.state(level).unwrap().queues.lock().unwrap().waiting <= i {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["noisy", "quiet", "noisy", "noisy"]);
        let q = fc.state(level).unwrap().queues.lock().unwrap();
        assert_eq!((q.executing, q.waiting), (0, 0));
    }

    #[tokio::test]
    async fn full_queues_and_long_waits_are_refused_and_leave_nothing_queued() {
        let fc = FlowControl::new(1, Duration::from_millis(50));
        let held = fc.admit(Level::CatchAll, "anon").await.unwrap();
        assert_eq!(
            fc.admit(Level::CatchAll, "anon").await.err(),
            Some(Rejected::QueueFull)
        );
        let _w = fc.admit(Level::WorkloadLow, "sa").await.unwrap();
        assert_eq!(
            fc.admit(Level::WorkloadLow, "sa").await.err(),
            Some(Rejected::TimedOut)
        );
        let q = fc.state(Level::WorkloadLow).unwrap().queues.lock().unwrap();
        assert_eq!((q.executing, q.waiting, q.turn.len()), (1, 0, 0));
        drop(q);
        drop(held);
        assert_eq!(
            fc.state(Level::CatchAll)
                .unwrap()
                .queues
                .lock()
                .unwrap()
                .executing,
            0
        );
    }
}

//! The scheduling queue, as upstream's: pods wait in `active` (highest priority first, then oldest),
//! `backoff` (after a failed attempt, 1 s doubling to 10 s by default) or `unschedulable` (no node fit;
//! parked until a cluster event that could help them — a node added, a pod deleted, a label changed —
//! or five minutes have passed). A pod whose attempt overlapped such an event goes to backoff instead of
//! being parked, so the event is not lost.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::framework::PluginName;
use crate::model::PodInfo;

/// How long an unschedulable pod is parked at most before it is tried again anyway.
const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// A cluster event and the plugins whose refusals it may lift (upstream's queueing hints, coarsely).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdd,
    NodeAllocatableUp,
    NodeLabels,
    NodeTaints,
    NodeSchedulable,
    AssignedPodAdd,
    AssignedPodUpdate,
    AssignedPodDelete,
    Volumes,
    NamespaceLabels,
    WorkloadSelectors,
}

impl ClusterEvent {
    pub fn helps(self, p: PluginName) -> bool {
        use PluginName::*;
        match self {
            ClusterEvent::NodeAdd => true,
            ClusterEvent::NodeAllocatableUp => matches!(p, NodeResourcesFit),
            ClusterEvent::NodeLabels => matches!(
                p,
                NodeAffinity | PodTopologySpread | InterPodAffinity | VolumeBinding
            ),
            ClusterEvent::NodeTaints => matches!(p, TaintToleration | PodTopologySpread),
            ClusterEvent::NodeSchedulable => matches!(p, NodeUnschedulable),
            ClusterEvent::AssignedPodAdd | ClusterEvent::AssignedPodUpdate => {
                matches!(p, PodTopologySpread | InterPodAffinity)
            }
            ClusterEvent::AssignedPodDelete => matches!(
                p,
                NodeResourcesFit | NodePorts | PodTopologySpread | InterPodAffinity
            ),
            ClusterEvent::Volumes => matches!(p, VolumeBinding),
            ClusterEvent::NamespaceLabels => matches!(p, InterPodAffinity),
            ClusterEvent::WorkloadSelectors => matches!(p, PodTopologySpread),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    Gated,
    InFlight,
}

/// A pod popped for a scheduling attempt.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub pod: Arc<PodInfo>,
    pub attempts: u32,
}

struct Entry {
    pod: Arc<PodInfo>,
    place: Place,
    attempts: u32,
    /// Ordering among pods of the same priority: when the pod (re)entered the active queue.
    since: u64,
    seq: u64,
    last_failure: Option<Instant>,
    rejectors: Vec<PluginName>,
    move_seq_at_pop: u64,
}

#[derive(PartialEq, Eq)]
struct ActiveKey {
    priority: i32,
    since: Reverse<u64>,
    seq: u64,
    uid: String,
}

impl Ord for ActiveKey {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.priority, &self.since).cmp(&(o.priority, &o.since))
    }
}

impl PartialOrd for ActiveKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveKey>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Parked pods in the order they were parked: (when, the entry's seq then, uid). An item is stale
    /// once the entry moved on (its seq changed); stale items are dropped as they are met. In time
    /// order, a flush looks only at the front: with 10,000 parked pods, scanning them all at every
    /// cycle was most of the scheduler's CPU.
    parked: VecDeque<(Instant, u64, String)>,
    seq: u64,
    move_seq: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Queue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Queue {
        Queue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            parked: Default::default(),
            seq: 0,
            move_seq: 0,
            initial_backoff,
            max_backoff,
        }
    }

    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            d *= 2;
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    fn backoff_until(&self, e: &Entry) -> Option<Instant> {
        let at = e.last_failure? + self.backoff_for(e.attempts);
        (at > Instant::now()).then_some(at)
    }

    fn activate(&mut self, uid: &str) {
        let seq = self.next();
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        e.place = Place::Active;
        e.seq = seq;
        e.since = seq;
        self.active.push(ActiveKey {
            priority: e.pod.priority,
            since: Reverse(seq),
            seq,
            uid: uid.to_string(),
        });
    }

    /// Active, or backoff while the pod's backoff lasts.
    fn requeue(&mut self, uid: &str) {
        let until = match self.entries.get(uid) {
            Some(e) => self.backoff_until(e),
            None => return,
        };
        match until {
            None => self.activate(uid),
            Some(at) => {
                let seq = self.next();
                let e = self.entries.get_mut(uid).expect("entry");
                e.place = Place::Backoff;
                e.seq = seq;
                self.backoff.push(Reverse((at, seq, uid.to_string())));
            }
        }
    }

    /// A pending pod from the watch: new, or an update of one already queued.
    pub fn upsert(&mut self, pod: Arc<PodInfo>) {
        let uid = pod.uid.clone();
        match self.entries.get_mut(&uid) {
            None => {
                let gated = pod.gated;
                self.entries.insert(
                    uid.clone(),
                    Entry {
                        pod,
                        place: Place::Gated,
                        attempts: 0,
                        since: 0,
                        seq: 0,
                        last_failure: None,
                        rejectors: Vec::new(),
                        move_seq_at_pop: 0,
                    },
                );
                if !gated {
                    self.activate(&uid);
                }
            }
            Some(e) => {
                let changed = e.pod.fingerprint != pod.fingerprint;
                let gated = pod.gated;
                e.pod = pod;
                match e.place {
                    Place::Gated if !gated => self.activate(&uid),
                    Place::Unschedulable if changed => self.requeue(&uid),
                    Place::Active => {
                        // The heap holds the old priority: re-push (the stale key is skipped).
                        let since = e.since;
                        let seq = self.next();
                        let e = self.entries.get_mut(&uid).expect("entry");
                        e.seq = seq;
                        self.active.push(ActiveKey {
                            priority: e.pod.priority,
                            since: Reverse(since),
                            seq,
                            uid,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn delete(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Moves expired backoffs to active and long-parked pods out of unschedulable; returns when the next
    /// backoff ends.
    pub fn flush(&mut self) -> Option<Instant> {
        let now = Instant::now();
        while let Some(Reverse((at, seq, uid))) = self.backoff.peek().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop();
            if self
                .entries
                .get(&uid)
                .is_some_and(|e| e.seq == seq && e.place == Place::Backoff)
            {
                self.activate(&uid);
            }
        }
        while let Some((at, seq, uid)) = self.parked.front() {
            if !self.is_parked(*seq, uid) {
                self.parked.pop_front();
                continue;
            }
            if now.duration_since(*at) <= MAX_IN_UNSCHEDULABLE {
                break;
            }
            let (_, _, uid) = self.parked.pop_front().expect("front");
            self.requeue(&uid);
        }
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Whether a `parked` item is current: its pod is still parked since then.
    fn is_parked(&self, seq: u64, uid: &str) -> bool {
        self.entries
            .get(uid)
            .is_some_and(|e| e.place == Place::Unschedulable && e.seq == seq)
    }

    /// The next pod to schedule, if one is active.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        while let Some(k) = self.active.pop() {
            let move_seq = self.move_seq;
            let Some(e) = self.entries.get_mut(&k.uid) else {
                continue;
            };
            if e.seq != k.seq || e.place != Place::Active {
                continue;
            }
            e.place = Place::InFlight;
            e.attempts += 1;
            e.move_seq_at_pop = move_seq;
            return Some(QueuedPod {
                pod: e.pod.clone(),
                attempts: e.attempts,
            });
        }
        None
    }

    /// The attempt placed the pod: it leaves the queue (the watch sees it bound).
    pub fn done(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    /// The latest version of a queued pod.
    pub fn pod(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.entries.get(uid).map(|e| e.pod.clone())
    }

    /// Replaces the pod info of a queued pod (its nominated node after preemption).
    pub fn set_pod(&mut self, pod: Arc<PodInfo>) {
        if let Some(e) = self.entries.get_mut(&pod.uid) {
            e.pod = pod;
        }
    }

    /// The attempt failed. `rejectors` are the plugins that refused nodes (empty: an error, or no
    /// nodes — any event may help). Errors back off; refusals park the pod unless an event came
    /// during the attempt.
    pub fn failed(&mut self, uid: &str, rejectors: Vec<PluginName>, error: bool) {
        let now = Instant::now();
        let move_seq = self.move_seq;
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        e.last_failure = Some(now);
        e.rejectors = rejectors;
        if error || e.move_seq_at_pop != move_seq {
            self.requeue(uid);
        } else {
            let seq = self.next();
            let e = self.entries.get_mut(uid).expect("entry");
            e.place = Place::Unschedulable;
            e.seq = seq;
            self.parked.push_back((now, seq, uid.to_string()));
        }
    }

    /// A pod whose binding failed comes back for another attempt after its backoff.
    pub fn retry(&mut self, pod: Arc<PodInfo>) {
        let uid = pod.uid.clone();
        let attempts = self.entries.get(&uid).map(|e| e.attempts).unwrap_or(1);
        self.entries.insert(
            uid.clone(),
            Entry {
                pod,
                place: Place::InFlight,
                attempts,
                since: 0,
                seq: 0,
                last_failure: Some(Instant::now()),
                rejectors: Vec::new(),
                move_seq_at_pop: 0,
            },
        );
        self.requeue(&uid);
    }

    /// A cluster event: parked pods it may help leave `unschedulable`. Returns how many moved.
    pub fn on_event(&mut self, ev: ClusterEvent) -> usize {
        self.move_seq += 1;
        if self.parked.is_empty() {
            return 0;
        }
        // Every parked pod is looked at (as upstream's MoveAllToActiveOrBackoffQueue); the stale items
        // go on the way, the ones the event may help leave.
        let mut moved = Vec::new();
        let mut kept = VecDeque::with_capacity(self.parked.len());
        for (at, seq, uid) in std::mem::take(&mut self.parked) {
            let Some(e) = self
                .entries
                .get(&uid)
                .filter(|e| e.place == Place::Unschedulable && e.seq == seq)
            else {
                continue;
            };
            if e.rejectors.is_empty() || e.rejectors.iter().any(|p| ev.helps(*p)) {
                moved.push(uid);
            } else {
                kept.push_back((at, seq, uid));
            }
        }
        self.parked = kept;
        for uid in &moved {
            self.requeue(uid);
        }
        moved.len()
    }

    /// Pods parked as unschedulable (for tests and logs).
    pub fn unschedulable(&self) -> usize {
        self.parked
            .iter()
            .filter(|(_, seq, uid)| self.is_parked(*seq, uid))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            uid: uid.into(),
            priority,
            fingerprint: 1,
            ..Default::default()
        })
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let mut q = Queue::new(Duration::from_secs(1), Duration::from_secs(10));
        q.upsert(pod("a", 0));
        q.upsert(pod("b", 10));
        q.upsert(pod("c", 0));
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop().map(|p| p.pod.uid.clone())).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn parked_pods_move_only_on_events_that_may_help() {
        let mut q = Queue::new(Duration::from_millis(1), Duration::from_millis(1));
        q.upsert(pod("a", 0));
        let p = q.pop().unwrap();
        q.failed(&p.pod.uid, vec![PluginName::TaintToleration], false);
        assert_eq!(q.unschedulable(), 1);
        assert_eq!(q.on_event(ClusterEvent::AssignedPodDelete), 0);
        assert_eq!(q.on_event(ClusterEvent::NodeTaints), 1);
        std::thread::sleep(Duration::from_millis(2));
        q.flush();
        assert_eq!(q.pop().unwrap().attempts, 2);
    }

    #[test]
    fn a_pod_parked_again_counts_once_and_an_updated_one_leaves_the_parking() {
        let mut q = Queue::new(Duration::from_millis(1), Duration::from_millis(1));
        q.upsert(pod("a", 0));
        q.upsert(pod("b", 0));
        for _ in 0..2 {
            let p = q.pop().unwrap();
            q.failed(&p.pod.uid, vec![PluginName::NodeAffinity], false);
        }
        assert_eq!(q.unschedulable(), 2);
        // `a` helped out, tried and parked again: its first parking is stale, not a second pod.
        assert_eq!(q.on_event(ClusterEvent::NodeLabels), 2);
        std::thread::sleep(Duration::from_millis(2));
        q.flush();
        while let Some(p) = q.pop() {
            q.failed(&p.pod.uid, vec![PluginName::NodeAffinity], false);
        }
        assert_eq!(q.unschedulable(), 2);
        // A changed pod is requeued; its parking goes stale and the next event moves only `b`.
        let mut changed = pod("a", 0);
        Arc::get_mut(&mut changed).unwrap().fingerprint += 1;
        q.upsert(changed);
        assert_eq!(q.unschedulable(), 1);
        assert_eq!(q.on_event(ClusterEvent::NodeAdd), 1);
        assert_eq!(q.unschedulable(), 0);
    }

    #[test]
    fn an_event_during_the_attempt_sends_the_pod_to_backoff_not_to_the_parking() {
        let mut q = Queue::new(Duration::from_secs(5), Duration::from_secs(10));
        q.upsert(pod("a", 0));
        let p = q.pop().unwrap();
        q.on_event(ClusterEvent::NodeAdd);
        q.failed(&p.pod.uid, vec![PluginName::NodeResourcesFit], false);
        assert_eq!(q.unschedulable(), 0);
        assert!(q.flush().is_some(), "backing off");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let q = Queue::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(q.backoff_for(1), Duration::from_secs(1));
        assert_eq!(q.backoff_for(3), Duration::from_secs(4));
        assert_eq!(q.backoff_for(9), Duration::from_secs(10));
    }
}

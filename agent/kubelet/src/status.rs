//! What a pod worker decides and reports, with no I/O: the restart policies, the next step for each
//! container, and the pod's status (phase, conditions, container statuses) from one relist of the runtime and
//! what the worker tracks. Upstream's rules and reason strings live here, so they can be tested alone.

use std::collections::HashMap;

use basalt_proto::cri;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::probes::ProbeState;

/// A pod's `restartPolicy` (and a sidecar's, which is always `Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The pod's policy; unset is `Always` (validated pods have no other value).
    pub fn of(pod: &Pod) -> RestartPolicy {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` runs again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Always => true,
        }
    }
}

/// An init container with `restartPolicy: Always` is a sidecar: started in order, then kept running.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A container's `imagePullPolicy`, defaulted as the apiserver defaults it: `Always` for `:latest` or no tag
/// (and no digest), else `IfNotPresent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn of(c: &Container) -> PullPolicy {
        match c.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            // An unknown value pulls, as the apiserver would have refused it.
            Some(_) => PullPolicy::Always,
            None => {
                let image = c.image.as_deref().unwrap_or_default();
                let tag_latest = match image.rsplit_once(':') {
                    Some((_, tag)) if !tag.contains('/') => tag == "latest",
                    _ => !image.contains('@'),
                };
                if tag_latest {
                    PullPolicy::Always
                } else {
                    PullPolicy::IfNotPresent
                }
            }
        }
    }
}

/// Why a container is not running while the kubelet holds it back: upstream's waiting reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    CrashLoopBackOff,
    ErrImagePull,
    ImagePullBackOff,
    ErrImageNeverPull,
    CreateContainerConfigError,
    CreateContainerError,
    RunContainerError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CrashLoopBackOff => "CrashLoopBackOff",
            Reason::ErrImagePull => "ErrImagePull",
            Reason::ImagePullBackOff => "ImagePullBackOff",
            Reason::ErrImageNeverPull => "ErrImageNeverPull",
            Reason::CreateContainerConfigError => "CreateContainerConfigError",
            Reason::CreateContainerError => "CreateContainerError",
            Reason::RunContainerError => "RunContainerError",
        }
    }
}

/// A waiting state the kubelet imposes, shown instead of the runtime's while the container does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: Reason,
    pub message: String,
}

/// Why the kubelet killed a container: it runs again whatever its exit code (unless the policy is Never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Killed {
    /// The startup probe failed; its message.
    Startup(String),
    /// The liveness probe failed; its message.
    Liveness(String),
    PostStartHook,
}

/// What the worker keeps between passes for one container name.
#[derive(Debug, Default)]
pub struct Tracked {
    pub probes: Probes,
    pub started: bool,
    pub ready: bool,
    pub waiting: Option<Waiting>,
    pub killed: Option<Killed>,
}

/// The probes of one attempt of a container, as far as they got.
#[derive(Debug, Default)]
pub struct Probes {
    /// The container ID the states belong to.
    pub id: String,
    pub startup: Option<ProbeState>,
    pub liveness: Option<ProbeState>,
    pub readiness: Option<ProbeState>,
}

/// The runtime's view of one attempt of a container.
#[derive(Debug, Clone)]
pub struct Observed {
    pub id: String,
    pub attempt: u32,
    pub state: cri::ContainerState,
    pub status: cri::ContainerStatus,
    /// What it left at its terminationMessagePath (read once it has exited).
    pub termination_message: Option<String>,
}

impl Observed {
    pub fn exited(&self) -> bool {
        self.state == cri::ContainerState::ContainerExited
    }
    pub fn running(&self) -> bool {
        self.state == cri::ContainerState::ContainerRunning
    }
}

/// One relist of the pod's sandbox, shared by a pass's actions, its container GC and its status.
#[derive(Debug, Default)]
pub struct Relisted {
    /// The latest attempt per container name.
    pub seen: HashMap<String, Observed>,
    /// The attempt before the latest, per name (lastState).
    pub previous: HashMap<String, Observed>,
    /// Every exited container: (name, attempt, id).
    pub exited: Vec<(String, u32, String)>,
}

/// The next step for an init container, which runs to completion before the next one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitStep {
    /// Never created: create and start it; the pass ends there.
    Start,
    /// Created, not started (a kubelet restart in between): start it.
    StartCreated,
    /// Exited 0: on to the next one.
    Done,
    /// Failed, and the policy restarts it (after back-off).
    Restart,
    /// Failed under `restartPolicy: Never`: the pod has failed for good.
    FailPod,
    /// Running: wait for it.
    Wait,
}

pub fn init_step(seen: Option<&Observed>, policy: RestartPolicy) -> InitStep {
    match seen {
        None => InitStep::Start,
        Some(s) if s.exited() => {
            if s.status.exit_code == 0 {
                InitStep::Done
            } else if policy == RestartPolicy::Never {
                InitStep::FailPod
            } else {
                InitStep::Restart
            }
        }
        Some(s) if s.state == cri::ContainerState::ContainerCreated => InitStep::StartCreated,
        Some(_) => InitStep::Wait,
    }
}

/// The next step for a container that should be running (an app container or a sidecar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Start,
    StartCreated,
    /// Running: its probes are due a look.
    Probe,
    /// It has stopped and runs again (after back-off).
    Restart,
    /// It has stopped for good.
    Leave,
}

/// `killed`: the kubelet killed it (a failed probe or hook), which restarts it whatever its exit code.
pub fn running_step(seen: Option<&Observed>, policy: RestartPolicy, killed: bool) -> Step {
    match seen {
        None => Step::Start,
        Some(s) if s.running() => Step::Probe,
        Some(s) if s.state == cri::ContainerState::ContainerCreated => Step::StartCreated,
        Some(s) => {
            if policy.restarts(s.status.exit_code) || killed && policy != RestartPolicy::Never {
                Step::Restart
            } else {
                Step::Leave
            }
        }
    }
}

/// No app container will run again: the pod's sidecars are stopped then.
pub fn apps_done(
    containers: &[Container],
    seen: &HashMap<String, Observed>,
    policy: RestartPolicy,
) -> bool {
    containers.iter().all(|c| {
        seen.get(&c.name)
            .is_some_and(|s| s.exited() && !policy.restarts(s.status.exit_code))
    })
}

/// What the pod's status is computed from.
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub relisted: &'a Relisted,
    pub tracked: &'a HashMap<String, Tracked>,
    /// The pod failed for good (restartPolicy Never and an init container failed).
    pub failed: bool,
    /// The ready sandbox's IPs, or None without one.
    pub sandbox_ips: Option<&'a [String]>,
    pub host_ip: &'a str,
    pub started_at: Option<Time>,
    /// Why the last pass failed, if it did.
    pub message: Option<String>,
    /// The status before: a condition whose status did not change keeps its transition time.
    pub old_conditions: &'a [PodCondition],
    pub now: Time,
}

/// The pod's status, as upstream's kubelet computes it.
pub fn pod_status(i: Inputs) -> PodStatus {
    let spec = i.pod.spec.as_ref().expect("validated");
    let policy = RestartPolicy::of(i.pod);
    let seen = &i.relisted.seen;
    let status_for = |c: &Container| {
        container_status(
            c,
            seen.get(&c.name),
            i.relisted.previous.get(&c.name),
            i.tracked.get(&c.name),
        )
    };
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let init_statuses: Vec<_> = inits.iter().map(status_for).collect();
    let app_statuses: Vec<_> = spec.containers.iter().map(status_for).collect();
    let init_done = inits.iter().all(|c| {
        if is_sidecar(c) {
            i.tracked.get(&c.name).is_some_and(|t| t.started)
        } else {
            seen.get(&c.name)
                .is_some_and(|s| s.exited() && s.status.exit_code == 0)
        }
    });
    let phase = if i.failed {
        "Failed"
    } else if !init_done {
        "Pending"
    } else {
        phase(policy, &app_statuses)
    };
    let all_ready = app_statuses.iter().all(|c| c.ready);
    let cond = |type_: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        // Keep the transition time of a condition whose status did not change.
        let since = match i
            .old_conditions
            .iter()
            .find(|o| o.type_ == type_ && o.status == status)
        {
            Some(o) => o.last_transition_time.clone(),
            None => Some(i.now.clone()),
        };
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: since,
            reason: reason.map(str::to_owned),
            ..Default::default()
        }
    };
    let conditions = vec![
        cond("PodReadyToStartContainers", i.sandbox_ips.is_some(), None),
        cond(
            "Initialized",
            init_done,
            (!init_done).then_some("ContainersNotInitialized"),
        ),
        cond(
            "Ready",
            all_ready && phase == "Running",
            (!all_ready).then_some("ContainersNotReady"),
        ),
        cond(
            "ContainersReady",
            all_ready,
            (!all_ready).then_some("ContainersNotReady"),
        ),
        cond("PodScheduled", true, None),
    ];
    let ips = i.sandbox_ips.unwrap_or_default();
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(app_statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: Some(i.host_ip.to_owned()),
        pod_ip: ips.first().cloned(),
        pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        qos_class: Some(crate::qos::qos_class(i.pod).as_str().into()),
        start_time: i.started_at,
        message: i.message,
        ..Default::default()
    }
}

/// One container's status: the runtime's state, unless the kubelet holds it back (then that waiting state,
/// with the runtime's as lastState); lastState else from the attempt before.
pub fn container_status(
    c: &Container,
    seen: Option<&Observed>,
    previous: Option<&Observed>,
    tracked: Option<&Tracked>,
) -> ContainerStatus {
    let mut cs = ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        restart_count: seen.map(|s| s.attempt as i32).unwrap_or(0),
        ..Default::default()
    };
    let running = seen.is_some_and(Observed::running);
    cs.ready = running && tracked.is_some_and(|t| t.ready);
    cs.started = Some(running && tracked.is_none_or(|t| t.started));
    if let Some(s) = seen {
        cs.container_id = Some(container_id(&s.id));
        cs.image_id = s.status.image_ref.clone();
        cs.state = Some(state_of(s));
    }
    if let Some(w) = tracked.and_then(|t| t.waiting.as_ref()) {
        if !running {
            cs.state = Some(waiting(w.reason.as_str(), Some(w.message.clone())));
            cs.last_state = seen.map(state_of);
        }
    }
    if cs.state.is_none() {
        cs.state = Some(waiting("ContainerCreating", None));
    }
    if cs.last_state.is_none() {
        cs.last_state = previous.map(state_of);
    }
    cs
}

/// Upstream's phase rules for app containers.
pub fn phase(policy: RestartPolicy, statuses: &[ContainerStatus]) -> &'static str {
    let (mut running, mut waiting, mut failed) = (0, 0, 0);
    for s in statuses {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            if t.exit_code != 0 {
                failed += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            // Waiting to restart after having run: still a running pod.
            running += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if failed > 0 && policy == RestartPolicy::Never {
        "Failed"
    } else if policy == RestartPolicy::Always {
        "Running"
    } else if failed > 0 {
        // OnFailure restarts failed containers.
        "Running"
    } else {
        "Succeeded"
    }
}

/// The runtime's name in container IDs (`cri://<id>`).
const RUNTIME_NAME: &str = "cri";

fn container_id(id: &str) -> String {
    format!("{RUNTIME_NAME}://{id}")
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

/// A CRI container's state as the API shows it.
pub fn state_of(s: &Observed) -> ContainerState {
    let st = &s.status;
    match s.state {
        cri::ContainerState::ContainerRunning => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(st.started_at),
            }),
            ..Default::default()
        },
        cri::ContainerState::ContainerExited => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: st.exit_code,
                reason: Some(st.reason.clone()).filter(|r| !r.is_empty()),
                message: s.termination_message.clone(),
                started_at: time(st.started_at),
                finished_at: time(st.finished_at),
                container_id: Some(container_id(&st.id)),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => waiting("ContainerCreating", None),
    }
}

/// A CRI timestamp (ns since the epoch; 0 is none) as an API time.
pub fn time(ns: i64) -> Option<Time> {
    (ns > 0).then(|| {
        Time(k8s_openapi::jiff::Timestamp::from_nanosecond(ns as i128).unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        crate::manifest::parse(std::path::Path::new("/m/p.yaml"), yaml, "n")
            .unwrap()
            .remove(0)
    }

    fn observed(name: &str, attempt: u32, state: cri::ContainerState, code: i32) -> Observed {
        Observed {
            id: format!("{name}-{attempt}"),
            attempt,
            state,
            status: cri::ContainerStatus {
                id: format!("{name}-{attempt}"),
                state: state as i32,
                exit_code: code,
                started_at: 1_000_000_000,
                finished_at: if state == cri::ContainerState::ContainerExited {
                    2_000_000_000
                } else {
                    0
                },
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                ..Default::default()
            },
            termination_message: None,
        }
    }

    use cri::ContainerState::{ContainerCreated as Created, ContainerExited as Exited};
    use cri::ContainerState::{ContainerRunning as Running, ContainerUnknown as Unknown};

    const PODS: &str = "kind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: POLICY\n  containers:\n  - {name: a, image: i}\n  - {name: b, image: i}\n";

    fn status_with(
        policy: &str,
        seen: &[Observed],
        tracked: HashMap<String, Tracked>,
    ) -> PodStatus {
        let p = pod(&PODS.replace("POLICY", policy));
        let relisted = Relisted {
            seen: seen
                .iter()
                .map(|o| (o.id.split('-').next().unwrap().to_owned(), o.clone()))
                .collect(),
            ..Default::default()
        };
        let ips = vec!["10.0.0.2".to_owned()];
        pod_status(Inputs {
            pod: &p,
            relisted: &relisted,
            tracked: &tracked,
            failed: false,
            sandbox_ips: Some(&ips),
            host_ip: "192.0.2.1",
            started_at: time(1),
            message: None,
            old_conditions: &[],
            now: time(5_000_000_000).unwrap(),
        })
    }

    fn ready(names: &[&str]) -> HashMap<String, Tracked> {
        names
            .iter()
            .map(|n| {
                let t = Tracked {
                    started: true,
                    ready: true,
                    ..Default::default()
                };
                (n.to_string(), t)
            })
            .collect()
    }

    #[test]
    fn restart_policies_decide_on_the_exit_code() {
        use RestartPolicy::*;
        assert!(Always.restarts(0) && Always.restarts(1));
        assert!(!OnFailure.restarts(0) && OnFailure.restarts(1));
        assert!(!Never.restarts(0) && !Never.restarts(1));
        let p = |yaml: &str| RestartPolicy::of(&pod(yaml));
        assert_eq!(p(&PODS.replace("  restartPolicy: POLICY\n", "")), Always);
        assert_eq!(p(&PODS.replace("POLICY", "OnFailure")), OnFailure);
        assert_eq!(p(&PODS.replace("POLICY", "Never")), Never);
    }

    #[test]
    fn steps_for_running_containers() {
        use RestartPolicy::*;
        let done = observed("a", 0, Exited, 0);
        let failed = observed("a", 0, Exited, 3);
        assert_eq!(running_step(None, Never, false), Step::Start);
        let running = observed("a", 0, Running, 0);
        assert_eq!(running_step(Some(&running), Never, false), Step::Probe);
        let created = observed("a", 0, Created, 0);
        assert_eq!(
            running_step(Some(&created), Always, false),
            Step::StartCreated
        );
        assert_eq!(running_step(Some(&done), Always, false), Step::Restart);
        assert_eq!(running_step(Some(&done), OnFailure, false), Step::Leave);
        assert_eq!(running_step(Some(&failed), OnFailure, false), Step::Restart);
        assert_eq!(running_step(Some(&failed), Never, false), Step::Leave);
        // Killed by the kubelet: back whatever its exit code, unless the policy is Never.
        assert_eq!(running_step(Some(&done), OnFailure, true), Step::Restart);
        assert_eq!(running_step(Some(&done), Never, true), Step::Leave);
        let unknown = observed("a", 0, Unknown, 0);
        assert_eq!(running_step(Some(&unknown), Always, false), Step::Restart);
    }

    #[test]
    fn steps_for_init_containers() {
        use InitStep::*;
        use RestartPolicy::*;
        assert_eq!(init_step(None, Always), Start);
        for (state, code, policy, want) in [
            (Exited, 0, Never, Done),
            (Exited, 1, OnFailure, Restart),
            (Exited, 1, Never, FailPod),
            (Created, 0, Never, StartCreated),
            (Running, 0, Never, Wait),
        ] {
            let seen = observed("i", 0, state, code);
            assert_eq!(
                init_step(Some(&seen), policy),
                want,
                "{state:?} {code} {policy:?}"
            );
        }
    }

    #[test]
    fn sidecars_stop_once_no_app_runs_again() {
        let p = pod(&PODS.replace("POLICY", "OnFailure"));
        let apps = &p.spec.as_ref().unwrap().containers;
        let seen = |a: Observed, b: Observed| -> HashMap<String, Observed> {
            [("a".to_owned(), a), ("b".to_owned(), b)].into()
        };
        let policy = RestartPolicy::OnFailure;
        let both_done = seen(observed("a", 0, Exited, 0), observed("b", 2, Exited, 0));
        assert!(apps_done(apps, &both_done, policy));
        let one_failed = seen(observed("a", 0, Exited, 0), observed("b", 0, Exited, 1));
        assert!(!apps_done(apps, &one_failed, policy), "b restarts");
        assert!(apps_done(apps, &one_failed, RestartPolicy::Never));
        let running = seen(observed("a", 0, Exited, 0), observed("b", 0, Running, 0));
        assert!(!apps_done(apps, &running, policy));
        assert!(!apps_done(apps, &HashMap::new(), policy), "not yet started");
    }

    #[test]
    fn pull_policies_default_by_tag() {
        let c = |image: &str, policy: Option<&str>| Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(Into::into),
            ..Default::default()
        };
        use PullPolicy::*;
        for (image, policy, want) in [
            ("busybox", None, Always),
            ("busybox:latest", None, Always),
            ("reg:5000/busybox", None, Always),
            ("busybox:1.36", None, IfNotPresent),
            ("busybox@sha256:ab", None, IfNotPresent),
            ("busybox", Some("Never"), Never),
        ] {
            assert_eq!(
                PullPolicy::of(&c(image, policy)),
                want,
                "{image} {policy:?}"
            );
        }
    }

    #[test]
    fn phases_follow_upstream() {
        let s = status_with("Always", &[observed("a", 0, Running, 0)], ready(&["a"]));
        assert_eq!(s.phase.as_deref(), Some("Pending"), "b not created yet");
        let both = [observed("a", 0, Running, 0), observed("b", 0, Running, 0)];
        assert_eq!(
            status_with("Never", &both, ready(&["a", "b"]))
                .phase
                .as_deref(),
            Some("Running")
        );
        let done = [observed("a", 0, Exited, 0), observed("b", 0, Exited, 0)];
        assert_eq!(
            status_with("Never", &done, HashMap::new()).phase.as_deref(),
            Some("Succeeded")
        );
        assert_eq!(
            status_with("OnFailure", &done, HashMap::new())
                .phase
                .as_deref(),
            Some("Succeeded")
        );
        assert_eq!(
            status_with("Always", &done, HashMap::new())
                .phase
                .as_deref(),
            Some("Running")
        );
        let failed = [observed("a", 0, Exited, 0), observed("b", 0, Exited, 2)];
        assert_eq!(
            status_with("Never", &failed, HashMap::new())
                .phase
                .as_deref(),
            Some("Failed")
        );
        assert_eq!(
            status_with("OnFailure", &failed, HashMap::new())
                .phase
                .as_deref(),
            Some("Running")
        );
    }

    #[test]
    fn conditions_and_their_transition_times() {
        let both = [observed("a", 0, Running, 0), observed("b", 0, Running, 0)];
        let s = status_with("Always", &both, ready(&["a"]));
        let cond = |s: &PodStatus, t: &str| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .cloned()
                .unwrap()
        };
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
        assert_eq!(cond(&s, "Initialized").status, "True");
        let r = cond(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("False", Some("ContainersNotReady"))
        );
        assert_eq!(cond(&s, "ContainersReady").status, "False");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        let t = &s.container_statuses.as_ref().unwrap()[1];
        assert!(
            !t.ready && t.started == Some(true),
            "not probed: started, not ready: {t:?}"
        );
        let s = status_with("Always", &both, ready(&["a", "b"]));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(
            (s.pod_ip.as_deref(), s.host_ip.as_deref()),
            (Some("10.0.0.2"), Some("192.0.2.1"))
        );
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));

        // The same status keeps its time; a changed one takes the new pass's.
        let p = pod(&PODS.replace("POLICY", "Always"));
        let relisted = Relisted {
            seen: [("a".into(), both[0].clone()), ("b".into(), both[1].clone())].into(),
            ..Default::default()
        };
        let before = time(1_000).unwrap();
        let old = vec![
            PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(before.clone()),
                ..Default::default()
            },
            PodCondition {
                type_: "Ready".into(),
                status: "False".into(),
                last_transition_time: Some(before.clone()),
                ..Default::default()
            },
        ];
        let now = time(9_000_000_000).unwrap();
        let tracked = ready(&["a", "b"]);
        let s = pod_status(Inputs {
            pod: &p,
            relisted: &relisted,
            tracked: &tracked,
            failed: false,
            sandbox_ips: None,
            host_ip: "192.0.2.1",
            started_at: None,
            message: Some("why".into()),
            old_conditions: &old,
            now: now.clone(),
        });
        assert_eq!(cond(&s, "PodScheduled").last_transition_time, Some(before));
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(now));
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        assert_eq!(s.message.as_deref(), Some("why"));
    }

    #[test]
    fn init_containers_hold_the_pod_pending() {
        let yaml = "kind: Pod\nmetadata: {name: p}\nspec:\n  initContainers:\n  - {name: i, image: i}\n  - {name: s, image: i, restartPolicy: Always}\n  containers:\n  - {name: a, image: i}\n";
        let p = pod(yaml);
        let mut relisted = Relisted::default();
        relisted
            .seen
            .insert("i".into(), observed("i", 0, Exited, 0));
        relisted
            .seen
            .insert("s".into(), observed("s", 0, Running, 0));
        let status = |tracked: &HashMap<String, Tracked>, failed: bool| {
            pod_status(Inputs {
                pod: &p,
                relisted: &relisted,
                tracked,
                failed,
                sandbox_ips: None,
                host_ip: "h",
                started_at: None,
                message: None,
                old_conditions: &[],
                now: time(1).unwrap(),
            })
        };
        let s = status(&HashMap::new(), false);
        assert_eq!(
            s.phase.as_deref(),
            Some("Pending"),
            "the sidecar has not started"
        );
        let init = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap();
        assert_eq!(init.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(s.init_container_statuses.unwrap().len(), 2);
        let s = status(&ready(&["s"]), false);
        assert_eq!(s.phase.as_deref(), Some("Pending"), "a is not created yet");
        assert!(s
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Initialized" && c.status == "True"));
        assert_eq!(
            status(&ready(&["s"]), true).phase.as_deref(),
            Some("Failed")
        );
    }

    #[test]
    fn a_held_back_container_shows_why_and_what_ran_before() {
        let c = Container {
            name: "a".into(),
            image: Some("i".into()),
            ..Default::default()
        };
        let creating = container_status(&c, None, None, None);
        let w = creating.state.unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(creating.restart_count, 0);

        let mut last = observed("a", 3, Exited, 1);
        last.termination_message = Some("bye".into());
        let tracked = Tracked {
            waiting: Some(Waiting {
                reason: Reason::CrashLoopBackOff,
                message: "back-off 10s".into(),
            }),
            ..Default::default()
        };
        let cs = container_status(&c, Some(&last), None, Some(&tracked));
        let w = cs.state.unwrap().waiting.unwrap();
        assert_eq!(
            (w.reason.as_deref(), w.message.as_deref()),
            (Some("CrashLoopBackOff"), Some("back-off 10s"))
        );
        let t = cs.last_state.unwrap().terminated.unwrap();
        assert_eq!(
            (t.exit_code, t.message.as_deref(), t.reason.as_deref()),
            (1, Some("bye"), Some("Error"))
        );
        assert_eq!(t.container_id.as_deref(), Some("cri://a-3"));
        assert_eq!(
            (cs.restart_count, cs.container_id.as_deref()),
            (3, Some("cri://a-3"))
        );

        // Running again: the waiting reason no longer shows; lastState is the attempt before.
        let now = observed("a", 4, Running, 0);
        let cs = container_status(&c, Some(&now), Some(&last), Some(&tracked));
        assert!(cs.state.unwrap().running.is_some());
        assert_eq!(cs.last_state.unwrap().terminated.unwrap().exit_code, 1);
        assert_eq!(
            cs.started,
            Some(false),
            "not started until its probes say so"
        );
    }
}

//! The scheduler's configuration: a `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1) file
//! with profiles, their plugins and weights and plugin arguments, leader election and backoff; upstream's
//! defaults when there is no file.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use serde::Deserialize;
use serde_json::Value;

use crate::framework::PluginName;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("decode {path}: {source}")]
    Decode {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoringType {
    LeastAllocated,
    MostAllocated,
}

#[derive(Clone, Debug)]
pub struct FitArgs {
    pub scoring: ScoringType,
    pub resources: Vec<(String, i64)>,
    pub ignored_resources: Vec<String>,
}

fn cpu_memory() -> Vec<(String, i64)> {
    vec![("cpu".into(), 1), ("memory".into(), 1)]
}

impl Default for FitArgs {
    fn default() -> Self {
        FitArgs {
            scoring: ScoringType::LeastAllocated,
            resources: cpu_memory(),
            ignored_resources: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SpreadArgs {
    /// Constraints for pods without their own (selectors come from the pod's services and workloads).
    pub defaults: Vec<core::TopologySpreadConstraint>,
}

impl Default for SpreadArgs {
    fn default() -> Self {
        // Upstream's system defaults (defaultingType: System).
        let c = |key: &str, skew| core::TopologySpreadConstraint {
            max_skew: skew,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            ..Default::default()
        };
        SpreadArgs {
            defaults: vec![
                c("kubernetes.io/hostname", 3),
                c("topology.kubernetes.io/zone", 5),
            ],
        }
    }
}

#[derive(Clone, Debug)]
pub struct PluginArgs {
    pub fit: FitArgs,
    pub balanced: Vec<(String, i64)>,
    pub spread: SpreadArgs,
    pub hard_pod_affinity_weight: i64,
}

impl Default for PluginArgs {
    fn default() -> Self {
        PluginArgs {
            fit: FitArgs::default(),
            balanced: cpu_memory(),
            spread: SpreadArgs::default(),
            hard_pod_affinity_weight: 1,
        }
    }
}

/// One scheduling profile: the pods whose `spec.schedulerName` names it are scheduled with its plugins.
#[derive(Clone, Debug)]
pub struct Profile {
    pub scheduler_name: String,
    /// Filters in the order they run.
    pub filters: Vec<PluginName>,
    pub scores: Vec<(PluginName, i64)>,
    pub preemption: bool,
    pub percentage_of_nodes_to_score: Option<u32>,
    pub args: PluginArgs,
}

const DEFAULT_FILTERS: [PluginName; 9] = [
    PluginName::NodeUnschedulable,
    PluginName::NodeName,
    PluginName::TaintToleration,
    PluginName::NodeAffinity,
    PluginName::NodePorts,
    PluginName::NodeResourcesFit,
    PluginName::VolumeBinding,
    PluginName::PodTopologySpread,
    PluginName::InterPodAffinity,
];

const DEFAULT_SCORES: [PluginName; 7] = [
    PluginName::TaintToleration,
    PluginName::NodeAffinity,
    PluginName::NodeResourcesFit,
    PluginName::PodTopologySpread,
    PluginName::InterPodAffinity,
    PluginName::NodeResourcesBalancedAllocation,
    PluginName::ImageLocality,
];

impl Profile {
    pub fn default_named(name: &str) -> Profile {
        Profile {
            scheduler_name: name.into(),
            filters: DEFAULT_FILTERS.to_vec(),
            scores: DEFAULT_SCORES
                .iter()
                .map(|p| (*p, p.default_weight()))
                .collect(),
            preemption: true,
            percentage_of_nodes_to_score: None,
            args: PluginArgs::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub enabled: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub name: String,
    pub namespace: String,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            enabled: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            name: "kube-scheduler".into(),
            namespace: "kube-system".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub profiles: Vec<Profile>,
    pub leader_election: LeaderElection,
    pub percentage_of_nodes_to_score: Option<u32>,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profiles: vec![Profile::default_named("default-scheduler")],
            leader_election: LeaderElection::default(),
            percentage_of_nodes_to_score: None,
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
        }
    }
}

// ------------------------------------------------------------------------------------ the file's shape

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // The fields accepted without effect are only read by the decoder.
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    profiles: Vec<FileProfile>,
    leader_election: Option<FileLeaderElection>,
    percentage_of_nodes_to_score: Option<u32>,
    pod_initial_backoff_seconds: Option<u64>,
    pod_max_backoff_seconds: Option<u64>,
    // Accepted and without effect here: the process, its client and its endpoints are basalt server's.
    parallelism: Option<Value>,
    client_connection: Option<Value>,
    health_z_bind_address: Option<Value>,
    metrics_bind_address: Option<Value>,
    enable_profiling: Option<Value>,
    enable_contention_profiling: Option<Value>,
    extenders: Option<Value>,
    delay_cache_until_active: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileLeaderElection {
    leader_elect: Option<bool>,
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
    resource_lock: Option<String>,
    resource_name: Option<String>,
    resource_namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileProfile {
    scheduler_name: Option<String>,
    percentage_of_nodes_to_score: Option<u32>,
    plugins: Option<FilePlugins>,
    #[serde(default)]
    plugin_config: Vec<FilePluginConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePlugins {
    multi_point: Option<FilePluginSet>,
    pre_enqueue: Option<FilePluginSet>,
    queue_sort: Option<FilePluginSet>,
    pre_filter: Option<FilePluginSet>,
    filter: Option<FilePluginSet>,
    post_filter: Option<FilePluginSet>,
    pre_score: Option<FilePluginSet>,
    score: Option<FilePluginSet>,
    reserve: Option<FilePluginSet>,
    permit: Option<FilePluginSet>,
    pre_bind: Option<FilePluginSet>,
    bind: Option<FilePluginSet>,
    post_bind: Option<FilePluginSet>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilePluginSet {
    #[serde(default)]
    enabled: Vec<FilePlugin>,
    #[serde(default)]
    disabled: Vec<FilePlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePlugin {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePluginConfig {
    name: String,
    args: Option<Value>,
}

/// A Go duration (`15s`, `1m30s`, `500ms`), as the configuration file writes them.
pub use basalt_apimachinery::duration::parse_go as parse_duration;

fn plugin(field: &str, p: &FilePlugin) -> Result<Option<PluginName>, ConfigError> {
    if p.name == "*" {
        return Ok(None);
    }
    match PluginName::parse(&p.name) {
        Some(n) => Ok(Some(n)),
        None if PluginName::known_elsewhere(&p.name) => Ok(None),
        None => Err(invalid(
            field,
            format!("plugin {:?} does not exist", p.name),
        )),
    }
}

fn weight(field: &str, p: &FilePlugin, name: PluginName) -> Result<i64, ConfigError> {
    match p.weight {
        None | Some(0) => Ok(name.default_weight()),
        Some(w) if (1..=100).contains(&w) => Ok(w),
        Some(w) => Err(invalid(
            format!("{field}.weight"),
            format!("{w} is not in the range [1, 100] of plugin {}", name),
        )),
    }
}

fn apply_filters(
    list: &mut Vec<PluginName>,
    set: &FilePluginSet,
    field: &str,
) -> Result<(), ConfigError> {
    for (i, p) in set.disabled.iter().enumerate() {
        if p.name == "*" {
            list.clear();
        } else if let Some(n) = plugin(&format!("{field}.disabled[{i}]"), p)? {
            list.retain(|x| *x != n);
        }
    }
    for (i, p) in set.enabled.iter().enumerate() {
        let f = format!("{field}.enabled[{i}]");
        if let Some(n) = plugin(&f, p)? {
            if !n.is_filter() {
                return Err(invalid(f, format!("plugin {n} is not a filter plugin")));
            }
            if !list.contains(&n) {
                list.push(n);
            }
        }
    }
    Ok(())
}

fn apply_scores(
    list: &mut Vec<(PluginName, i64)>,
    set: &FilePluginSet,
    field: &str,
    multi_point: bool,
) -> Result<(), ConfigError> {
    for (i, p) in set.disabled.iter().enumerate() {
        if p.name == "*" {
            list.clear();
        } else if let Some(n) = plugin(&format!("{field}.disabled[{i}]"), p)? {
            list.retain(|(x, _)| *x != n);
        }
    }
    for (i, p) in set.enabled.iter().enumerate() {
        let f = format!("{field}.enabled[{i}]");
        if let Some(n) = plugin(&f, p)? {
            if !n.is_score() {
                if multi_point {
                    continue;
                }
                return Err(invalid(f, format!("plugin {n} is not a score plugin")));
            }
            let w = weight(&f, p, n)?;
            match list.iter_mut().find(|(x, _)| *x == n) {
                Some(e) => e.1 = w,
                None => list.push((n, w)),
            }
        }
    }
    Ok(())
}

fn args_of(profile: &mut Profile, field: &str, pc: &FilePluginConfig) -> Result<(), ConfigError> {
    let args = pc.args.clone().unwrap_or(Value::Null);
    let get = |k: &str| args.get(k);
    let resources = |v: &Value, f: &str| -> Result<Vec<(String, i64)>, ConfigError> {
        v.as_array()
            .ok_or_else(|| invalid(f, "must be a list"))?
            .iter()
            .map(|r| {
                let name = r
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(f, "resource without a name"))?;
                Ok((
                    name.to_string(),
                    r.get("weight").and_then(Value::as_i64).unwrap_or(1),
                ))
            })
            .collect()
    };
    match pc.name.as_str() {
        "NodeResourcesFit" => {
            if let Some(s) = get("scoringStrategy") {
                let ty = s
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("LeastAllocated");
                profile.args.fit.scoring = match ty {
                    "LeastAllocated" => ScoringType::LeastAllocated,
                    "MostAllocated" => ScoringType::MostAllocated,
                    other => {
                        return Err(invalid(
                            format!("{field}.args.scoringStrategy.type"),
                            format!("{other:?} is not supported (LeastAllocated, MostAllocated)"),
                        ))
                    }
                };
                if let Some(r) = s.get("resources") {
                    profile.args.fit.resources =
                        resources(r, &format!("{field}.args.scoringStrategy.resources"))?;
                }
            }
            if let Some(r) = get("ignoredResources").and_then(Value::as_array) {
                profile.args.fit.ignored_resources = r
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
            }
        }
        "NodeResourcesBalancedAllocation" => {
            if let Some(r) = get("resources") {
                profile.args.balanced = resources(r, &format!("{field}.args.resources"))?;
            }
        }
        "InterPodAffinity" => {
            if let Some(w) = get("hardPodAffinityWeight") {
                let w = w
                    .as_i64()
                    .filter(|w| (0..=100).contains(w))
                    .ok_or_else(|| {
                        invalid(
                            format!("{field}.args.hardPodAffinityWeight"),
                            format!("{w} is not in the range [0, 100]"),
                        )
                    })?;
                profile.args.hard_pod_affinity_weight = w;
            }
        }
        "PodTopologySpread" => {
            let defaulting = get("defaultingType")
                .and_then(Value::as_str)
                .unwrap_or("System");
            match defaulting {
                "System" => {
                    if get("defaultConstraints")
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty())
                    {
                        return Err(invalid(
                            format!("{field}.args.defaultConstraints"),
                            "must be empty when defaultingType is System",
                        ));
                    }
                }
                "List" => {
                    let list = get("defaultConstraints")
                        .cloned()
                        .unwrap_or(Value::Array(vec![]));
                    let parsed: Vec<core::TopologySpreadConstraint> = serde_json::from_value(list)
                        .map_err(|e| {
                            invalid(format!("{field}.args.defaultConstraints"), e.to_string())
                        })?;
                    for (i, c) in parsed.iter().enumerate() {
                        if c.label_selector.is_some() {
                            return Err(invalid(
                                format!("{field}.args.defaultConstraints[{i}].labelSelector"),
                                "must be empty: the selector comes from the pod's workloads",
                            ));
                        }
                        if c.max_skew < 1 {
                            return Err(invalid(
                                format!("{field}.args.defaultConstraints[{i}].maxSkew"),
                                format!("{} must be greater than zero", c.max_skew),
                            ));
                        }
                    }
                    profile.args.spread.defaults = parsed;
                }
                other => {
                    return Err(invalid(
                        format!("{field}.args.defaultingType"),
                        format!("{other:?} is not System or List"),
                    ))
                }
            }
        }
        other if PluginName::parse(other).is_some() || PluginName::known_elsewhere(other) => {}
        other => {
            return Err(invalid(
                format!("{field}.name"),
                format!("plugin {other:?} does not exist"),
            ))
        }
    }
    Ok(())
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Decode { source, .. } => ConfigError::Decode {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: File = serde_yaml::from_str(text).map_err(|source| ConfigError::Decode {
            path: String::new(),
            source,
        })?;
        if file.api_version != "kubescheduler.config.k8s.io/v1" {
            return Err(invalid(
                "apiVersion",
                format!(
                    "{:?} is not kubescheduler.config.k8s.io/v1",
                    file.api_version
                ),
            ));
        }
        if file.kind != "KubeSchedulerConfiguration" {
            return Err(invalid(
                "kind",
                format!("{:?} is not KubeSchedulerConfiguration", file.kind),
            ));
        }
        let mut cfg = Config::default();
        if let Some(p) = file.percentage_of_nodes_to_score {
            if p > 100 {
                return Err(invalid(
                    "percentageOfNodesToScore",
                    format!("{p} is not in the range [0, 100]"),
                ));
            }
            cfg.percentage_of_nodes_to_score = Some(p).filter(|p| *p > 0);
        }
        if let Some(s) = file.pod_initial_backoff_seconds {
            cfg.pod_initial_backoff = Duration::from_secs(s.max(1));
        }
        if let Some(s) = file.pod_max_backoff_seconds {
            cfg.pod_max_backoff = Duration::from_secs(s);
        }
        if cfg.pod_max_backoff < cfg.pod_initial_backoff {
            return Err(invalid(
                "podMaxBackoffSeconds",
                "must be greater than or equal to podInitialBackoffSeconds",
            ));
        }
        if let Some(le) = file.leader_election {
            let l = &mut cfg.leader_election;
            if let Some(e) = le.leader_elect {
                l.enabled = e;
            }
            for (field, value, slot) in [
                (
                    "leaderElection.leaseDuration",
                    &le.lease_duration,
                    &mut l.lease_duration,
                ),
                (
                    "leaderElection.renewDeadline",
                    &le.renew_deadline,
                    &mut l.renew_deadline,
                ),
                (
                    "leaderElection.retryPeriod",
                    &le.retry_period,
                    &mut l.retry_period,
                ),
            ] {
                if let Some(v) = value {
                    *slot = parse_duration(v)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| invalid(field, format!("{v:?} is not a duration")))?;
                }
            }
            if let Some(lock) = le.resource_lock.filter(|l| l != "leases") {
                return Err(invalid(
                    "leaderElection.resourceLock",
                    format!("{lock:?} is not supported (leases)"),
                ));
            }
            if let Some(n) = le.resource_name {
                l.name = n;
            }
            if let Some(n) = le.resource_namespace {
                l.namespace = n;
            }
            if l.enabled && l.lease_duration <= l.renew_deadline {
                return Err(invalid(
                    "leaderElection.leaseDuration",
                    "must be greater than renewDeadline",
                ));
            }
        }
        if !file.profiles.is_empty() {
            cfg.profiles.clear();
        }
        for (i, fp) in file.profiles.iter().enumerate() {
            let field = format!("profiles[{i}]");
            let name = fp
                .scheduler_name
                .clone()
                .unwrap_or_else(|| "default-scheduler".into());
            if cfg.profiles.iter().any(|p| p.scheduler_name == name) {
                return Err(invalid(
                    format!("{field}.schedulerName"),
                    format!("duplicate profile with scheduler name {name:?}"),
                ));
            }
            let mut p = Profile::default_named(&name);
            p.percentage_of_nodes_to_score = fp.percentage_of_nodes_to_score.filter(|p| *p > 0);
            let plugins = fp.plugins.as_ref();
            let empty = FilePluginSet::default();
            if let Some(mp) = plugins.and_then(|x| x.multi_point.as_ref()) {
                let f = format!("{field}.plugins.multiPoint");
                // multiPoint reaches every extension point a plugin has.
                let filters = FilePluginSet {
                    enabled: mp
                        .enabled
                        .iter()
                        .filter(|e| PluginName::parse(&e.name).is_none_or(|n| n.is_filter()))
                        .map(|e| FilePlugin {
                            name: e.name.clone(),
                            weight: None,
                        })
                        .collect(),
                    disabled: mp
                        .disabled
                        .iter()
                        .map(|e| FilePlugin {
                            name: e.name.clone(),
                            weight: None,
                        })
                        .collect(),
                };
                apply_filters(&mut p.filters, &filters, &f)?;
                apply_scores(&mut p.scores, mp, &f, true)?;
                for d in &mp.disabled {
                    if d.name == "*" || d.name == "DefaultPreemption" {
                        p.preemption = false;
                    }
                }
                if mp.enabled.iter().any(|e| e.name == "DefaultPreemption") {
                    p.preemption = true;
                }
            }
            if let Some(set) = plugins.and_then(|x| x.filter.as_ref()) {
                apply_filters(&mut p.filters, set, &format!("{field}.plugins.filter"))?;
            }
            if let Some(set) = plugins.and_then(|x| x.score.as_ref()) {
                apply_scores(&mut p.scores, set, &format!("{field}.plugins.score"), false)?;
            }
            if let Some(set) = plugins.and_then(|x| x.post_filter.as_ref()) {
                if set
                    .disabled
                    .iter()
                    .any(|d| d.name == "*" || d.name == "DefaultPreemption")
                {
                    p.preemption = false;
                }
                for (j, e) in set.enabled.iter().enumerate() {
                    let f = format!("{field}.plugins.postFilter.enabled[{j}]");
                    match plugin(&f, e)? {
                        Some(PluginName::DefaultPreemption) => p.preemption = true,
                        Some(other) => {
                            return Err(invalid(
                                f,
                                format!("plugin {other} is not a post-filter plugin"),
                            ))
                        }
                        None => {}
                    }
                }
            }
            // The other extension points' plugins are implied by the ones above; names are still checked.
            if let Some(pl) = plugins {
                for (point, set) in [
                    ("preEnqueue", &pl.pre_enqueue),
                    ("queueSort", &pl.queue_sort),
                    ("preFilter", &pl.pre_filter),
                    ("preScore", &pl.pre_score),
                    ("reserve", &pl.reserve),
                    ("permit", &pl.permit),
                    ("preBind", &pl.pre_bind),
                    ("bind", &pl.bind),
                    ("postBind", &pl.post_bind),
                ] {
                    let set = set.as_ref().unwrap_or(&empty);
                    for (j, e) in set.enabled.iter().chain(&set.disabled).enumerate() {
                        plugin(&format!("{field}.plugins.{point}[{j}]"), e)?;
                    }
                }
            }
            for (j, pc) in fp.plugin_config.iter().enumerate() {
                args_of(&mut p, &format!("{field}.pluginConfig[{j}]"), pc)?;
            }
            cfg.profiles.push(p);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_gos() {
        assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5 apples"), None);
    }

    #[test]
    fn profiles_weights_and_args() {
        let cfg = Config::parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaseDuration: 4s
  renewDeadline: 3s
  retryPeriod: 500ms
profiles:
- schedulerName: default-scheduler
  plugins:
    score:
      disabled: [{name: ImageLocality}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy: {type: MostAllocated, resources: [{name: cpu, weight: 1}]}
  - name: PodTopologySpread
    args:
      defaultingType: List
      defaultConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}
- schedulerName: no-spread
  plugins:
    multiPoint:
      disabled: [{name: PodTopologySpread}]
    postFilter:
      disabled: [{name: '*'}]
"#,
        )
        .unwrap();
        assert_eq!(cfg.leader_election.retry_period, Duration::from_millis(500));
        let p = &cfg.profiles[0];
        assert!(!p
            .scores
            .iter()
            .any(|(n, _)| *n == PluginName::ImageLocality));
        assert!(p.scores.contains(&(PluginName::NodeResourcesFit, 5)));
        assert_eq!(p.args.fit.scoring, ScoringType::MostAllocated);
        assert_eq!(p.args.spread.defaults.len(), 1);
        let q = &cfg.profiles[1];
        assert!(!q.filters.contains(&PluginName::PodTopologySpread));
        assert!(!q
            .scores
            .iter()
            .any(|(n, _)| *n == PluginName::PodTopologySpread));
        assert!(!q.preemption);
    }

    #[test]
    fn bad_files_name_the_field() {
        let e = Config::parse(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- plugins:\n    filter:\n      enabled: [{name: Nope}]\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "profiles[0].plugins.filter.enabled[0]: plugin \"Nope\" does not exist"
        );
        let e = Config::parse(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nbogus: 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    }
}

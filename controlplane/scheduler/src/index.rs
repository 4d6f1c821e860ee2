//! Indexes the cache keeps so that a scheduling cycle does not walk every pod of the cluster: placed pods
//! by namespace and those with affinity terms (for InterPodAffinity), the domains of topology keys, and
//! counters of the pods a spread constraint selects per domain, kept up to date as pods are placed and
//! removed (for PodTopologySpread).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use basalt_apimachinery::selector::LabelSelector;

use crate::model::{Labels, PodInfo};

/// How many (namespace, selector, key) counters are kept; the least recently used goes first.
const COUNTERS: usize = 16;

struct Counter {
    namespace: String,
    selector: LabelSelector,
    key: String,
    counts: Arc<HashMap<String, i64>>,
    used: u64,
}

#[derive(Default)]
pub struct Index {
    /// Placed pods by namespace: uid → node.
    pub by_namespace: HashMap<String, HashMap<String, String>>,
    /// Placed pods with any pod (anti-)affinity terms: uid → node.
    pub with_affinity: HashMap<String, String>,
    /// Placed pods with required anti-affinity terms: uid → node.
    pub with_required_anti: HashMap<String, String>,
    /// Topology key → value → number of nodes; keys are registered when first asked for.
    domains: RefCell<HashMap<String, HashMap<String, usize>>>,
    counters: RefCell<Vec<Counter>>,
    tick: RefCell<u64>,
}

fn counts(pod: &PodInfo, c: &Counter) -> bool {
    pod.namespace == c.namespace && !pod.terminating && c.selector.matches(&pod.labels)
}

impl Index {
    pub fn placed(&mut self, pod: &PodInfo, node: &str, labels: Option<&Labels>) {
        self.by_namespace
            .entry(pod.namespace.clone())
            .or_default()
            .insert(pod.uid.clone(), node.to_string());
        if !pod.affinity.is_empty() {
            self.with_affinity.insert(pod.uid.clone(), node.to_string());
        }
        if !pod.affinity.required_anti.is_empty() {
            self.with_required_anti
                .insert(pod.uid.clone(), node.to_string());
        }
        self.count(pod, labels, 1);
    }

    pub fn unplaced(&mut self, pod: &PodInfo, labels: Option<&Labels>) {
        if let Some(m) = self.by_namespace.get_mut(&pod.namespace) {
            m.remove(&pod.uid);
            if m.is_empty() {
                self.by_namespace.remove(&pod.namespace);
            }
        }
        self.with_affinity.remove(&pod.uid);
        self.with_required_anti.remove(&pod.uid);
        self.count(pod, labels, -1);
    }

    fn count(&mut self, pod: &PodInfo, labels: Option<&Labels>, delta: i64) {
        let Some(labels) = labels else {
            return;
        };
        for c in self.counters.get_mut().iter_mut() {
            if counts(pod, c) {
                if let Some(v) = labels.get(&c.key) {
                    *Arc::make_mut(&mut c.counts).entry(v.clone()).or_default() += delta;
                }
            }
        }
    }

    /// A node came, went or changed its labels: domains and counters are rebuilt when next asked for.
    pub fn nodes_changed(&mut self) {
        self.domains.get_mut().clear();
        self.counters.get_mut().clear();
    }

    /// The domains of `key`: value → number of nodes, computed from `nodes` the first time.
    pub fn domains<'a>(
        &self,
        key: &str,
        nodes: impl Iterator<Item = &'a Labels>,
    ) -> std::cell::Ref<'_, HashMap<String, usize>> {
        if !self.domains.borrow().contains_key(key) {
            let mut m: HashMap<String, usize> = HashMap::new();
            for l in nodes {
                if let Some(v) = l.get(key) {
                    *m.entry(v.clone()).or_default() += 1;
                }
            }
            self.domains.borrow_mut().insert(key.to_string(), m);
        }
        std::cell::Ref::map(self.domains.borrow(), |d| &d[key])
    }

    /// Pods of `namespace` matching `selector` per value of `key`; `placed` lists every placed pod with
    /// its node's labels, for building a counter the first time.
    pub fn counter<'a>(
        &self,
        namespace: &str,
        selector: &LabelSelector,
        key: &str,
        placed: impl Iterator<Item = (&'a PodInfo, &'a Labels)>,
    ) -> Arc<HashMap<String, i64>> {
        let tick = {
            let mut t = self.tick.borrow_mut();
            *t += 1;
            *t
        };
        let mut counters = self.counters.borrow_mut();
        if let Some(c) = counters
            .iter_mut()
            .find(|c| c.namespace == namespace && c.key == key && c.selector == *selector)
        {
            c.used = tick;
            return c.counts.clone();
        }
        let mut c = Counter {
            namespace: namespace.to_string(),
            selector: selector.clone(),
            key: key.to_string(),
            counts: Arc::new(HashMap::new()),
            used: tick,
        };
        let mut m = HashMap::new();
        for (pod, labels) in placed {
            if counts(pod, &c) {
                if let Some(v) = labels.get(key) {
                    *m.entry(v.clone()).or_default() += 1;
                }
            }
        }
        c.counts = Arc::new(m);
        let out = c.counts.clone();
        if counters.len() >= COUNTERS {
            if let Some(i) = counters
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.used)
                .map(|(i, _)| i)
            {
                counters.swap_remove(i);
            }
        }
        counters.push(c);
        out
    }

    /// Namespaces with placed pods, for terms with a namespace selector.
    pub fn namespaces(&self) -> HashSet<&str> {
        self.by_namespace.keys().map(String::as_str).collect()
    }
}

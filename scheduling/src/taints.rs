//! Tolerations against taints (upstream's `ToleratesTaint`).

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Whether `t` tolerates `taint`: an empty effect matches every effect, an empty key every key (with
/// `Exists`); `Equal` (the default) also needs the same value. An unknown operator tolerates nothing.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if set(&t.effect).is_some_and(|e| e != taint.effect) {
        return false;
    }
    if set(&t.key).is_some_and(|k| k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The first of `taints` with one of `effects` that `tolerations` do not tolerate.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| effects.contains(&t.effect.as_str()) && !tolerated(tolerations, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn tolerations_match_as_upstreams() {
        let t = taint("dedicated", Some("gpu"), "NoSchedule");
        // Equal (explicit or default) needs key and value.
        assert!(tolerates(
            &tol(Some("dedicated"), None, Some("gpu"), None),
            &t
        ));
        assert!(tolerates(
            &tol(
                Some("dedicated"),
                Some("Equal"),
                Some("gpu"),
                Some("NoSchedule")
            ),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("dedicated"), None, Some("cpu"), None),
            &t
        ));
        assert!(!tolerates(&tol(Some("other"), None, Some("gpu"), None), &t));
        // Exists ignores the value; without a key it tolerates every taint of its effect.
        assert!(tolerates(
            &tol(Some("dedicated"), Some("Exists"), None, None),
            &t
        ));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &t));
        assert!(tolerates(
            &tol(Some(""), Some("Exists"), None, Some("NoSchedule")),
            &t
        ));
        assert!(!tolerates(
            &tol(None, Some("Exists"), None, Some("NoExecute")),
            &t
        ));
        // An empty key with Equal still compares values (upstream: only a set key must match).
        assert!(tolerates(&tol(None, None, Some("gpu"), None), &t));
        assert!(!tolerates(
            &tol(Some("dedicated"), Some("Gt"), Some("gpu"), None),
            &t
        ));
        let none = taint("node.kubernetes.io/not-ready", None, "NoExecute");
        assert!(tolerates(
            &tol(Some("node.kubernetes.io/not-ready"), None, None, None),
            &none
        ));
    }

    #[test]
    fn the_first_untolerated_taint_of_the_effects_asked() {
        let taints = [
            taint("a", None, "PreferNoSchedule"),
            taint("b", None, "NoSchedule"),
            taint("c", None, "NoExecute"),
        ];
        let tols = [tol(Some("b"), Some("Exists"), None, None)];
        assert_eq!(
            untolerated(&taints, &tols, &["NoSchedule", "NoExecute"]).map(|t| t.key.as_str()),
            Some("c")
        );
        assert!(untolerated(&taints, &tols, &["NoSchedule"]).is_none());
    }
}

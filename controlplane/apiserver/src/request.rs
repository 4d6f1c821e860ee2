//! What a request path and method ask for, as kube-apiserver's RequestInfoFactory reads them.

use http::Method;

/// An API verb (RBAC's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    pub fn is_read_only(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// A request for a resource (`/api/v1/namespaces/default/pods/web/log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// What follows a subresource (a proxy's path).
    pub rest: Vec<String>,
    pub verb: Verb,
}

/// Any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    Resource(ResourceRequest),
    /// A path outside the resource tree (`/healthz`, `/api`, `/apis/apps`, `/openapi/v3`); RBAC calls these
    /// non-resource URLs, with the method as the verb.
    NonResource {
        path: String,
        verb: String,
    },
}

/// Subresources of a namespace itself (`/api/v1/namespaces/x/status`), not resources in it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

pub fn parse(method: &Method, path: &str, watch_param: bool) -> RequestInfo {
    let non_resource = || RequestInfo::NonResource {
        path: path.to_string(),
        verb: method.as_str().to_ascii_lowercase(),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest): (&str, &str, &[&str]) = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g, v, rest),
        _ => return non_resource(),
    };
    let mut watch = watch_param;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    if rest.is_empty() || rest[0].is_empty() {
        return non_resource();
    }
    let resource = rest[0].to_string();
    let name = rest.get(1).map(|s| s.to_string());
    // A namespace addressed by name (/api/v1/namespaces/x) keeps x as the request's namespace, as upstream:
    // a Role in x may grant access to the namespace object itself. Storage treats namespaces as cluster-wide.
    let subresource = rest.get(2).map(|s| s.to_string());
    let tail = rest.iter().skip(3).map(|s| s.to_string()).collect();
    let verb = match *method {
        Method::GET | Method::HEAD => {
            if watch {
                Verb::Watch
            } else if name.is_some() {
                Verb::Get
            } else {
                Verb::List
            }
        }
        Method::POST => Verb::Create,
        Method::PUT => Verb::Update,
        Method::PATCH => Verb::Patch,
        Method::DELETE => {
            if name.is_some() {
                Verb::Delete
            } else {
                Verb::DeleteCollection
            }
        }
        _ => return non_resource(),
    };
    RequestInfo::Resource(ResourceRequest {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource,
        name,
        subresource,
        rest: tail,
        verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(method: Method, path: &str) -> ResourceRequest {
        match parse(&method, path, false) {
            RequestInfo::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res(Method::GET, "/api/v1/namespaces/default/pods/web/log");
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref(),
                r.verb
            ),
            (Some("default"), "pods", Some("web"), Some("log"), Verb::Get)
        );
        let r = res(Method::GET, "/apis/apps/v1/deployments");
        assert_eq!(
            (r.group.as_str(), r.namespace, r.verb),
            ("apps", None, Verb::List)
        );
        let r = res(Method::GET, "/api/v1/namespaces/kube-system");
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.namespace.as_deref()
            ),
            ("namespaces", Some("kube-system"), Some("kube-system"))
        );
        let r = res(Method::PUT, "/api/v1/namespaces/x/finalize");
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let r = res(Method::GET, "/api/v1/watch/namespaces/default/pods");
        assert_eq!(r.verb, Verb::Watch);
        let r = res(Method::DELETE, "/api/v1/namespaces/default/pods");
        assert_eq!(r.verb, Verb::DeleteCollection);
        assert!(matches!(
            parse(&Method::GET, "/apis/apps/v1", false),
            RequestInfo::NonResource { .. }
        ));
        assert!(matches!(
            parse(&Method::GET, "/healthz", false),
            RequestInfo::NonResource { .. }
        ));
    }
}

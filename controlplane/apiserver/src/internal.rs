//! Requests the server makes to itself (bootstrap objects, the namespace and garbage collectors): the same
//! pipeline as a client's, as the privileged `system:apiserver` user.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::errors::{ApiError, ApiResult};
use crate::http::Query;
use crate::registry::Resource;
use crate::request::{ResourceRequest, Verb};
use crate::rest::{self, DeleteOptions, Outcome};
use crate::state::{Call, State};

pub struct Internal {
    pub state: Arc<State>,
    user: UserInfo,
    headers: HeaderMap,
}

impl Internal {
    pub fn new(state: Arc<State>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("kube-apiserver/v1.37.0"),
        );
        Internal {
            state,
            user: UserInfo {
                name: "system:apiserver".into(),
                groups: vec![
                    crate::auth::MASTERS.into(),
                    crate::auth::AUTHENTICATED.into(),
                ],
                ..Default::default()
            },
            headers,
        }
    }

    fn request(
        res: &Resource,
        ns: Option<&str>,
        name: Option<&str>,
        verb: Verb,
    ) -> ResourceRequest {
        ResourceRequest {
            group: res.group.clone(),
            version: res.version.clone(),
            namespace: ns.map(str::to_string),
            resource: res.plural.clone(),
            name: name.map(str::to_string),
            subresource: None,
            rest: Vec::new(),
            verb,
        }
    }

    pub fn resource(&self, group: &str, plural: &str) -> Arc<Resource> {
        self.state
            .registry
            .all()
            .into_iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap_or_else(|| panic!("{group}/{plural} is served"))
    }

    pub async fn create(&self, res: &Arc<Resource>, obj: &Value) -> ApiResult<Outcome> {
        let ns = crate::meta::namespace(obj);
        let req = Self::request(res, Some(ns).filter(|n| !n.is_empty()), None, Verb::Create);
        let query = Query::parse(Some("fieldManager=kube-apiserver"));
        let call = Call {
            state: &self.state,
            user: &self.user,
            req: &req,
            res: res.clone(),
            query: &query,
            headers: &self.headers,
        };
        rest::create(&call, &Bytes::from(serde_json::to_vec(obj).expect("JSON"))).await
    }

    /// Creates `obj` unless it exists; true if it was created.
    pub async fn ensure(&self, res: &Arc<Resource>, obj: &Value) -> ApiResult<bool> {
        let ns = Some(crate::meta::namespace(obj)).filter(|n| !n.is_empty());
        // Looked up first: a create of an existing object can fail for other reasons before the store
        // says it exists (a service's address is already allocated — to itself).
        if self
            .state
            .objects
            .get(res, ns, crate::meta::name(obj))
            .await?
            .is_some()
        {
            return Ok(false);
        }
        match self.create(res, obj).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn update(&self, res: &Arc<Resource>, obj: &Value) -> ApiResult<Outcome> {
        let ns = crate::meta::namespace(obj);
        let req = Self::request(
            res,
            Some(ns).filter(|n| !n.is_empty()),
            Some(crate::meta::name(obj)),
            Verb::Update,
        );
        let query = Query::parse(Some("fieldManager=kube-apiserver"));
        let call = Call {
            state: &self.state,
            user: &self.user,
            req: &req,
            res: res.clone(),
            query: &query,
            headers: &self.headers,
        };
        rest::update(&call, &Bytes::from(serde_json::to_vec(obj).expect("JSON"))).await
    }

    pub async fn delete(
        &self,
        res: &Arc<Resource>,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Outcome> {
        let req = Self::request(res, ns, Some(name), Verb::Delete);
        let query = Query::default();
        let call = Call {
            state: &self.state,
            user: &self.user,
            req: &req,
            res: res.clone(),
            query: &query,
            headers: &self.headers,
        };
        rest::delete_one(&call, name, opts).await
    }

    /// Changes an object through `f` (read, modify, write, retrying on conflicts). `f` returning false
    /// leaves it alone.
    pub async fn modify(
        &self,
        res: &Arc<Resource>,
        ns: Option<&str>,
        name: &str,
        f: impl Fn(&mut Value) -> bool,
    ) -> ApiResult<()> {
        for _ in 0..16 {
            let Some((old, rev)) = self.state.objects.get(res, ns, name).await? else {
                return Ok(());
            };
            let mut obj = old.clone();
            if !f(&mut obj) {
                return Ok(());
            }
            let req = Self::request(res, ns, Some(name), Verb::Update);
            let query = Query::default();
            let call = Call {
                state: &self.state,
                user: &self.user,
                req: &req,
                res: res.clone(),
                query: &query,
                headers: &self.headers,
            };
            let new = rest::prepare_update(&call, &old, obj, None, Some("kube-apiserver")).await?;
            // As upstream's ShouldDeleteDuringUpdate: the last finalizer gone ends an object only once
            // its grace period is over (a pod waits for its kubelet).
            let graceful = new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_some_and(|g| g > 0);
            if crate::meta::is_deleting(&new)
                && crate::meta::finalizers(&new).is_empty()
                && !graceful
                && !(res.group.is_empty() && res.plural == "namespaces")
            {
                match self.state.objects.delete(res, ns, name, rev).await {
                    Ok(_) | Err(Some(ApiError { code: 404, .. })) => return Ok(()),
                    Err(None) => continue,
                    Err(Some(e)) => return Err(e),
                }
            }
            match self.state.objects.update(res, &new, rev).await {
                Ok(_) => return Ok(()),
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
        Ok(())
    }
}

//! Watches: a JSON event stream per request, from a store watch, filtered by selectors, with bookmarks,
//! initial events (`sendInitialEvents`), the synthetic ADDED events of an unversioned watch, and 410 Expired
//! once the asked revision is compacted — upstream's semantics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::cacher::{Cached, Feed};
use crate::errors::{ApiError, ApiResult};
use crate::http::{negotiate, Body, Wants};
use crate::rest::Filter;
use crate::state::Call;
use crate::{meta, objects, render};
use std::sync::Arc;

/// Book-keeping of open watches (for /metrics).
#[derive(Default)]
pub struct Watches {
    pub open: AtomicI64,
}

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(20);

struct Encoder {
    wants: Wants,
    first_table: bool,
}

impl Encoder {
    fn event(&mut self, call: &Call, kind: &str, obj: Value) -> Bytes {
        let object = match self.wants {
            Wants::Table(include) if kind != "BOOKMARK" && kind != "ERROR" => {
                let rv = meta::resource_version(&obj).to_string();
                let mut t = render::table(
                    &call.res,
                    std::slice::from_ref(&obj),
                    include,
                    json!({"resourceVersion": rv}),
                );
                if !self.first_table {
                    t["columnDefinitions"] = Value::Null;
                }
                self.first_table = false;
                t
            }
            Wants::PartialObjectMetadata | Wants::PartialObjectMetadataList if kind != "ERROR" => {
                render::partial(&obj)
            }
            _ => obj,
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn bookmark(call: &Call, rv: i64, initial_end: bool) -> Value {
    let mut m = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": call.res.kind, "apiVersion": call.res.api_version(), "metadata": m})
}

pub async fn watch(call: &Call<'_>) -> ApiResult<Response<Body>> {
    let filter = Filter::parse(call)?;
    let wants = negotiate(call.headers, call.query, true).map(|w| match w {
        Wants::PartialObjectMetadataList => Wants::PartialObjectMetadata,
        other => other,
    })?;
    let bookmarks = call.query.flag("allowWatchBookmarks");
    let initial = call.query.get("sendInitialEvents").map(|v| v == "true");
    let rv = call
        .query
        .get("resourceVersion")
        .unwrap_or_default()
        .to_string();
    let rv_match = call.query.get("resourceVersionMatch").unwrap_or_default();
    if initial.is_some() && (rv_match != "NotOlderThan" || (initial == Some(true) && !bookmarks)) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![basalt_apimachinery::validate::FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled and allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
            )],
        ));
    }
    if !rv_match.is_empty() && initial.is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let timeout = match call.query.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        // Upstream's default: a random time between --min-request-timeout (30 min) and twice that.
        _ => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let prefix = call.res.prefix(call.namespace());
    let store = call.state.objects.store.clone();

    // Where the stream starts, and what it sends before following changes.
    let mut initial_objects: Option<Vec<Value>> = None;
    let start: i64 = if initial == Some(true) || rv.is_empty() || (rv == "0" && initial.is_none()) {
        let page = store
            .list(basalt_store::ListRequest::prefix(&prefix))
            .await?;
        if let Ok(min) = rv.parse::<i64>() {
            if min > page.revision {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {min}, current: {}",
                    page.revision
                )));
            }
        }
        let mut objs = Vec::new();
        for kv in &page.kvs {
            let o = objects::decode(kv)?;
            if filter.matches(call, &o) {
                objs.push(render::with_type(&call.res, o));
            }
        }
        initial_objects = Some(objs);
        page.revision
    } else {
        rv.parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?
    };

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut enc = Encoder {
        wants,
        first_table: true,
    };
    // Whatever goes before the live events is framed here, in order.
    let mut head = Vec::new();
    if let Some(objs) = initial_objects {
        for o in objs {
            head.push(enc.event(call, "ADDED", o));
        }
        if initial == Some(true) {
            head.push(enc.event(call, "BOOKMARK", bookmark(call, start, true)));
        }
    }
    // The shared watch cache when it covers the start; a store watch of this request's own otherwise.
    let resource_prefix = call.res.prefix(None);
    let mut source = match call
        .state
        .cachers
        .feed(&store, &resource_prefix, &prefix, start)
        .await
    {
        Some(feed) => Source::Cache(feed),
        None => match store.watch(&prefix, start).await {
            Ok(w) => Source::Store(w),
            Err(e) => Source::Failed(e),
        },
    };
    let owned = OwnedCall::new(call, filter);
    let watches = call.state.clone();
    watches.watches.open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let _guard = Decrement(watches.clone());
        for b in head {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        let mut last = start;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => {
                    let at = last.max(source.progress());
                    let b = enc.owned_event(&owned, "BOOKMARK", owned.bookmark(at));
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                batch = source.next() => {
                    let batch = match batch {
                        Ok(Some(b)) => b,
                        Ok(None) => return,
                        // A slow watcher's stream just ends, as upstream's cacher ends it: the client
                        // watches again from its last revision (an ERROR would read as a server fault).
                        Err(basalt_store::StoreError::WatchLagged(_)) => return,
                        Err(e) => {
                            let _ = tx.send(enc.owned_event(&owned, "ERROR", expired(&e, last))).await;
                            return;
                        }
                    };
                    for e in batch {
                        // The start revision's state is already the client's.
                        if e.revision <= start {
                            continue;
                        }
                        last = e.revision;
                        let Some(kind) = owned.translate(&e) else { continue };
                        let line = match (enc.wants, kind) {
                            (Wants::Json, _) if owned.res.custom.is_none() => {
                                let mut l = Vec::with_capacity(e.json().len() + 32);
                                l.extend_from_slice(b"{\"type\":\"");
                                l.extend_from_slice(kind.as_bytes());
                                l.extend_from_slice(b"\",\"object\":");
                                l.extend_from_slice(e.json());
                                l.extend_from_slice(b"}\n");
                                Bytes::from(l)
                            }
                            _ => enc.owned_event(&owned, kind, render::with_type(&owned.res, (*e.object).clone())),
                        };
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });

    let stream = tokio_stream_from(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = StatusCode::OK;
    let ct = match wants {
        Wants::Table(_) => render::TABLE_TYPE,
        _ => "application/json",
    };
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct Decrement(std::sync::Arc<crate::state::State>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.watches.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The ERROR event of a watch that cannot go on: 410 Expired for a compacted revision.
fn expired(e: &basalt_store::StoreError, rv: i64) -> Value {
    match e {
        basalt_store::StoreError::Compacted { compacted, .. } => {
            ApiError::expired(format!("too old resource version: {rv} ({compacted})")).status()
        }
        other => ApiError::from(clone_err(other)).status(),
    }
}

fn clone_err(e: &basalt_store::StoreError) -> basalt_store::StoreError {
    basalt_store::StoreError::Internal(e.to_string())
}

/// What the watch task keeps of the request (the request itself does not outlive the handler).
struct OwnedCall {
    res: std::sync::Arc<crate::registry::Resource>,
    filter: Filter,
    state: std::sync::Arc<crate::state::State>,
    req: crate::request::ResourceRequest,
    query: crate::http::Query,
    headers: http::HeaderMap,
    user: crate::auth::UserInfo,
}

impl OwnedCall {
    fn new(call: &Call, filter: Filter) -> Self {
        OwnedCall {
            res: call.res.clone(),
            filter,
            state: call.state.clone(),
            req: call.req.clone(),
            query: call.query.clone(),
            headers: call.headers.clone(),
            user: call.user.clone(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Call) -> T) -> T {
        let call = Call {
            state: &self.state,
            user: &self.user,
            req: &self.req,
            res: self.res.clone(),
            query: &self.query,
            headers: &self.headers,
        };
        f(&call)
    }

    fn bookmark(&self, rv: i64) -> Value {
        self.with(|c| bookmark(c, rv, false))
    }

    /// The event a change is for this watcher: objects entering or leaving its selection are ADDED or
    /// DELETED, as upstream's watch cache reports them.
    fn translate(&self, e: &Cached) -> Option<&'static str> {
        self.with(|call| {
            let now_in = self.filter.matches(call, &e.object);
            let prev_in = e.prev.as_ref().map(|p| self.filter.matches(call, p));
            Some(match e.kind {
                basalt_store::EventKind::Delete => {
                    if prev_in.unwrap_or(now_in) {
                        "DELETED"
                    } else {
                        return None;
                    }
                }
                basalt_store::EventKind::Put => match (prev_in, now_in) {
                    (_, true) if e.is_create => "ADDED",
                    (Some(true), true) | (None, true) => "MODIFIED",
                    (Some(false), true) => "ADDED",
                    (Some(true), false) => "DELETED",
                    _ => return None,
                },
            })
        })
    }
}

/// Where a watch's events come from.
enum Source {
    Cache(Feed),
    Store(basalt_store::Watch),
    Failed(basalt_store::StoreError),
}

impl Source {
    async fn next(&mut self) -> Result<Option<Vec<Arc<Cached>>>, basalt_store::StoreError> {
        match self {
            Source::Cache(feed) => {
                if !feed.backlog.is_empty() {
                    return Ok(Some(std::mem::take(&mut feed.backlog)));
                }
                match feed.rx.recv().await {
                    Some(e) => {
                        let mut batch = vec![e];
                        while let Ok(more) = feed.rx.try_recv() {
                            batch.push(more);
                        }
                        Ok(Some(batch))
                    }
                    // Dropped for falling behind, or the cache restarted: the client watches again.
                    None => Ok(None),
                }
            }
            Source::Store(w) => match w.next().await {
                Some(Ok(batch)) => Ok(Some(batch.iter().filter_map(Cached::from_event).collect())),
                Some(Err(e)) => Err(e),
                None => Ok(None),
            },
            Source::Failed(e) => Err(std::mem::replace(
                e,
                basalt_store::StoreError::Unavailable("watch ended".into()),
            )),
        }
    }

    /// The newest revision this source has seen delivered (for bookmarks).
    fn progress(&self) -> i64 {
        match self {
            Source::Cache(feed) => feed.last,
            _ => 0,
        }
    }
}

impl Encoder {
    fn owned_event(&mut self, call: &OwnedCall, kind: &str, obj: Value) -> Bytes {
        call.with(|c| self.event(c, kind, obj))
    }
}

//! The etcd v3 backend, for control planes that outgrow one machine.
//!
//! Keys and revisions are etcd's own, so a resourceVersion is an etcd revision, as in kube-apiserver. Every
//! conditional write is one etcd transaction comparing the key's create or mod revision. etcd acknowledges a
//! write after a quorum of members has it in their fsynced raft logs, which is the durability the trait asks
//! for.
//!
//! Reads are retried on another member when one is unreachable. Writes are retried only when they cannot have
//! reached etcd (no connection) or etcd refused them before proposing (no leader); a write whose answer was
//! lost may have happened, so the caller gets `Unavailable` and decides, as with kube-apiserver.

#[allow(clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::request_op::Request as Req;
use pb::response_op::Response as Resp;
use pb::watch_client::WatchClient;

use crate::types::{Event, EventKind, KeyValue, ListPage, ListRequest, Revision, Watch};
use crate::{Store, StoreError};

/// Where etcd is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// PEM files for client TLS: the CA that signed the members' certificates, and our certificate and key.
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

impl EtcdConfig {
    /// Parses `--datastore-endpoint`: `etcd://h1:2379,h2:2379` (plain), or `http://…` / `https://…` URLs
    /// separated by commas, as k3s takes them.
    pub fn from_endpoint(spec: &str) -> Result<Self, String> {
        let mut endpoints = Vec::new();
        let (default_scheme, rest) = match spec.split_once("://") {
            Some(("etcd", rest)) => ("http", rest.to_string()),
            Some(("http" | "https", _)) => ("", spec.to_string()),
            Some((other, _)) => {
                return Err(format!(
                    "unsupported datastore scheme {other:?}: use etcd://, http:// or https://"
                ))
            }
            None => {
                return Err(format!(
                    "datastore endpoint {spec:?} has no scheme: use etcd://host:port[,host:port…]"
                ))
            }
        };
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let url = if part.contains("://") || default_scheme.is_empty() {
                part.to_string()
            } else {
                format!("{default_scheme}://{part}")
            };
            endpoints.push(url);
        }
        if endpoints.is_empty() {
            return Err(format!("datastore endpoint {spec:?} names no member"));
        }
        Ok(EtcdConfig {
            endpoints,
            ..Default::default()
        })
    }
}

/// Largest answer taken from etcd: a list of every object of a big collection is one message (kube-apiserver
/// lifts gRPC's 4 MiB default the same way).
const MAX_MESSAGE: usize = i32::MAX as usize;

fn kv(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch).max_decoding_message_size(MAX_MESSAGE)
}

/// Attempts per request, across members, before giving up.
const ATTEMPTS: usize = 8;

struct Member {
    url: String,
    channel: Channel,
}

pub struct EtcdStore {
    members: Vec<Member>,
    /// The member that answered last: requests go there first.
    preferred: AtomicUsize,
}

#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// Safe to repeat anywhere.
    Read,
    /// Repeated only when it cannot have been applied.
    Write,
}

/// Asks a member to refuse the request when it has no leader, instead of answering from a minority partition
/// (etcd's `hasleader` metadata, as etcdctl's --require-leader).
fn with_leader<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

impl EtcdStore {
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        let tls = Self::tls(config)?;
        let mut members = Vec::new();
        for url in &config.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| StoreError::Unavailable(format!("etcd endpoint {url:?}: {e}")))?
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            if url.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tls.clone().unwrap_or_default())
                    .map_err(|e| StoreError::Unavailable(format!("etcd TLS for {url}: {e}")))?;
            }
            members.push(Member {
                url: url.clone(),
                channel: endpoint.connect_lazy(),
            });
        }
        if members.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoint given".into()));
        }
        let store = EtcdStore {
            members,
            preferred: AtomicUsize::new(0),
        };
        // Fail at start, not at the first request, when no member answers.
        store.current_revision().await?;
        Ok(store)
    }

    fn tls(config: &EtcdConfig) -> Result<Option<ClientTlsConfig>, StoreError> {
        if config.ca_file.is_none() && config.cert_file.is_none() {
            return Ok(None);
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| StoreError::Unavailable(format!("read {}: {e}", p.display())))
        };
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &config.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?))
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::Unavailable(
                    "etcd client TLS needs both a certificate and a key".into(),
                ))
            }
        }
        Ok(Some(tls))
    }

    /// Runs `f` against one member after another until one answers or the attempts are spent.
    async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, StoreError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.members.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            let i = (first + attempt) % n;
            match f(self.members[i].channel.clone()).await {
                Ok(r) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                Err(status) => {
                    let again = match retry {
                        Retry::Read => unavailable(&status),
                        Retry::Write => not_applied(&status),
                    };
                    tracing::debug!(member = %self.members[i].url, attempt, error = %status.message(), again, "etcd request failed");
                    if !again {
                        return Err(map_status(status));
                    }
                    last = Some(status);
                    // Move on to the next member at once; pause only after a full round.
                    if (attempt + 1) % n == 0 {
                        tokio::time::sleep(Duration::from_millis(100 << (attempt / n).min(4)))
                            .await;
                    }
                }
            }
        }
        Err(map_status(last.expect("at least one attempt")))
    }

    async fn txn(&self, txn: pb::TxnRequest, retry: Retry) -> Result<pb::TxnResponse, StoreError> {
        self.call(retry, |ch| {
            let txn = txn.clone();
            async move { kv(ch).txn(with_leader(txn)).await }
        })
        .await
    }

    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, StoreError> {
        self.call(Retry::Read, |ch| {
            let req = req.clone();
            async move { kv(ch).range(with_leader(req)).await }
        })
        .await
    }
}

/// The member could not serve it: worth asking another.
fn unavailable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    ) || s.message().contains("no leader")
        || s.message().contains("leader changed")
}

/// The request cannot have been applied: no connection was made, or etcd refused it before proposing.
fn not_applied(s: &tonic::Status) -> bool {
    let m = s.message();
    let source = format!("{:?}", std::error::Error::source(s));
    m.contains("no leader")
        || m.contains("tcp connect error")
        || source.contains("ConnectError")
        || source.contains("Connection refused")
        || (s.code() == tonic::Code::Unavailable && m.contains("error trying to connect"))
}

fn map_status(s: tonic::Status) -> StoreError {
    let msg = s.message();
    if msg.contains("required revision has been compacted") {
        StoreError::Compacted {
            requested: 0,
            compacted: 0,
        }
    } else if msg.contains("required revision is a future revision") {
        StoreError::FutureRevision {
            requested: 0,
            current: 0,
        }
    } else if unavailable(&s) {
        StoreError::Unavailable(format!("etcd: {msg}"))
    } else {
        StoreError::Internal(format!("etcd: {s}"))
    }
}

fn convert(kv: pb::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key)
            .map_err(|e| StoreError::Internal(format!("etcd key is not UTF-8: {e}")))?,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    })
}

fn header_revision(h: &Option<pb::ResponseHeader>) -> Revision {
    h.as_ref().map(|h| h.revision).unwrap_or(0)
}

fn compare(
    key: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

fn get_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Req::RequestRange(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// The current value from the `failure` branch of a compare-and-swap transaction.
fn current_of(resp: pb::TxnResponse) -> Result<Option<KeyValue>, StoreError> {
    for op in resp.responses {
        if let Some(Resp::ResponseRange(r)) = op.response {
            return r.kvs.into_iter().next().map(convert).transpose();
        }
    }
    Ok(None)
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .range(pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?;
        resp.kvs.into_iter().next().map(convert).transpose()
    }

    async fn list(&self, request: ListRequest) -> Result<ListPage, StoreError> {
        let resp = self
            .range(pb::RangeRequest {
                key: request.start.as_bytes().to_vec(),
                range_end: request.end.as_bytes().to_vec(),
                limit: request.limit.map(|l| l as i64).unwrap_or(0),
                revision: request.revision.unwrap_or(0),
                sort_order: pb::range_request::SortOrder::Ascend as i32,
                sort_target: pb::range_request::SortTarget::Key as i32,
                ..Default::default()
            })
            .await;
        let resp = match resp {
            Err(StoreError::Compacted { .. }) => {
                return Err(StoreError::Compacted {
                    requested: request.revision.unwrap_or(0),
                    compacted: self.compacted_revision().await.unwrap_or(0),
                })
            }
            Err(StoreError::FutureRevision { .. }) => {
                return Err(StoreError::FutureRevision {
                    requested: request.revision.unwrap_or(0),
                    current: self.current_revision().await?,
                })
            }
            other => other?,
        };
        let revision = request
            .revision
            .unwrap_or_else(|| header_revision(&resp.header));
        let count = resp.count;
        let kvs = resp
            .kvs
            .into_iter()
            .map(convert)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListPage {
            remaining: (count - kvs.len() as i64).max(0),
            revision,
            kvs,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let txn = pb::TxnRequest {
            compare: vec![compare(
                key,
                CompareTarget::Create,
                CompareResult::Equal,
                TargetUnion::CreateRevision(0),
            )],
            success: vec![pb::RequestOp {
                request: Some(Req::RequestPut(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        let resp = self.txn(txn, Retry::Write).await?;
        if !resp.succeeded {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let rev = header_revision(&resp.header);
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let txn = pb::TxnRequest {
            compare: vec![compare(
                key,
                CompareTarget::Mod,
                CompareResult::Equal,
                TargetUnion::ModRevision(expected),
            )],
            success: vec![pb::RequestOp {
                request: Some(Req::RequestPut(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.clone(),
                    prev_kv: true,
                    ..Default::default()
                })),
            }],
            failure: vec![get_op(key)],
        };
        let resp = self.txn(txn, Retry::Write).await?;
        if !resp.succeeded {
            return Err(match current_of(resp)? {
                Some(current) => StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Box::new(current),
                },
                None => StoreError::NotFound(key.to_string()),
            });
        }
        let rev = header_revision(&resp.header);
        let mut create_revision = rev;
        for op in resp.responses {
            if let Some(Resp::ResponsePut(p)) = op.response {
                if let Some(prev) = p.prev_kv {
                    create_revision = prev.create_revision;
                }
            }
        }
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let condition = match expected {
            Some(rev) => compare(
                key,
                CompareTarget::Mod,
                CompareResult::Equal,
                TargetUnion::ModRevision(rev),
            ),
            None => compare(
                key,
                CompareTarget::Create,
                CompareResult::Greater,
                TargetUnion::CreateRevision(0),
            ),
        };
        let txn = pb::TxnRequest {
            compare: vec![condition],
            success: vec![pb::RequestOp {
                request: Some(Req::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    prev_kv: true,
                    ..Default::default()
                })),
            }],
            failure: vec![get_op(key)],
        };
        let resp = self.txn(txn, Retry::Write).await?;
        if !resp.succeeded {
            return Err(match (current_of(resp)?, expected) {
                (Some(current), Some(expected)) => StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Box::new(current),
                },
                _ => StoreError::NotFound(key.to_string()),
            });
        }
        let rev = header_revision(&resp.header);
        for op in resp.responses {
            if let Some(Resp::ResponseDeleteRange(d)) = op.response {
                if let Some(prev) = d.prev_kvs.into_iter().next() {
                    let mut kv = convert(prev)?;
                    kv.mod_revision = rev;
                    return Ok(kv);
                }
            }
        }
        Err(StoreError::NotFound(key.to_string()))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: crate::types::prefix_end(prefix).into_bytes(),
                    start_revision: after + 1,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        let (requests, stream) = self
            .call(Retry::Read, |ch| {
                let create = create.clone();
                async move {
                    let (tx, rx) = mpsc::channel(4);
                    tx.send(create)
                        .await
                        .map_err(|_| tonic::Status::cancelled("watch request"))?;
                    let resp = WatchClient::new(ch)
                        .max_decoding_message_size(MAX_MESSAGE)
                        .watch(with_leader(tokio_stream::wrappers::ReceiverStream::new(rx)))
                        .await?;
                    Ok(tonic::Response::new((tx, resp.into_inner())))
                }
            })
            .await?;
        let mut stream = stream;
        // The first answer confirms the watch, or cancels it when `after` is compacted.
        let first = stream.message().await.map_err(map_status)?;
        if let Some(r) = &first {
            if r.canceled {
                return Err(cancelled(r, after));
            }
        }
        let (tx, rx) = mpsc::channel(crate::hub::WATCH_QUEUE);
        let task = tokio::spawn(async move {
            // Dropping the request side would end the watch on etcd's side.
            let _requests = requests;
            let mut pending = first;
            loop {
                let resp = match pending.take() {
                    Some(r) => r,
                    None => match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            let _ = tx
                                .send(Err(StoreError::Unavailable("etcd closed the watch".into())))
                                .await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(map_status(e))).await;
                            return;
                        }
                    },
                };
                if resp.canceled {
                    let _ = tx.send(Err(cancelled(&resp, after))).await;
                    return;
                }
                let batch = match resp
                    .events
                    .into_iter()
                    .map(event)
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if batch.is_empty() {
                    continue;
                }
                match tx.try_send(Ok(crate::types::Batch::Owned(batch))) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let _ = tx.send(Err(StoreError::WatchLagged(after))).await;
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Ok(Watch::new(
            rx,
            prefix,
            None,
            after,
            Some(Box::new(AbortOnDrop(task))),
        ))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .range(pb::RangeRequest {
                key: b"/".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await?;
        Ok(header_revision(&resp.header))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let r = self
            .call(Retry::Read, |ch| async move {
                kv(ch)
                    .compact(with_leader(pb::CompactionRequest {
                        revision,
                        physical: false,
                    }))
                    .await
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            // Already compacted at or past it: nothing to do, as for the SQLite store.
            Err(StoreError::Compacted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        // etcd tells its compaction horizon only to a watch that starts before it: right after confirming
        // the watch, it cancels it with the horizon. Nothing follows when nothing was compacted.
        let mut w = match self.watch("\u{0}", 0).await {
            Err(StoreError::Compacted { compacted, .. }) => return Ok(compacted),
            other => other?,
        };
        match tokio::time::timeout(Duration::from_secs(2), w.next()).await {
            Ok(Some(Err(StoreError::Compacted { compacted, .. }))) => Ok(compacted),
            _ => Ok(0),
        }
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}

fn cancelled(r: &pb::WatchResponse, after: Revision) -> StoreError {
    if r.compact_revision > 0 {
        StoreError::Compacted {
            requested: after,
            compacted: r.compact_revision,
        }
    } else {
        StoreError::Unavailable(format!("etcd cancelled the watch: {}", r.cancel_reason))
    }
}

fn event(e: pb::Event) -> Result<Event, StoreError> {
    let prev = e.prev_kv.map(convert).transpose()?;
    let kv =
        e.kv.ok_or_else(|| StoreError::Internal("etcd event without a key".into()))?;
    if e.r#type == pb::event::EventType::Delete as i32 {
        // etcd's deletion carries only the key and the revision; the value is the previous one.
        let rev = kv.mod_revision;
        let mut deleted = match &prev {
            Some(p) => p.clone(),
            None => convert(kv)?,
        };
        deleted.mod_revision = rev;
        Ok(Event {
            kind: EventKind::Delete,
            kv: deleted,
            prev,
        })
    } else {
        Ok(Event {
            kind: EventKind::Put,
            kv: convert(kv)?,
            prev,
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

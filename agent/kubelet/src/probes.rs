//! Probe and lifecycle-hook handlers: exec (through the CRI), httpGet, tcpSocket and grpc (the standard
//! health service), and the per-container probe state with upstream's timing fields.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use basalt_proto::cri;
use k8s_openapi::api::core::v1::{ExecAction, GRPCAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri::Cri;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Where a pod is reachable from the node: its IP, or the node's loopback for host-network pods.
#[derive(Debug, Clone)]
pub struct Target {
    pub container_id: String,
    pub pod_ip: String,
    pub ports: Vec<(String, i32)>,
}

impl Target {
    fn port(&self, p: &IntOrString) -> Result<u16, String> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n}: out of range")),
            IntOrString::String(name) => self
                .ports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p as u16)
                .ok_or_else(|| format!("port {name:?}: no container port of that name")),
        }
    }

    fn host(&self, explicit: Option<&str>) -> String {
        explicit
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                if self.pod_ip.is_empty() {
                    "127.0.0.1".into()
                } else {
                    self.pod_ip.clone()
                }
            })
    }
}

pub async fn exec(cri: &Cri, t: &Target, a: &ExecAction, timeout: Duration) -> Outcome {
    let cmd = a.command.clone().unwrap_or_default();
    if cmd.is_empty() {
        return Outcome::Failure("exec.command is empty".into());
    }
    let mut rt = cri.runtime.clone();
    let req = cri::ExecSyncRequest {
        container_id: t.container_id.clone(),
        cmd,
        timeout: timeout.as_secs().max(1) as i64,
    };
    match tokio::time::timeout(timeout + Duration::from_secs(2), rt.exec_sync(req)).await {
        Err(_) => Outcome::Failure(format!("command timed out after {timeout:?}")),
        Ok(Err(e)) if e.code() == tonic::Code::DeadlineExceeded => {
            Outcome::Failure(format!("command timed out after {timeout:?}"))
        }
        Ok(Err(e)) => Outcome::Failure(format!("exec: {}", e.message())),
        Ok(Ok(r)) => {
            let r = r.into_inner();
            if r.exit_code == 0 {
                Outcome::Success
            } else {
                let out = String::from_utf8_lossy(&r.stdout)
                    .chars()
                    .take(256)
                    .collect::<String>();
                Outcome::Failure(format!("command exited with {}: {out}", r.exit_code))
            }
        }
    }
}

pub async fn http_get(t: &Target, a: &HTTPGetAction, timeout: Duration) -> Outcome {
    let run = async {
        let port = t.port(&a.port)?;
        let host = t.host(a.host.as_deref());
        if a.scheme.as_deref() == Some("HTTPS") {
            return Err("httpGet scheme HTTPS is not supported yet".to_owned());
        }
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("GET {addr}: {e}"))?;
        let path = a
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n");
        for h in a.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("GET {addr}{path}: malformed response {line:?}"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(())) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!("GET timed out after {timeout:?}")),
    }
}

pub async fn tcp(t: &Target, a: &TCPSocketAction, timeout: Duration) -> Outcome {
    let run = async {
        let port = t.port(&a.port)?;
        let host = t.host(a.host.as_deref());
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| format!("dial tcp {addr}: {e}"))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(())) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!("dial timed out after {timeout:?}")),
    }
}

/// `grpc.health.v1.Health/Check` by hand: the request is `{service}` and the answer's field 1 is the status
/// (1 = SERVING). Plain text gRPC, as kubelet's grpc probe.
pub async fn grpc(t: &Target, a: &GRPCAction, timeout: Duration) -> Outcome {
    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        service: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckResponse {
        #[prost(int32, tag = "1")]
        status: i32,
    }
    let run = async {
        let host = t.host(None);
        let uri = format!("http://{host}:{}", a.port);
        let channel = tonic::transport::Endpoint::from_shared(uri.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| e.to_string())?;
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec: tonic_prost::ProstCodec<HealthCheckRequest, HealthCheckResponse> =
            Default::default();
        let resp = grpc
            .unary(
                tonic::Request::new(HealthCheckRequest {
                    service: a.service.clone().unwrap_or_default(),
                }),
                path,
                codec,
            )
            .await
            .map_err(|e| format!("health check: {}", e.message()))?;
        match resp.into_inner().status {
            1 => Ok(()),
            s => Err(format!("service unhealthy (responded with status {s})")),
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(())) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!("health rpc timed out after {timeout:?}")),
    }
}

pub async fn run_probe(cri: &Cri, t: &Target, p: &Probe) -> Outcome {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(a) = &p.exec {
        exec(cri, t, a, timeout).await
    } else if let Some(a) = &p.http_get {
        http_get(t, a, timeout).await
    } else if let Some(a) = &p.tcp_socket {
        tcp(t, a, timeout).await
    } else if let Some(a) = &p.grpc {
        grpc(t, a, timeout).await
    } else {
        Outcome::Failure("probe has no handler".into())
    }
}

/// One probe's running state: when it is next due and the consecutive results.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub next: Instant,
    pub successes: i32,
    pub failures: i32,
    /// The result after thresholds: `None` until the first decision.
    pub result: Option<bool>,
    pub last_message: String,
}

impl ProbeState {
    pub fn new(p: &Probe, started: Instant) -> ProbeState {
        ProbeState {
            next: started + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            successes: 0,
            failures: 0,
            result: None,
            last_message: String::new(),
        }
    }

    /// Records one outcome and applies success/failure thresholds.
    pub fn record(&mut self, p: &Probe, o: Outcome, now: Instant) {
        self.next = now + Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        match o {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= p.success_threshold.unwrap_or(1).max(1) {
                    self.result = Some(true);
                }
            }
            Outcome::Failure(m) => {
                self.successes = 0;
                self.failures += 1;
                self.last_message = m;
                if self.failures >= p.failure_threshold.unwrap_or(3).max(1) {
                    self.result = Some(false);
                }
            }
        }
    }
}

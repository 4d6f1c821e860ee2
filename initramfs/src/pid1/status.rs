//! What the console shows (node, address, state, agent, errors), and the optional `/healthz` port.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use super::log;

pub struct Status<'a> {
    pub node: &'a str,
    pub network: &'a str,
    pub state: &'a str,
    pub images: usize,
    pub manifests: usize,
    pub agent: &'a str,
    /// The agent's pod summary ([`crate::layout::POD_SUMMARY`]); `None` before the agent wrote one.
    pub pods: Option<&'a str>,
}

/// At most this many pods are listed one per line; the count covers all.
const PODS_SHOWN: usize = 8;

impl Status<'_> {
    pub fn render(&self) -> String {
        let (count, last) = log::errors();
        let mut s = format!(
            "---------------- basalt node {} ----------------\n  ip:        {}\n  state:     {}\n  images:    {} preloaded, {} static pod manifests\n  agent:     {}\n  pods:      {}\n",
            self.node,
            self.network,
            self.state,
            self.images,
            self.manifests,
            self.agent,
            pod_counts(self.pods)
        );
        for line in self.pods.unwrap_or_default().lines().take(PODS_SHOWN) {
            s.push_str(&format!("    {line}\n"));
        }
        s.push_str(&format!("  errors:    {count}\n"));
        for e in last {
            s.push_str(&format!("    ! {e}\n"));
        }
        s.push_str("------------------------------------------------\n");
        s
    }
}

/// `2 (1 Running, 1 Pending)` from summary lines `namespace/name phase ready/total restarts`.
fn pod_counts(summary: Option<&str>) -> String {
    let Some(summary) = summary else {
        return "- (no agent yet)".into();
    };
    let mut phases: Vec<(&str, usize)> = Vec::new();
    for phase in summary.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        match phases.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, n)) => *n += 1,
            None => phases.push((phase, 1)),
        }
    }
    let total: usize = phases.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "0".into();
    }
    let each: Vec<String> = phases.iter().map(|(p, n)| format!("{n} {p}")).collect();
    format!("{total} ({})", each.join(", "))
}

/// Serves `GET /healthz` → `ok` on `port` (all addresses). Nothing else is exposed: no node details.
pub fn serve_healthz(port: u16) {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            log::error(format!("status port {port}: {e}"));
            return;
        }
    };
    log::info(format!("serving GET /healthz on port {port}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap_or(0);
            let reply: &[u8] = if buf[..n].starts_with(b"GET /healthz ") {
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
            } else {
                b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            };
            let _ = c.write_all(reply);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::pod_counts;

    #[test]
    fn pod_counts_group_by_phase() {
        assert_eq!(pod_counts(None), "- (no agent yet)");
        assert_eq!(pod_counts(Some("")), "0");
        assert_eq!(
            pod_counts(Some(
                "default/a Running 1/1 0\ndefault/b Pending 0/2 0\nkube-system/c Running 2/2 3\n"
            )),
            "3 (2 Running, 1 Pending)"
        );
    }
}

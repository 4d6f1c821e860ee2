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
}

impl Status<'_> {
    pub fn render(&self) -> String {
        let (count, last) = log::errors();
        let mut s = format!(
            "---------------- basalt node {} ----------------\n  ip:        {}\n  state:     {}\n  images:    {} preloaded, {} static pod manifests\n  agent:     {}\n  pods:      - (no agent yet)\n  errors:    {count}\n",
            self.node, self.network, self.state, self.images, self.manifests, self.agent
        );
        for e in last {
            s.push_str(&format!("    ! {e}\n"));
        }
        s.push_str("------------------------------------------------\n");
        s
    }
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

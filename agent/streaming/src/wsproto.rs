//! The Kubernetes channel WebSocket subprotocols: every message is one channel number followed by payload.
//!
//! Binary variants put the channel in the first byte; base64 variants send text frames whose first character is
//! the channel digit and whose rest is base64. v4 adds the JSON Status on the error channel, v5 adds the close
//! signal (channel 255, payload = the channel to close).

use base64::Engine;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

/// Channel numbers shared by exec and attach.
pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
pub(crate) const ERROR: u8 = 3;
pub(crate) const RESIZE: u8 = 4;
/// v5 only: "the peer will send nothing more on channel payload[0]".
pub(crate) const CLOSE: u8 = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WsProtocol {
    /// No subprotocol requested: kubelet treats it as `channel.k8s.io`.
    Unnamed,
    V1,
    V1Base64,
    V2,
    V3,
    V4,
    V4Base64,
    V5,
}

impl WsProtocol {
    /// Exec/attach protocols, best first (used only to break ties; the client's order wins).
    pub(crate) const PROCESS: &'static [WsProtocol] = &[
        WsProtocol::V5,
        WsProtocol::V4,
        WsProtocol::V4Base64,
        WsProtocol::V3,
        WsProtocol::V2,
        WsProtocol::V1,
        WsProtocol::V1Base64,
    ];
    /// Port-forward accepts only the v4 names (same framing as v1, the name is what clients send).
    pub(crate) const PORT_FORWARD: &'static [WsProtocol] = &[WsProtocol::V4, WsProtocol::V4Base64];

    pub(crate) fn name(self) -> &'static str {
        match self {
            WsProtocol::Unnamed => "",
            WsProtocol::V1 => "channel.k8s.io",
            WsProtocol::V1Base64 => "base64.channel.k8s.io",
            WsProtocol::V2 => "v2.channel.k8s.io",
            WsProtocol::V3 => "v3.channel.k8s.io",
            WsProtocol::V4 => "v4.channel.k8s.io",
            WsProtocol::V4Base64 => "v4.base64.channel.k8s.io",
            WsProtocol::V5 => "v5.channel.k8s.io",
        }
    }

    fn base64(self) -> bool {
        matches!(self, WsProtocol::V1Base64 | WsProtocol::V4Base64)
    }

    /// v4+ report the end of a process as a JSON metav1.Status.
    pub(crate) fn json_status(self) -> bool {
        matches!(self, WsProtocol::V4 | WsProtocol::V4Base64 | WsProtocol::V5)
    }

    pub(crate) fn supports_close(self) -> bool {
        self == WsProtocol::V5
    }

    /// Picks the first protocol the client offered that is in `supported`; `Ok(Unnamed)` if it offered none.
    pub(crate) fn negotiate<'a>(
        offered: impl IntoIterator<Item = &'a str>,
        supported: &[WsProtocol],
    ) -> Result<WsProtocol, Vec<String>> {
        let offered: Vec<String> = offered
            .into_iter()
            .flat_map(|h| h.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if offered.is_empty() {
            return Ok(WsProtocol::Unnamed);
        }
        offered
            .iter()
            .find_map(|o| supported.iter().copied().find(|s| s.name() == o))
            .ok_or(offered)
    }

    pub(crate) fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64() {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(1 + data.len());
            v.push(channel);
            v.extend_from_slice(data);
            Message::binary(v)
        }
    }

    /// Splits a client message into (channel, payload); `None` for control frames and malformed messages.
    pub(crate) fn decode(self, msg: Message) -> Option<(u8, Bytes)> {
        match msg {
            Message::Binary(b) if !self.base64() && !b.is_empty() => Some((b[0], b.slice(1..))),
            Message::Text(t) if self.base64() && !t.is_empty() => {
                let t = t.as_str();
                let ch = t.as_bytes()[0].checked_sub(b'0').filter(|c| *c <= 9)?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .ok()?;
                Some((ch, Bytes::from(data)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_wins_and_unknown_is_rejected() {
        let p = WsProtocol::negotiate(
            ["v4.channel.k8s.io, v5.channel.k8s.io"],
            WsProtocol::PROCESS,
        );
        assert_eq!(p, Ok(WsProtocol::V4));
        let p = WsProtocol::negotiate(["bogus", "v5.channel.k8s.io"], WsProtocol::PROCESS);
        assert_eq!(p, Ok(WsProtocol::V5));
        assert_eq!(
            WsProtocol::negotiate([], WsProtocol::PROCESS),
            Ok(WsProtocol::Unnamed)
        );
        assert_eq!(
            WsProtocol::negotiate(["v5.channel.k8s.io"], WsProtocol::PORT_FORWARD),
            Err(vec!["v5.channel.k8s.io".to_string()])
        );
    }

    #[test]
    fn base64_round_trip() {
        let m = WsProtocol::V4Base64.encode(2, b"hello");
        assert_eq!(m, Message::text("2aGVsbG8="));
        assert_eq!(
            WsProtocol::V4Base64.decode(m),
            Some((2, Bytes::from_static(b"hello")))
        );
        let m = WsProtocol::V5.encode(1, b"x");
        assert_eq!(
            WsProtocol::V5.decode(m),
            Some((1, Bytes::from_static(b"x")))
        );
    }
}

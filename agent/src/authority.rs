//! Any `:authority` on the CRI's unix socket, as containerd (Go's gRPC server) accepts it.
//!
//! A stock gRPC client dialling `unix:///run/basalt/cri.sock` names the socket in `:authority` (grpc-core
//! sends `run%2Fbasalt%2Fcri.sock`), which is no valid URI authority: the HTTP/2 server under tonic resets
//! every such stream with PROTOCOL_ERROR. On a unix socket the authority means nothing, so each connection
//! passes through a small relay that rewrites an authority `http` cannot parse to `localhost` in the
//! client's header blocks (HPACK-decoded, re-encoded as literals that never touch the server's dynamic
//! table) and copies everything else, both ways, byte for byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;

const PREFACE_LEN: usize = 24;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may have: what re-encoded header blocks are cut into.
const MAX_FRAME: usize = 16_384;
/// Relay buffer between the client's socket and the server's end.
const PIPE: usize = 64 * 1024;

/// One accepted CRI connection, as the gRPC server sees it.
pub struct Conn(DuplexStream);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Wraps an accepted connection: the relay runs as a task of its own until either side closes.
pub fn accept(client: UnixStream) -> Conn {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        let (client_rd, mut client_wr) = client.into_split();
        let (server_rd, mut server_wr) = tokio::io::split(ours);
        let inbound = async move {
            let r = relay_client(client_rd, &mut server_wr).await;
            // The server's read side ends with the client's, however it ended.
            let _ = server_wr.shutdown().await;
            r
        };
        let outbound = async move {
            let mut server_rd = server_rd;
            let r = tokio::io::copy(&mut server_rd, &mut client_wr).await;
            let _ = client_wr.shutdown().await;
            r
        };
        tokio::pin!(inbound, outbound);
        // The client done sending (its half closed, or broken): the server sees EOF and still answers what it
        // had. The server done: nothing more can reach the client.
        tokio::select! {
            r = &mut inbound => {
                if let Err(e) = r {
                    tracing::debug!("CRI connection, from the client: {e}");
                }
                let _ = outbound.await;
            }
            r = &mut outbound => if let Err(e) = r {
                tracing::debug!("CRI connection, to the client: {e}");
            },
        }
    });
    Conn(theirs)
}

/// Client → server: the preface, then frame by frame; header blocks are rewritten, the rest copied.
async fn relay_client(
    mut rd: impl AsyncRead + Unpin,
    mut wr: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    let mut preface = [0u8; PREFACE_LEN];
    rd.read_exact(&mut preface).await?;
    wr.write_all(&preface).await?;
    let mut rewriter = Rewriter::new();
    loop {
        let mut head = [0u8; 9];
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await?;
        let out = rewriter.frame(head, payload);
        wr.write_all(&out).await?;
        wr.flush().await?;
    }
}

/// The header-block state of one connection: the client's HPACK table, and a block cut into CONTINUATIONs.
struct Rewriter {
    decoder: loona_hpack::Decoder<'static>,
    /// An unfinished block: its stream, END_STREAM, and the fragments so far.
    pending: Option<(u32, bool, Vec<u8>)>,
    /// After an undecodable block the table is out of step with the client: copy from then on, and let the
    /// server report the error it finds.
    broken: bool,
}

impl Rewriter {
    fn new() -> Rewriter {
        let mut decoder = loona_hpack::Decoder::new();
        // Whatever table size the server allows the client, ours keeps step (the limit is the server's).
        decoder.set_max_allowed_table_size(1 << 16);
        Rewriter {
            decoder,
            pending: None,
            broken: false,
        }
    }

    /// The bytes to send on for one frame (none while a header block is still being collected).
    fn frame(&mut self, head: [u8; 9], payload: Vec<u8>) -> Vec<u8> {
        let (typ, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let passthrough = |payload: Vec<u8>| {
            let mut v = head.to_vec();
            v.extend_from_slice(&payload);
            v
        };
        if self.broken || !(typ == FRAME_HEADERS || typ == FRAME_CONTINUATION) {
            return passthrough(payload);
        }
        let fragment = if typ == FRAME_HEADERS {
            match header_fragment(flags, &payload) {
                Some(f) => f.to_vec(),
                None => {
                    self.broken = true;
                    return passthrough(payload);
                }
            }
        } else {
            payload
        };
        let (stream, end_stream, mut block) = match (typ, self.pending.take()) {
            (FRAME_HEADERS, _) => (stream, flags & FLAG_END_STREAM != 0, Vec::new()),
            (_, Some(p)) => p,
            // A CONTINUATION with nothing to continue: the server's to refuse.
            (_, None) => {
                self.broken = true;
                let mut v = head.to_vec();
                v.extend_from_slice(&fragment);
                return v;
            }
        };
        block.extend_from_slice(&fragment);
        if flags & FLAG_END_HEADERS == 0 {
            self.pending = Some((stream, end_stream, block));
            return Vec::new();
        }
        match self.decoder.decode(&block) {
            Ok(headers) => encode_frames(stream, end_stream, &rewrite(headers)),
            Err(e) => {
                tracing::debug!(?e, "undecodable header block on the CRI socket");
                self.broken = true;
                encode_raw(stream, end_stream, &block)
            }
        }
    }
}

/// The header block fragment of a HEADERS payload, without padding and priority fields.
fn header_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    if flags & FLAG_PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// `:authority` that `http` cannot parse becomes `localhost`; every other header stays as it came.
fn rewrite(headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .into_iter()
        .map(|(name, value)| {
            if name == b":authority" && http::uri::Authority::try_from(&value[..]).is_err() {
                (name, b"localhost".to_vec())
            } else {
                (name, value)
            }
        })
        .collect()
}

/// HPACK "literal header field without indexing, new name" for each header: no dynamic table entry on the
/// server's side, so nothing of the client's own table state needs to carry over.
fn encode_block(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        for s in [name, value] {
            // A string literal: H=0, length as an integer with a 7-bit prefix.
            let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut out);
            out.extend_from_slice(s);
        }
    }
    out
}

fn encode_frames(stream: u32, end_stream: bool, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    encode_raw(stream, end_stream, &encode_block(headers))
}

/// A header block as one HEADERS frame and as many CONTINUATIONs as the frame size needs.
fn encode_raw(stream: u32, end_stream: bool, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 9);
    let chunks: Vec<&[u8]> = if block.is_empty() {
        vec![&[]]
    } else {
        block.chunks(MAX_FRAME).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let (typ, mut flags) = if i == 0 {
            (FRAME_HEADERS, if end_stream { FLAG_END_STREAM } else { 0 })
        } else {
            (FRAME_CONTINUATION, 0)
        };
        if i == last {
            flags |= FLAG_END_HEADERS;
        }
        let len = (chunk.len() as u32).to_be_bytes();
        out.extend_from_slice(&[len[1], len[2], len[3], typ, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(typ: u8, flags: u8, stream: u32, payload: &[u8]) -> ([u8; 9], Vec<u8>) {
        let len = (payload.len() as u32).to_be_bytes();
        let s = stream.to_be_bytes();
        (
            [len[1], len[2], len[3], typ, flags, s[0], s[1], s[2], s[3]],
            payload.to_vec(),
        )
    }

    fn decode(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut d = loona_hpack::Decoder::new();
        let mut block = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            block.extend_from_slice(&rest[9..9 + len]);
            rest = &rest[9 + len..];
        }
        d.decode(&block).unwrap()
    }

    /// A block as grpc-core sends it (Huffman strings, incremental indexing), split over a CONTINUATION,
    /// padded and with priority: the authority is replaced, the rest survives, the table keeps step.
    #[test]
    fn a_socket_path_authority_becomes_localhost() {
        let mut enc = loona_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", b"run%2Fbasalt%2Fcri.sock"),
            (b"content-type", b"application/grpc"),
        ];
        let block = enc.encode(headers.iter().copied());
        let (a, b) = block.split_at(block.len() / 2);
        let mut first = vec![3u8];
        first.extend_from_slice(&[0, 0, 0, 0, 16]);
        first.extend_from_slice(a);
        first.extend_from_slice(&[0, 0, 0]);
        let mut r = Rewriter::new();
        let (h, p) = frame(FRAME_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &first);
        assert!(r.frame(h, p).is_empty(), "held until END_HEADERS");
        let (h, p) = frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, b);
        let out = r.frame(h, p);
        assert_eq!(out[3], FRAME_HEADERS);
        let got = decode(&out);
        assert_eq!(got[2], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(got[1].1, b"/runtime.v1.RuntimeService/Version");
        // The next request reuses the client's dynamic table: still decoded right.
        let block = enc.encode(headers.iter().copied());
        let (h, p) = frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3, &block);
        let out = r.frame(h, p);
        assert_eq!(out[4], FLAG_END_HEADERS | FLAG_END_STREAM);
        assert_eq!(decode(&out)[3].1, b"application/grpc");
        // A valid authority and other frames are left alone.
        let block = enc.encode([(&b":authority"[..], &b"localhost:50051"[..])]);
        let (h, p) = frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &block);
        assert_eq!(decode(&r.frame(h, p))[0].1, b"localhost:50051");
        let (h, p) = frame(0x0, 0, 5, b"data");
        let out = r.frame(h, p);
        assert_eq!(&out[9..], b"data");
    }

    /// A block longer than the smallest frame size is cut into CONTINUATIONs.
    #[test]
    fn long_blocks_are_cut_into_continuations() {
        let value = vec![b'x'; 40_000];
        let out = encode_frames(7, false, &[(b"x-big".to_vec(), value.clone())]);
        assert_eq!(out[3], FRAME_HEADERS);
        assert_eq!(out[4] & FLAG_END_HEADERS, 0);
        assert_eq!(decode(&out)[0].1, value);
    }
}

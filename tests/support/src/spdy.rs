//! A minimal SPDY/3.1 client, as client-go's spdystream speaks it (one stream per channel, zlib-compressed
//! header blocks with the SPDY/3 dictionary): what kubectl and the API server use for exec, attach and
//! port-forward. The streaming server's own tests and the CRI suite (against containerd's streaming server
//! as the reference) drive the SPDY path with it.

use std::collections::HashMap;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one read may wait for the server.
pub const STEP: Duration = Duration::from_secs(20);

fn dictionary() -> Vec<u8> {
    let words = "options head post put delete trace accept accept-charset accept-encoding accept-language \
        accept-ranges age allow authorization cache-control connection content-base content-encoding \
        content-language content-length content-location content-md5 content-range content-type date etag \
        expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since \
        last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer \
        retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate \
        method get status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin";
    let mut d = Vec::new();
    for w in words.split_whitespace() {
        let w = w.replace('_', " ");
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(
        b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 \
Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 \
Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar \
Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,\
image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    d
}

/// One thing the server sent.
#[derive(Debug)]
pub enum Got {
    Reply(u32),
    Data { id: u32, fin: bool, data: Vec<u8> },
    Reset(u32),
    GoAway,
    Closed,
    Other,
}

/// What the server sent on a connection, per stream.
#[derive(Default, Debug)]
pub struct Seen {
    pub data: HashMap<u32, Vec<u8>>,
    pub resets: Vec<u32>,
    pub fins: Vec<u32>,
    pub replies: Vec<u32>,
}

/// A SPDY connection to a streaming server.
pub struct Client {
    tcp: TcpStream,
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
    next_id: u32,
}

/// Upgrades `url` to SPDY/3.1; returns the client and the chosen protocol, or the HTTP status on refusal.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<(Client, String), (u16, String)> {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(STEP, tcp.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let proto = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-stream-protocol-version:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    if status != 101 {
        let mut body = vec![0u8; 4096];
        let n = tcp.read(&mut body).await.unwrap_or(0);
        return Err((status, String::from_utf8_lossy(&body[..n]).into_owned()));
    }
    let dict = dictionary();
    let mut deflate = Compress::new(Compression::default(), true);
    assert_eq!(
        deflate.set_dictionary(&dict).unwrap(),
        0xe3c6_a7c2,
        "test dictionary is not SPDY/3's"
    );
    let client = Client {
        tcp,
        deflate,
        inflate: Decompress::new(true),
        dict,
        next_id: 1,
    };
    Ok((client, proto))
}

impl Client {
    /// Opens a stream with `headers` (`streamtype`, …); returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut block = Vec::with_capacity(raw.len() + 1024);
        self.deflate
            .compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let id = self.next_id;
        self.next_id += 2;
        let mut f = vec![0x80, 0x03, 0x00, 0x01];
        f.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&block);
        self.tcp.write_all(&f).await.unwrap();
        id
    }

    /// Opens a stream and waits until the server answered it (client-go opens each stream of a session
    /// once the previous one was answered); returns its id.
    pub async fn open_answered(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.open(headers).await;
        loop {
            match self.next().await {
                Got::Reply(r) if r == id => return id,
                Got::GoAway | Got::Closed => {
                    panic!("closed before stream {headers:?} was answered")
                }
                _ => {}
            }
        }
    }

    /// Data on stream `id`, FIN with `fin`.
    pub async fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(&((u32::from(fin) << 24) | data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.tcp.write_all(&f).await.unwrap();
    }

    /// The next frame, as much as tests need of it.
    pub async fn next(&mut self) -> Got {
        let mut head = [0u8; 8];
        match tokio::time::timeout(STEP, self.tcp.read_exact(&mut head))
            .await
            .expect("read timed out")
        {
            Ok(_) => {}
            Err(_) => return Got::Closed,
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut p = vec![0u8; len];
        self.tcp.read_exact(&mut p).await.unwrap();
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if word & 0x8000_0000 == 0 {
            return Got::Data {
                id: word,
                fin: head[4] & 1 == 1,
                data: p,
            };
        }
        let id = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
        match word & 0xffff {
            2 => {
                self.inflate_block(&p[4..]);
                Got::Reply(id)
            }
            3 => Got::Reset(id),
            7 => Got::GoAway,
            _ => Got::Other,
        }
    }

    fn inflate_block(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        while !input.is_empty() {
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dict).unwrap();
                }
                Err(e) => panic!("bad header block from server: {e}"),
            }
            input = &input[(self.inflate.total_in() - before) as usize..];
        }
        out
    }

    /// Reads until the server ends the connection.
    pub async fn collect(mut self) -> Seen {
        let mut seen = Seen::default();
        loop {
            match self.next().await {
                Got::Data { id, fin, data } => {
                    seen.data.entry(id).or_default().extend(data);
                    if fin {
                        seen.fins.push(id);
                    }
                }
                Got::Reset(id) => seen.resets.push(id),
                Got::Reply(id) => seen.replies.push(id),
                Got::GoAway | Got::Closed => return seen,
                Got::Other => {}
            }
        }
    }

    /// Reads until stream `id` has sent `needle`; what it sent.
    pub async fn read_until(&mut self, id: u32, needle: &str) -> String {
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(needle) {
            match self.next().await {
                Got::Data { id: i, data, .. } if i == id => got.extend(data),
                Got::GoAway | Got::Closed => panic!(
                    "closed before {needle:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                ),
                _ => {}
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

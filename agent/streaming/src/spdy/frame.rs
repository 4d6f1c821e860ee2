//! SPDY/3 framing and header-block compression (draft-mbelshe-httpbis-spdy-00, as spoken by Go's spdystream).

use std::collections::HashMap;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

const VERSION: u16 = 3;
pub(crate) const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status for a stream the server does not expect.
pub(crate) const RST_REFUSED: u32 = 3;
/// Frames larger than this are a protocol violation for us (kubectl sends at most 32 KiB of data).
const MAX_FRAME: usize = 1 << 24;

/// The header-compression dictionary fixed by the SPDY/3 specification: length-prefixed common header names
/// and values, then common value fragments.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1424);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

pub(crate) type Headers = HashMap<String, String>;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_stream_id: u32,
        status: u32,
    },
    /// SETTINGS, WINDOW_UPDATE, HEADERS and unknown control frames: nothing for us to do.
    Ignored,
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spdy: {}", msg.into()))
}

/// Reads frames; owns the connection's header decompression context.
pub(crate) struct FrameReader<R> {
    io: R,
    inflate: Decompress,
    dict: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        Self {
            io,
            inflate: Decompress::new(true),
            dict: dictionary(),
        }
    }

    /// Next frame, or `None` at a clean end of stream.
    pub(crate) async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(proto_err(format!("frame of {len} bytes is too large")));
        }
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        let mut p = Bytes::from(payload);
        let fin = flags & FLAG_FIN != 0;
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word,
                fin,
                data: p,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(proto_err(format!("unsupported version {version}")));
        }
        let need = |p: &Bytes, n: usize| {
            if p.len() < n {
                Err(proto_err("truncated control frame"))
            } else {
                Ok(())
            }
        };
        Ok(Some(match (word & 0xffff) as u16 {
            SYN_STREAM => {
                need(&p, 10)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                p.advance(6); // associated stream, priority, slot: unused by Kubernetes
                let headers = self.headers(&p)?;
                Frame::SynStream {
                    stream_id,
                    fin,
                    headers,
                }
            }
            SYN_REPLY => {
                need(&p, 4)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                // Keep the shared decompression context in step even though we ignore the headers.
                self.headers(&p)?;
                Frame::SynReply { stream_id, fin }
            }
            HEADERS => {
                need(&p, 4)?;
                p.advance(4);
                self.headers(&p)?;
                Frame::Ignored
            }
            RST_STREAM => {
                need(&p, 8)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            PING => {
                need(&p, 4)?;
                Frame::Ping(p.get_u32())
            }
            GOAWAY => {
                need(&p, 8)?;
                Frame::GoAway {
                    last_stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            SETTINGS | WINDOW_UPDATE => Frame::Ignored,
            _ => Frame::Ignored,
        }))
    }

    fn headers(&mut self, compressed: &[u8]) -> io::Result<Headers> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let res = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() > before_out;
            input = &input[consumed..];
            match res {
                Ok(_) => {
                    // All input taken and output not filled to the brim: the block is fully inflated.
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if consumed == 0 && !produced && out.len() < out.capacity() {
                        return Err(proto_err("header block does not inflate"));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dict)
                        .map_err(|e| proto_err(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(proto_err(format!("header block: {e}"))),
            }
            if out.len() > MAX_FRAME {
                return Err(proto_err("header block too large"));
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(mut b: &[u8]) -> io::Result<Headers> {
    let take = |b: &mut &[u8]| -> io::Result<String> {
        if b.len() < 4 {
            return Err(proto_err("truncated header block"));
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(proto_err("truncated header block"));
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err(proto_err("truncated header block"));
    }
    let count = b.get_u32();
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = take(&mut b)?.to_ascii_lowercase();
        let value = take(&mut b)?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Serialises frames; owns the connection's header compression context.
pub(crate) struct FrameWriter {
    deflate: Compress,
}

impl FrameWriter {
    pub(crate) fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&dictionary())
            .expect("setting a dictionary on a fresh deflate stream cannot fail");
        Self { deflate }
    }

    pub(crate) fn encode(&mut self, frame: &Frame, out: &mut BytesMut) {
        match frame {
            Frame::SynReply { stream_id, fin } => {
                let block = self.compress(&[]);
                control(out, SYN_REPLY, fin_flag(*fin), 4 + block.len());
                out.put_u32(*stream_id);
                out.put_slice(&block);
            }
            Frame::SynStream {
                stream_id,
                fin,
                headers,
            } => {
                let mut pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                pairs.sort();
                let block = self.compress(&pairs);
                control(out, SYN_STREAM, fin_flag(*fin), 10 + block.len());
                out.put_u32(*stream_id);
                out.put_u32(0);
                out.put_u16(0);
                out.put_slice(&block);
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(fin_flag(*fin)) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, RST_STREAM, 0, 8);
                out.put_u32(*stream_id);
                out.put_u32(*status);
            }
            Frame::Ping(id) => {
                control(out, PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_stream_id,
                status,
            } => {
                control(out, GOAWAY, 0, 8);
                out.put_u32(*last_stream_id);
                out.put_u32(*status);
            }
            Frame::Ignored => {}
        }
    }

    fn compress(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.put_u32(pairs.len() as u32);
        for (k, v) in pairs {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate into a growable buffer cannot fail");
            input = &input[(self.deflate.total_in() - before) as usize..];
            // A sync flush is complete once all input is taken and the buffer was not filled to the brim.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        out
    }
}

fn fin_flag(fin: bool) -> u8 {
    if fin {
        FLAG_FIN
    } else {
        0
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | len as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_specified_size() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
        // Adler-32 of the specification's dictionary, as computed by C zlib.
        let adler = Compress::new(Compression::default(), true)
            .set_dictionary(&d)
            .unwrap();
        assert_eq!(adler, 0xe3c6_a7c2);
    }

    /// Two SYN_STREAMs whose header blocks were compressed by C zlib (Python's zlib module), sharing one
    /// compression context, as a Go client would send them.
    #[tokio::test]
    async fn reads_header_blocks_compressed_by_c_zlib() {
        const WIRE: &str = concat!(
            "80030001000000280000000100000000000078f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000",
            "ffff800300010000002e0000000300000000000002a54748d15c04ce0516061606409ab308129599a024ce6880a1",
            "19540e2502000000ffff"
        );
        let wire: Vec<u8> = (0..WIRE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&WIRE[i..i + 2], 16).unwrap())
            .collect();
        let mut r = FrameReader::new(&wire[..]);
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::SynStream {
                stream_id: 1,
                fin: false,
                headers: h(&[("streamtype", "error")])
            })
        );
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::SynStream {
                stream_id: 3,
                fin: false,
                headers: h(&[("port", "8080"), ("requestid", "0"), ("streamtype", "data")]),
            })
        );
    }

    #[tokio::test]
    async fn frames_round_trip_through_shared_compression() {
        let mut w = FrameWriter::new();
        let mut buf = BytesMut::new();
        let h1: Headers = [("streamtype".to_string(), "stdout".to_string())].into();
        let h2: Headers = [
            ("streamtype".to_string(), "data".to_string()),
            ("port".to_string(), "8080".to_string()),
        ]
        .into();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                fin: false,
                headers: h1,
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hi"),
            },
            Frame::SynStream {
                stream_id: 3,
                fin: false,
                headers: h2,
            },
            Frame::SynReply {
                stream_id: 3,
                fin: false,
            },
            Frame::Ping(7),
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::GoAway {
                last_stream_id: 3,
                status: 0,
            },
        ];
        for f in &frames {
            w.encode(f, &mut buf);
        }
        let mut r = FrameReader::new(&buf[..]);
        for f in frames {
            assert_eq!(r.next().await.unwrap(), Some(f));
        }
        assert_eq!(r.next().await.unwrap(), None);
    }
}

//! The server side of SPDY/3.1 as Kubernetes' streaming uses it (`moby/spdystream` in kubectl and the
//! kubelet): the client opens every stream (`SYN_STREAM` with a `streamtype` header), the server
//! accepts each with `SYN_REPLY`, both send `DATA` and half-close with `FIN`; `PING`s are echoed.
//!
//! Hand-written because no maintained Rust crate implements SPDY (it was superseded by HTTP/2 in 2015)
//! and Kubernetes still speaks it: kubectl before 1.30 for exec and before 1.31 for port-forward, and
//! port-forward tunnels it through WebSocket to this day. It is kept to what that use needs: no server
//! push, no priorities, and flow control left out as spdystream itself leaves it out (it ignores
//! `WINDOW_UPDATE` and never sends one). Header blocks are one zlib stream per direction; the
//! client's uses SPDY/3's preset dictionary (flate2's zlib-rs backend supports dictionaries), ours is
//! compressed without one, which every zlib reader accepts.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 1;
/// Frames larger than this are refused (spdystream limits header blocks the same way).
const MAX_FRAME: usize = 1 << 24;
/// DATA frames sent are cut to this size.
pub(crate) const MAX_DATA: usize = 32 * 1024;

/// Errors of a SPDY session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpdyError {
    /// The connection failed or ended.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

/// SPDY/3's header compression dictionary (draft 3, section 2.6.10.1): length-prefixed header names
/// and values, then common strings.
fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let words = [
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
        let mut d = Vec::new();
        for w in words {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(
            b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        d
    })
}

/// What the session reads from the client.
#[derive(Debug)]
pub(crate) enum Event {
    /// A new stream (already accepted with a `SYN_REPLY`), with its headers (names lower-case).
    Stream { id: u32, headers: Vec<(String, String)> },
    /// Data on a stream; `fin` half-closes it.
    Data { id: u32, data: Bytes, fin: bool },
    /// The client reset a stream.
    Reset { id: u32 },
}

/// What the session sends.
#[derive(Debug)]
enum Outgoing {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Ping(u32),
}

/// Sends frames on a session; cheap to clone.
#[derive(Clone)]
pub(crate) struct Sender {
    tx: mpsc::Sender<Outgoing>,
}

impl Sender {
    /// Sends `data` on stream `id` (cut into frames), half-closing it after when `fin`. False once the
    /// connection is gone.
    pub(crate) async fn data(&self, id: u32, data: Bytes, fin: bool) -> bool {
        let mut rest = data;
        loop {
            let chunk = rest.split_to(rest.len().min(MAX_DATA));
            let last = rest.is_empty();
            let frame = Outgoing::Data {
                id,
                data: chunk,
                fin: fin && last,
            };
            if self.tx.send(frame).await.is_err() {
                return false;
            }
            if last {
                return true;
            }
        }
    }
}

/// The reading side of a session.
pub(crate) struct Receiver<R> {
    rd: R,
    inflate: Decompress,
    tx: mpsc::Sender<Outgoing>,
    queued: Option<Event>,
}

/// Starts a server session on `io`: the returned receiver yields the client's events; the sender
/// writes (a task owns the writing half, and ends when every sender and the receiver are gone).
pub(crate) fn serve<IO>(io: IO) -> (Sender, Receiver<tokio::io::ReadHalf<IO>>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(write_loop(wr, rx));
    (
        Sender { tx: tx.clone() },
        Receiver {
            rd,
            inflate: Decompress::new(true),
            tx,
            queued: None,
        },
    )
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Outgoing>) {
    let mut deflate = Compress::new(Compression::default(), true);
    while let Some(frame) = rx.recv().await {
        let bytes = match frame {
            Outgoing::Reply(id) => {
                let mut body = BytesMut::new();
                body.put_u32(id & 0x7fff_ffff);
                // An empty header block: a count of zero, compressed.
                match compress(&mut deflate, &0u32.to_be_bytes()) {
                    Ok(block) => body.put_slice(&block),
                    Err(_) => return,
                }
                control(SYN_REPLY, 0, &body)
            }
            Outgoing::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Outgoing::Data { id, data, fin } => {
                let mut b = BytesMut::with_capacity(8 + data.len());
                b.put_u32(id & 0x7fff_ffff);
                b.put_u8(if fin { FLAG_FIN } else { 0 });
                b.put_uint(data.len() as u64, 3);
                b.put_slice(&data);
                b.freeze()
            }
        };
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
        // Flush when nothing else is queued: small writes coalesce, and nothing waits behind a buffer.
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + body.len());
    b.put_u16(0x8000 | 3);
    b.put_u16(kind);
    b.put_u8(flags);
    b.put_uint(body.len() as u64, 3);
    b.put_slice(body);
    b.freeze()
}

fn compress(deflate: &mut Compress, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
    let mut out = Vec::with_capacity(input.len() + 64);
    loop {
        deflate
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(|e| SpdyError::Protocol(format!("header compression: {e}")))?;
        if out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(256);
    }
}

impl<R: AsyncRead + Unpin> Receiver<R> {
    /// The next event; `None` when the client closed the connection or sent `GOAWAY`.
    pub(crate) async fn next(&mut self) -> Result<Option<Event>, SpdyError> {
        if let Some(e) = self.queued.take() {
            return Ok(Some(e));
        }
        loop {
            let mut head = [0u8; 8];
            match self.rd.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let flags = head[4];
            let len = (usize::from(head[5]) << 16) | (usize::from(head[6]) << 8) | usize::from(head[7]);
            if len >= MAX_FRAME {
                return Err(SpdyError::Protocol(format!("frame of {len} bytes")));
            }
            let mut body = vec![0u8; len];
            self.rd.read_exact(&mut body).await?;
            if head[0] & 0x80 == 0 {
                let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
                return Ok(Some(Event::Data {
                    id,
                    data: Bytes::from(body),
                    fin: flags & FLAG_FIN != 0,
                }));
            }
            let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
            if version != 3 {
                return Err(SpdyError::Protocol(format!("version {version}")));
            }
            let word = |i: usize| -> u32 {
                body.get(i..i + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0)
            };
            match u16::from_be_bytes([head[2], head[3]]) {
                SYN_STREAM => {
                    if body.len() < 10 {
                        return Err(SpdyError::Protocol("short SYN_STREAM".into()));
                    }
                    let id = word(0) & 0x7fff_ffff;
                    let headers = self.headers(&body[10..])?;
                    let _ = self.tx.send(Outgoing::Reply(id)).await;
                    if flags & FLAG_FIN != 0 {
                        // Opened and half-closed at once: the end follows the opening.
                        self.queued = Some(Event::Data {
                            id,
                            data: Bytes::new(),
                            fin: true,
                        });
                    }
                    return Ok(Some(Event::Stream { id, headers }));
                }
                RST_STREAM => {
                    return Ok(Some(Event::Reset {
                        id: word(0) & 0x7fff_ffff,
                    }));
                }
                PING => {
                    let _ = self.tx.send(Outgoing::Ping(word(0))).await;
                }
                GOAWAY => return Ok(None),
                // SETTINGS, HEADERS, WINDOW_UPDATE and anything newer: nothing to act on. HEADERS still
                // goes through the decompressor, whose state spans the whole connection.
                HEADERS if body.len() >= 4 => {
                    self.headers(&body[4..])?;
                }
                _ => {}
            }
        }
    }

    /// Decodes a header block (this connection's zlib stream, with SPDY's dictionary).
    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            let before_in = self.inflate.total_in();
            let res = self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(0);
            input = &input[used.min(input.len())..];
            match res {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Protocol(format!("header block: {e}"))),
                Ok(_) if input.is_empty() && plain.len() < plain.capacity() => break,
                Ok(_) => {
                    if plain.len() > MAX_FRAME {
                        return Err(SpdyError::Protocol("header block too large".into()));
                    }
                    plain.reserve(plain.len().max(256));
                }
            }
        }
        parse_headers(&plain)
    }
}

/// Parses an uncompressed header block: a count, then length-prefixed names and values (several
/// values of one name are separated by NUL).
fn parse_headers(b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = || SpdyError::Protocol("malformed header block".into());
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = b.get(pos..pos + n).ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let word = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = word(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let n = word(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = word(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

/// The value of header `name` in a stream's headers.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        // SPDY/3's dictionary is 1423 bytes; a zlib stream made with it names its Adler-32.
        assert_eq!(dictionary().len(), 1423);
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(dictionary()).unwrap();
        let mut out = Vec::with_capacity(256);
        c.compress_vec(b"x", &mut out, FlushCompress::Sync).unwrap();
        let mut d = Decompress::new(true);
        let mut plain = Vec::with_capacity(64);
        let err = d
            .decompress_vec(&out, &mut plain, FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn header_blocks_round_trip_across_frames() {
        let block = |pairs: &[(&str, &str)]| {
            let mut b = Vec::new();
            b.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs {
                b.extend_from_slice(&(k.len() as u32).to_be_bytes());
                b.extend_from_slice(k.as_bytes());
                b.extend_from_slice(&(v.len() as u32).to_be_bytes());
                b.extend_from_slice(v.as_bytes());
            }
            b
        };
        // As spdystream writes them: one zlib stream with the dictionary, flushed per frame.
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(dictionary()).unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let mut r = Receiver {
            rd: tokio::io::empty(),
            inflate: Decompress::new(true),
            tx,
            queued: None,
        };
        for (t, port) in [("error", "80"), ("data", "8080")] {
            let mut out = Vec::with_capacity(1024);
            let plain = block(&[("streamtype", t), ("port", port), ("requestid", "0")]);
            c.compress_vec(&plain, &mut out, FlushCompress::Sync).unwrap();
            let h = r.headers(&out).unwrap();
            assert_eq!(header(&h, "streamType"), Some(t));
            assert_eq!(header(&h, "port"), Some(port));
        }
    }

    #[test]
    fn malformed_header_blocks_are_errors() {
        for bad in [
            &b""[..],
            &[0, 0, 0, 1][..],
            &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff][..],
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, b'a'][..],
        ] {
            assert!(parse_headers(bad).is_err(), "{bad:?}");
        }
        // Garbage where a zlib stream should be.
        let (tx, _rx) = mpsc::channel(4);
        let mut r = Receiver {
            rd: tokio::io::empty(),
            inflate: Decompress::new(true),
            tx,
            queued: None,
        };
        assert!(r.headers(b"definitely not zlib").is_err());
    }

    #[test]
    fn our_header_blocks_decode_without_a_dictionary() {
        let mut c = Compress::new(Compression::default(), true);
        let mut d = Decompress::new(true);
        for _ in 0..3 {
            let z = compress(&mut c, &0u32.to_be_bytes()).unwrap();
            let mut plain = Vec::with_capacity(64);
            d.decompress_vec(&z, &mut plain, FlushDecompress::Sync).unwrap();
            assert_eq!(parse_headers(&plain).unwrap(), vec![]);
        }
    }
}

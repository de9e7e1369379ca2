//! Moving the bytes of one proxied TCP connection, both ways, with half-close passed on.
//!
//! Each direction starts by copying through a pooled userspace buffer: for the small messages of
//! request/response traffic this is the cheapest path, two syscalls per message (tokio's `read` clears
//! the socket's readiness after a short read, so no third call is spent learning that the socket is
//! empty). Once a direction fills the buffer twice in a row it is carrying a bulk transfer and switches
//! to zero-copy `splice(2)` (Linux): socket → pipe → socket, so payload pages move between the sockets
//! inside the kernel and never visit userspace.
//!
//! In splice mode the pipe is always empty when it is filled and non-empty when it is drained, so an
//! `EAGAIN` always comes from the socket, which is what tokio's readiness tracking (`readable()` /
//! `writable()` + `try_io`) must be told. Buffers and pipes are pooled per worker thread and reused by
//! later connections, so a connection costs no allocation and no `pipe2`/`close` calls for them.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Size of the copy buffer of one direction.
const BUF: usize = 32 * 1024;
/// Buffers (and pipes) kept per worker thread for reuse.
const POOL_MAX: usize = 1024;
/// Bytes counted locally before they are added to the shared counter.
const FLUSH_BYTES: u64 = 1 << 20;
/// Full buffer reads in a row that make a direction switch to splice.
const BULK_AFTER: u32 = 2;

thread_local! {
    static BUFS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer from the pool, returned on drop.
struct Buf(Option<Box<[u8]>>);

impl Buf {
    fn get() -> Buf {
        let b = BUFS
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF].into_boxed_slice());
        Buf(Some(b))
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            BUFS.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX {
                    p.push(b);
                }
            });
        }
    }
}

/// Bytes moved, added to the shared counter in batches (and at the end, however the relay ends).
struct Tally<'a> {
    counter: &'a Counter,
    unflushed: u64,
}

impl Tally<'_> {
    fn add(&mut self, n: usize) {
        self.unflushed += n as u64;
        if self.unflushed >= FLUSH_BYTES {
            self.counter.inc_by(std::mem::take(&mut self.unflushed));
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if self.unflushed > 0 {
            self.counter.inc_by(self.unflushed);
        }
    }
}

/// Relays both directions between `client` and `upstream` until both have ended. An end of stream on
/// one side is passed on as a shutdown of the other side's write half; an error on either side ends
/// both (the caller resets the connections then). `splice`: the pipe size to use once a direction turns
/// out to carry a bulk transfer; `None` copies everything through userspace.
pub(crate) async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    splice: Option<usize>,
    bytes_in: &Counter,
    bytes_out: &Counter,
) -> io::Result<()> {
    let (cr, cw) = client.split();
    let (ur, uw) = upstream.split();
    let ended = [AtomicBool::new(false), AtomicBool::new(false)];
    tokio::try_join!(
        pump(cr, uw, splice, bytes_in, [&ended[0], &ended[1]]),
        pump(ur, cw, splice, bytes_out, [&ended[1], &ended[0]])
    )?;
    Ok(())
}

/// Copies `from` to `to`; `splice`: switch to splice(2) for bulk transfers, with pipes of this size.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    splice: Option<usize>,
    bytes: &Counter,
    ended: [&AtomicBool; 2],
) -> io::Result<()> {
    let mut tally = Tally {
        counter: bytes,
        unflushed: 0,
    };
    let mut full = 0;
    {
        let mut buf = Buf::get();
        let buf = buf.0.as_deref_mut().expect("buffer present until drop");
        loop {
            let n = from.read(buf).await?;
            if n == 0 {
                // The source closed its write side: pass the half-close on.
                half_close(&to, ended);
                return Ok(());
            }
            to.write_all(&buf[..n]).await?;
            tally.add(n);
            full = if n == buf.len() { full + 1 } else { 0 };
            if splice.is_some() && full >= BULK_AFTER {
                break;
            }
        }
    }
    #[cfg(target_os = "linux")]
    if let Some(size) = splice
        && let Ok(pipe) = splice::Pipe::get(size)
    {
        return splice::pump(from.as_ref(), to.as_ref(), pipe, &mut tally, ended).await;
    }
    // No pipe to be had (descriptor limit): go on copying.
    let mut buf = Buf::get();
    let buf = buf.0.as_deref_mut().expect("buffer present until drop");
    loop {
        let n = from.read(buf).await?;
        if n == 0 {
            half_close(&to, ended);
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        tally.add(n);
    }
}

/// The source of this direction ended (`ended[0]`): pass the half-close on to the destination, unless
/// the other direction has ended too (`ended[1]`), in which case both sockets are about to be closed and
/// the close sends the FIN (one syscall less per connection).
fn half_close(to: &WriteHalf<'_>, ended: [&AtomicBool; 2]) {
    half_close_stream(to.as_ref(), ended);
}

fn half_close_stream(to: &TcpStream, ended: [&AtomicBool; 2]) {
    ended[0].store(true, Relaxed);
    if !ended[1].load(Relaxed) {
        let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(target_os = "linux")]
mod splice {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::AtomicBool;

    use nix::fcntl::{OFlag, SpliceFFlags, splice};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{POOL_MAX, Tally};

    /// Most bytes asked of one `splice` call.
    const CHUNK: usize = 1 << 20;
    const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

    thread_local! {
        static PIPES: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
    }

    /// A pipe used as the kernel-side buffer of one direction; back to the pool on drop if empty.
    pub(super) struct Pipe {
        r: OwnedFd,
        w: OwnedFd,
        /// Bytes in the pipe not yet written out.
        pending: usize,
    }

    impl Pipe {
        /// A pipe from the pool, or a new one of (at most) `size` bytes.
        pub(super) fn get(size: usize) -> io::Result<Pipe> {
            let (r, w) = match PIPES.with(|p| p.borrow_mut().pop()) {
                Some(fds) => fds,
                None => {
                    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
                    // Best effort: a larger pipe moves more per call and wakes the reader less often; the
                    // default (64 KiB) stays when the per-user pipe budget is spent.
                    let size = size.min(i32::MAX as usize) as i32;
                    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
                    (r, w)
                }
            };
            Ok(Pipe { r, w, pending: 0 })
        }

        /// Back to the pool if empty; a pipe with bytes left in it (the relay failed) is closed.
        fn put(self) {
            if self.pending == 0 {
                PIPES.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() < POOL_MAX {
                        p.push((self.r, self.w));
                    }
                });
            }
        }
    }

    pub(super) async fn pump(
        from: &TcpStream,
        to: &TcpStream,
        mut pipe: Pipe,
        tally: &mut Tally<'_>,
        ended: [&AtomicBool; 2],
    ) -> io::Result<()> {
        let result = async {
            loop {
                let n = loop {
                    from.readable().await?;
                    match from.try_io(Interest::READABLE, || {
                        splice(from, None, &pipe.w, None, CHUNK, FLAGS).map_err(io::Error::from)
                    }) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                };
                if n == 0 {
                    super::half_close_stream(to, ended);
                    return Ok(());
                }
                pipe.pending = n;
                while pipe.pending > 0 {
                    to.writable().await?;
                    match to.try_io(Interest::WRITABLE, || {
                        splice(&pipe.r, None, to, None, pipe.pending, FLAGS).map_err(io::Error::from)
                    }) {
                        Ok(m) => {
                            pipe.pending -= m;
                            tally.add(m);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        .await;
        pipe.put();
        result
    }
}

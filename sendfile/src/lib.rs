//! Media memory the HTTP server sends with `sendfile(2)` instead of
//! copying it into the socket.
//!
//! Why: under load, the origin spends about a quarter of its time in the
//! kernel copying each segment from its memory cache into the socket
//! (`write`/`writev` copy; a profile showed `_copy_from_iter` at 28 % of
//! samples), which nginx serving files with `sendfile` never does. hyper
//! writes bodies through `AsyncWrite`, so the copy can only be avoided
//! below it, where the bytes meet the socket.
//!
//! How:
//! - [`pin`] copies an object once into the pages of a `memfd` and maps
//!   them; the returned [`Bytes`] points into that mapping, which is
//!   registered (its address range → the memfd) for as long as it lives.
//!   Slices of it (a byte range) point into the same mapping.
//! - [`SendfileStream`] wraps a plain TCP connection for hyper. A buffer
//!   that lies inside a registered mapping is sent with `sendfile` from
//!   the memfd at the matching offset: the socket takes references to the
//!   pages, nothing is copied. Bytes before it in the same write (the
//!   response head) go out with `MSG_MORE`, so head and body still share
//!   packets. Any other buffer is written as before. hyper keeps every
//!   HTTP decision (headers, ranges, keep-alive, timeouts): nothing here
//!   reads or writes HTTP.
//! - Under TLS the body is encrypted into rustls's own buffers before it
//!   reaches the socket, so no buffer matches and nothing changes (nginx's
//!   `sendfile` does nothing under TLS either without kernel TLS).
//!
//! Safety: a mapping is unregistered before it is unmapped and its memfd
//! closed, and a buffer being written is borrowed from a live [`Bytes`]
//! that owns its mapping, so the memfd found for a buffer stays open for
//! the whole write. The pages are never written after [`pin`] returns.
//!
//! Each pinned object holds one file descriptor; at most a quarter of the
//! process's open-file limit are pinned at once ([`pin`] answers `None`
//! beyond, and the caller keeps its ordinary bytes), so pinning can never
//! take the descriptors connections need.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Objects smaller than this are not pinned: the copy they would save is
/// smaller than the cost of a descriptor and a mapping.
pub const MIN_PINNED: usize = 16 * 1024;

/// Live mappings: start address → (length, memfd).
static REGIONS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());
static PINNED: AtomicUsize = AtomicUsize::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);

/// Bytes sent with `sendfile` since the process started (for `/metrics`
/// and tests: a figure that stays 0 means every body was copied).
pub fn bytes_sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// Objects pinned now.
pub fn pinned_objects() -> usize {
    PINNED.load(Ordering::Relaxed)
}

fn max_pinned() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes `limit`, a valid rlimit of this frame.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return 0;
        }
        usize::try_from(limit.rlim_cur / 4).unwrap_or(usize::MAX)
    })
}

/// `parts`, concatenated, in memory [`SendfileStream`] sends without a
/// copy; `None` when the object is too small to gain from it, too many
/// objects are pinned already, or the kernel refuses (the caller keeps
/// its ordinary bytes then: this is an optimisation, never a condition).
pub fn pin(parts: &[&[u8]]) -> Option<Bytes> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len < MIN_PINNED {
        return None;
    }
    // Reserve a slot first so concurrent pins cannot overshoot the cap.
    if PINNED.fetch_add(1, Ordering::Relaxed) >= max_pinned() {
        PINNED.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    match Mapping::new(parts, len) {
        Some(mapping) => Some(Bytes::from_owner(mapping)),
        None => {
            PINNED.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

/// Whether `bytes` lies in pinned memory (is sent without a copy).
pub fn is_pinned(bytes: &[u8]) -> bool {
    source_of(&REGIONS.read().expect("pinned regions lock"), bytes).is_some()
}

/// The memfd and offset `buf` can be sent from, if it lies in a mapping.
fn source_of(regions: &BTreeMap<usize, (usize, RawFd)>, buf: &[u8]) -> Option<(RawFd, i64)> {
    if buf.is_empty() {
        return None;
    }
    let start = buf.as_ptr() as usize;
    let (&base, &(len, fd)) = regions.range(..=start).next_back()?;
    let offset = start - base;
    (offset + buf.len() <= len).then_some((fd, offset as i64))
}

/// One memfd, mapped read-only, registered while it lives.
struct Mapping {
    ptr: *mut u8,
    len: usize,
    fd: RawFd,
}

// SAFETY: the mapping is read-only after `new` and owned by this value
// alone; reading it from any thread is sound.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(parts: &[&[u8]], len: usize) -> Option<Mapping> {
        // SAFETY: plain system calls on a descriptor this function owns;
        // the mapping is `len` bytes, and the copies below write exactly
        // `len` bytes into it.
        unsafe {
            let fd = libc::memfd_create(c"lectern-media".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return None;
            }
            if libc::ftruncate(fd, len as libc::off_t) != 0 {
                libc::close(fd);
                return None;
            }
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if ptr == libc::MAP_FAILED {
                libc::close(fd);
                return None;
            }
            let ptr = ptr.cast::<u8>();
            let mut at = 0;
            for part in parts {
                std::ptr::copy_nonoverlapping(part.as_ptr(), ptr.add(at), part.len());
                at += part.len();
            }
            // From here on the pages only ever go out.
            libc::mprotect(ptr.cast(), len, libc::PROT_READ);
            REGIONS
                .write()
                .expect("pinned regions lock")
                .insert(ptr as usize, (len, fd));
            Some(Mapping { ptr, len, fd })
        }
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        REGIONS
            .write()
            .expect("pinned regions lock")
            .remove(&(self.ptr as usize));
        // SAFETY: no `Bytes` borrows the mapping any more (this is its
        // owner's drop) and the registry no longer names it.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
            libc::close(self.fd);
        }
        PINNED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A plain TCP connection whose writes of pinned memory go out with
/// `sendfile` (see the module's doc).
#[derive(Debug)]
pub struct SendfileStream {
    tcp: TcpStream,
}

impl SendfileStream {
    pub fn new(tcp: TcpStream) -> Self {
        Self { tcp }
    }

    /// Runs one non-blocking socket call `op` once the socket is
    /// writable, waiting again when the kernel says it would block.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(RawFd) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let fd = self.tcp.as_raw_fd();
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_io(Interest::WRITABLE, || op(fd)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        (src, offset): (RawFd, i64),
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let sent = ready!(self.poll_io(cx, |sock| {
            let mut offset = offset as libc::off_t;
            // SAFETY: `src` is the open memfd of a live mapping (see the
            // module's doc), `offset + len` lies within it, and `offset`
            // is a valid local.
            let n = unsafe { libc::sendfile(sock, src, &mut offset, len) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }))?;
        SENT.fetch_add(sent as u64, Ordering::Relaxed);
        Poll::Ready(Ok(sent))
    }

    /// `bufs` with `MSG_MORE`: the pinned body follows at once.
    fn poll_send_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, |sock| {
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix
            // (documented by std), `bufs` outlives the call, and the
            // message header is zeroed but for the vector.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = bufs.len() as _;
                libc::sendmsg(sock, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL)
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let source = source_of(&REGIONS.read().expect("pinned regions lock"), buf);
        match source {
            Some(source) => self.poll_sendfile(cx, source, buf.len()),
            None => Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // The first buffer in pinned memory, and where it comes from.
        let found = {
            let regions = REGIONS.read().expect("pinned regions lock");
            bufs.iter()
                .enumerate()
                .find_map(|(i, b)| source_of(&regions, b).map(|s| (i, s)))
        };
        let Some((i, source)) = found else {
            return Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs);
        };
        let before = &bufs[..i];
        if before.iter().all(|b| b.is_empty()) {
            self.poll_sendfile(cx, source, bufs[i].len())
        } else {
            // What precedes goes first; hyper comes back for the rest.
            self.poll_send_more(cx, before)
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn pinned_bytes_are_the_parts_and_leave_the_registry_when_dropped() {
        let data = object(100_000);
        let pinned = pin(&[&data[..40_000], &data[40_000..]]).expect("pinned");
        assert_eq!(&pinned[..], &data[..]);
        let slice = pinned.slice(1_000..2_000);
        assert!(is_pinned(&slice));
        assert!(!is_pinned(&data));
        let start = pinned.as_ptr() as usize;
        drop(pinned);
        // The slice keeps the mapping alive.
        assert!(is_pinned(&slice));
        drop(slice);
        assert!(!REGIONS.read().unwrap().contains_key(&start));
    }

    #[test]
    fn small_objects_are_not_pinned() {
        assert!(pin(&[&object(MIN_PINNED - 1)]).is_none());
    }

    /// A head and a pinned body written as one vectored write, read back
    /// byte for byte by a slow reader (so the socket fills and the writer
    /// waits for it), counted as sent without a copy.
    #[tokio::test]
    async fn head_and_pinned_body_arrive_whole_through_a_real_socket() {
        let body = object(8 * 1024 * 1024 + 17);
        let pinned = pin(&[&body]).expect("pinned");
        let range = 3..body.len() - 5;
        let part = pinned.slice(range.clone());
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n".to_vec();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = client.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() < 1024 * 1024 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            got
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = SendfileStream::new(tcp);
        let before = bytes_sent();
        let (mut h, mut b) = (&head[..], &part[..]);
        while !h.is_empty() || !b.is_empty() {
            let n = stream
                .write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
                .await
                .unwrap();
            assert!(n > 0);
            let from_head = n.min(h.len());
            h = &h[from_head..];
            b = &b[n - from_head..];
        }
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), head.len() + range.len());
        assert_eq!(&got[..head.len()], &head[..]);
        assert!(got[head.len()..] == body[range.clone()], "body differs");
        assert!(bytes_sent() - before >= range.len() as u64);
    }

    /// Ordinary memory still goes through the socket's own writes.
    #[tokio::test]
    async fn unpinned_writes_are_copied_as_before() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = SendfileStream::new(tcp);
        let data = object(200_000);
        stream.write_all(&data).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(reader.await.unwrap(), data);
    }
}

//! Bundle downloads with `Range` (single and `multipart/byteranges`), `If-Range`, `ETag`
//! (the bundle's SHA-256: content-addressed, so strong and immutable) and `If-None-Match`.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use std::os::unix::fs::FileExt;
use tokio::fs::File;

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::range::{self, RangeRequest};

/// Bytes read from the bundle file per blocking call, and the size of each pooled buffer.
const CHUNK: usize = 256 << 10;

/// Read buffers for downloads, reused across chunks and requests. A fresh allocation per chunk
/// cost a page fault and a page of zeroing for much of what was served (about a million faults
/// per 27 GB in `bench/server.sh`; 10,000 with the pool). Served A/B against the fresh 1 MiB
/// buffers, pooled 256 KiB ones gave the same throughput at a quarter of the memory per
/// download. At most `keep` idle buffers are kept, so memory follows the downloads in flight.
pub struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps up to `keep` idle buffers of [`CHUNK`] bytes.
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            idle: Mutex::new(Vec::new()),
            keep,
        })
    }

    fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_else(|| vec![0; CHUNK])
    }

    fn put(&self, buf: Vec<u8>) {
        let mut idle = self.lock();
        if idle.len() < self.keep && buf.len() == CHUNK {
            idle.push(buf);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock cannot leave the list of buffers half-changed.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The first `len` bytes of a pooled buffer, handed to hyper as [`Bytes`]; the buffer returns
/// to the pool when hyper has written and dropped it.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// `GET /api/v1/bundles/{id}`: for a device session whose device an active deployment admits
/// for this release, while the release is neither retired nor expired. A paused, halted,
/// cancelled or completed deployment serves nothing, as it offers nothing.
pub async fn bundle(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = caller.device()?.to_owned();
    let path = state
        .bundles
        .path(&id)
        .ok_or_else(|| ApiError::NotFound(format!("bundle {id:.70} not found")))?;
    let release = id.clone();
    if !state
        .db
        .run(move |s| s.may_download(&device, &release, crate::store::now_secs()))
        .await?
    {
        return Err(ApiError::Forbidden(
            "this bundle is not assigned to this device by an active deployment of a live \
             (neither retired nor expired) release"
                .to_owned(),
        ));
    }
    serve(&state, path, &id, &headers, false).await
}

/// `GET /mirror/{id}`: unauthenticated, when `public_mirror` is on (for a CDN to pull from;
/// bundles are signed, devices verify them). Retired and expired releases are not served.
pub async fn mirror(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.config.public_mirror {
        return Err(ApiError::NotFound(
            "the public mirror is not enabled on this server".to_owned(),
        ));
    }
    let path = state
        .bundles
        .path(&id)
        .ok_or_else(|| ApiError::NotFound(format!("bundle {id:.70} not found")))?;
    let key = id.clone();
    let now = crate::store::now_secs();
    let live = state
        .db
        .run(move |s| s.release(&key))
        .await?
        .is_some_and(|r| !r.retired && r.expires.is_none_or(|e| e > now));
    if !live {
        return Err(ApiError::NotFound(format!(
            "bundle {id} not found (or its release is retired or expired)"
        )));
    }
    serve(&state, path, &id, &headers, true).await
}

enum Segment {
    Bytes(Bytes),
    File { offset: u64, len: u64 },
}

/// Reads what it can of `dest` from `offset` without blocking: `preadv2` with `RWF_NOWAIT`
/// returns what the page cache holds and stops where it would have to wait for the disk.
/// Returns the bytes read; the caller reads the rest on the blocking pool. Served from cache, a
/// chunk then costs no hand-off to a blocking thread and back: in `bench/server.sh`'s downloads
/// this took the server's CPU time from about 0.6 s to 0.4 s per GiB sent.
/// Filesystems without `RWF_NOWAIT` (tmpfs, NFS, FUSE) refuse it with `EOPNOTSUPP`; after the
/// first refusal every chunk goes straight to the blocking pool.
#[cfg(target_os = "linux")]
static NOWAIT_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(target_os = "linux")]
fn read_cached(file: &std::fs::File, dest: &mut [u8], offset: u64) -> usize {
    use rustix::io::{preadv2, Errno, IoSliceMut, ReadWriteFlags};
    use std::sync::atomic::Ordering;
    if NOWAIT_REFUSED.load(Ordering::Relaxed) {
        return 0;
    }
    let mut done = 0;
    while let Some(rest) = dest.get_mut(done..).filter(|r| !r.is_empty()) {
        let at = offset.saturating_add(done as u64);
        match preadv2(
            file,
            &mut [IoSliceMut::new(rest)],
            at,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => break, // end of file: the blocking read reports it
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(Errno::OPNOTSUPP) => {
                NOWAIT_REFUSED.store(true, Ordering::Relaxed);
                break;
            }
            // AGAIN: not cached; anything else: the blocking read serves it or reports it.
            Err(_) => break,
        }
    }
    done
}

/// Elsewhere every chunk is read on the blocking pool.
#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &std::fs::File, _dest: &mut [u8], _offset: u64) -> usize {
    0
}

/// Streams the segments, reading the file in chunks into pooled buffers. What the page cache
/// holds is read inline ([`read_cached`]); the rest on the blocking pool, one call per chunk, so
/// a slow disk or client holds no runtime thread.
struct SegmentStream {
    pool: Arc<BufferPool>,
    file: Arc<std::fs::File>,
    /// [`read_cached`]; tests substitute one that reads less, to drive the blocking path.
    read_cached: fn(&std::fs::File, &mut [u8], u64) -> usize,
    segments: VecDeque<Segment>,
    /// File offset and length left of the current file segment.
    offset: u64,
    remaining: u64,
}

impl SegmentStream {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.remaining > 0 {
                let want = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
                let offset = self.offset;
                let mut buf = self.pool.take();
                let cached = buf
                    .get_mut(..want)
                    .map_or(0, |dest| (self.read_cached)(&self.file, dest, offset));
                let result = if cached >= want {
                    Ok(buf)
                } else {
                    let file = Arc::clone(&self.file);
                    tokio::task::spawn_blocking(move || {
                        let dest = buf
                            .get_mut(cached..want)
                            .ok_or(io::ErrorKind::InvalidInput)?;
                        file.read_exact_at(dest, offset.saturating_add(cached as u64))
                            .map_err(|e| match e.kind() {
                                io::ErrorKind::UnexpectedEof => {
                                    io::Error::new(e.kind(), "bundle file shrank")
                                }
                                _ => e,
                            })?;
                        Ok(buf)
                    })
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
                };
                return match result {
                    Ok(buf) => {
                        self.offset = offset.saturating_add(want as u64);
                        self.remaining = self.remaining.saturating_sub(want as u64);
                        Some(Ok(Bytes::from_owner(PooledChunk {
                            buf,
                            len: want,
                            pool: Arc::clone(&self.pool),
                        })))
                    }
                    Err(e) => self.fail(e),
                };
            }
            match self.segments.pop_front()? {
                Segment::Bytes(b) => return Some(Ok(b)),
                Segment::File { offset, len } => {
                    self.offset = offset;
                    self.remaining = len;
                }
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Option<io::Result<Bytes>> {
        self.segments.clear();
        self.remaining = 0;
        Some(Err(e))
    }

    fn into_body(self) -> Body {
        Body::from_stream(futures_util::stream::unfold(self, |mut s| async move {
            s.next().await.map(|item| (item, s))
        }))
    }
}

fn header_value(v: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(v).map_err(|e| ApiError::Internal(e.into()))
}

/// Makes sure the bundle file is on this replica's disk: where the database keeps bundle
/// bytes and the local cache lacks this one, fetches and verifies it first.
async fn ensure_local(state: &AppState, path: &std::path::Path, id: &str) -> Result<(), ApiError> {
    if tokio::fs::try_exists(path).await.unwrap_or(false) {
        return Ok(());
    }
    let bundles = state.bundles.clone();
    let key = id.to_owned();
    state
        .db
        .run(move |s| {
            if !s.keeps_bundles() {
                return Ok(false);
            }
            bundles.cache_from(&key, |out| s.get_bundle(&key, out))
        })
        .await?;
    Ok(())
}

async fn serve(
    state: &AppState,
    path: PathBuf,
    id: &str,
    headers: &HeaderMap,
    public: bool,
) -> Result<Response, ApiError> {
    ensure_local(state, &path, id).await?;
    let file = match File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound(format!("bundle {id} not found")))
        }
        Err(e) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(e).context(format!("open {}", path.display())),
            ))
        }
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .len();
    let etag = format!("\"{id}\"");
    let etag_matches = |v: &HeaderValue| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    };

    let mut out = HeaderMap::new();
    out.insert(header::ETAG, header_value(&etag)?);
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if public {
            "public, max-age=31536000, immutable"
        } else {
            "private, no-store"
        }),
    );
    if headers.get(header::IF_NONE_MATCH).is_some_and(etag_matches) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let request = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(h) if if_range_ok => range::parse(h, len),
        _ => RangeRequest::Full,
    };

    let (status, segments) = match request {
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable(len)),
        RangeRequest::Full => {
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            (StatusCode::OK, vec![Segment::File { offset: 0, len }])
        }
        RangeRequest::Partial(ranges) => match ranges.as_slice() {
            [(start, end)] => {
                out.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                out.insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes {start}-{end}/{len}"))?,
                );
                let n = end.saturating_sub(*start).saturating_add(1);
                (
                    StatusCode::PARTIAL_CONTENT,
                    vec![Segment::File {
                        offset: *start,
                        len: n,
                    }],
                )
            }
            _ => {
                let mut b = [0u8; 12];
                OsRng.fill_bytes(&mut b);
                let boundary = format!("sigil-{}", hex::encode(b));
                out.insert(
                    header::CONTENT_TYPE,
                    header_value(&format!("multipart/byteranges; boundary={boundary}"))?,
                );
                let mut segments = Vec::with_capacity(ranges.len() * 2 + 1);
                for (start, end) in &ranges {
                    segments.push(Segment::Bytes(Bytes::from(format!(
                        "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                         Content-Range: bytes {start}-{end}/{len}\r\n\r\n"
                    ))));
                    let n = end.saturating_sub(*start).saturating_add(1);
                    segments.push(Segment::File {
                        offset: *start,
                        len: n,
                    });
                }
                segments.push(Segment::Bytes(Bytes::from(format!(
                    "\r\n--{boundary}--\r\n"
                ))));
                (StatusCode::PARTIAL_CONTENT, segments)
            }
        },
    };
    let total: u64 = segments
        .iter()
        .map(|s| match s {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { len, .. } => *len,
        })
        .sum();
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    state.metrics.download(total);
    let body = SegmentStream {
        pool: Arc::clone(&state.download_buffers),
        file: Arc::new(file.into_std().await),
        read_cached,
        segments: segments.into(),
        offset: 0,
        remaining: 0,
    }
    .into_body();
    Ok((status, out, body).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, std::fs::File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = std::fs::File::open(f.path()).unwrap();
        (f, file)
    }

    async fn collect(
        pool: &Arc<BufferPool>,
        file: std::fs::File,
        segments: Vec<Segment>,
    ) -> io::Result<Vec<u8>> {
        collect_with(pool, file, segments, read_cached).await
    }

    async fn collect_with(
        pool: &Arc<BufferPool>,
        file: std::fs::File,
        segments: Vec<Segment>,
        read_cached: fn(&std::fs::File, &mut [u8], u64) -> usize,
    ) -> io::Result<Vec<u8>> {
        let mut stream = SegmentStream {
            pool: Arc::clone(pool),
            file: Arc::new(file),
            read_cached,
            segments: segments.into(),
            offset: 0,
            remaining: 0,
        };
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn segments_spanning_several_chunks_come_out_exact_from_reused_buffers() {
        let pool = BufferPool::new(4);
        let big: Vec<u8> = (0..3 * CHUNK + 123).map(|i| (i % 251) as u8).collect();
        let len = big.len() as u64;
        let (_keep, file) = file_of(&big);
        let segments = vec![
            Segment::Bytes(Bytes::from_static(b"<head>")),
            Segment::File { offset: 0, len },
            Segment::File {
                offset: CHUNK as u64 - 7,
                len: CHUNK as u64 + 14,
            },
            Segment::Bytes(Bytes::from_static(b"<tail>")),
        ];
        let out = collect(&pool, file, segments).await.unwrap();
        let mut want = b"<head>".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(&big[CHUNK - 7..2 * CHUNK + 7]);
        want.extend_from_slice(b"<tail>");
        assert_eq!(out, want);
        let idle = pool.lock().len();
        assert!(
            (1..=4).contains(&idle),
            "buffers came back to the pool: {idle}"
        );

        // The pooled buffers are full of the last bundle's bytes: a short read must show only
        // the new file's.
        let (_keep, small) = file_of(b"fresh");
        let out = collect(&pool, small, vec![Segment::File { offset: 0, len: 5 }])
            .await
            .unwrap();
        assert_eq!(out, b"fresh");
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_segment_ends_the_stream_with_an_error() {
        let pool = BufferPool::new(4);
        let (_keep, file) = file_of(&[7; 100]);
        let err = collect(
            &pool,
            file,
            vec![Segment::File {
                offset: 50,
                len: 51,
            }],
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("shrank"), "{err}");
    }

    /// Stand-ins for the page cache: nothing cached, or the first half of each chunk.
    fn nothing_cached(_: &std::fs::File, _: &mut [u8], _: u64) -> usize {
        0
    }

    fn half_cached(file: &std::fs::File, dest: &mut [u8], offset: u64) -> usize {
        let half = dest.len() / 2;
        file.read_exact_at(&mut dest[..half], offset).unwrap();
        half
    }

    #[tokio::test]
    async fn chunks_the_page_cache_lacks_are_read_on_the_blocking_pool() {
        let big: Vec<u8> = (0..2 * CHUNK + 77).map(|i| (i % 239) as u8).collect();
        let segments = || {
            vec![
                Segment::File {
                    offset: 5,
                    len: big.len() as u64 - 5,
                },
                Segment::File { offset: 0, len: 3 },
            ]
        };
        let mut want = big[5..].to_vec();
        want.extend_from_slice(&big[..3]);
        for read in [
            nothing_cached as fn(&_, &mut _, _) -> _,
            half_cached,
            read_cached,
        ] {
            let pool = BufferPool::new(4);
            let (_keep, file) = file_of(&big);
            let out = collect_with(&pool, file, segments(), read).await.unwrap();
            assert!(out == want, "the bytes differ");
        }
        // Past the end, the blocking read reports the short file.
        let pool = BufferPool::new(4);
        let (_keep, file) = file_of(&big);
        let past = vec![Segment::File {
            offset: 1,
            len: big.len() as u64,
        }];
        let err = collect_with(&pool, file, past, half_cached)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_just_written_is_read_from_the_page_cache_without_blocking() {
        let data: Vec<u8> = (0..CHUNK).map(|i| (i % 253) as u8).collect();
        let (_keep, file) = file_of(&data);
        let mut dest = vec![0u8; CHUNK];
        let n = read_cached(&file, &mut dest, 0);
        assert!(dest[..n] == data[..n], "what was read is the file's");
        if n == 0 && NOWAIT_REFUSED.load(std::sync::atomic::Ordering::Relaxed) {
            // tmpfs and the like: downloads then always use the blocking pool (tested above).
            eprintln!("note: this filesystem refuses RWF_NOWAIT; the inline path is not exercised");
            return;
        }
        assert_eq!(n, CHUNK, "a file just written is in the page cache");
        assert_eq!(
            read_cached(&file, &mut dest, CHUNK as u64),
            0,
            "end of file"
        );
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit() {
        let pool = BufferPool::new(2);
        let bufs: Vec<_> = (0..5).map(|_| pool.take()).collect();
        for b in bufs {
            pool.put(b);
        }
        assert_eq!(pool.lock().len(), 2);
        pool.put(vec![0; 3]);
        assert_eq!(
            pool.lock().len(),
            2,
            "a buffer of the wrong size is dropped"
        );
    }
}

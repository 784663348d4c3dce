//! Bundle downloads with `Range` (single and `multipart/byteranges`), `If-Range`, `ETag`
//! (the bundle's SHA-256: content-addressed, so strong and immutable) and `If-None-Match`.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use std::io::{Read, Seek};
use tokio::fs::File;

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::range::{self, RangeRequest};

const CHUNK: u64 = 1 << 20;

/// `GET /api/v1/bundles/{id}`: for a device session whose device an active deployment admits
/// for this release.
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
        .run(move |s| s.may_download(&device, &release))
        .await?
    {
        return Err(ApiError::Forbidden(
            "this bundle is not assigned to this device by an active deployment".to_owned(),
        ));
    }
    serve(&state, path, &id, &headers, false).await
}

/// `GET /mirror/{id}`: unauthenticated, when `public_mirror` is on (for a CDN to pull from;
/// bundles are signed, devices verify them).
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
    if state.db.run(move |s| s.release(&key)).await?.is_none() {
        return Err(ApiError::NotFound(format!("bundle {id} not found")));
    }
    serve(&state, path, &id, &headers, true).await
}

enum Segment {
    Bytes(Bytes),
    File { offset: u64, len: u64 },
}

/// Streams the segments, reading the file in chunks on the blocking pool. Each chunk is one
/// blocking call, so a slow client holds no thread between chunks; `read_to_end` into reserved
/// capacity reads without zeroing the buffer first.
struct SegmentStream {
    file: Option<std::fs::File>,
    segments: VecDeque<Segment>,
    remaining: u64,
    seek_to: Option<u64>,
}

impl SegmentStream {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.remaining > 0 {
                let mut file = self.file.take()?;
                let want = self.remaining.min(CHUNK);
                let seek_to = self.seek_to.take();
                let read = tokio::task::spawn_blocking(move || {
                    let result = (|| {
                        if let Some(offset) = seek_to {
                            file.seek(io::SeekFrom::Start(offset))?;
                        }
                        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
                        (&mut file).take(want).read_to_end(&mut buf)?;
                        Ok(buf)
                    })();
                    (file, result)
                })
                .await;
                let (file, result) = match read {
                    Ok(r) => r,
                    Err(e) => return self.fail(io::Error::other(e)),
                };
                self.file = Some(file);
                return match result {
                    Ok(buf) if buf.is_empty() => self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "bundle file shrank",
                    )),
                    Ok(buf) => {
                        self.remaining = self.remaining.saturating_sub(buf.len() as u64);
                        Some(Ok(Bytes::from(buf)))
                    }
                    Err(e) => self.fail(e),
                };
            }
            match self.segments.pop_front()? {
                Segment::Bytes(b) => return Some(Ok(b)),
                Segment::File { offset, len } => {
                    self.seek_to = Some(offset);
                    self.remaining = len;
                }
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Option<io::Result<Bytes>> {
        self.segments.clear();
        self.remaining = 0;
        self.file = None;
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

async fn serve(
    state: &AppState,
    path: PathBuf,
    id: &str,
    headers: &HeaderMap,
    public: bool,
) -> Result<Response, ApiError> {
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
        file: Some(file.into_std().await),
        segments: segments.into(),
        remaining: 0,
        seek_to: None,
    }
    .into_body();
    Ok((status, out, body).into_response())
}

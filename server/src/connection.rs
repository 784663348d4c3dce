//! What keeps connections from exhausting the server: caps on open connections (per client
//! address and in total), the idle timeout, the response-write stall timeout and the open-file
//! limit. The header-read timeout is hyper's and the request-body timeout tower-http's; both are
//! set up in [`crate::serve`].
//!
//! Every accepted TCP connection first takes a [`Slot`] from [`ConnectionLimits`] (or is closed
//! at once), then its socket is wrapped in a [`GuardedStream`] (under TLS, if any) and its
//! service in a [`Tracked`] service. The two share an activity record: how many requests are in
//! progress (from the request's headers to the end of its response body) and since when none is.
//! A read that waits while no request is in progress, for longer than the idle timeout, fails
//! the connection; so does a write that stays blocked for the write timeout.
//!
//! Both timers are lazy: a request ending or a write blocking only records the time, and a
//! timer is reset when it fires before the deadline it stands for (at most once per timeout
//! period), not on every request or blocked write (each reset takes the runtime's timer lock).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Open files needed for `max_connections` client sockets: one per socket, plus an eighth more
/// and 64 for everything else (the database and its WAL, bundle files being served, the
/// listener, logs).
pub fn open_files_needed(max_connections: usize) -> u64 {
    let c = max_connections as u64;
    c.saturating_add(c / 8).saturating_add(64)
}

/// The client address a connection counts against: IPv4 addresses as they are, IPv6 addresses
/// by their /64 (one host usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` are open.
    Total,
    /// `limits.max_connections_per_address` are open from this client address.
    PerAddress,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Counts open connections against the two caps.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: usize,
    per_address: usize,
    open: Mutex<Open>,
}

impl ConnectionLimits {
    /// Caps of `total` connections and `per_address` from one client address.
    pub fn new(total: usize, per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            total,
            per_address,
            open: Mutex::default(),
        })
    }

    /// A slot for a connection from `ip`, held until the [`Slot`] is dropped.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = address_key(ip);
        // A poisoned lock only means a thread panicked between two counter updates; the counts
        // are still usable.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.total {
            return Err(Refused::Total);
        }
        let n = open.by_address.entry(key).or_insert(0);
        if *n >= self.per_address {
            return Err(Refused::PerAddress);
        }
        *n += 1;
        open.total += 1;
        Ok(Slot {
            limits: Arc::clone(self),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One open connection's place under the caps; released on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_address.remove(&self.key);
            }
        }
    }
}

/// What a connection's stream and its service share.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request in progress ended.
    idle_since_ms: AtomicU64,
    /// The reader to wake when the last request ends, so that it looks at the idle timer.
    reader: AtomicWaker,
}

impl Activity {
    /// A new connection's record: idle since now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        })
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(ms))
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// One request in progress; dropped when its response body ends (or is abandoned).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.reader.wake();
        }
    }
}

/// A client socket (or the TCP stream under TLS) with the idle and write-stall timeouts.
#[derive(Debug)]
pub struct GuardedStream<S> {
    inner: S,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    write_timeout: Duration,
    /// Fires at or before the idle deadline (lazy: see the module documentation).
    idle_timer: Pin<Box<Sleep>>,
    /// Fires at or before the write deadline.
    write_timer: Pin<Box<Sleep>>,
    /// Since when the current write has been blocked, if it is.
    write_blocked_since: Option<Instant>,
    /// How many bytes of the HTTP/2 preface the connection has sent so far, while that is all it
    /// has sent; `None` once it sent anything else or when h2c is allowed.
    h2_preface_seen: Option<usize>,
    _slot: Slot,
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<S> GuardedStream<S> {
    /// Wraps `inner`, which holds `slot`.
    pub fn new(
        inner: S,
        slot: Slot,
        activity: Arc<Activity>,
        idle_timeout: Duration,
        write_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        GuardedStream {
            inner,
            activity,
            idle_timeout,
            write_timeout,
            idle_timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            write_timer: Box::pin(tokio::time::sleep_until(now + write_timeout)),
            write_blocked_since: None,
            h2_preface_seen: None,
            _slot: slot,
        }
    }

    /// Closes the connection if it opens with the HTTP/2 preface (h2c not enabled). hyper-util's
    /// server picks HTTP/1 or HTTP/2 by these bytes whatever it is configured with (its
    /// `http1_only` does not apply to connections that may upgrade, which axum-server serves).
    pub fn refusing_h2_preface(mut self) -> Self {
        self.h2_preface_seen = Some(0);
        self
    }

    /// Follows the preface through newly read `bytes`; `true` once all of it arrived.
    fn is_h2_preface(&mut self, bytes: &[u8]) -> bool {
        let Some(seen) = self.h2_preface_seen else {
            return false;
        };
        let rest = H2_PREFACE.get(seen..).unwrap_or_default();
        let n = rest.len().min(bytes.len());
        if bytes.get(..n) != rest.get(..n) {
            self.h2_preface_seen = None;
            return false;
        }
        let seen = seen + n;
        self.h2_preface_seen = Some(seen);
        seen == H2_PREFACE.len()
    }

    /// Called when a write is pending: fails once it has been blocked for the write timeout.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let since = *self.write_blocked_since.get_or_insert_with(Instant::now);
        match lazy_timeout(self.write_timer.as_mut(), since + self.write_timeout, cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn write_done<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.write_pending(cx).map(Err),
            ready => {
                self.write_blocked_since = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => {
                if this.is_h2_preface(buf.filled().get(before..).unwrap_or_default()) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "HTTP/2 without TLS (h2c) is not enabled",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            ready => return ready,
        }
        // Register before looking at the count, so that a request ending in between wakes this
        // reader.
        this.activity.reader.register(cx.waker());
        let Some(since) = this.activity.idle_since() else {
            return Poll::Pending;
        };
        match lazy_timeout(this.idle_timer.as_mut(), since + this.idle_timeout, cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle connection",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_done(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_done(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_done(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.write_done(r, cx)
    }
}

/// Polls `timer`, which is set at or before `deadline`: `Ready` once `deadline` has passed.
/// A timer that fires early is moved to `deadline`; deadlines that move later (a new request,
/// a new blocked write) cost nothing until then.
fn lazy_timeout(mut timer: Pin<&mut Sleep>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        if timer.deadline() > deadline {
            // Only a deadline earlier than any set before: the timer must fire sooner.
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(()) if Instant::now() >= deadline => return Poll::Ready(()),
            Poll::Ready(()) => timer.as_mut().reset(deadline),
        }
    }
}

/// A connection's service: counts each request as in progress until its response body ends.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`, recording into `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S, Req, B> tower::Service<Request<Req>> for Tracked<S>
where
    S: tower::Service<Request<Req>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<TrackedBody<B>>, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let in_flight = self.activity.start();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                in_flight: Some(in_flight),
            }))
        })
    }
}

/// A response body that ends its request's time in progress when it ends or is dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            this.in_flight = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Raises the soft open-file limit to what `max_connections` connections need; an error names
/// the hard limit when it is too low.
pub fn raise_open_file_limit(max_connections: usize) -> anyhow::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let needed = open_files_needed(max_connections);
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    let hard = current.maximum.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        let fits = hard.saturating_sub(64).saturating_mul(8) / 9;
        anyhow::bail!(
            "limits.max_connections = {max_connections} needs {needed} open files, but the hard \
             open-file limit (RLIMIT_NOFILE) is {hard}: raise it (`ulimit -Hn`, systemd \
             `LimitNOFILE=`) or set limits.max_connections to at most {fits}"
        );
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(needed),
            maximum: current.maximum,
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot raise the open-file limit to {needed}: {e}"))?;
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_total_and_release_on_drop() {
        let l = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), Refused::PerAddress);
        let _b1 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(c).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _c1 = l.acquire(c).unwrap();
    }

    #[test]
    fn the_h2_preface_is_recognised_across_reads_and_nothing_else_is() {
        let l = ConnectionLimits::new(10, 10);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let stream = |ip: &str| {
            GuardedStream::new(
                (),
                l.acquire(ip.parse().unwrap()).unwrap(),
                Activity::new(),
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .refusing_h2_preface()
        };
        let mut s = stream("10.0.0.1");
        assert!(!s.is_h2_preface(b"PRI * HTTP/2"));
        assert!(s.is_h2_preface(b".0\r\n\r\nSM\r\n\r\n\x00\x00"));
        let mut s = stream("10.0.0.2");
        assert!(!s.is_h2_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!s.is_h2_preface(H2_PREFACE), "only at the start");
        let mut s = stream("10.0.0.3");
        assert!(!s.is_h2_preface(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n"));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let l = ConnectionLimits::new(10, 1);
        let _x = l.acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            l.acquire("2001:db8:1:2:ffff::9".parse().unwrap())
                .unwrap_err(),
            Refused::PerAddress
        );
        let _y = l.acquire("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _v4 = l.acquire("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            l.acquire("::ffff:192.0.2.1".parse().unwrap()).unwrap_err(),
            Refused::PerAddress
        );
    }
}

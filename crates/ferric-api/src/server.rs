//! The HTTP/1.1 server under the router: connections, timeouts and the
//! connection limit (issue 17, item 2: idle sockets must not take the API
//! down).
//!
//! Bounds, per connection:
//!
//! * **request head**: a client has [`ServeOptions::header_timeout`] to send
//!   a complete request line and headers, counted from the connection's
//!   start and again from the end of each response. The second count is the
//!   idle keep-alive timeout: an idle keep-alive connection is closed when it
//!   runs out (hyper's `header_read_timeout` starts whenever the connection
//!   waits for a request head).
//! * **request body**: the whole body must arrive within
//!   [`ServeOptions::body_timeout`] of the request head (a total deadline,
//!   not per read, so a client trickling a byte at a time is cut off too).
//!   A handler reading a body that misses it answers 408 and the connection
//!   is closed (hyper does not reuse a connection whose body was not read).
//! * **connections**: at most [`ServeOptions::max_connections`] at once.
//!   At the limit the server stops accepting (new connections wait in the
//!   kernel's listen backlog) and says so at `warn`, at most every
//!   [`FULL_LOG_EVERY`]; the binary keeps the limit below the process's
//!   file-descriptor limit, so `accept` never fails with EMFILE.
//!
//! Decision: HTTP/1.1 only (hyper's http1 server, as Ironic's WSGI servers
//! and clients); `axum::serve` also accepted h2c prior knowledge, which no
//! Ironic client speaks and whose idle streams these timeouts would not
//! bound.

use crate::error::ApiError;
use crate::extract::LocalAddr;
use axum::body::Bytes;
use axum::http::StatusCode;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;
use tracing::{debug, error, info, warn};

/// Default [`ServeOptions::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`ServeOptions::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServeOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The connection-limit warning is repeated at most this often.
pub const FULL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after an `accept` error other than a client's reset.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How [`serve_with`] bounds connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Time to send a complete request head, from the connection's start or
    /// the end of the previous response (so also the idle keep-alive timeout).
    pub header_timeout: Duration,
    /// Time to send the whole request body, from the request head.
    pub body_timeout: Duration,
    /// Connections served at once; at least 1.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Set on a request (extension) by the server; turns true when its body
/// missed the body deadline, so the extractor answers 408, not 400.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyTimedOut(Arc<AtomicBool>);

impl BodyTimedOut {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The 408 for a body that missed its deadline.
pub(crate) fn body_timeout_error() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "Timed out reading the request body.",
    )
}

/// The error a timed-out body yields.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out reading the request body")
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that fails once `deadline` passes before its end.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    /// Made at the first read that has to wait (bodiless requests make none).
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: BodyTimedOut,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Every field is Unpin (Incoming is; the Sleep is boxed).
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.timed_out.0.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serve `app` on `listener` within `options` until `shutdown` completes;
/// then stop accepting and let open connections finish their requests
/// (idle ones close at once).
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = options.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let mut last_full_log: Option<Instant> = None;
    let mut full_since_log = 0u64;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                full_since_log += 1;
                if last_full_log.is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY) {
                    warn!(
                        max_connections = max,
                        times = full_since_log,
                        "API connection limit reached ({max} open connections): not accepting \
                         new connections until one closes (they wait in the listen backlog); \
                         idle ones close after api.header_timeout ({:?})",
                        options.header_timeout
                    );
                    last_full_log = Some(Instant::now());
                    full_since_log = 0;
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_client_error(&e) => continue,
            Err(e) => {
                error!(
                    error.message = %e,
                    "API accept failed; retrying in {ACCEPT_ERROR_PAUSE:?}"
                );
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error.message = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let body_timeout = options.body_timeout;
        // The links of this connection's responses name the address it
        // arrived on, never the client's Host header (extract::BaseUrl).
        let local = stream.local_addr().ok().map(LocalAddr);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let timed_out = BodyTimedOut::default();
            let (mut parts, inner) = req.into_parts();
            parts.extensions.insert(timed_out.clone());
            if let Some(local) = local {
                parts.extensions.insert(local);
            }
            let body = DeadlineBody {
                inner,
                deadline: Instant::now() + body_timeout,
                sleep: None,
                timed_out,
            };
            app.clone().oneshot(hyper::Request::from_parts(
                parts,
                axum::body::Body::new(body),
            ))
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error.message = %e, "API connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    info!("API stopped accepting; finishing open requests");
    graceful.shutdown().await;
    Ok(())
}

/// Accept errors that concern one client, not the listener.
fn is_client_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

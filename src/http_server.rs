//! The HTTP(S) server loop of `serve`: accepting connections, the TLS
//! handshake, HTTP/1.1 (hyper) with a header-read timeout, and graceful
//! shutdown.
//!
//! Our own loop rather than `axum::serve`, which gives hyper no timer and so
//! no header-read timeout: a client that opens a connection and sends its
//! headers a byte at a time (a slowloris), or nothing at all, would hold a
//! task and a file descriptor forever. Here every connection must deliver a
//! request's complete headers within `LECTERN_HTTP_HEADER_TIMEOUT` of
//! opening or of its previous response (hyper restarts the timer for each
//! request, so it is also the keep-alive idle timeout), and a TLS handshake
//! must finish within [`HANDSHAKE_TIMEOUT`]. Handshakes and connections run
//! in their own tasks, so a slow one never holds up accepting others.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a client may take to complete a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (app, tls, closing) = (app.clone(), tls.clone(), closing.clone());
        connections.spawn(async move {
            match tls {
                None => connection(TokioIo::new(stream), peer, app, header_timeout, closing).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        () = closing.cancelled() => return,
                        done = handshake => match done {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                    };
                    connection(TokioIo::new(stream), peer, app, header_timeout, closing).await;
                }
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
}

/// One HTTP/1.1 connection. Handlers see the client address as
/// `ConnectInfo<SocketAddr>`, as with axum's own server.
async fn connection<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    closing: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.map(axum::body::Body::new)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = http
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            return;
        }
        () = closing.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended during shutdown");
    }
}

/// Raises this process's soft limit of open files to its hard limit, as Go
/// programs and nginx (`worker_rlimit_nofile`) do. systemd starts services
/// with a soft limit of 1024: a thousand idle connections would then leave
/// no descriptor to accept `/healthz` with, let alone a learner.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`, a valid
    // rlimit owned by this frame.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0
    };
    if raised {
        tracing::info!(
            from = limit.rlim_cur,
            to = limit.rlim_max,
            "raised the open files limit"
        );
    } else {
        tracing::warn!(
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "could not raise the open files limit to its hard limit"
        );
    }
}

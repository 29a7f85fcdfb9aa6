//! `lectern serve` and `lectern migrate`: wiring config → database →
//! storage → HTTP(S), with graceful shutdown on SIGTERM / Ctrl-C.
//!
//! With `LECTERN_TLS_CERT`/`LECTERN_TLS_KEY`, connections are TLS 1.2 or
//! 1.3 only (rustls, ring provider); handshakes run in their own tasks so a
//! slow or hostile client never holds up accepting others.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use lectern_api::identity::notifier::Outbox;
use lectern_api::identity::{audit, IdentitySettings};
use lectern_api::{AppState, Identity};
use lectern_storage::{FsStore, S3Store, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, StorageConfig, TlsConfig};
use crate::database::Database;

pub async fn migrate(config: Config) -> Result<()> {
    let db = Database::open(&config).await?;
    db.migrate().await?;
    println!("migrations applied");
    db.close().await;
    Ok(())
}

pub async fn serve(config: Config) -> Result<()> {
    config.check_transport()?;
    let keys = config.keyring()?;
    if keys.is_none() {
        tracing::error!(
            "LECTERN_FIELD_KEYS, LECTERN_BLIND_INDEX_KEY and LECTERN_TOKEN_KEY are not configured: \
             identity is unavailable and /readyz reports not ready"
        );
    }
    let playback = config.playback()?;
    if !playback.has_keys() {
        tracing::error!("LECTERN_PLAYBACK_KEYS is not configured: /media answers 503");
    }
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let db = Database::open(&config).await?;
    let schema_ready = Arc::new(AtomicBool::new(false));
    db.migrate_in_background(schema_ready.clone());
    let store = open_store(&config.storage).await?;
    let identity = Identity::new(
        keys,
        // SMTP/SMS notifiers plug in here; until one is configured,
        // messages wait in the `outbox` table.
        Arc::new(Outbox {
            db: db.pool.clone(),
        }),
        IdentitySettings {
            trusted_proxies: config.trusted_proxies.clone(),
            hsts: tls.is_some(),
            ..IdentitySettings::default()
        },
    );
    // One process is a complete Lectern in embedded mode: it also transcodes.
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let in_process = config.effective_serve_workers();
    let worker_task = if in_process > 0 {
        let worker = crate::worker::worker(&config, db.pool.clone(), store.clone(), in_process)?;
        let mut stopped = workers_stopped.clone();
        let schema = schema_ready.clone();
        Some(tokio::spawn(async move {
            // Claiming before the schema exists would only log errors.
            while !schema.load(Ordering::Acquire) {
                if *stopped.borrow() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            worker
                .run(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
        }))
    } else {
        None
    };
    let mut state = AppState::new(db.pool.clone(), store, identity);
    state.schema_ready = schema_ready.clone();
    state.playback = Arc::new(playback);
    state.demo = Arc::new(lectern_api::demo::DemoSettings {
        player_dir: config.player_dir.clone(),
    });
    state.uploads = Arc::new(config.uploads.clone());
    lectern_api::uploads::sweep_periodically(state.clone(), Duration::from_secs(300));
    state.webhooks = Arc::new(lectern_api::webhooks::WebhookSettings {
        allow_private: config.webhook_allow.clone(),
        ..Default::default()
    });
    lectern_api::webhooks::dispatch_periodically(state.clone());
    state.pulls = Arc::new(config.pulls.clone());
    lectern_api::intake::resume_periodically(state.clone(), Duration::from_secs(15));
    state.learning = Arc::new(
        lectern_api::learning::Learning::connect(config.progress.clone())
            .await
            .context("cannot reach the progress backend (REDIS_URL)")?,
    );
    let progress_flusher =
        lectern_api::learning::flush::spawn(state.clone(), config.progress.flush_interval);
    let progress_state = state.clone();
    if let Some(drops) = config.drops.clone() {
        tracing::info!(prefix = %drops.prefix, organisation = %drops.organisation, "watching for recording drops");
        let watcher =
            lectern_ingest::drops::DropWatcher::new(state.db.clone(), state.store.clone(), drops);
        let schema = state.schema_ready.clone();
        tokio::spawn(watcher.run(move || schema.load(Ordering::Acquire)));
    }
    purge_audit_periodically(state.db.clone(), schema_ready, config.audit_retention_days);
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (LECTERN_HTTP_ADDR)", config.http_addr))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, storage = state.store.backend_name(), embedded_db = config.is_embedded(), workers = config.effective_serve_workers(), "lectern is serving");
    println!("lectern: serving on {scheme}://{addr}/");
    let app = lectern_api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("HTTP server failed")?,
        // `tap_io` is a no-op here: it is what gives a custom listener
        // axum's `ConnectInfo<SocketAddr>` (the client address).
        Some(acceptor) => axum::serve(tls_listener(listener, acceptor)?.tap_io(|_| ()), app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("HTTPS server failed")?,
    }
    tracing::info!("shutting down");
    lectern_api::intake::hand_back_pulls(&progress_state).await;
    // Heartbeats absorbed since the last flush would otherwise be lost.
    progress_flusher.abort();
    if progress_state.schema_ready.load(Ordering::Acquire) {
        if let Err(e) = lectern_api::learning::flush::flush_once(
            &progress_state.db,
            &progress_state.learning.absorber,
        )
        .await
        {
            tracing::warn!(error = %e, "final progress flush failed");
        }
    }
    let _ = stop_workers.send(true);
    if let Some(task) = worker_task {
        let _ = task.await;
    }
    db.close().await;
    Ok(())
}

fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "LECTERN_TLS_CERT: cannot read certificates from {}",
                tls.cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("LECTERN_TLS_CERT: no certificate in {}", tls.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).with_context(|| {
        format!(
            "LECTERN_TLS_KEY: cannot read a private key from {}",
            tls.key.display()
        )
    })?;
    // ring explicitly: the workspace also links aws-lc (via the S3 SDK), so
    // rustls cannot pick a process default on its own.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("LECTERN_TLS_CERT/LECTERN_TLS_KEY: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Completed TLS connections, handed to axum one by one.
struct TlsListener {
    connections: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_listener(tcp: TcpListener, acceptor: TlsAcceptor) -> Result<TlsListener> {
    let local = tcp.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    tokio::spawn(async move {
        while !tx.is_closed() {
            let (stream, peer) = match tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Ok(TlsListener {
        connections: rx,
        local,
    })
}

/// Applies audit retention once the schema is there, then every six hours.
fn purge_audit_periodically(db: sqlx::PgPool, schema_ready: Arc<AtomicBool>, days: u32) {
    tokio::spawn(async move {
        loop {
            if schema_ready.load(Ordering::Acquire) {
                match audit::purge(&db, days).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(rows = n, retention_days = days, "purged expired audit rows")
                    }
                    Err(e) => tracing::warn!(error = %e, "audit retention purge failed"),
                }
                tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
            } else {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    });
}

pub async fn open_store(config: &StorageConfig) -> Result<Arc<dyn Store>> {
    Ok(match config {
        StorageConfig::Fs { root } => Arc::new(
            FsStore::open(root.clone())
                .await
                .with_context(|| format!("cannot use {} for object storage", root.display()))?,
        ),
        StorageConfig::S3(s3) => Arc::new(
            S3Store::new(s3.clone()).context("invalid S3 storage configuration (LECTERN_S3_*)")?,
        ),
    })
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

//! `lectern serve` and `lectern migrate`: wiring config → database →
//! storage → HTTP(S) (`http_server.rs`), with graceful shutdown on
//! SIGTERM / Ctrl-C.
//!
//! With `LECTERN_TLS_CERT`/`LECTERN_TLS_KEY`, connections are TLS 1.2 or
//! 1.3 only (rustls, ring provider). Without them, configuration refuses
//! to serve plain HTTP except on a loopback address or behind a configured
//! `LECTERN_TRUSTED_PROXIES` (a TLS-terminating proxy), so credentials
//! never cross a network in the clear by accident.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lectern_api::apps::AppsSettings;
use lectern_api::demo::DemoSettings;
use lectern_api::{AppState, NotifySettings, Settings};
use lectern_identity::{audit, IdentitySettings};
use lectern_ingest::http::webhooks::WebhookSettings;
use lectern_ingest::http::{pulls, webhooks};
use lectern_learning::Learning;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TlsConfig};
use crate::database::Database;
use crate::process::{open_store, shutdown_signal};
use crate::tasks::Tasks;

pub async fn migrate(config: Config) -> Result<()> {
    let db = Database::open(&config).await?;
    db.migrate().await?;
    println!("migrations applied");
    db.close().await;
    Ok(())
}

pub async fn serve(config: Config) -> Result<()> {
    config.check_transport()?;
    config.check_dev_outbox()?;
    config.check_sign_in_plain()?;
    if !config.is_embedded() && config.notify.smtp.is_none() {
        tracing::warn!(
            "LECTERN_DEV_OUTBOX: one-time codes and invitations go to the database's outbox \
             table instead of being e-mailed (development only)"
        );
    }
    let notify = notify_settings(&config)?;
    let keys = config.keyring()?.map(Arc::new);
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
    crate::http_server::raise_open_files_limit();
    let db = Database::open(&config).await?;
    let schema_ready = Arc::new(AtomicBool::new(false));
    db.migrate_in_background(schema_ready.clone());
    let store = open_store(&config.storage).await?;
    // The search segmenter's dictionary loads in the background now, not
    // in the first search request.
    tokio::task::spawn_blocking(lectern_catalogue::search::warm_up);
    let learning = Learning::connect(config.progress.clone())
        .await
        .context("cannot reach the progress backend (REDIS_URL)")?;
    // Every area's state is built whole before anything runs.
    let state = AppState::new(
        db.pool.clone(),
        store.clone(),
        Settings {
            keys,
            notify,
            identity: IdentitySettings {
                invitation_ttl: config.settings.invitation_ttl,
                throttle: lectern_identity::ThrottlePolicy {
                    lockout: config.settings.sign_in_lockout,
                    window: config.settings.sign_in_lockout,
                    ..Default::default()
                },
                sso: lectern_identity::SsoSettings {
                    allow: config.settings.sign_in_allow.clone().unwrap_or_default(),
                    allow_plain: config.settings.sign_in_allow_plain,
                    clock_skew: config.settings.oidc_clock_skew,
                    wechat_api: config.settings.wechat_api_url.0.clone(),
                    ldap_ca: config
                        .settings
                        .ldap_ca_file
                        .as_ref()
                        .map(|path| {
                            std::fs::read_to_string(path).with_context(|| {
                                format!("LECTERN_LDAP_CA_FILE: cannot read {}", path.display())
                            })
                        })
                        .transpose()?,
                    ..Default::default()
                },
                phone: lectern_identity::PhoneSettings {
                    code_ttl: config.settings.phone_code_ttl,
                    code_failures: i32::try_from(config.settings.phone_code_failures)
                        .unwrap_or(i32::MAX),
                    sends_per_number: i32::try_from(config.settings.phone_code_sends)
                        .unwrap_or(i32::MAX),
                    ..Default::default()
                },
                app_url: config.app_url.clone(),
                trusted_proxies: config.trusted_proxies.clone(),
                hsts: tls.is_some(),
                password_concurrency: config.password_hash_concurrency,
                alert_syslog: config.security_syslog,
                ..IdentitySettings::default()
            },
            playback: Arc::new(playback),
            uploads: config.uploads.clone(),
            pulls: config.pulls.clone(),
            webhooks: WebhookSettings {
                allow_private: config.webhook_allow.clone(),
                per_endpoint: config.webhook_endpoint_concurrency,
                max_in_flight: config.webhook_max_in_flight,
                ..WebhookSettings::default()
            },
            learning,
            analytics: lectern_analytics::AnalyticsSettings {
                public_base_url: config.settings.public_base_url.as_ref().map_or_else(
                    || format!("http://{}", config.settings.http_addr),
                    |u| u.0.clone(),
                ),
            },
            live: live_settings(&config)?,
            demo: DemoSettings {
                player_dir: config.settings.player_dir.clone(),
            },
            apps: AppsSettings {
                dir: config.settings.apps_dir.clone(),
            },
            schema_ready: schema_ready.clone(),
            ..Settings::default()
        },
    );
    let tasks = start_background_work(&config, &state, &db)?;
    let listener = TcpListener::bind(config.settings.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (LECTERN_HTTP_ADDR)",
                config.settings.http_addr
            )
        })?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, storage = state.store.backend_name(), embedded_db = config.is_embedded(), workers = config.effective_serve_workers(), "lectern is serving");
    println!("lectern: serving on {scheme}://{addr}/");
    crate::http_server::serve(
        listener,
        lectern_api::router(state.clone()),
        tls,
        config.settings.http_header_timeout,
        shutdown_signal(),
    )
    .await;
    tracing::info!("shutting down");
    // Rows still queued, and the noise counted so far, are written before
    // the checkpoint task takes its last checkpoint.
    state.identity.audit.flush().await;
    pulls::hand_back_pulls(&state.ingest).await;
    // The flusher flushes once more, the in-process worker drains.
    let grace = Duration::from_secs(config.worker.drain_secs + 30);
    tasks.shutdown(grace).await;
    db.close().await;
    Ok(())
}

/// Live ingest from the `LECTERN_LIVE_*` settings.
fn live_settings(config: &Config) -> Result<lectern_live::LiveSettings> {
    let s = &config.settings;
    if s.live_reconnect_window > Duration::from_secs(1800) {
        anyhow::bail!("LECTERN_LIVE_RECONNECT_WINDOW is at most 30 minutes");
    }
    if s.live_dvr_window < Duration::from_secs(60) {
        anyhow::bail!("LECTERN_LIVE_DVR_WINDOW is at least a minute");
    }
    let passphrase = s
        .live_srt_passphrase
        .as_ref()
        .map(|p| p.expose().to_string());
    if passphrase
        .as_ref()
        .is_some_and(|p| !(10..=79).contains(&p.len()))
    {
        anyhow::bail!("LECTERN_LIVE_SRT_PASSPHRASE has 10–79 characters");
    }
    Ok(lectern_live::LiveSettings {
        rtmp_listen: s.live_rtmp_addr,
        srt_port: s.live_srt_port,
        srt_passphrase: passphrase,
        dvr_window: s.live_dvr_window,
        reconnect_window: s.live_reconnect_window,
        work_dir: s.data_dir.join("live"),
        rtmp_public_url: s.live_rtmp_public_url.clone(),
        srt_public_url: s.live_srt_public_url.clone(),
        ..lectern_live::LiveSettings::default()
    })
}

/// Everything `serve` runs besides answering requests, each a named task
/// of one set.
fn start_background_work(config: &Config, state: &AppState, db: &Database) -> Result<Tasks> {
    let tasks = Tasks::new();
    // One process is a complete Lectern in embedded mode: it also transcodes.
    let in_process = config.effective_serve_workers();
    if in_process > 0 {
        let worker =
            crate::worker::worker(config, db.pool.clone(), state.store.clone(), in_process)?;
        let schema = state.schema_ready.clone();
        tasks.spawn("worker", |cancel| async move {
            // Claiming before the schema exists would only log errors.
            while !schema.load(Ordering::Acquire) {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            worker.run(cancel.cancelled_owned()).await;
        });
    }
    let s = state.clone();
    tasks.spawn("upload-sweeper", |cancel| {
        lectern_api::uploads::sweep_periodically(s, Duration::from_secs(300), cancel)
    });
    let ingest = state.ingest.clone();
    tasks.spawn("webhook-dispatcher", |cancel| {
        webhooks::dispatch_periodically(ingest, cancel)
    });
    let ingest = state.ingest.clone();
    tasks.spawn("pull-resumer", |cancel| {
        pulls::resume_periodically(ingest, Duration::from_secs(15), cancel)
    });
    let (notify, schema) = (state.notify.clone(), state.schema_ready.clone());
    tasks.spawn("notification-dispatcher", move |cancel| {
        notify.run(move || schema.load(Ordering::Acquire), cancel)
    });
    let learning = state.learning.clone();
    let every = config.progress.flush_interval;
    tasks.spawn("progress-flusher", move |cancel| {
        lectern_learning::flush::run(learning, every, cancel)
    });
    let (db, changes, node) = (
        state.db.clone(),
        state.delivery.changes.clone(),
        state.delivery.node,
    );
    tasks.spawn("playlist-changes", move |cancel| {
        lectern_delivery::blocking::listen(db, changes, node, cancel)
    });
    let live = state.live.clone();
    tasks.spawn("live-sweeper", move |cancel| {
        lectern_live::lifecycle::run_sweeper(live, cancel)
    });
    if let Some(addr) = state.live.settings.rtmp_listen {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (LECTERN_LIVE_RTMP_ADDR)"))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(%addr, "RTMP ingest listening");
        let live = state.live.clone();
        tasks.spawn("live-rtmp", move |cancel| {
            lectern_live::rtmp::serve(live, listener, cancel)
        });
    }
    if let Some(port) = state.live.settings.srt_port {
        tracing::info!(port, "SRT ingest listening");
        let live = state.live.clone();
        tasks.spawn("live-srt", move |cancel| {
            lectern_live::srt::serve(live, port, cancel)
        });
    }
    let analytics = state.analytics.clone();
    tasks.spawn("analytics-rollup", move |cancel| {
        lectern_analytics::rollup::run(analytics, cancel)
    });
    let analytics = state.analytics.clone();
    tasks.spawn("report-exports", move |cancel| {
        lectern_analytics::export::run(analytics, cancel)
    });
    if let Some(drops) = config.drops.clone() {
        tracing::info!(prefix = %drops.prefix, organisation = %drops.organisation, "watching for recording drops");
        let watcher =
            lectern_ingest::drops::DropWatcher::new(state.db.clone(), state.store.clone(), drops);
        let schema = state.schema_ready.clone();
        tasks.spawn("drop-watcher", |cancel| {
            watcher.run(move || schema.load(Ordering::Acquire), cancel)
        });
    }
    let (pool, schema, days) = (
        state.db.clone(),
        state.schema_ready.clone(),
        config.settings.audit_retention_days,
    );
    tasks.spawn("audit-retention", move |cancel| {
        audit::purge_periodically(pool, schema, days, cancel)
    });
    if let Some(key) = state.identity.chain_key() {
        let (pool, store, schema, every) = (
            state.db.clone(),
            state.store.clone(),
            state.schema_ready.clone(),
            config.settings.audit_checkpoint_interval,
        );
        tasks.spawn("audit-checkpoint", move |cancel| {
            audit::checkpoint::write_periodically(pool, store, key, schema, every, cancel)
        });
    }
    Ok(tasks)
}

/// The transports notices leave through: SMTP and the SMS provider as
/// configured, the development outbox otherwise (`check_dev_outbox`
/// refuses that outside development).
pub fn notify_settings(config: &Config) -> Result<NotifySettings> {
    use crate::config::value::SmsProviderKind;
    use lectern_notify::transport::aliyun::AliyunSms;
    use lectern_notify::transport::smtp::SmtpMailer;
    use lectern_notify::transport::tencent::TencentSms;
    use lectern_notify::transport::{EmailTransport, SmsTransport};
    let email = match &config.notify.smtp {
        Some(smtp) => Some(Arc::new(
            SmtpMailer::new(smtp).map_err(|m| anyhow::anyhow!("LECTERN_SMTP_HOST: {m}"))?,
        ) as Arc<dyn EmailTransport>),
        None => None,
    };
    let sms = config.notify.sms.as_ref().map(|(kind, settings)| {
        let sms: Arc<dyn SmsTransport> = match kind {
            SmsProviderKind::Aliyun => Arc::new(AliyunSms::new(settings.clone())),
            SmsProviderKind::Tencent => Arc::new(TencentSms::new(settings.clone())),
        };
        sms
    });
    Ok(NotifySettings {
        email,
        sms,
        dispatch: config.notify.dispatch.clone(),
    })
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

//! Every setting Lectern reads, in one list: a new setting is one entry
//! here — a doc comment (the README's description), a field, a type (how
//! its text is read, `value.rs`) and a default. The field `http_addr` is
//! `LECTERN_HTTP_ADDR` in the environment and `http_addr` in the file; the
//! README's table is generated from this list (a test compares them;
//! `UPDATE_README=1 cargo nextest run -p lectern readme` rewrites it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lectern_egress::AllowList;
use lectern_identity::TrustedProxies;

use super::value::{
    BaseUrl, Bytes, DatabaseUrl, LogFilter, LogFormat, Profile, ProgressBackendKind, Ratio, Secret,
    SmsProviderKind, SmtpTlsMode, StorageBackend, StoragePrefix,
};

settings! {
    /// listen address
    http_addr: SocketAddr = default "127.0.0.1:8080";
    /// a connection must send a request's complete headers within this long
    /// of opening or of its previous response (so it is also the keep-alive
    /// idle timeout), or it is closed: slow clients cannot hold the server
    http_header_timeout: Duration = default "30s";
    /// local state: embedded PostgreSQL, local objects, generated keys
    data_dir: PathBuf = default ".lectern";
    /// `postgres://user:pass@host:5432/db` of an external (managed)
    /// PostgreSQL (never logged with its password)
    database_url as "DATABASE_URL": Option<DatabaseUrl> = none "unset → embedded";
    /// development only: with `DATABASE_URL` and no `LECTERN_SMTP_HOST`,
    /// `serve` keeps one-time codes and invitations in the database's
    /// `outbox` table instead of sending them; without it `serve` refuses
    /// to start there (embedded mode and `lectern demo` use the outbox
    /// when no SMTP is configured)
    dev_outbox: bool = default "false";
    /// SMTP server notices (invitations, one-time codes, moderation
    /// outcomes…) are e-mailed through; unset, they go to the development
    /// outbox (see `LECTERN_DEV_OUTBOX`)
    smtp_host: Option<String> = none "unset → dev outbox";
    /// SMTP port
    smtp_port: Option<u16> = none "587 (`starttls`), 465 (`tls`), 25 (`none`)";
    /// `starttls` (the server must upgrade the connection, or nothing is
    /// sent), `tls` (implicit TLS) or `none` (plain: a relay on the same
    /// host, development)
    smtp_tls: SmtpTlsMode = default "starttls";
    /// SMTP user name (with `LECTERN_SMTP_PASSWORD`)
    smtp_user: Option<String> = none "no authentication";
    /// SMTP password (never logged)
    smtp_password: Option<Secret> = none "—";
    /// the sender of notices, e.g. `Lectern <no-reply@example.org>`
    smtp_from: String = default "Lectern <no-reply@localhost>";
    /// `aliyun` (Alibaba Cloud SMS) or `tencent` (Tencent Cloud SMS), for
    /// people who choose SMS in their notification preferences
    sms_provider: Option<SmsProviderKind> = none "unset → no SMS (the dev outbox without SMTP)";
    /// the provider's AccessKey ID / SecretId (required with a provider)
    sms_access_key_id: Option<String> = none "—";
    /// the provider's AccessKey secret / SecretKey (never logged)
    sms_access_key_secret: Option<Secret> = none "—";
    /// the registered SMS signature (签名) messages carry
    sms_sign_name: Option<String> = none "—";
    /// Tencent Cloud's `SmsSdkAppId` (required for `tencent`)
    sms_app_id: Option<String> = none "—";
    /// the provider's region
    sms_region: Option<String> = none "`cn-hangzhou` / `ap-guangzhou`";
    /// the provider's API base URL (tests point it at a local server)
    sms_endpoint: Option<BaseUrl> = none "the provider's public endpoint";
    /// the registered template of each topic SMS may carry,
    /// `step_up_code=SMS_123,question_answered=SMS_456`; a topic without
    /// one is not sent by SMS (the delivery log says why)
    sms_templates: Option<String> = none "—";
    /// a notice's delivery is given up after this many attempts
    notify_max_attempts: u32 = default "8";
    /// the first retry of a failed delivery waits this long; each further
    /// retry doubles it, up to `LECTERN_NOTIFY_MAX_BACKOFF`
    notify_backoff: Duration = default "30s";
    /// the longest wait between two attempts of a delivery
    notify_max_backoff: Duration = default "1h";
    /// notices one address receives per channel in any hour (more wait
    /// for the next hour)
    notify_rate_per_hour: u32 = default "20";
    /// one-time codes and sign-up links one address receives per channel in
    /// any hour, counted apart from other notices
    notify_secret_rate_per_hour: u32 = default "30";
    /// how long an expert invitation (and each resend of it) stays valid
    invitation_ttl: Duration = default "168h";
    /// how long an account, phone number or address stays locked after
    /// too many failed sign-ins (passwords, SMS codes, single sign-on)
    sign_in_lockout: Duration = default "15m";
    /// how long a code sent by SMS (sign-in, proving a number) can be used
    phone_code_ttl: Duration = default "5m";
    /// wrong SMS codes for one number within the lockout window; the last
    /// of them locks the number for `LECTERN_SIGN_IN_LOCKOUT`
    phone_code_failures: u32 = default "6";
    /// SMS codes one number may be sent within the lockout window
    phone_code_sends: u32 = default "5";
    /// identity providers and directories (OIDC, LDAP, WeChat stand-ins)
    /// that may be on private or loopback addresses: hosts, addresses or
    /// CIDR networks, e.g. `idp.hospital.internal, 10.20.0.0/16`
    sign_in_allow: Option<AllowList> = none "none";
    /// development only: plain `http` to the providers named in
    /// `LECTERN_SIGN_IN_ALLOW`, and LDAP without LDAPS or StartTLS;
    /// refused beside `DATABASE_URL` unless `LECTERN_DEV_OUTBOX=true`
    sign_in_allow_plain: bool = default "false";
    /// WeChat's API (`sns/jscode2session`, `cgi-bin/token`, …); only a
    /// development or test stand-in changes it (it must then be named in
    /// `LECTERN_SIGN_IN_ALLOW`)
    wechat_api_url: BaseUrl = default "https://api.weixin.qq.com";
    /// a PEM file of CA certificates LDAPS and StartTLS trust besides the
    /// system's (an institution's own CA)
    ldap_ca_file: Option<PathBuf> = none "the system's trust roots only";
    /// how far an OpenID provider's clock may be from ours when ID
    /// tokens' `exp` and `iat` are checked
    oidc_clock_skew: Duration = default "60s";
    /// where people open the links notices carry (the app), e.g.
    /// `https://learn.example.org`
    app_url: Option<BaseUrl> = none "`http://` + `LECTERN_HTTP_ADDR`";
    /// `fs` (local disk) or `s3`
    storage: StorageBackend = default "fs";
    /// root directory of the `fs` backend
    fs_root: Option<PathBuf> = none "`$LECTERN_DATA_DIR/storage`";
    /// e.g. `https://oss-cn-hangzhou.aliyuncs.com`,
    /// `https://cos.ap-guangzhou.myqcloud.com`,
    /// `https://obs.cn-north-4.myhuaweicloud.com`, `http://127.0.0.1:3900`
    /// (Garage)
    s3_endpoint: Option<String> = none "AWS";
    /// region name the service expects in signatures
    s3_region: String = default "us-east-1";
    /// bucket (required for `s3`); give it a lifecycle rule that aborts
    /// incomplete multipart uploads after a day, since a process killed
    /// mid-upload leaves one
    s3_bucket: Option<String> = none "—";
    /// access key id (required for `s3`)
    s3_access_key_id: Option<String> = none "—";
    /// secret access key (required for `s3`; never logged)
    s3_secret_access_key: Option<Secret> = none "—";
    /// `true` for MinIO/Garage-style path addressing
    s3_path_style: bool = default "false";
    /// access key id `lectern admin replicate --to-bucket` writes the media
    /// replica with, when the replica lives in another account or service
    replica_s3_access_key_id: Option<String> = none "`LECTERN_S3_ACCESS_KEY_ID`";
    /// secret access key of `LECTERN_REPLICA_S3_ACCESS_KEY_ID` (never logged)
    replica_s3_secret_access_key: Option<Secret> = none "`LECTERN_S3_SECRET_ACCESS_KEY`";
    /// concurrent jobs of the pipeline worker run inside `serve`
    serve_workers: Option<usize> = none "1 embedded, 0 otherwise";
    /// jobs one `lectern worker` runs at once (x264 already spreads one
    /// ladder over ~4 cores)
    worker_concurrency: Option<usize> = none "cores ÷ 4, at least 1";
    /// a job's lease in seconds, renewed every third of it; a dead worker's
    /// job is taken over after this long
    job_lease_secs: u64 = default "60";
    /// after SIGTERM, how long (seconds) running jobs may finish before they
    /// are handed back to the queue
    worker_drain_secs: u64 = default "30";
    /// sources at least this many seconds long are split at keyframes into
    /// chunks that any worker encodes in parallel; `0` never splits (chunked
    /// encodes publish when stitched, not progressively)
    chunk_threshold_secs: u64 = default "1800";
    /// target chunk length in seconds; a chunk starts at the first source
    /// keyframe after it
    chunk_secs: u64 = default "120";
    /// personal-data encryption keys, `id:<base64 32 bytes>,…`, the first is
    /// active; required with `DATABASE_URL`
    field_keys: Option<Secret> = none "embedded: generated into `.lectern/keys.toml`";
    /// HMAC key of the email blind index (base64, 32 bytes)
    blind_index_key: Option<Secret> = none "as above";
    /// signing key of invitation and other tokens (base64, 32 bytes)
    token_key: Option<Secret> = none "as above";
    /// PEM certificate chain: HTTPS with TLS 1.2/1.3 only, HSTS (with
    /// `LECTERN_TLS_KEY`)
    tls_cert: Option<PathBuf> = none "unset → plain HTTP";
    /// PEM private key of `LECTERN_TLS_CERT`
    tls_key: Option<PathBuf> = none "unset → plain HTTP";
    /// CIDRs whose `X-Forwarded-For` is believed; plain HTTP off loopback is
    /// refused unless set
    trusted_proxies: Option<TrustedProxies> = none "none";
    /// audit rows older than this are purged (at least 180), keeping the
    /// chain verifiable
    audit_retention_days: u32 = default "180";
    /// password hashes and checks (argon2id, 19 MiB and tens of milliseconds
    /// of a core each) one node runs at once, on its blocking threads; more
    /// sign-ins wait for a turn, so a burst of them cannot stall other
    /// requests
    password_hash_concurrency: Option<usize> = none "cores, at least 1";
    /// `ip:port` of a syslog receiver (a SIEM's collector): every security
    /// alert is also sent there as one RFC 5424 message over UDP
    security_syslog: Option<SocketAddr> = none "off";
    /// how often the audit log's head is checkpointed (signed) to object
    /// storage; removals of rows younger than this are not caught (1s–1h)
    audit_checkpoint_interval: Duration = default "60s";
    /// largest single upload (`Tus-Max-Size`); larger ones get 413
    upload_max_bytes: Bytes = default "20 GiB";
    /// an upload without progress for this many seconds expires and frees
    /// its storage
    upload_ttl_secs: u64 = default "86400";
    /// per organisation: total declared size of unfinished uploads
    upload_org_max_bytes: Bytes = default "100 GiB";
    /// per organisation: unfinished uploads at once
    upload_org_max_concurrent: u32 = default "20";
    /// encoding profile of uploaded assets (`default`, `lecture`)
    upload_profile: Profile = default "default";
    /// a PATCH body must bring at least `LECTERN_UPLOAD_MIN_TRANSFER` every
    /// `LECTERN_UPLOAD_MIN_TRANSFER_WINDOW`, or it is ended keeping what
    /// arrived (tus clients resume); a client gone silent is cut off so
    upload_min_transfer: Bytes = default "32 KiB";
    /// see `LECTERN_UPLOAD_MIN_TRANSFER`
    upload_min_transfer_window: Duration = default "60s";
    /// the lease a PATCH holds on its upload, renewed while it streams;
    /// after a crash mid-PATCH the upload answers `upload_busy` (retryable)
    /// until it lapses
    upload_lease: Duration = default "15s";
    /// hosts, addresses and CIDRs `POST /api/v1/assets {"source_url"}` may
    /// download from although private (loopback, RFC 1918, link-local… are
    /// refused otherwise)
    pull_allow: Option<AllowList> = none "none";
    /// largest source a URL pull downloads
    pull_max_bytes: Bytes = default "50 GiB";
    /// seconds a pull's whole download may take (a pull whose node dies is
    /// downloaded again by another node after a minute, or at once after a
    /// graceful stop; three attempts in all)
    pull_timeout_secs: u64 = default "14400";
    /// a pull's longest silence, in seconds
    pull_idle_secs: u64 = default "60";
    /// per organisation: URL pulls downloading at once (more answer 429
    /// `pull_quota_exceeded`)
    pull_org_max_concurrent: u32 = default "20";
    /// per organisation: bytes its unfinished pulls may have received
    pull_org_max_bytes: Bytes = default "100 GiB";
    /// storage prefix watched for recordings (e.g. `drops/live/`); each
    /// complete object becomes one asset
    drop_prefix: Option<StoragePrefix> = none "unset → off";
    /// organisation (name or id) dropped recordings belong to; required with
    /// the prefix
    drop_org: Option<String> = none "—";
    /// encoding profile of dropped recordings
    drop_profile: Option<Profile> = none "as `LECTERN_UPLOAD_PROFILE`";
    /// how often (seconds) the drop prefix is listed
    drop_interval_secs: u64 = default "30";
    /// how long (seconds) a dropped object's size and ETag must stay
    /// unchanged before it is taken
    drop_settle_secs: u64 = default "60";
    /// hosts, addresses and CIDRs webhooks may post to although private (by
    /// default a webhook resolving to a private, loopback or link-local
    /// address is refused, as for URL pulls)
    webhook_allow: Option<AllowList> = none "none";
    /// deliveries to one webhook endpoint in flight at once, across nodes:
    /// a slow receiver ties up this many, never other partners'
    webhook_endpoint_concurrency: u32 = default "4";
    /// deliveries one node posts at once
    webhook_max_in_flight: u32 = default "64";
    /// where the RTMP ingest server of live lectures listens, e.g.
    /// `0.0.0.0:1935`; publishers use the event's stream key as the stream
    /// name
    live_rtmp_addr: Option<SocketAddr> = none "unset → no RTMP ingest";
    /// UDP port of the SRT ingest listener of live lectures (one publisher
    /// at a time per port; the stream key is the SRT stream id)
    live_srt_port: Option<u16> = none "unset → no SRT ingest";
    /// passphrase SRT publishers must encrypt with (10–79 characters)
    live_srt_passphrase: Option<Secret> = none "none";
    /// how far back viewers may seek in a live lecture (the live
    /// playlist's window); an event may set its own
    live_dvr_window: Duration = default "2h";
    /// how long a live publisher may be away (0–30 min) before the event
    /// ends; a reconnect within it continues the same event and replay
    live_reconnect_window: Duration = default "60s";
    /// RTMP URL organisers are told to publish to, e.g.
    /// `rtmp://live.example.org/live`
    live_rtmp_public_url: Option<String> = none "—";
    /// SRT URL organisers are told to publish to, e.g.
    /// `srt://live.example.org:9000`
    live_srt_public_url: Option<String> = none "—";
    /// the player SDK bundle the demo page serves
    player_dir: PathBuf = default "player-sdk/dist";
    /// the `apps/` workspace whose builds (`learner/dist`, `admin/dist`)
    /// are served at `/app/` and `/admin/`
    apps_dir: PathBuf = default "apps";
    /// keys of signed playback URLs, `kid:<base64, ≥ 32 bytes>,…`, the first
    /// signs; without it and with `DATABASE_URL`, `/media` answers 503
    playback_keys: Option<Secret> = none "embedded: generated into `.lectern/playback_keys.toml`";
    /// lifetime of a playback token (seconds, or `90m`, `6h`; at least a
    /// minute)
    playback_token_ttl: Duration = default "6h";
    /// public base URL of the API, e.g. `https://learn.example.org`: the
    /// address certificates' QR codes and xAPI statements point to
    public_base_url: Option<BaseUrl> = none "unset → `http://<LECTERN_HTTP_ADDR>`";
    /// public base URL of media, e.g. the CDN host `https://cdn.example.org`
    media_base_url: Option<BaseUrl> = none "unset → relative `/media/…` URLs";
    /// memory per node, in MiB, for hot segments, init segments and posters
    /// served by `/media` (0: read storage on every request); an object
    /// deleted from storage stops being served within 60 s
    origin_cache_mib: u64 = default "256";
    /// where progress heartbeats are absorbed before PostgreSQL: `memory`
    /// (per process) or `redis` (shared by every API node, needs
    /// `REDIS_URL`; each node answers beats from memory and pushes them to
    /// Redis every second, so its crash loses at most that)
    progress_backend: ProgressBackendKind = default "memory";
    /// `redis://host:6379` for `LECTERN_PROGRESS_BACKEND=redis`
    redis_url as "REDIS_URL": Option<Secret> = none "—";
    /// prefix of the Redis keys of progress
    progress_redis_prefix: String = default "lectern:progress:";
    /// how often absorbed heartbeats are written to PostgreSQL (100ms–60s);
    /// a crash loses at most this much in `memory` mode
    progress_flush_interval: Duration = default "2s";
    /// `true` registers `POST /api/v1/bench/noop`, the do-nothing baseline
    /// of `benchmarks/progress`; never in production
    bench_noop: bool = default "false";
    /// `text` or `json` logs (stderr)
    log_format: LogFormat = default "text";
    /// tracing filter, e.g. `debug,sqlx=warn`
    log: LogFilter = default "info,sqlx=warn,tower_http=info";
    /// OTLP/HTTP (protobuf) receiver of traces, e.g. an OpenTelemetry
    /// Collector's `http://127.0.0.1:4318`: spans go to its `/v1/traces`
    /// (requests by route template, jobs continuing the request that queued
    /// them). Unset, nothing is exported or recorded for it. A collector
    /// that wants credentials gets them from `OTEL_EXPORTER_OTLP_HEADERS`
    /// (`key=value,…`), read as the OpenTelemetry specification says
    otel_exporter_otlp_endpoint as "OTEL_EXPORTER_OTLP_ENDPOINT": Option<BaseUrl> = none "unset → off";
    /// the full URL traces are posted to, instead of the endpoint's
    /// `/v1/traces` (either turns export on)
    otel_exporter_otlp_traces_endpoint as "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": Option<BaseUrl> = none "`$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`";
    /// `service.name` of exported spans
    otel_service_name as "OTEL_SERVICE_NAME": String = default "lectern";
    /// share of traces exported (0–1), drawn where a trace starts (a
    /// request, a job nothing queued); a job follows its request's draw
    otel_traces_sampler_arg as "OTEL_TRACES_SAMPLER_ARG": Ratio = default "1";
    /// PostgreSQL binaries for embedded mode
    pg_bin: Option<PathBuf> = none "newest `/usr/lib/postgresql/*/bin`";
}

//! URL pull: a partner names a URL and Lectern downloads the source itself.
//!
//! A server that fetches URLs chosen by callers is a classic SSRF hole: the
//! URL can point at the cloud metadata service (169.254.169.254), at the
//! database next door, or at a name whose DNS answer changes between the
//! check and the connect (rebinding). So every hop is handled the same way:
//! only `http`/`https`; the host is resolved **once**; every address it
//! resolves to must be public unless the operator's allow-list
//! (`LECTERN_PULL_ALLOW`) names the host or a network containing the
//! address; the HTTP client is then pinned to exactly those addresses
//! (`resolve_to_addrs`), never resolves anything itself and ignores proxy
//! variables; redirects are not followed by the client but by this module,
//! a few hops at most, each target checked again from scratch.
//!
//! The body streams into storage ([`Store::put`]) through a guard that
//! counts bytes (a lying or missing `Content-Length` cannot get past the
//! limit), enforces the idle and total timeouts, and turns any violation
//! into a failing body, so the store discards what it had written. The
//! first bytes are sniffed before anything is written: a web page or a PDF
//! is refused with `not_media` without touching storage.
//!
//! Pulls are recorded in the `pulls` table (see [`begin`] and [`run`]): the
//! API answers `202` as soon as the URL passed the checks and a partner
//! polls the pull, which names the asset once the download succeeded (the
//! pull id *is* the asset id) or the stable error code if it failed.
//!
//! A pull outlives the process that runs it: with a [`UrlVault`] the full
//! URL (credentials and signed query included) is kept sealed on the row,
//! and a pull whose heartbeat stopped (its process died or was redeployed)
//! is claimed by any node's [`claim_interrupted`] and downloaded again,
//! [`MAX_ATTEMPTS`] times in all. `attempt` fences the attempts: only the
//! newest may heartbeat, complete or fail the pull, and each stores under a
//! key of its own, so an earlier attempt that was only slow stops at its
//! next heartbeat without touching the newer one's object.

use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use ipnet::IpNet;
use lectern_storage::{ByteStream, ObjectMeta, PutOptions, StorageError, Store};
use reqwest::Url;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::assets::{self, NewAsset};
use crate::sniff::{sniff, MediaSignature, SNIFF_LEN};

/// Operator settings of URL pulls.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// Largest source accepted, in bytes.
    pub max_bytes: u64,
    /// The whole download, first byte to last.
    pub total_timeout: Duration,
    /// Longest silence of the source (connecting, waiting for headers or
    /// for the next chunk) before giving up.
    pub idle_timeout: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: u8,
    /// Hosts and networks that may be pulled from even though they are not
    /// public (an intranet media server).
    pub allow: AllowList,
    /// Profile of assets whose request names none.
    pub default_profile: String,
    /// Profiles a request may name.
    pub profiles: Vec<String>,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            max_bytes: 50 * 1024 * 1024 * 1024,
            total_timeout: Duration::from_secs(4 * 60 * 60),
            idle_timeout: Duration::from_secs(60),
            max_redirects: 5,
            allow: AllowList::default(),
            default_profile: "default".to_owned(),
            profiles: vec!["default".to_owned()],
        }
    }
}

/// Operator-approved exceptions to the public-address rule: host names
/// (matched exactly, case-insensitively) and networks (`10.1.0.0/16`, or a
/// single address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AllowList {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.nets.is_empty()
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn allows_addr(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

impl FromStr for AllowList {
    type Err = String;

    /// A comma- or whitespace-separated list of hosts, addresses and CIDRs.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut list = AllowList::default();
        for entry in s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = bare.parse::<IpNet>() {
                list.nets.push(net.trunc());
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else if entry.contains('/') {
                return Err(format!("{entry:?} is not a valid CIDR network"));
            } else if is_host_name(entry) {
                list.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{entry:?} is neither a host name, an address nor a CIDR network"
                ));
            }
        }
        Ok(list)
    }
}

fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Why a pull failed. Each has a stable [`code`](PullError::code); messages
/// never repeat a URL's query string or credentials.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    UrlNotAllowed(String),
    #[error(
        "{host} resolves to {addr}, a {kind} address; Lectern only pulls from public addresses \
         unless the operator allows the host or network in LECTERN_PULL_ALLOW"
    )]
    PrivateAddress {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the source answered HTTP {status}{detail}")]
    HttpError { status: u16, detail: String },
    #[error(
        "the source does not start like a video or audio file (MP4, MOV, MKV, WebM, AVI, FLV, \
         TS, …); check that the URL downloads the file itself, not a web page about it"
    )]
    NotMedia,
    /// A field of the request other than the URL (`invalid_title`,
    /// `invalid_profile`).
    #[error("{1}")]
    InvalidRequest(&'static str, String),
    /// A newer attempt owns the pull; this one stops and records nothing.
    #[error("a newer attempt took the pull over")]
    Superseded,
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    #[error("database failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl PullError {
    pub fn code(&self) -> &'static str {
        match self {
            PullError::UrlNotAllowed(_) => "url_not_allowed",
            PullError::PrivateAddress { .. } => "private_address",
            PullError::TooLarge(_) => "source_too_large",
            PullError::Timeout(_) => "source_timeout",
            PullError::Unreachable(_) => "source_unreachable",
            PullError::HttpError { .. } => "source_http_error",
            PullError::NotMedia => "not_media",
            PullError::InvalidRequest(code, _) => code,
            PullError::Superseded => "pull_superseded",
            PullError::Storage(_) | PullError::Database(_) => "internal",
        }
    }

    /// Our failure, not the source's nor the caller's.
    pub fn is_internal(&self) -> bool {
        matches!(self, PullError::Storage(_) | PullError::Database(_))
    }

    /// What a partner is shown: internal failures are summarised, since
    /// their details (paths, SQL) are for the operator's log.
    pub fn public_message(&self) -> String {
        if self.is_internal() {
            "the download could not be stored; it has been logged, try again later".to_owned()
        } else {
            self.to_string()
        }
    }
}

/// The URL as shown back and stored: no credentials, no query string (a
/// presigned URL's signature is a secret) and no fragment.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Parses a source URL and applies the rules that need no network.
pub fn parse_url(raw: &str) -> Result<Url, PullError> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        PullError::UrlNotAllowed(format!("source_url is not a valid absolute URL ({e})"))
    })?;
    check_url_shape(&url)?;
    Ok(url)
}

fn check_url_shape(url: &Url) -> Result<(), PullError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PullError::UrlNotAllowed(format!(
            "the {:?} scheme is not allowed; the source URL must be http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(PullError::UrlNotAllowed(
            "the source URL has no host".to_owned(),
        ));
    }
    Ok(())
}

/// A URL whose host has been resolved and checked: the only addresses the
/// client may connect to for it.
#[derive(Debug, Clone)]
pub struct CheckedTarget {
    pub url: Url,
    /// `None` when the host is an address literal (nothing to pin).
    pub domain: Option<String>,
    pub addrs: Vec<SocketAddr>,
}

/// Resolves the URL's host once and refuses it unless every address is
/// public or allowed. A host with one public and one private address is
/// refused: the client could connect to either.
pub async fn check_target(url: &Url, allow: &AllowList) -> Result<CheckedTarget, PullError> {
    check_url_shape(url)?;
    let host = url.host_str().unwrap_or_default();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| PullError::UrlNotAllowed("the source URL has no port".to_owned()))?;
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| PullError::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(PullError::Unreachable(format!(
            "{host} resolves to no address"
        )));
    }
    if !allow.allows_host(host) {
        for addr in &addrs {
            if let Some(kind) = non_public(addr.ip()) {
                if !allow.allows_addr(addr.ip()) {
                    return Err(PullError::PrivateAddress {
                        host: host.to_owned(),
                        addr: canonical(addr.ip()),
                        kind,
                    });
                }
            }
        }
    }
    Ok(CheckedTarget {
        url: url.clone(),
        domain: literal.is_none().then(|| host.to_owned()),
        addrs,
    })
}

/// An IPv6 address that merely carries an IPv4 one, as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The IPv4 address inside IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) forms.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are themselves, not IPv4-compatible forms.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// What kind of non-public address `ip` is, or `None` if it is public.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return non_public_v4(v4);
            }
            let s = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if (s[0] == 0x2001 && s[1] == 0x0db8) || s[0] & 0xfff0 == 0x3ff0 {
                Some("documentation")
            } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
                Some("discard-only")
            } else if s[0] == 0 {
                // The rest of ::/8 is reserved and never routed publicly.
                Some("reserved")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    Some(match (a, b, c) {
        _ if v4.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

/// A download that reached storage.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub meta: ObjectMeta,
    pub signature: MediaSignature,
}

/// When to give up waiting on the source.
#[derive(Clone, Copy)]
struct Clock {
    deadline: Instant,
    idle: Duration,
    total: Duration,
}

impl Clock {
    /// Waits for `fut` no longer than the idle timeout or what is left of
    /// the total one.
    async fn wait<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, PullError> {
        let now = Instant::now();
        let budget = self.idle.min(self.deadline.saturating_duration_since(now));
        tokio::time::timeout(budget, fut)
            .await
            .map_err(|_| self.timeout(what))
    }

    fn timeout(&self, what: &str) -> PullError {
        if Instant::now() >= self.deadline {
            PullError::Timeout(format!(
                "the download did not finish within {} s (LECTERN_PULL_TIMEOUT_SECS)",
                self.total.as_secs()
            ))
        } else {
            PullError::Timeout(format!(
                "the source sent nothing for {} s while {what} (LECTERN_PULL_IDLE_SECS)",
                self.idle.as_secs()
            ))
        }
    }
}

/// Downloads `url` into `key`, following redirects, within the limits of
/// `config`. On any error nothing is left at `key`.
pub async fn download(
    store: &dyn Store,
    key: &str,
    url: &Url,
    config: &PullConfig,
    received: Arc<AtomicU64>,
) -> Result<Downloaded, PullError> {
    let clock = Clock {
        deadline: Instant::now() + config.total_timeout,
        idle: config.idle_timeout,
        total: config.total_timeout,
    };
    let response = fetch(url, config, clock).await?;
    if let Some(length) = response.content_length() {
        if length > config.max_bytes {
            return Err(too_large(config.max_bytes, Some(length)));
        }
    }
    let failure = Arc::new(Mutex::new(None));
    let mut body = guard(
        response.bytes_stream(),
        clock,
        config.max_bytes,
        failure.clone(),
        received,
    );
    // Sniff before storing anything, so a web page never reaches storage.
    let mut head = Vec::with_capacity(SNIFF_LEN);
    while head.len() < SNIFF_LEN {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(_)) => return Err(take_failure(&failure)),
            None => break,
        }
    }
    let signature = sniff(&head).ok_or(PullError::NotMedia)?;
    let whole: ByteStream =
        Box::pin(futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(body));
    match store.put(key, whole, PutOptions::default()).await {
        Ok(meta) => Ok(Downloaded { meta, signature }),
        Err(e) => {
            // The store discards a failed put; deleting again costs nothing
            // and covers a backend that committed before the body failed.
            if let Err(cleanup) = store.delete(key).await {
                tracing::warn!(key, error = %cleanup, "could not remove a failed pull's object");
            }
            let guarded = failure.lock().expect("failure slot").take();
            Err(guarded.unwrap_or(PullError::Storage(e)))
        }
    }
}

fn take_failure(slot: &Mutex<Option<PullError>>) -> PullError {
    slot.lock()
        .expect("failure slot")
        .take()
        .unwrap_or_else(|| PullError::Unreachable("the download failed".to_owned()))
}

fn too_large(limit: u64, announced: Option<u64>) -> PullError {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    PullError::TooLarge(match announced {
        Some(length) => format!(
            "the source is {:.1} MiB; this server accepts at most {:.1} MiB (LECTERN_PULL_MAX_BYTES)",
            mib(length),
            mib(limit)
        ),
        None => format!(
            "the source sent more than {:.1} MiB, the most this server accepts (LECTERN_PULL_MAX_BYTES)",
            mib(limit)
        ),
    })
}

/// Requests `url`, following up to `max_redirects` redirects, each target
/// checked and pinned like the first.
async fn fetch(
    url: &Url,
    config: &PullConfig,
    clock: Clock,
) -> Result<reqwest::Response, PullError> {
    let mut current = url.clone();
    for hop in 0..=config.max_redirects {
        let target = check_target(&current, &config.allow).await?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect on its own terms.
            .no_proxy()
            .connect_timeout(config.idle_timeout)
            .user_agent(concat!(
                "Lectern/",
                env!("CARGO_PKG_VERSION"),
                " (URL pull)"
            ));
        if let Some(domain) = &target.domain {
            builder = builder.resolve_to_addrs(domain, &target.addrs);
        }
        let client = builder
            .build()
            .map_err(|e| PullError::Unreachable(format!("cannot set up the HTTP client: {e}")))?;
        let response = clock
            .wait("connecting", client.get(target.url.clone()).send())
            .await?
            .map_err(|e| unreachable(&target.url, &e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| PullError::HttpError {
                    status: status.as_u16(),
                    detail: " without a Location header".to_owned(),
                })?;
            current = current.join(location).map_err(|e| {
                PullError::UrlNotAllowed(format!("the source redirected to an invalid URL ({e})"))
            })?;
            tracing::debug!(hop, to = %redact(&current), "following a redirect");
            continue;
        }
        if status != reqwest::StatusCode::OK {
            return Err(PullError::HttpError {
                status: status.as_u16(),
                detail: status
                    .canonical_reason()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
            });
        }
        return Ok(response);
    }
    Err(PullError::Unreachable(format!(
        "the source redirected more than {} times",
        config.max_redirects
    )))
}

fn unreachable(url: &Url, e: &reqwest::Error) -> PullError {
    // reqwest's Display repeats the URL, query string included; describe
    // the failure by its source chain instead.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let host = url.host_str().unwrap_or_default();
    if cause.is_empty() {
        PullError::Unreachable(format!("cannot reach {host}"))
    } else {
        PullError::Unreachable(format!("cannot reach {host}: {cause}"))
    }
}

/// The response body as a store body that fails, recording why, when the
/// source exceeds the size limit, goes quiet or runs out of time.
fn guard(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    clock: Clock,
    max_bytes: u64,
    failure: Arc<Mutex<Option<PullError>>>,
    received: Arc<AtomicU64>,
) -> ByteStream {
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        clock: Clock,
        max_bytes: u64,
        total: u64,
        failure: Arc<Mutex<Option<PullError>>>,
        received: Arc<AtomicU64>,
        done: bool,
    }
    let state = State {
        body: Box::pin(body),
        clock,
        max_bytes,
        total: 0,
        failure,
        received,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let outcome = match st.clock.wait("downloading", st.body.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(chunk))) => {
                st.total += chunk.len() as u64;
                st.received.store(st.total, Ordering::Relaxed);
                if st.total > st.max_bytes {
                    Err(too_large(st.max_bytes, None))
                } else {
                    Ok(chunk)
                }
            }
            Ok(Some(Err(e))) => Err(PullError::Unreachable(format!(
                "the connection to the source broke after {} bytes: {}",
                st.total,
                e.source()
                    .map_or_else(|| "closed".to_owned(), ToString::to_string)
            ))),
            Err(timeout) => Err(timeout),
        };
        match outcome {
            Ok(chunk) => Some((Ok(chunk), st)),
            Err(e) => {
                let message = e.to_string();
                *st.failure.lock().expect("failure slot") = Some(e);
                st.done = true;
                Some((Err(std::io::Error::other(message)), st))
            }
        }
    }))
}

/// A URL pull asked for by a caller of an organisation.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub organisation_id: Uuid,
    pub source_url: String,
    pub title: Option<String>,
    pub profile: Option<String>,
}

/// A pull as recorded, and as a partner polls it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct PullRecord {
    /// Also the id of the asset it creates.
    pub id: Uuid,
    pub organisation_id: Uuid,
    /// Redacted: no credentials or query string.
    pub source_url: String,
    pub title: Option<String>,
    pub profile: String,
    /// `pulling`, `completed` or `failed`.
    pub state: String,
    pub received_bytes: i64,
    /// 1 for the first download; more once it was resumed after its
    /// process died.
    pub attempt: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

const PULL_COLUMNS: &str = "id, organisation_id, source_url, title, profile, state, \
     received_bytes, attempt, error_code, error_message, created_at, updated_at";

/// How often a running pull proves it is alive; a `pulling` row silent for
/// much longer than this belongs to a process that died.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Silence after which a `pulling` row is declared interrupted.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Downloads a pull gets in all: the first and the resumptions after its
/// process died. A source that kills every process that pulls it must not
/// take the cluster down forever.
pub const MAX_ATTEMPTS: i32 = 3;

/// Keeps pull URLs sealed at rest, so a pull can be resumed by another
/// process without its URL's secrets (a presigned query, credentials) ever
/// being stored in the clear. The API implements it with the field keys.
pub trait UrlVault: Send + Sync {
    fn seal(&self, pull: Uuid, url: &str) -> Vec<u8>;
    /// `None` if the sealed URL cannot be opened (its key was retired).
    fn open(&self, pull: Uuid, sealed: &[u8]) -> Option<String>;
}

/// A pull that passed every check that needs no download (or was claimed
/// for another attempt), ready to [`run`].
#[derive(Debug)]
pub struct Accepted {
    pub record: PullRecord,
    url: Url,
}

/// Where an attempt stores the source: the first at the asset's usual
/// source key, each resumption beside it, so an earlier attempt that was
/// only slow never overwrites or deletes the object of the one that owns
/// the pull.
pub fn attempt_key(id: Uuid, attempt: i32) -> String {
    match attempt {
        1 => assets::source_key(id),
        n => format!("{}-attempt{n}", assets::source_key(id)),
    }
}

/// Validates a request, checks the first target (so an obviously refused
/// URL is answered at once, not through polling) and records the pull.
/// With a `vault`, the pull can be resumed by another process if this one
/// dies; without one it then fails with `pull_interrupted`.
pub async fn begin(
    db: &PgPool,
    config: &PullConfig,
    vault: Option<&dyn UrlVault>,
    request: PullRequest,
) -> Result<Accepted, PullError> {
    let url = parse_url(&request.source_url)?;
    let title = match request.title.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) if t.chars().count() > 300 || t.chars().any(char::is_control) => {
            return Err(PullError::InvalidRequest(
                "invalid_title",
                "title is at most 300 characters without control characters".to_owned(),
            ))
        }
        Some(t) => Some(t.to_owned()),
    };
    let profile = match request.profile {
        None => config.default_profile.clone(),
        Some(p) if config.profiles.contains(&p) => p,
        Some(p) => {
            return Err(PullError::InvalidRequest(
                "invalid_profile",
                format!(
                    "{p:?} is not an encoding profile; expected one of {}",
                    config.profiles.join(", ")
                ),
            ))
        }
    };
    check_target(&url, &config.allow).await?;
    let id = Uuid::now_v7();
    let record: PullRecord = sqlx::query_as(&format!(
        "INSERT INTO pulls (id, organisation_id, source_url, source_url_sealed, title, profile)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {PULL_COLUMNS}"
    ))
    .bind(id)
    .bind(request.organisation_id)
    .bind(redact(&url))
    .bind(vault.map(|vault| vault.seal(id, url.as_str())))
    .bind(title)
    .bind(profile)
    .fetch_one(db)
    .await?;
    Ok(Accepted { record, url })
}

/// Downloads an accepted pull and records the outcome: the asset (in the
/// same transaction that marks the pull completed, so the trigger enqueues
/// its transcode) or the failure with its code. Returns the final record.
/// Stops early, recording nothing, if a newer attempt claimed the pull.
pub async fn run(
    db: &PgPool,
    store: &dyn Store,
    config: &PullConfig,
    accepted: Accepted,
) -> Result<PullRecord, PullError> {
    let Accepted { record, url } = accepted;
    let (id, attempt) = (record.id, record.attempt);
    let key = attempt_key(id, attempt);
    let received = Arc::new(AtomicU64::new(0));
    let outcome = tokio::select! {
        outcome = download(store, &key, &url, config, received.clone()) => outcome,
        superseded = keep_alive(db, id, attempt, &received) => Err(superseded),
    };
    let result = match outcome {
        Ok(done) => record_success(db, &record, &key, &done).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        if matches!(e, PullError::Superseded) {
            tracing::warn!(pull = %id, attempt, "a newer attempt took the pull over; stopping this one");
        } else if e.is_internal() {
            tracing::error!(pull = %id, error = %e, "URL pull failed");
        } else {
            tracing::info!(pull = %id, code = e.code(), error = %e, "URL pull refused");
        }
        sqlx::query(
            "UPDATE pulls SET state = 'failed', error_code = $2, error_message = $3,
                 updated_at = now()
             WHERE id = $1 AND state = 'pulling' AND attempt = $4",
        )
        .bind(id)
        .bind(e.code())
        .bind(e.public_message())
        .bind(attempt)
        .execute(db)
        .await?;
        // The key is this attempt's own; only an asset made of it (a
        // database error may hide a commit) must keep it.
        if !matches!(e, PullError::Database(_)) {
            let _ = store.delete(&key).await;
        }
    }
    status(db, id, None)
        .await?
        .ok_or_else(|| PullError::Database(sqlx::Error::RowNotFound))
}

/// Proves every [`HEARTBEAT`] that this attempt is alive and reports its
/// progress; returns once a newer attempt owns the pull (or it ended
/// elsewhere), which stops the download.
async fn keep_alive(db: &PgPool, id: Uuid, attempt: i32, received: &AtomicU64) -> PullError {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        let beat = sqlx::query(
            "UPDATE pulls SET received_bytes = $2, updated_at = now()
             WHERE id = $1 AND state = 'pulling' AND attempt = $3",
        )
        .bind(id)
        .bind(i64::try_from(received.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
        .bind(attempt)
        .execute(db)
        .await;
        // A database hiccup is no reason to stop a download that is going
        // well; only a definite "not yours any more" is.
        if matches!(beat, Ok(done) if done.rows_affected() == 0) {
            return PullError::Superseded;
        }
    }
}

/// Claims the oldest pull whose process stopped reporting for
/// [`STALE_AFTER`], for another attempt; `None` when there is none. Call
/// [`run`] on what it returns. A pull that cannot be resumed (no sealed
/// URL, its key retired, attempts used up) is failed with
/// `pull_interrupted` instead, and the next one is looked at.
pub async fn claim_interrupted(
    db: &PgPool,
    vault: &dyn UrlVault,
) -> Result<Option<Accepted>, PullError> {
    // Settled here too, so a pull nobody polls does not stay `pulling`.
    fail_unresumable(db, None).await?;
    loop {
        let claimed: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "UPDATE pulls SET attempt = attempt + 1, received_bytes = 0, updated_at = now()
             WHERE id = (
                 SELECT id FROM pulls
                 WHERE state = 'pulling' AND updated_at < now() - make_interval(secs => $1)
                   AND source_url_sealed IS NOT NULL AND attempt < $2
                 ORDER BY updated_at
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, source_url_sealed",
        )
        .bind(STALE_AFTER.as_secs_f64())
        .bind(MAX_ATTEMPTS)
        .fetch_optional(db)
        .await?;
        let Some((id, sealed)) = claimed else {
            return Ok(None);
        };
        let url = sealed
            .and_then(|sealed| vault.open(id, &sealed))
            .and_then(|raw| Url::parse(&raw).ok());
        let record = status(db, id, None)
            .await?
            .ok_or(PullError::Database(sqlx::Error::RowNotFound))?;
        match url {
            Some(url) => {
                tracing::info!(pull = %id, attempt = record.attempt, "resuming a URL pull whose process stopped");
                return Ok(Some(Accepted { record, url }));
            }
            None => {
                tracing::warn!(pull = %id, "an interrupted pull's URL cannot be opened; failing it");
                sqlx::query(
                    "UPDATE pulls SET state = 'failed', error_code = 'pull_interrupted',
                         error_message = $2, updated_at = now()
                     WHERE id = $1 AND state = 'pulling'",
                )
                .bind(id)
                .bind(INTERRUPTED)
                .execute(db)
                .await?;
            }
        }
    }
}

async fn record_success(
    db: &PgPool,
    record: &PullRecord,
    key: &str,
    done: &Downloaded,
) -> Result<(), PullError> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE pulls SET state = 'completed', received_bytes = $2, updated_at = now()
         WHERE id = $1 AND state = 'pulling' AND attempt = $3",
    )
    .bind(record.id)
    .bind(i64::try_from(done.meta.size).unwrap_or(i64::MAX))
    .bind(record.attempt)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        // A newer attempt owns the pull, or it was declared interrupted
        // meanwhile (this process looked dead): this copy must not become
        // an asset.
        return Err(PullError::Superseded);
    }
    assets::create(
        &mut *tx,
        &NewAsset {
            id: record.id,
            organisation_id: record.organisation_id,
            source_key: key.to_owned(),
            title: record.title.clone(),
            profile: record.profile.clone(),
            priority: 0,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(pull = %record.id, signature = ?done.signature, size = done.meta.size, "URL pull complete; asset recorded");
    Ok(())
}

/// [`begin`] then [`run`], waiting for the outcome.
pub async fn pull(
    db: &PgPool,
    store: &dyn Store,
    config: &PullConfig,
    request: PullRequest,
) -> Result<PullRecord, PullError> {
    let accepted = begin(db, config, None, request).await?;
    run(db, store, config, accepted).await
}

/// Makes pulls a process is giving up (a graceful shutdown, after their
/// downloads stopped) claimable by [`claim_interrupted`] at once, as if
/// they had been silent for long. Only the given attempts, if still
/// `pulling`: one that completed or was taken over meanwhile is left
/// alone. Returns how many were handed back.
pub async fn hand_back(db: &PgPool, pulls: &[(Uuid, i32)]) -> Result<u64, PullError> {
    let (ids, attempts): (Vec<Uuid>, Vec<i32>) = pulls.iter().copied().unzip();
    Ok(sqlx::query(
        "UPDATE pulls SET updated_at = now() - 2 * make_interval(secs => $3)
         FROM UNNEST($1::uuid[], $2::int[]) AS given (id, attempt)
         WHERE pulls.id = given.id AND pulls.attempt = given.attempt
           AND pulls.state = 'pulling'",
    )
    .bind(ids)
    .bind(attempts)
    .bind(STALE_AFTER.as_secs_f64())
    .execute(db)
    .await?
    .rows_affected())
}

const INTERRUPTED: &str = "the server stopped during the download; submit the URL again";

/// Fails as `pull_interrupted` the silent pulls (one, or with `None` all)
/// that no node will resume: no sealed URL, or attempts used up.
async fn fail_unresumable(db: &PgPool, only: Option<Uuid>) -> Result<(), PullError> {
    sqlx::query(
        "UPDATE pulls SET state = 'failed', error_code = 'pull_interrupted',
             error_message = $4, updated_at = now()
         WHERE ($1::uuid IS NULL OR id = $1) AND state = 'pulling'
           AND updated_at < now() - make_interval(secs => $2)
           AND (source_url_sealed IS NULL OR attempt >= $3)",
    )
    .bind(only)
    .bind(STALE_AFTER.as_secs_f64())
    .bind(MAX_ATTEMPTS)
    .bind(INTERRUPTED)
    .execute(db)
    .await?;
    Ok(())
}

/// A pull as its organisation (or, with `None`, anyone) sees it. A pull
/// still `pulling` whose process stopped reporting, and that no node will
/// resume (no sealed URL, or attempts used up), is declared
/// `pull_interrupted` here, so a partner never polls a dead pull forever.
pub async fn status(
    db: &PgPool,
    id: Uuid,
    org_scope: Option<Uuid>,
) -> Result<Option<PullRecord>, PullError> {
    fail_unresumable(db, Some(id)).await?;
    Ok(sqlx::query_as(&format!(
        "SELECT {PULL_COLUMNS} FROM pulls WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)"
    ))
    .bind(id)
    .bind(org_scope)
    .fetch_optional(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_every_non_public_range() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.251", "multicast"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.7", "documentation"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique-local"),
            ("fc12::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
        ] {
            assert_eq!(non_public(ip(addr)), Some(kind), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(non_public(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn allow_list_parses_hosts_addresses_and_networks() {
        let list: AllowList = "media.intranet, 10.20.0.0/16 127.0.0.1,[::1]"
            .parse()
            .unwrap();
        assert!(list.allows_host("MEDIA.intranet"));
        assert!(!list.allows_host("other.intranet"));
        assert!(list.allows_addr(ip("10.20.3.4")));
        assert!(!list.allows_addr(ip("10.21.0.1")));
        assert!(list.allows_addr(ip("127.0.0.1")));
        assert!(list.allows_addr(ip("::ffff:127.0.0.1")));
        assert!(list.allows_addr(ip("::1")));
        assert!(!list.allows_addr(ip("127.0.0.2")));
        assert!("10.0.0.0/33".parse::<AllowList>().is_err());
        assert!("http://x".parse::<AllowList>().is_err());
    }

    #[test]
    fn redaction_drops_credentials_and_query() {
        let url =
            Url::parse("https://user:pw@cdn.example.org/a/b.mp4?X-Amz-Signature=s3cret#t").unwrap();
        let shown = redact(&url);
        assert_eq!(shown, "https://cdn.example.org/a/b.mp4");
        assert!(!shown.contains("s3cret") && !shown.contains("pw"));
    }

    #[test]
    fn only_http_and_https() {
        for bad in [
            "file:///etc/passwd",
            "ftp://example.org/a.mp4",
            "gopher://x/",
            "not a url",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.code(), "url_not_allowed", "{bad}");
        }
        assert!(parse_url("https://example.org/a.mp4").is_ok());
    }
}

//! The one way Lectern talks to hosts its callers name (URL pulls,
//! partner webhooks, notification senders): SSRF-guarded.
//!
//! A server that fetches URLs chosen by callers is a classic SSRF hole: the
//! URL can point at the cloud metadata service (169.254.169.254), at the
//! database next door, or at a name whose DNS answer changes between the
//! check and the connect (rebinding). So every request is made the same way:
//! only `http`/`https`; the host is resolved **once** ([`check_target`]);
//! every address it resolves to must be public unless the operator's
//! [`AllowList`] names the host or a network containing the address; the
//! HTTP client ([`CheckedTarget::client_builder`]) is then pinned to exactly
//! those addresses, never resolves anything itself, ignores proxy variables
//! and follows no redirect — a caller that follows redirects checks each
//! hop again from scratch.
//!
//! "Public" is decided by [`non_public`]: loopback, private, link-local
//! (the metadata service), unique- and site-local, shared (CGNAT),
//! multicast, broadcast, documentation, benchmarking and reserved ranges
//! are refused, and an IPv6 address that embeds an IPv4 one (mapped,
//! compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged by that
//! IPv4 address, so no alternative spelling reaches a private host.
//!
//! **Invariant:** no crate builds an outbound `reqwest::Client` to a
//! caller-chosen host except through this one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
pub use reqwest::Url;

/// Why a target is refused or cannot be reached. Messages never repeat a
/// URL's query string or credentials.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("{0}")]
    UrlNotAllowed(String),
    #[error(
        "{host} resolves to {addr}, a {kind} address; only public addresses are reachable \
         unless the operator allows the host or network"
    )]
    PrivateAddress {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("{0}")]
    Unreachable(String),
}

impl EgressError {
    pub fn code(&self) -> &'static str {
        match self {
            EgressError::UrlNotAllowed(_) => "url_not_allowed",
            EgressError::PrivateAddress { .. } => "private_address",
            EgressError::Unreachable(_) => "unreachable",
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

    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    pub fn allows_addr(&self, ip: IpAddr) -> bool {
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

/// Parses a URL and applies the rules that need no network.
pub fn parse_url(raw: &str) -> Result<Url, EgressError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| EgressError::UrlNotAllowed(format!("not a valid absolute URL ({e})")))?;
    check_url_shape(&url)?;
    Ok(url)
}

fn check_url_shape(url: &Url) -> Result<(), EgressError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EgressError::UrlNotAllowed(format!(
            "the {:?} scheme is not allowed; the URL must be http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EgressError::UrlNotAllowed("the URL has no host".to_owned()));
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
pub async fn check_target(url: &Url, allow: &AllowList) -> Result<CheckedTarget, EgressError> {
    check_url_shape(url)?;
    let host = url.host_str().unwrap_or_default();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| EgressError::UrlNotAllowed("the URL has no port".to_owned()))?;
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| EgressError::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(EgressError::Unreachable(format!(
            "{host} resolves to no address"
        )));
    }
    if !allow.allows_host(host) {
        for addr in &addrs {
            if let Some(kind) = non_public(addr.ip()) {
                if !allow.allows_addr(addr.ip()) {
                    return Err(EgressError::PrivateAddress {
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
pub fn canonical(ip: IpAddr) -> IpAddr {
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

impl CheckedTarget {
    /// A client builder that connects only to the checked addresses, never
    /// through a proxy (a proxy would resolve and connect on its own terms)
    /// and follows no redirect. Callers add their timeouts and user agent.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        match &self.domain {
            Some(domain) => builder.resolve_to_addrs(domain, &self.addrs),
            None => builder,
        }
    }
}

/// What [`describe`] says of a reqwest error: its innermost cause, since
/// reqwest's own `Display` repeats the URL, query string included.
pub fn describe(e: &reqwest::Error) -> String {
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    cause
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

//! Outbound HTTP to URLs that users supply (webhooks, and sources imported from a URL), safe
//! against server-side request forgery by default.
//!
//! The rules, checked twice:
//! - at submit time, [`Guard::check_url`] and [`Guard::check_resolved`]: `https` only (plain
//!   `http` only to loopback, and only with the development setting), no credentials in the
//!   URL, and every address the host resolves to allowed;
//! - at connect time, by the client's own resolver ([`Guard::client`]): every address a
//!   connection may use is checked again, so a name that resolved to a public address at
//!   submit time and to a private one now (DNS rebinding) is refused before any byte is sent.
//!
//! Refused: unspecified, loopback (unless allowed), private (10/8, 172.16/12, 192.168/16,
//! fc00::/7, 100.64/10), link-local (169.254/16 with the metadata service 169.254.169.254,
//! fe80::/10, and AWS's fd00:ec2::254), multicast, broadcast and reserved ranges, and the IPv4
//! addresses hidden in IPv4-mapped and NAT64 IPv6 addresses. The client follows no redirects by
//! itself (a redirect could lead anywhere): [`SafeClient::get`] follows at most
//! [`MAX_REDIRECTS`], each checked like the first URL, and a POST follows none. It ignores proxy
//! settings (a proxy would resolve the name itself), has connect and total timeouts, and
//! [`read_capped`] reads at most a few bytes of an answer.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL or an address is refused. Messages are safe to show to the user who gave the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a valid absolute URL")]
    Malformed,
    #[error("only https URLs are accepted")]
    Scheme,
    #[error("URLs may not carry credentials")]
    Credentials,
    #[error("the host name could not be resolved")]
    Unresolved,
    #[error("the host resolves to a {0} address, which is not allowed")]
    Address(&'static str),
}

impl Refusal {
    /// What the user who gave the URL is told: which address a name resolves to, or whether it
    /// resolves at all, stays in the log, so the refusals cannot map a private network's names.
    pub fn public(&self) -> String {
        match self {
            Refusal::Unresolved | Refusal::Address(_) => "the host does not resolve to public addresses".to_string(),
            other => other.to_string(),
        }
    }
}

/// Resolves host names; swapped in tests to play DNS tricks.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (through tokio's blocking pool).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// What the guard lets through, beyond public addresses over https.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Development only: plain `http` and loopback addresses (127.0.0.0/8, ::1). Private,
    /// link-local and metadata addresses stay refused.
    pub allow_loopback: bool,
}

/// Timeouts and limits of a client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    /// The whole request, answer included (each redirect is a request of its own).
    pub total: Duration,
    /// Longest silence while waiting for the answer's head or body, when set.
    pub read: Option<Duration>,
}

/// The rules, with the resolver they check.
#[derive(Clone)]
pub struct Guard {
    policy: Policy,
    lookup: Arc<dyn Lookup>,
}

impl Guard {
    pub fn new(policy: Policy) -> Self {
        Self { policy, lookup: Arc::new(SystemLookup) }
    }

    /// The same rules with another resolver (tests).
    pub fn with_lookup(policy: Policy, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy, lookup }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The URL's shape: scheme, credentials, and the host when it is an address literal.
    pub fn check_url(&self, raw: &str) -> Result<Url, Refusal> {
        let url = Url::parse(raw).map_err(|_| Refusal::Malformed)?;
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_loopback => {}
            _ => return Err(Refusal::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        match url.host() {
            None => return Err(Refusal::Malformed),
            Some(url::Host::Ipv4(ip)) => self.check_for_scheme(url.scheme(), IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_for_scheme(url.scheme(), IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// [`Guard::check_url`], then every address the host resolves to now.
    pub async fn check_resolved(&self, raw: &str) -> Result<Url, Refusal> {
        let url = self.check_url(raw)?;
        if let Some(url::Host::Domain(host)) = url.host() {
            let addrs = self.lookup.lookup(host.to_string()).await.map_err(|_| Refusal::Unresolved)?;
            if addrs.is_empty() {
                return Err(Refusal::Unresolved);
            }
            for ip in addrs {
                self.check_for_scheme(url.scheme(), ip)?;
            }
        }
        Ok(url)
    }

    fn check_for_scheme(&self, scheme: &str, ip: IpAddr) -> Result<(), Refusal> {
        check_ip(ip, self.policy)?;
        // Plain http is for a receiver on this machine during development, nothing else.
        if scheme == "http" && !canonical(ip).is_loopback() {
            return Err(Refusal::Scheme);
        }
        Ok(())
    }

    /// A client that checks every address it connects to, for `https` URLs; and, with the
    /// development setting, a second one for `http` URLs that connects to loopback only.
    pub fn client(&self, limits: Limits) -> anyhow::Result<SafeClient> {
        let build = |loopback_only: bool| {
            let builder = reqwest::Client::builder();
            let builder = match limits.read {
                Some(read) => builder.read_timeout(read),
                None => builder,
            };
            builder
                .dns_resolver(Arc::new(CheckingResolver {
                    lookup: self.lookup.clone(),
                    policy: self.policy,
                    loopback_only,
                }))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(limits.connect)
                .timeout(limits.total)
                .pool_idle_timeout(Duration::from_secs(30))
                .user_agent(concat!("media-worker/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let https = build(false)?;
        let http = if self.policy.allow_loopback { Some(build(true)?) } else { None };
        Ok(SafeClient { guard: self.clone(), https, http })
    }
}

/// Checks one address against the policy.
pub fn check_ip(ip: IpAddr, policy: Policy) -> Result<(), Refusal> {
    match classify(canonical(ip)) {
        None => Ok(()),
        Some("loopback") if policy.allow_loopback => Ok(()),
        Some(kind) => Err(Refusal::Address(kind)),
    }
}

/// The IPv4 address an IPv6 address stands for (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`), or the address itself.
fn canonical(ip: IpAddr) -> IpAddr {
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    };
    match ip {
        IpAddr::V6(v6) => {
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return IpAddr::V4(mapped);
            }
            let s = v6.segments();
            // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4's.
            if s[..6] == [0; 6] && !(v6.is_unspecified() || v6.is_loopback()) {
                return v4(s[6], s[7]);
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4(s[6], s[7]);
            }
            if s[0] == 0x2002 {
                return v4(s[1], s[2]);
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// The kind of a non-public address, `None` for a public one.
fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Some("metadata")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("multicast or reserved")
            } else if (a == 192 && b == 0 && v4.octets()[2] == 0) || (a == 198 && (18..20).contains(&b)) {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("metadata")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
                // Unique local, and the deprecated site-local range.
                Some("private")
            } else if (first == 0x2001 && v6.segments()[1] == 0) || v6.segments()[..3] == [0x64, 0xff9b, 1] {
                // Teredo tunnels and local-use NAT64 hide an address that cannot be checked.
                Some("reserved")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast or reserved")
            } else {
                None
            }
        }
    }
}

/// reqwest's resolver, refusing a name if any address it resolves to is refused.
struct CheckingResolver {
    lookup: Arc<dyn Lookup>,
    policy: Policy,
    /// The `http` client: loopback addresses only.
    loopback_only: bool,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.lookup(name.as_str().to_string());
        let (policy, loopback_only) = (self.policy, self.loopback_only);
        Box::pin(async move {
            let ips = lookup.await?;
            if ips.is_empty() {
                return Err(Box::new(Refusal::Unresolved) as Box<dyn std::error::Error + Send + Sync>);
            }
            for ip in &ips {
                check_ip(*ip, policy)?;
                if loopback_only && !canonical(*ip).is_loopback() {
                    return Err(Box::new(Refusal::Scheme) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Clients that only ever reach allowed addresses.
#[derive(Clone)]
pub struct SafeClient {
    guard: Guard,
    https: reqwest::Client,
    http: Option<reqwest::Client>,
}

/// Redirects a GET follows at most.
pub const MAX_REDIRECTS: usize = 5;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The URL, a redirect's target, or an address one resolved to is not allowed.
    #[error("refused: {0}")]
    Refused(Refusal),
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Connect,
    #[error("request failed")]
    Other,
}

impl SafeClient {
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Sends a POST with `body` and `headers` to `url`, checked again here (the URL may have
    /// been stored long ago, under other rules).
    pub async fn post(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, SendError> {
        let url = self.guard.check_url(url).map_err(SendError::Refused)?;
        self.client_for(&url)?.post(url).headers(headers).body(body).send().await.map_err(classify_error)
    }

    /// Sends a GET to `url`, following at most [`MAX_REDIRECTS`] redirects, each target checked
    /// as the URL itself was (scheme, credentials, address literals here; names by the
    /// resolver at connect time). Returns the first answer that is not a redirect, whatever its
    /// status, and the URL that gave it.
    pub async fn get(&self, url: &str) -> Result<(Url, reqwest::Response), SendError> {
        let mut url = self.guard.check_url(url).map_err(SendError::Refused)?;
        for _ in 0..=MAX_REDIRECTS {
            let response = self.client_for(&url)?.get(url.clone()).send().await.map_err(classify_error)?;
            let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
            let next = match location {
                Some(location) if response.status().is_redirection() => location,
                _ => return Ok((url, response)),
            };
            let next = url.join(next).map_err(|_| SendError::Refused(Refusal::Malformed))?;
            url = self.guard.check_url(next.as_str()).map_err(SendError::Refused)?;
        }
        Err(SendError::Redirects)
    }

    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, SendError> {
        match (url.scheme(), &self.http) {
            ("http", Some(http)) => Ok(http),
            ("http", None) => Err(SendError::Refused(Refusal::Scheme)),
            _ => Ok(&self.https),
        }
    }
}

fn classify_error(err: reqwest::Error) -> SendError {
    // Our resolver's refusal travels inside the connect error.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return SendError::Refused(refusal.clone());
        }
        source = e.source();
    }
    if err.is_timeout() {
        SendError::Timeout
    } else if err.is_connect() {
        SendError::Connect
    } else {
        SendError::Other
    }
}

/// Reads at most `cap` bytes of an answer's body (the rest is dropped with the connection).
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            _ => break,
        }
    }
    body
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Answers from a table; each name's answers are used in turn (the last one repeats).
    pub(crate) struct TableLookup(pub Mutex<HashMap<String, Vec<Vec<IpAddr>>>>);

    impl TableLookup {
        pub(crate) fn new(entries: &[(&str, Vec<&str>)]) -> Arc<Self> {
            let mut table: HashMap<String, Vec<Vec<IpAddr>>> = HashMap::new();
            for (name, answer) in entries {
                table.entry(name.to_string()).or_default().push(answer.iter().map(|a| a.parse().unwrap()).collect());
            }
            Arc::new(Self(Mutex::new(table)))
        }
    }

    impl Lookup for TableLookup {
        fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let mut table = self.0.lock().unwrap();
            let answer = match table.get_mut(&host) {
                Some(answers) if answers.len() > 1 => Some(answers.remove(0)),
                Some(answers) => answers.first().cloned(),
                None => None,
            };
            Box::pin(async move { answer.ok_or_else(|| std::io::Error::other("no such host")) })
        }
    }

    const STRICT: Policy = Policy { allow_loopback: false };
    const DEV: Policy = Policy { allow_loopback: true };

    #[test]
    fn addresses_are_classified() {
        let refused = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::10.0.0.1",
            "::127.0.0.1",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378::1",
            "64:ff9b:1::a00:1",
            "fec0::1",
        ];
        for ip in refused {
            assert!(check_ip(ip.parse().unwrap(), STRICT).is_err(), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "2002:5db8:d822::1", "2001:db9::1"] {
            assert_eq!(check_ip(ip.parse().unwrap(), STRICT), Ok(()), "{ip}");
        }
        // The development setting opens loopback only.
        assert_eq!(check_ip("127.0.0.1".parse().unwrap(), DEV), Ok(()));
        assert_eq!(check_ip("::1".parse().unwrap(), DEV), Ok(()));
        assert_eq!(check_ip("169.254.169.254".parse().unwrap(), DEV), Err(Refusal::Address("metadata")));
        assert_eq!(check_ip("10.0.0.1".parse().unwrap(), DEV), Err(Refusal::Address("private")));
    }

    #[test]
    fn url_shapes() {
        let strict = Guard::new(STRICT);
        assert!(strict.check_url("https://hooks.example.com/x").is_ok());
        assert_eq!(strict.check_url("http://hooks.example.com/x").unwrap_err(), Refusal::Scheme);
        assert_eq!(strict.check_url("ftp://hooks.example.com/").unwrap_err(), Refusal::Scheme);
        assert_eq!(strict.check_url("https://u:p@hooks.example.com/").unwrap_err(), Refusal::Credentials);
        assert_eq!(strict.check_url("not a url").unwrap_err(), Refusal::Malformed);
        assert_eq!(strict.check_url("https://169.254.169.254/latest").unwrap_err(), Refusal::Address("metadata"));
        assert_eq!(strict.check_url("https://[fd00:ec2::254]/").unwrap_err(), Refusal::Address("metadata"));
        assert_eq!(strict.check_url("https://127.0.0.1:8443/").unwrap_err(), Refusal::Address("loopback"));
        let dev = Guard::new(DEV);
        assert!(dev.check_url("http://127.0.0.1:9/").is_ok());
        // Plain http to anything but loopback stays refused, even in development.
        assert_eq!(dev.check_url("http://93.184.216.34/").unwrap_err(), Refusal::Scheme);
    }

    #[tokio::test]
    async fn names_are_checked_at_submit_and_again_at_connect() {
        // Public when checked, private when the request is made: DNS rebinding.
        let lookup = TableLookup::new(&[
            ("rebind.example", vec!["93.184.216.34"]),
            ("rebind.example", vec!["127.0.0.1"]),
            ("meta.example", vec!["169.254.169.254"]),
            ("mixed.example", vec!["93.184.216.34", "10.0.0.7"]),
        ]);
        let guard = Guard::with_lookup(STRICT, lookup);
        assert!(guard.check_resolved("https://rebind.example/hook").await.is_ok());
        assert_eq!(guard.check_resolved("https://meta.example/").await.unwrap_err(), Refusal::Address("metadata"));
        assert_eq!(guard.check_resolved("https://mixed.example/").await.unwrap_err(), Refusal::Address("private"));
        assert_eq!(guard.check_resolved("https://nowhere.example/").await.unwrap_err(), Refusal::Unresolved);

        let limits = Limits { connect: Duration::from_secs(2), total: Duration::from_secs(5), read: None };
        let client = guard.client(limits).unwrap();
        let sent = client.post("https://rebind.example/hook", Default::default(), b"{}".to_vec()).await;
        assert!(matches!(sent, Err(SendError::Refused(Refusal::Address("loopback")))), "{sent:?}");
    }

    /// A loopback server: `/r/<n>` redirects to `/r/<n-1>` (and `/r/0` to the body), `/to?url`
    /// redirects to the URL given.
    async fn redirecting_server() -> String {
        use axum::extract::{Path, RawQuery};
        use axum::http::{StatusCode, header};
        let app = axum::Router::new()
            .route("/body", axum::routing::get(|| async { "the body" }))
            .route(
                "/r/{n}",
                axum::routing::get(|Path(n): Path<u32>| async move {
                    let to = if n == 0 { "/body".to_string() } else { format!("/r/{}", n - 1) };
                    (StatusCode::FOUND, [(header::LOCATION, to)])
                }),
            )
            .route(
                "/to",
                axum::routing::get(|RawQuery(to): RawQuery| async move {
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to.unwrap_or_default())])
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn redirects_are_followed_a_few_times_and_each_target_checked() {
        let lookup = TableLookup::new(&[
            ("localhost", vec!["127.0.0.1"]),
            ("private.example", vec!["10.0.0.7"]),
            ("meta.example", vec!["169.254.169.254"]),
        ]);
        let client = Guard::with_lookup(DEV, lookup)
            .client(Limits { connect: Duration::from_secs(2), total: Duration::from_secs(5), read: None })
            .unwrap();
        let base = redirecting_server().await;

        // `/r/<n>` is n + 1 redirects away from the body.
        let (url, response) = client.get(&format!("{base}/r/{}", MAX_REDIRECTS - 1)).await.unwrap();
        assert_eq!((url.path(), response.status().as_u16()), ("/body", 200));
        assert_eq!(response.text().await.unwrap(), "the body");
        let too_many = client.get(&format!("{base}/r/{MAX_REDIRECTS}")).await;
        assert!(matches!(too_many, Err(SendError::Redirects)), "{too_many:?}");

        // A redirect's target is refused like a URL given directly: literals, names resolving
        // to private or metadata addresses (at connect time), other schemes, credentials.
        let refused = [
            ("http://10.0.0.1/", Refusal::Address("private")),
            ("http://169.254.169.254/latest/meta-data/", Refusal::Address("metadata")),
            ("https://private.example/x", Refusal::Address("private")),
            ("https://meta.example/x", Refusal::Address("metadata")),
            ("file:///etc/passwd", Refusal::Scheme),
            ("https://u:p@localhost/", Refusal::Credentials),
        ];
        for (target, refusal) in refused {
            let got = client.get(&format!("{base}/to?{target}")).await;
            match got {
                Err(SendError::Refused(r)) => assert_eq!(r, refusal, "{target}"),
                other => panic!("{target}: {other:?}"),
            }
        }
        // Without the development setting the same loopback server is out of reach.
        let strict = Guard::new(STRICT).client(Limits {
            connect: Duration::from_secs(2),
            total: Duration::from_secs(5),
            read: None,
        });
        let got = strict.unwrap().get(&format!("{base}/body")).await;
        assert!(matches!(got, Err(SendError::Refused(Refusal::Scheme))), "{got:?}");
    }

    #[tokio::test]
    async fn plain_http_reaches_loopback_only() {
        let lookup = TableLookup::new(&[("local.test", vec!["127.0.0.1"]), ("far.test", vec!["93.184.216.34"])]);
        let client = Guard::with_lookup(DEV, lookup)
            .client(Limits { connect: Duration::from_secs(2), total: Duration::from_secs(5), read: None })
            .unwrap();
        let sent = client.post("http://far.test/", Default::default(), Vec::new()).await;
        assert!(matches!(sent, Err(SendError::Refused(Refusal::Scheme))), "{sent:?}");
    }
}

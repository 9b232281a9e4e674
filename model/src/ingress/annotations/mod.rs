//! ingress-nginx annotations (prefix `nginx.ingress.kubernetes.io/`) parsed
//! into typed settings. Values are data: none is ever turned into config text.

use crate::error::FieldError;
use crate::ingress::template::{Piece, Template, Var};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

mod affinity;
mod cors;
mod hash_by;
mod next_upstream;

pub use affinity::{CookieAffinity, MAX_COOKIE_SECONDS, SameSite, same_site_none_incompatible};
pub use cors::{Cors, CorsOrigins, OriginPattern};
pub use hash_by::HashBy;
pub use next_upstream::NextUpstream;

pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// How the upstream is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    #[default]
    Http,
    Https,
    Grpc,
    Grpcs,
    H2c,
}

impl BackendProtocol {
    /// HTTP/2 upstream (gRPC, h2c, gRPC over TLS).
    pub fn is_h2(self) -> bool {
        matches!(
            self,
            BackendProtocol::Grpc | BackendProtocol::Grpcs | BackendProtocol::H2c
        )
    }
    pub fn is_tls(self) -> bool {
        matches!(self, BackendProtocol::Https | BackendProtocol::Grpcs)
    }
}

/// Canary settings of a canary Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    pub by_header: Option<String>,
    pub by_header_value: Option<String>,
    /// `canary-by-header-pattern`: the header value matches this regex
    /// (unanchored, as ingress-nginx); ignored when a value is set.
    pub by_header_pattern: Option<HeaderPattern>,
    /// Cookie whose value `always`/`never` decides (after the header).
    pub by_cookie: Option<String>,
    /// Share of the remaining requests: `weight` out of `weight_total`.
    pub weight: u32,
    /// `canary-weight-total`, 100 unless set.
    pub weight_total: u32,
}

impl Default for Canary {
    fn default() -> Self {
        Canary {
            by_header: None,
            by_header_value: None,
            by_header_pattern: None,
            by_cookie: None,
            weight: 0,
            weight_total: 100,
        }
    }
}

/// A compiled `canary-by-header-pattern`, equal when the text is.
#[derive(Clone, Debug)]
pub struct HeaderPattern(pub regex::Regex);

impl PartialEq for HeaderPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for HeaderPattern {}

/// An IPv4/IPv6 network (whitelist-source-range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The annotations of one Ingress, typed, with ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotations {
    pub rewrite_target: Option<String>,
    pub use_regex: bool,
    pub app_root: Option<String>,
    /// `None`: default (on for hosts with TLS).
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    /// Keep a trailing `/` on the HTTPS redirect (ingress-nginx drops it by default).
    pub preserve_trailing_slash: bool,
    pub backend_protocol: BackendProtocol,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    /// `None`: unlimited (`proxy-body-size: 0`).
    pub body_size: Option<u64>,
    pub canary: Option<Canary>,
    pub affinity: Option<CookieAffinity>,
    pub whitelist: Vec<IpNet>,
    pub upstream_vhost: Option<String>,
    pub x_forwarded_prefix: Option<String>,
    /// (target, status); the target may use nginx variables.
    pub redirect: Option<(Template, u16)>,
    /// When a failed request goes to the next endpoint.
    pub next_upstream: NextUpstream,
    /// `enable-cors` and its settings.
    pub cors: Option<Cors>,
    /// `upstream-hash-by`: endpoints chosen by a key, not in turn.
    pub hash_by: Option<HashBy>,
    /// `nginx.ingress.kubernetes.io/` annotations this Ingress has that
    /// have no effect (reported: users expect them to change behaviour).
    pub ignored: Vec<Ignored>,
}

/// An annotation that has no effect, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// The whole key, prefix included.
    pub annotation: String,
    /// Finishes "has no effect ...".
    pub why: &'static str,
}

impl Default for Annotations {
    fn default() -> Self {
        Annotations {
            rewrite_target: None,
            use_regex: false,
            app_root: None,
            ssl_redirect: None,
            force_ssl_redirect: false,
            preserve_trailing_slash: false,
            backend_protocol: BackendProtocol::Http,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            // ingress-nginx's default client_max_body_size.
            body_size: Some(1024 * 1024),
            canary: None,
            affinity: None,
            whitelist: Vec::new(),
            upstream_vhost: None,
            x_forwarded_prefix: None,
            redirect: None,
            next_upstream: NextUpstream::default(),
            cors: None,
            hash_by: None,
            ignored: Vec::new(),
        }
    }
}

impl Annotations {
    /// Paths of this Ingress are regexes (use-regex, or rewrite-target as in ingress-nginx).
    pub fn regex_paths(&self) -> bool {
        self.use_regex || self.rewrite_target.is_some()
    }
}

fn field(name: &str) -> String {
    format!("metadata.annotations[{PREFIX}{name}]")
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// nginx size syntax: `100`, `8k`, `1m`, `1g` (case-insensitive); 0 = unlimited.
pub fn parse_size(v: &str) -> Option<Option<u64>> {
    let v = v.trim();
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    let n: u64 = num.parse().ok()?;
    Some(n.checked_mul(mult).filter(|n| *n > 0))
}

/// Seconds as ingress-nginx takes them (`60`), or with an `s`/`m` unit.
pub fn parse_timeout(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60)
    } else {
        (v, 1)
    };
    let n: u64 = num.parse().ok()?;
    (n > 0 && n <= 86400 * 7).then(|| Duration::from_secs(n * mult))
}

/// A redirect value: an absolute URL or a path, where nginx variables may
/// stand for any part after the start (or for the scheme).
fn redirect_template(v: &str) -> Result<Template, String> {
    if v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("{v:?} is not an absolute URL or path"));
    }
    let t = Template::parse(v)?;
    let starts_as_target =
        |s: &str| s.starts_with('/') || s.starts_with("http://") || s.starts_with("https://");
    let scheme_var = matches!(t.0.first(), Some(Piece::Var(Var::Scheme)))
        && matches!(t.0.get(1), Some(Piece::Text(s)) if s.starts_with("://"));
    if starts_as_target(t.prefix()) || scheme_var {
        Ok(t)
    } else {
        Err(format!("{v:?} is not an absolute URL or path"))
    }
}

/// ingress-nginx annotations that switch on a protection: authentication,
/// client certificates, deny lists, request rate limits, a WAF, upstream
/// certificate checks, or TLS passthrough. Ignoring one, as other unknown
/// annotations are, would serve the route without what it asks for; so an
/// Ingress using one is refused instead. Settings that only tune such a
/// protection (`auth-realm`, `satisfy`, ...) switch nothing on alone.
fn is_unsupported_protection(name: &str) -> bool {
    const ON: [&str; 14] = [
        "auth-url",
        "auth-type",
        "auth-secret",
        "auth-tls-secret",
        "auth-tls-verify-client",
        "denylist-source-range",
        "limit-rps",
        "limit-rpm",
        "limit-connections",
        "global-rate-limit",
        "ssl-passthrough",
        "proxy-ssl-verify",
        "enable-modsecurity",
        "enable-owasp-core-rules",
    ];
    ON.contains(&name)
}

/// An HTTP field name (RFC 9110 token): anything else could never match.
pub(crate) fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A value that leaves a protection off (so ignoring it changes nothing).
fn is_off(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "off" | "0"
    )
}

/// Parses the annotations; every bad value is an error naming its annotation.
/// Other `nginx.ingress.kubernetes.io/` annotations are not acted on and
/// listed in [`Annotations::ignored`]; snippet annotations and protections
/// nodeway lacks are refused.
pub fn parse(all: Option<&BTreeMap<String, String>>) -> (Annotations, Vec<FieldError>) {
    let mut a = Annotations::default();
    let mut errs = Vec::new();
    let Some(all) = all else { return (a, errs) };
    let mut canary = Canary::default();
    let mut canary_on = false;
    let mut affinity = affinity::AffinityBuilder::default();
    let mut perm = None;
    let mut perm_code = 301u16;
    let mut temp = None;
    let mut cors = cors::CorsBuilder::default();
    let mut hash_by = hash_by::HashByBuilder::default();
    for (k, v) in all {
        let Some(name) = k.strip_prefix(PREFIX) else {
            continue;
        };
        let mut bad = |why: String| errs.push(FieldError::new(field(name), why));
        let bool_of = |v: &str| parse_bool(v);
        match name {
            n if n.ends_with("-snippet") || n == "configuration-snippet" => bad(
                "snippet annotations are refused: manifest text is never configuration code".into(),
            ),
            n if is_unsupported_protection(n) && !is_off(v) => bad(
                "not supported: this Ingress asks for a protection nodeway does not \
                 provide, and serving it without would expose what it protects"
                    .into(),
            ),
            "rewrite-target" => {
                if v.is_empty() {
                    bad("must not be empty".into())
                } else {
                    a.rewrite_target = Some(v.clone())
                }
            }
            "use-regex" => match bool_of(v) {
                Some(b) => a.use_regex = b,
                None => bad(format!("{v:?} is not true or false")),
            },
            "app-root" => {
                if v.starts_with('/') && !v.contains("://") {
                    a.app_root = Some(v.clone())
                } else {
                    bad(format!("{v:?} must be a path starting with '/'"))
                }
            }
            "ssl-redirect" => match bool_of(v) {
                Some(b) => a.ssl_redirect = Some(b),
                None => bad(format!("{v:?} is not true or false")),
            },
            "force-ssl-redirect" => match bool_of(v) {
                Some(b) => a.force_ssl_redirect = b,
                None => bad(format!("{v:?} is not true or false")),
            },
            "preserve-trailing-slash" => match bool_of(v) {
                Some(b) => a.preserve_trailing_slash = b,
                None => bad(format!("{v:?} is not true or false")),
            },
            "backend-protocol" => {
                a.backend_protocol = match v.trim().to_ascii_uppercase().as_str() {
                    "HTTP" => BackendProtocol::Http,
                    "HTTPS" => BackendProtocol::Https,
                    "GRPC" => BackendProtocol::Grpc,
                    "GRPCS" => BackendProtocol::Grpcs,
                    "H2C" => BackendProtocol::H2c,
                    // Values ingress-nginx takes that we do not serve.
                    "FCGI" | "AUTO_HTTP" => {
                        bad(format!(
                            "{v:?} is not supported by nodeway (HTTP, HTTPS, GRPC, GRPCS and H2C are)"
                        ));
                        continue;
                    }
                    _ => {
                        bad(format!("{v:?} is not one of HTTP, HTTPS, GRPC, GRPCS, H2C"));
                        continue;
                    }
                }
            }
            "proxy-connect-timeout" | "proxy-read-timeout" | "proxy-send-timeout" => {
                match parse_timeout(v) {
                    Some(d) if name == "proxy-connect-timeout" => a.connect_timeout = d,
                    Some(d) if name == "proxy-read-timeout" => a.read_timeout = d,
                    Some(d) => a.send_timeout = d,
                    None => bad(format!("{v:?} is not a number of seconds")),
                }
            }
            "proxy-body-size" => match parse_size(v) {
                Some(s) => a.body_size = s,
                None => bad(format!("{v:?} is not a size such as 8k, 1m or 0")),
            },
            "canary" => match bool_of(v) {
                Some(b) => canary_on = b,
                None => bad(format!("{v:?} is not true or false")),
            },
            "canary-by-header" if is_token(v) => canary.by_header = Some(v.clone()),
            "canary-by-header" => bad(format!("{v:?} is not a header name")),
            "canary-by-header-value" => canary.by_header_value = Some(v.clone()),
            "canary-by-header-pattern" => match regex::Regex::new(v) {
                Ok(r) => canary.by_header_pattern = Some(HeaderPattern(r)),
                Err(e) => bad(format!("{v:?} is not a regular expression: {e}")),
            },
            "canary-by-cookie" => canary.by_cookie = Some(v.clone()),
            // Checked against the total once both are read.
            "canary-weight" => match v.trim().parse::<u32>() {
                Ok(w) => canary.weight = w,
                _ => bad(format!("{v:?} is not a whole number")),
            },
            "canary-weight-total" => match v.trim().parse::<u32>() {
                Ok(t) if t > 0 => canary.weight_total = t,
                _ => bad(format!("{v:?} is not a whole number above 0")),
            },
            "affinity"
            | "session-cookie-name"
            | "session-cookie-path"
            | "session-cookie-max-age"
            | "session-cookie-expires"
            | "session-cookie-secure"
            | "session-cookie-samesite"
            | "session-cookie-conditional-samesite-none"
            | "session-cookie-change-on-failure" => {
                if let Err(why) = affinity.set(name, v) {
                    bad(why)
                }
            }
            "whitelist-source-range" | "allowlist-source-range" => {
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match IpNet::parse(part) {
                        Some(n) => a.whitelist.push(n),
                        None => bad(format!("{part:?} is not an IP address or CIDR")),
                    }
                }
            }
            "upstream-vhost" => {
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) {
                    a.upstream_vhost = Some(v.clone())
                } else {
                    bad(format!("{v:?} is not a host name"))
                }
            }
            "x-forwarded-prefix" => {
                if v.bytes().all(|b| b.is_ascii_graphic()) {
                    a.x_forwarded_prefix = Some(v.clone())
                } else {
                    bad(format!("{v:?} must be printable ASCII"))
                }
            }
            "permanent-redirect" | "temporal-redirect" => match redirect_template(v) {
                Err(why) => bad(why),
                Ok(t) if name == "permanent-redirect" => perm = Some(t),
                Ok(t) => temp = Some(t),
            },
            "proxy-next-upstream" | "proxy-next-upstream-tries" | "proxy-next-upstream-timeout" => {
                if let Err(why) = a.next_upstream.set(name, v) {
                    bad(why)
                }
            }
            "enable-cors"
            | "cors-allow-origin"
            | "cors-allow-methods"
            | "cors-allow-headers"
            | "cors-expose-headers"
            | "cors-allow-credentials"
            | "cors-max-age" => {
                if let Err(why) = cors.set(name, v) {
                    bad(why)
                }
            }
            "upstream-hash-by" | "upstream-hash-by-subset" | "upstream-hash-by-subset-size" => {
                if let Err(why) = hash_by.set(name, v) {
                    bad(why)
                }
            }
            "permanent-redirect-code" => match v.trim().parse::<u16>() {
                Ok(c) if (300..=308).contains(&c) => perm_code = c,
                _ => bad(format!("{v:?} is not a redirect status 300..308")),
            },
            other => a.ignored.push(Ignored {
                annotation: format!("{PREFIX}{other}"),
                why: "in nodeway (it is not acted on)",
            }),
        }
    }
    if canary.weight > canary.weight_total {
        errs.push(FieldError::new(
            field("canary-weight"),
            format!(
                "{} is above the total weight {} (canary-weight-total, default 100)",
                canary.weight, canary.weight_total
            ),
        ));
        canary.weight = 0;
    }
    if canary_on {
        a.canary = Some(canary);
    }
    a.affinity = affinity.finish();
    a.cors = cors.finish();
    a.hash_by = hash_by.finish();
    // ingress-nginx picks the sticky balancer when affinity is set and
    // never looks at upstream-hash-by.
    if a.affinity.is_some() && a.hash_by.take().is_some() {
        a.ignored.push(Ignored {
            annotation: format!("{PREFIX}upstream-hash-by"),
            why: "with affinity: cookie (ingress-nginx ignores it too)",
        });
    }
    // ingress-nginx: permanent-redirect takes precedence over temporal-redirect.
    a.redirect = perm.map(|p| (p, perm_code)).or(temp.map(|t| (t, 302)));
    (a, errs)
}

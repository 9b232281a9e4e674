//! The compiled Gateway API routes: per served port, the listeners by
//! hostname, and per listener the rules in the spec's precedence order, so
//! a request takes the first rule that matches.

use super::status::GatewayApiStatus;
use super::types::{HeaderModifier, HttpMethod, RequestRedirect, UrlRewrite};
use crate::ingress::TlsEntry;
use crate::ingress::{Route, RouteBackend, normalize_host};
use crate::snapshot::Listen;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Everything compiled from the Gateway API objects.
#[derive(Debug, Default)]
pub struct GatewayTable {
    /// What is served where: a Gateway address and listener port, or a
    /// listener port on every node address (`Listen::NodePort`).
    pub(crate) ports: BTreeMap<Listen, PortRoutes>,
    pub(crate) status: GatewayApiStatus,
}

impl GatewayTable {
    pub fn port(&self, at: &Listen) -> Option<&PortRoutes> {
        self.ports.get(at)
    }

    pub fn ports(&self) -> impl Iterator<Item = (&Listen, &PortRoutes)> {
        self.ports.iter()
    }

    pub fn status(&self) -> &GatewayApiStatus {
        &self.status
    }

    /// No Gateway listener is served (requests skip the Gateway lookup).
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

/// The listeners sharing one address and port (all HTTP or all HTTPS).
#[derive(Debug, Default)]
pub struct PortRoutes {
    pub tls: bool,
    /// Most specific hostname first: exact, then wildcards with the longest
    /// suffix, then a listener without hostname.
    pub(crate) listeners: Vec<Arc<ListenerRoutes>>,
}

impl PortRoutes {
    /// The listener a request's Host selects: only the most specific
    /// listener's routes serve it (listener isolation).
    pub fn listener(&self, host: &str) -> Option<&ListenerRoutes> {
        // Lower-cased, port and trailing dot dropped (the spec ignores the port).
        self.listener_of(&normalize_host(host))
    }

    /// [`Self::listener`] for a host already normalized.
    fn listener_of(&self, host: &str) -> Option<&ListenerRoutes> {
        self.listeners
            .iter()
            .find(|l| {
                l.hostname
                    .as_deref()
                    .is_none_or(|h| hostname_matches(h, host))
            })
            .map(|l| l.as_ref())
    }

    /// The certificate for a TLS handshake's SNI name: that of the
    /// listener the name selects (without SNI, a listener without hostname).
    pub fn cert_for(&self, sni: Option<&str>) -> Option<&TlsEntry> {
        self.listener(sni.unwrap_or(""))?.cert.as_ref()
    }

    pub fn listeners(&self) -> impl Iterator<Item = &ListenerRoutes> {
        self.listeners.iter().map(|l| l.as_ref())
    }

    /// The rule for a request, by the spec's precedence; `None`: 404.
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<&Arc<GatewayRule>> {
        // Normalized once for both lookups.
        let host = normalize_host(req.host);
        self.listener_of(&host)?.find_for(&host, req)
    }
}

/// What matching reads of a request.
pub struct RequestFacts<'a> {
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a str,
    /// A header's value by name (case-insensitive), repeated values joined with ",".
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

/// One Gateway listener and the rules of the routes attached to it.
#[derive(Debug)]
pub struct ListenerRoutes {
    /// `namespace/name` of the Gateway.
    pub gateway: Arc<str>,
    pub name: Arc<str>,
    pub hostname: Option<Box<str>>,
    pub port: u16,
    /// The certificate of an HTTPS listener.
    pub cert: Option<TlsEntry>,
    /// Rules of routes by the hostname they serve here (exact), in precedence order.
    pub(crate) hosts: HashMap<Box<str>, Vec<MatchEntry>>,
    /// `*.suffix` hostnames as (".suffix", rules), longest suffix first.
    pub(crate) wildcards: Vec<(Box<str>, Vec<MatchEntry>)>,
    /// Rules of routes that name no hostname.
    pub(crate) any_host: Vec<MatchEntry>,
}

impl ListenerRoutes {
    /// The first rule that matches, taking routes by hostname specificity:
    /// exact, then the longest wildcard, then routes without hostnames.
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<&Arc<GatewayRule>> {
        self.find_for(&normalize_host(req.host), req)
    }

    /// [`Self::find`] with the request's host already normalized.
    fn find_for(&self, host: &str, req: &RequestFacts<'_>) -> Option<&Arc<GatewayRule>> {
        let exact = self.hosts.get(host).into_iter();
        let wild = self
            .wildcards
            .iter()
            .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(&**suffix))
            .map(|(_, rules)| rules);
        exact
            .chain(wild)
            .chain(std::iter::once(&self.any_host))
            .flat_map(|rules| rules.iter())
            .find(|e| e.matcher.matches(req))
            .map(|e| &e.rule)
    }

    /// Every (hostname, rule) pair, for `check`: "" for routes without hostnames.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &MatchEntry)> {
        let exact = self
            .hosts
            .iter()
            .flat_map(|(h, r)| r.iter().map(move |e| (&**h, e)));
        let wild = self
            .wildcards
            .iter()
            .flat_map(|(h, r)| r.iter().map(move |e| (&**h, e)));
        exact
            .chain(wild)
            .chain(self.any_host.iter().map(|e| ("", e)))
    }
}

/// Whether a listener or route hostname (exact or `*.suffix`) covers `host`.
/// A wildcard stands for one or more labels, never for none.
pub fn hostname_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && ends_with_ignore_case(host, suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// One match of a rule, ready to test against a request.
#[derive(Debug)]
pub struct MatchEntry {
    pub matcher: RequestMatch,
    pub rule: Arc<GatewayRule>,
}

#[derive(Clone, Debug)]
pub struct RequestMatch {
    pub path: PathMatch,
    pub method: Option<HttpMethod>,
    pub headers: Vec<ValueMatch>,
    pub query: Vec<ValueMatch>,
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Exact(Box<str>),
    /// Without its trailing `/`: `/abc` and `/abc/` both match `/abc`,
    /// `/abc/` and `/abc/def`, never `/abcd`.
    Prefix(Box<str>),
    /// Anchored at both ends.
    Regex(regex::Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == &**p,
            PathMatch::Prefix(p) => {
                path.starts_with(&**p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// A header or query parameter test.
#[derive(Clone, Debug)]
pub struct ValueMatch {
    pub name: Box<str>,
    pub value: ValuePattern,
}

#[derive(Clone, Debug)]
pub enum ValuePattern {
    Exact(Box<str>),
    /// Anchored at both ends.
    Regex(regex::Regex),
}

impl ValuePattern {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValuePattern::Exact(e) => v == &**e,
            ValuePattern::Regex(re) => re.is_match(v),
        }
    }
}

impl RequestMatch {
    pub fn matches(&self, req: &RequestFacts<'_>) -> bool {
        self.path.matches(req.path)
            && self.method.is_none_or(|m| m.as_str() == req.method)
            && self
                .headers
                .iter()
                .all(|h| (req.header)(&h.name).is_some_and(|v| h.value.matches(&v)))
            && self
                .query
                .iter()
                .all(|q| first_query_value(req.query, &q.name).is_some_and(|v| q.value.matches(v)))
    }
}

/// The first value of a query parameter (the spec recommends the first
/// when a name repeats); names are case-sensitive.
fn first_query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// One HTTPRoute rule, compiled.
#[derive(Debug)]
pub struct GatewayRule {
    /// `namespace/name` of the HTTPRoute.
    pub route: Arc<str>,
    /// The rule's index in `spec.rules`.
    pub index: usize,
    /// `namespace/name#index`: the weighted backend choice's cursor.
    pub key: Arc<str>,
    pub filters: RuleFilters,
    pub action: RuleAction,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
}

/// The filters of a rule, in the order the spec applies them.
#[derive(Debug, Default)]
pub struct RuleFilters {
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub url_rewrite: Option<UrlRewrite>,
    /// The rule's single PathPrefix match, for ReplacePrefixMatch.
    pub prefix: Option<Box<str>>,
    pub mirrors: Vec<Mirror>,
}

/// A RequestMirror: where copies go, and the share of requests copied.
#[derive(Debug)]
pub struct Mirror {
    pub backend: RouteBackend,
    /// The cursor that spreads copies over endpoints and picks the share
    /// mirrored (its own, not the backend's round robin).
    pub cursor: Arc<str>,
    pub numerator: u32,
    pub denominator: u32,
}

impl Mirror {
    /// Whether the `ticket`-th request is mirrored: `numerator` of every
    /// `denominator` in a row.
    pub fn takes(&self, ticket: usize) -> bool {
        ticket % (self.denominator.max(1) as usize) < (self.numerator as usize)
    }

    /// For a ticket it [`takes`](Self::takes): how many copies came
    /// before, so copies go round the endpoints whatever the share.
    pub fn copy_number(&self, ticket: usize) -> usize {
        let den = self.denominator.max(1) as usize;
        ticket / den * self.numerator as usize + ticket % den
    }
}

/// What a matched request gets.
#[derive(Debug)]
pub enum RuleAction {
    /// Proxied to one of the backends, by weight.
    Forward(Vec<WeightedBackend>),
    Redirect(RequestRedirect),
    /// 500 (a rule without usable backends, or with a filter nodeway cannot
    /// apply), with why, for the log.
    Fail(Arc<str>),
}

/// A backend and its share; `route` is `None` for a ref that does not
/// resolve: its share of requests gets 500, as the spec asks.
#[derive(Debug)]
pub struct WeightedBackend {
    /// The backend as the L7 plane proxies to it: an Ingress route with
    /// default annotations, so both kinds of route share one upstream path.
    pub route: Option<Arc<Route>>,
    pub weight: u32,
}

impl WeightedBackend {
    pub fn backend(&self) -> Option<&RouteBackend> {
        self.route.as_ref().and_then(|r| r.backend.as_ref())
    }
}

impl RuleAction {
    /// The backend for the `ticket`-th request of a Forward rule, in
    /// proportion to the weights (`None` for an unresolved one's share):
    /// exactly so over every `total weight` requests in a row, and
    /// interleaved within them (1000/1000 alternates rather than sending a
    /// thousand in a row to each).
    pub fn pick(backends: &[WeightedBackend], ticket: usize) -> Option<&Arc<Route>> {
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        // Multiplying by a prime that does not divide `total` permutes
        // 0..total (weights sum to at most 16 million: 7919 and 104729
        // cannot both divide it).
        let step = if total.is_multiple_of(7919) {
            104_729
        } else {
            7919
        };
        let mut at = (ticket as u64 % total) * step % total;
        for b in backends {
            if at < u64::from(b.weight) {
                return b.route.as_ref();
            }
            at -= u64::from(b.weight);
        }
        None
    }
}

/// `PathPrefix /api, GET, 2 header(s), 1 query param(s)`, for `check`.
impl std::fmt::Display for RequestMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            PathMatch::Exact(p) => write!(f, "Exact {p}")?,
            PathMatch::Prefix(p) => write!(f, "PathPrefix {}", if p.is_empty() { "/" } else { p })?,
            PathMatch::Regex(re) => write!(f, "RegularExpression {}", re.as_str())?,
        }
        if let Some(m) = self.method {
            write!(f, ", {}", m.as_str())?;
        }
        for h in &self.headers {
            write!(f, ", header {}", h.name)?;
        }
        for q in &self.query {
            write!(f, ", query {}", q.name)?;
        }
        Ok(())
    }
}

/// `-> ns/svc:80 (weight 1)`, `redirect 301`, `500: why`, for `check`.
impl std::fmt::Display for RuleAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleAction::Forward(backends) => {
                let list: Vec<String> = backends
                    .iter()
                    .map(|b| match b.backend() {
                        Some(r) => format!("{} (weight {})", r.key, b.weight),
                        None => format!("(unresolved: 500) (weight {})", b.weight),
                    })
                    .collect();
                write!(f, "-> {}", list.join(", "))
            }
            RuleAction::Redirect(r) => write!(f, "redirect {}", r.status_code),
            RuleAction::Fail(why) => write!(f, "500: {why}"),
        }
    }
}

//! The compiled route table: per-host maps, built once per Snapshot, so a
//! request costs one host lookup and one path lookup whatever the number of rules.

use super::annotations::Annotations;
use super::path::{encode_arg, encode_query, normalize_host, prefix_candidates};
use crate::snapshot::NamespacedName;
use crate::tls::TlsSecret;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Exact,
    /// Prefix, and ImplementationSpecific without regex.
    Prefix,
    /// use-regex / rewrite-target: anchored at the start, case-insensitive.
    Regex,
}

/// Where a route sends requests: a Service port, resolved at compile time.
/// The route names the Service, not a copy of it: requests take its
/// endpoints from the current Snapshot, so an endpoint change does not
/// rebuild the routes (only a change to the Service's ports does).
#[derive(Clone, Debug)]
pub struct RouteBackend {
    /// (namespace, name) of the Service.
    pub service: NamespacedName,
    /// Index into the Service's `ports`.
    pub port: usize,
    /// `namespace/name:port`: stable identity for per-backend state
    /// (round-robin cursors) that outlives Snapshots.
    pub key: Arc<str>,
}

/// One Ingress path (or defaultBackend), ready to serve.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name` of the Ingress.
    pub ingress: Arc<str>,
    /// The rule host as written ("" for host-less rules and defaultBackend).
    pub host: Arc<str>,
    /// The rule path as written.
    pub path: Arc<str>,
    pub kind: PathKind,
    pub regex: Option<regex::Regex>,
    /// `None` when the Service or port does not exist: answered with 503.
    pub backend: Option<RouteBackend>,
    pub annotations: Arc<Annotations>,
    /// Plain-HTTP requests are redirected to HTTPS (308).
    pub ssl_redirect: bool,
    /// The canary Ingress's route for the same host and path.
    pub canary: Option<Arc<Route>>,
}

impl Route {
    /// The rewritten request path for rewrite-target: the whole URI path is
    /// replaced by the template, with `$1`..`$9` taken from this route's regex
    /// matched against `path`. `None` without rewrite-target.
    pub fn rewrite(&self, path: &str) -> Option<Rewritten> {
        let target = self.annotations.rewrite_target.as_deref()?;
        let caps = self.regex.as_ref().and_then(|r| r.captures(path));
        // The template's own `?` starts its query (nginx's rewrite); a `?`
        // that a capture brings in is part of the path.
        let (p, q) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let raw = |s: &str, out: &mut String| out.push_str(s);
        let mut path = expand(p, caps.as_ref(), raw, raw);
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        // In the query a capture is escaped as nginx escapes arguments, so
        // it cannot add parameters (`&`, `=`) or end the URI (`#`).
        let query = q.map(|q| {
            expand(
                q,
                caps.as_ref(),
                |s, out| out.push_str(&encode_query(s)),
                |s, out| out.push_str(&encode_arg(s)),
            )
        });
        Some(Rewritten { path, query })
    }
}

/// A rewrite-target applied to a request path.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// Decoded; to be percent-encoded for the URI.
    pub path: String,
    /// The template's query, encoded, if it has one: nginx then puts the
    /// request's own arguments after it (`new&old`), and a bare `?` drops
    /// them.
    pub query: Option<String>,
}

/// `template` with `$1`..`$9` replaced by the captures (missing ones:
/// empty); literal runs go through `lit`, captures through `cap`.
fn expand(
    template: &str,
    caps: Option<&regex::Captures<'_>>,
    lit: impl Fn(&str, &mut String),
    cap: impl Fn(&str, &mut String),
) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        let n = rest[i + 1..].chars().next().and_then(|d| d.to_digit(10));
        let Some(n) = n else {
            lit(&rest[..=i], &mut out);
            rest = &rest[i + 1..];
            continue;
        };
        lit(&rest[..i], &mut out);
        if let Some(m) = caps.and_then(|c| c.get(n as usize)) {
            cap(m.as_str(), &mut out);
        }
        rest = &rest[i + 2..];
    }
    lit(rest, &mut out);
    out
}

/// Routes of one host (or of the host-less rules).
#[derive(Debug, Default)]
pub struct HostRoutes {
    pub(crate) exact: HashMap<Box<str>, Arc<Route>>,
    /// Keyed by the rule path without trailing slashes (root = "").
    pub(crate) prefix: HashMap<Box<str>, Arc<Route>>,
    /// Longest pattern first, as ingress-nginx orders regex locations.
    pub(crate) regex: Vec<Arc<Route>>,
}

impl HostRoutes {
    /// The route for a normalized path, by Ingress precedence: Exact (always
    /// the longest), then the longest Prefix element-wise, a regex winning only
    /// when its pattern is longer than that prefix.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        let prefix = prefix_candidates(path).find_map(|k| self.prefix.get(k).map(|r| (k.len(), r)));
        let regex = self
            .regex
            .iter()
            .find(|r| r.regex.as_ref().is_some_and(|re| re.is_match(path)));
        match (prefix, regex) {
            (Some((len, p)), Some(r)) => Some(if r.path.len() > len { r } else { p }),
            (Some((_, p)), None) => Some(p),
            (None, r) => r,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.exact
            .values()
            .chain(self.prefix.values())
            .chain(self.regex.iter())
    }
}

/// A certificate for a host pattern (`foo.com` or `*.foo.com`).
#[derive(Clone, Debug)]
pub struct TlsEntry {
    /// `namespace/name` of the Secret.
    pub secret: Arc<str>,
    pub cert: Arc<TlsSecret>,
}

/// The compiled L7 route table.
#[derive(Debug, Default)]
pub struct IngressTable {
    pub(crate) hosts: HashMap<Box<str>, HostRoutes>,
    /// `*.foo.com` rules, keyed by `foo.com`.
    pub(crate) wildcards: HashMap<Box<str>, HostRoutes>,
    pub(crate) any_host: HostRoutes,
    pub(crate) default_backend: Option<Arc<Route>>,
    /// Exact TLS hosts to certificates.
    pub(crate) certs: HashMap<Box<str>, TlsEntry>,
    /// `*.foo.com` TLS hosts, keyed by `foo.com`.
    pub(crate) wildcard_certs: HashMap<Box<str>, TlsEntry>,
    /// The Ingresses served, by namespace/name, with the addresses their
    /// status shows (for `--publish-status`).
    pub(crate) served: Vec<ServedIngress>,
}

/// An Ingress this table serves, and what its `status.loadBalancer`
/// says now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedIngress {
    pub namespace: String,
    pub name: String,
    /// `status.loadBalancer.ingress[].ip` as the API has them.
    pub status_addresses: Vec<String>,
}

impl IngressTable {
    /// The routes of the host a request names: exact, else wildcard (one
    /// label), else the host-less rules.
    pub fn host_routes(&self, host: &str) -> &HostRoutes {
        let host = normalize_host(host);
        if let Some(h) = self.hosts.get(&*host) {
            return h;
        }
        if let Some((label, parent)) = host.split_once('.')
            && !label.is_empty()
            && let Some(h) = self.wildcards.get(parent)
        {
            return h;
        }
        &self.any_host
    }

    /// The route for a request (normalized path), else the defaultBackend.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.host_routes(host)
            .find(path)
            .or(self.default_backend.as_ref())
    }

    /// The certificate for an SNI name: exact, else `*.parent`.
    pub fn cert_for(&self, sni: &str) -> Option<&TlsEntry> {
        let sni = normalize_host(sni);
        if let Some(c) = self.certs.get(&*sni) {
            return Some(c);
        }
        let (label, parent) = sni.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard_certs.get(parent)
    }

    /// Every certificate the table refers to (a Secret may appear more than once).
    pub fn certificates(&self) -> impl Iterator<Item = &TlsEntry> {
        self.certs.values().chain(self.wildcard_certs.values())
    }

    pub fn default_backend(&self) -> Option<&Arc<Route>> {
        self.default_backend.as_ref()
    }

    /// Number of Ingresses served.
    pub fn ingress_count(&self) -> usize {
        self.served.len()
    }

    /// The Ingresses served, by namespace/name.
    pub fn served(&self) -> &[ServedIngress] {
        &self.served
    }

    /// Every route (for `check`), sorted by host then path; the
    /// defaultBackend last.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        let mut all: Vec<&Arc<Route>> = self
            .hosts
            .values()
            .chain(self.wildcards.values())
            .chain(std::iter::once(&self.any_host))
            .flat_map(HostRoutes::routes)
            .collect();
        all.sort_by(|a, b| (&a.host, &a.path, &a.ingress).cmp(&(&b.host, &b.path, &b.ingress)));
        all.into_iter().chain(self.default_backend.iter())
    }
}

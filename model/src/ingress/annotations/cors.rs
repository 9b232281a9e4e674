//! `enable-cors` and the `cors-*` annotations, with ingress-nginx's defaults.
//! The header values are built here, once per Snapshot, so a request only
//! matches its Origin and copies them.

use http::HeaderValue;

const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,\
                               Cache-Control,Content-Type,Range,Authorization";
/// 20 days, ingress-nginx's `cors-max-age`.
const DEFAULT_MAX_AGE: u64 = 1_728_000;

/// Which origins get the CORS headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*` (the default): every request, with `Access-Control-Allow-Origin: *`.
    Any,
    /// Requests whose Origin is one of these; the header echoes it.
    List(Vec<OriginPattern>),
}

/// One `cors-allow-origin` entry: `https://a.example`, `https://*.example:8443`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPattern {
    /// `http` or `https`.
    scheme: String,
    /// Lower case, without a leading `*.`.
    host: String,
    /// `*.` stood before the host: exactly one more DNS label.
    wildcard: bool,
    /// `:port` as written, or "".
    port: String,
}

impl OriginPattern {
    fn parse(v: &str) -> Option<OriginPattern> {
        let (scheme, rest) = v.split_once("://")?;
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h, &rest[h.len()..])
            }
            Some(_) => return None,
            None => (rest, ""),
        };
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(h) => (true, h),
            None => (false, host),
        };
        let label_chars = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
        if host.is_empty() || !host.bytes().all(label_chars) {
            return None;
        }
        Some(OriginPattern {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            wildcard,
            port: port.to_string(),
        })
    }

    /// Whether `origin` (`scheme://host[:port]`, any case) is this one.
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        let scheme_ok = scheme.eq_ignore_ascii_case(&self.scheme);
        let Some(host) = rest.strip_suffix(self.port.as_str()) else {
            return false;
        };
        if !scheme_ok || host.contains(':') {
            return false;
        }
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.host);
        }
        // One label, as ingress-nginx's `[A-Za-z0-9\-]+` before the rest.
        match host.split_once('.') {
            Some((label, parent)) => {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && parent.eq_ignore_ascii_case(&self.host)
            }
            None => false,
        }
    }
}

/// The CORS rules of a route, header values ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub origins: CorsOrigins,
    pub allow_methods: HeaderValue,
    pub allow_headers: HeaderValue,
    /// `cors-allow-credentials` (default true): sends `...-Credentials: true`.
    pub allow_credentials: bool,
    pub max_age: HeaderValue,
    pub expose_headers: Option<HeaderValue>,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request with `origin`,
    /// if it is allowed.
    pub fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            CorsOrigins::Any => Some(HeaderValue::from_static("*")),
            CorsOrigins::List(list) => {
                let o = origin?;
                let s = o.to_str().ok()?;
                list.iter().any(|p| p.matches(s)).then(|| o.clone())
            }
        }
    }
}

/// The CORS annotations as read, turned into [`Cors`] by [`CorsBuilder::finish`].
#[derive(Default)]
pub struct CorsBuilder {
    enabled: bool,
    origins: Option<CorsOrigins>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    credentials: Option<bool>,
    max_age: Option<u64>,
    expose: Option<HeaderValue>,
}

/// A list of tokens (`GET, POST`) as one header value.
fn token_list(v: &str, ok: impl Fn(u8) -> bool, what: &str) -> Result<HeaderValue, String> {
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    if items.is_empty() || !items.iter().all(|i| i.bytes().all(&ok)) {
        return Err(format!("{v:?} is not a comma-separated list of {what}"));
    }
    HeaderValue::from_str(&items.join(", ")).map_err(|e| e.to_string())
}

fn header_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl CorsBuilder {
    /// Reads one `enable-cors` / `cors-*` annotation (`name` without the prefix).
    pub fn set(&mut self, name: &str, v: &str) -> Result<(), String> {
        match name {
            "enable-cors" => {
                self.enabled = super::parse_bool(v).ok_or(format!("{v:?} is not true or false"))?
            }
            "cors-allow-origin" => self.origins = Some(parse_origins(v)?),
            "cors-allow-methods" => {
                self.methods = Some(token_list(v, |b| b.is_ascii_alphabetic(), "methods")?)
            }
            "cors-allow-headers" => {
                self.headers = Some(token_list(v, header_name_char, "header names")?)
            }
            "cors-expose-headers" => {
                let ok = |b: u8| header_name_char(b) || b == b'*';
                self.expose = Some(token_list(v, ok, "header names or *")?)
            }
            "cors-allow-credentials" => {
                self.credentials =
                    Some(super::parse_bool(v).ok_or(format!("{v:?} is not true or false"))?)
            }
            "cors-max-age" => {
                let n = v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{v:?} is not a number of seconds"))?;
                self.max_age = Some(n)
            }
            _ => unreachable!("only CORS annotations come here"),
        }
        Ok(())
    }

    /// The route's CORS rules: `None` unless `enable-cors` is true.
    pub fn finish(self) -> Option<Cors> {
        if !self.enabled {
            return None;
        }
        Some(Cors {
            origins: self.origins.unwrap_or(CorsOrigins::Any),
            allow_methods: self
                .methods
                .unwrap_or(HeaderValue::from_static(DEFAULT_METHODS)),
            allow_headers: self
                .headers
                .unwrap_or(HeaderValue::from_static(DEFAULT_HEADERS)),
            allow_credentials: self.credentials.unwrap_or(true),
            max_age: HeaderValue::from(self.max_age.unwrap_or(DEFAULT_MAX_AGE)),
            expose_headers: self.expose,
        })
    }
}

/// `*`, or a comma-separated list of origins; `*` anywhere in the list
/// allows every origin, as in ingress-nginx.
fn parse_origins(v: &str) -> Result<CorsOrigins, String> {
    let mut list = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item == "*" {
            return Ok(CorsOrigins::Any);
        }
        match OriginPattern::parse(item) {
            Some(p) => list.push(p),
            None => {
                return Err(format!(
                    "{item:?} is not an origin such as https://app.example, \
                     https://*.example.com or http://localhost:3000"
                ));
            }
        }
    }
    if list.is_empty() {
        return Err("lists no origin (\"*\" allows every origin)".into());
    }
    Ok(CorsOrigins::List(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(pairs: &[(&str, &str)]) -> Result<Option<Cors>, String> {
        let mut b = CorsBuilder::default();
        for (k, v) in pairs {
            b.set(k, v)?;
        }
        Ok(b.finish())
    }

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn defaults_are_ingress_nginx_s_and_off_without_enable_cors() {
        assert_eq!(cors(&[("cors-allow-origin", "*")]).unwrap(), None);
        let c = cors(&[("enable-cors", "true")]).unwrap().unwrap();
        assert_eq!(c.origins, CorsOrigins::Any);
        assert_eq!(c.allow_methods, DEFAULT_METHODS);
        assert!(
            c.allow_headers
                .to_str()
                .unwrap()
                .ends_with(",Range,Authorization")
        );
        assert_eq!(
            (c.allow_credentials, c.max_age.clone()),
            (true, hv("1728000"))
        );
        assert_eq!(c.expose_headers, None);
        assert_eq!(
            c.allow_origin(None),
            Some(hv("*")),
            "even without an Origin"
        );
    }

    #[test]
    fn origins_match_exactly_with_one_label_wildcards() {
        let c = cors(&[
            ("enable-cors", "true"),
            (
                "cors-allow-origin",
                "https://app.test, http://localhost:3000,https://*.shop.test",
            ),
        ])
        .unwrap()
        .unwrap();
        let allowed = |o: &'static str| c.allow_origin(Some(&hv(o))).is_some();
        for ok in [
            "https://app.test",
            "HTTPS://App.Test",
            "http://localhost:3000",
            "https://eu.shop.test",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for no in [
            "http://app.test",
            "https://app.test:8443",
            "https://evilapp.test",
            "https://app.test.evil",
            "http://localhost:3001",
            "http://localhost",
            "https://shop.test",
            "https://a.b.shop.test",
            "http://eu.shop.test",
            "null",
        ] {
            assert!(!allowed(no), "{no}");
        }
        assert_eq!(c.allow_origin(None), None);
        assert_eq!(
            c.allow_origin(Some(&hv("https://eu.shop.test"))),
            Some(hv("https://eu.shop.test")),
            "the origin is echoed"
        );
        let star = cors(&[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://a.test, *"),
        ]);
        assert_eq!(star.unwrap().unwrap().origins, CorsOrigins::Any);
    }

    #[test]
    fn lists_are_normalised_and_bad_values_named() {
        let c = cors(&[
            ("enable-cors", "true"),
            ("cors-allow-methods", "GET,POST ,  OPTIONS"),
            ("cors-allow-headers", "X-Custom,Content-Type"),
            ("cors-expose-headers", "X-Total, *"),
            ("cors-allow-credentials", "false"),
            ("cors-max-age", "600"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.allow_methods, "GET, POST, OPTIONS");
        assert_eq!(c.allow_headers, "X-Custom, Content-Type");
        assert_eq!(c.expose_headers, Some(hv("X-Total, *")));
        assert_eq!((c.allow_credentials, c.max_age), (false, hv("600")));
        for (k, v, why) in [
            ("cors-allow-origin", "ftp://a.test", "not an origin"),
            ("cors-allow-origin", "https://a.test/path", "not an origin"),
            ("cors-allow-origin", "a.test", "not an origin"),
            ("cors-allow-origin", " , ", "lists no origin"),
            ("cors-allow-methods", "GET;DROP", "list of methods"),
            ("cors-allow-headers", "X-A: 1", "list of header names"),
            ("cors-max-age", "a day", "number of seconds"),
            ("enable-cors", "yes", "true or false"),
        ] {
            let e = cors(&[(k, v)]).unwrap_err();
            assert!(e.contains(why), "{k}={v}: {e}");
        }
    }
}

//! CORS as ingress-nginx's `enable-cors` does it: an allowed preflight is
//! answered here without reaching the backend; every other answer to an
//! allowed origin gets the same headers (replacing the backend's own).

use crate::body::{self, Body};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    CONTENT_TYPE, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use model::ingress::{Cors, CorsOrigins};

/// The answer to an OPTIONS request from an allowed origin (its CORS
/// headers are added with everyone else's, by [`add_headers`]). As in
/// ingress-nginx, every OPTIONS counts as a preflight; one from an origin
/// that is not allowed goes to the backend. (ingress-nginx also sets
/// `Content-Length: 0`, which a 204 must not carry: hyper leaves it out.)
pub fn preflight() -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain charset=UTF-8"),
    );
    r
}

/// Sets the CORS headers for an allowed request; `allow_origin` is what
/// [`Cors::allow_origin`] gave.
pub fn add_headers(h: &mut HeaderMap, c: &Cors, allow_origin: HeaderValue) {
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if c.allow_credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(ACCESS_CONTROL_ALLOW_METHODS, c.allow_methods.clone());
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, c.allow_headers.clone());
    if let Some(e) = &c.expose_headers {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
    }
    h.insert(ACCESS_CONTROL_MAX_AGE, c.max_age.clone());
    // The answer depends on the Origin when it echoes one: a cache must not
    // hand it to another origin (ingress-nginx leaves this out).
    if let CorsOrigins::List(_) = c.origins
        && !varies_by_origin(h)
    {
        h.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// Whether the backend's `Vary` already names Origin (or `*`).
fn varies_by_origin(h: &HeaderMap) -> bool {
    h.get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin") || t.trim() == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Cors {
        let m = [
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://a.example"),
        ]
        .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
        .into_iter()
        .collect();
        model::ingress::annotations::parse(Some(&m)).0.cors.unwrap()
    }

    #[test]
    fn vary_origin_is_added_once() {
        let origin = HeaderValue::from_static("https://a.example");
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        add_headers(&mut h, &listed(), origin.clone());
        let vary: Vec<_> = h.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        for already in ["accept-encoding, origin", "*"] {
            let mut h = HeaderMap::new();
            h.insert(VARY, HeaderValue::from_static(already));
            add_headers(&mut h, &listed(), origin.clone());
            assert_eq!(h.get_all(VARY).iter().count(), 1, "{already}");
        }
    }
}

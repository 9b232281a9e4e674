//! Responses the proxy makes itself: error pages as nginx words them, and redirects.

use crate::body::{Body, full};
use http::{HeaderValue, Response, StatusCode, header};

/// An error page (`<status> <reason>` in a small HTML body, like nginx).
pub fn status(code: StatusCode) -> Response<Body> {
    let reason = code.canonical_reason().unwrap_or("");
    let text = format!(
        "<html>\r\n<head><title>{} {reason}</title></head>\r\n<body>\r\n<center><h1>{} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code.as_u16(),
        code.as_u16()
    );
    let mut r = Response::new(full(text));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

/// An error page after which the connection is closed (framing could not be
/// trusted, so nothing more is read from it).
pub fn status_close(code: StatusCode) -> Response<Body> {
    let mut r = status(code);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A redirect to `location` (falls back to 500 if it is not a valid header).
pub fn redirect(code: StatusCode, location: &str) -> Response<Body> {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut r = status(code);
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

//! Request paths and hosts as routing sees them: the normalization nginx does
//! before choosing a location, and the Ingress path-type semantics.

/// Why a request path cannot be routed (the server answers 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// Decodes to a NUL byte or invalid UTF-8.
    BadByte,
    /// `..` segments climb above the root.
    AboveRoot,
    /// A `.` or `..` segment with `;` parameters (`/..;/`): Tomcat, Jetty and
    /// Spring resolve it as `..`, so routing on it as a plain name would let
    /// a backend be reached outside the matched prefix.
    DotWithParameters,
}

/// The normalized path of a request target's path (no query): percent-decoded
/// (`%2e` and `%2f` included, as nginx does), `.`/`..` resolved and repeated
/// slashes merged. A path that climbs above `/` is an error (400).
pub fn normalize_path(raw: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode or resolve, so the raw path is the answer.
    if !needs_work(raw.as_bytes()) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let decoded = percent_decode(raw)?;
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/').skip(1) {
        match seg {
            "" | "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s if matches!(s.split(';').next(), Some("." | "..")) => {
                return Err(PathError::DotWithParameters);
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    // A trailing slash (or a final `.`/`..` segment) names a directory: keep it.
    let last = decoded.rsplit('/').next().unwrap_or("");
    if out.is_empty() || matches!(last, "" | "." | "..") {
        out.push('/');
    }
    Ok(std::borrow::Cow::Owned(out))
}

fn needs_work(b: &[u8]) -> bool {
    if b.contains(&b'%') {
        return true;
    }
    b.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// Decoded, without resolving segments (for comparison with the normalized form).
fn percent_only(raw: &str) -> String {
    percent_decode(raw).unwrap_or_default()
}

fn percent_decode(raw: &str) -> Result<String, PathError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(PathError::BadByte);
    }
    String::from_utf8(out).map_err(|_| PathError::BadByte)
}

/// Percent-encodes a normalized path for forwarding, so that the backend sees
/// exactly the path we routed on (`%` and `?` stay data, never syntax).
pub fn encode_path(path: &str) -> String {
    encode(path, b"/-._~!$&'()*+,;=:@")
}

/// Percent-encodes the literal query of a rewrite template: delimiters and
/// escapes the author wrote stay, bytes a URI cannot hold are encoded.
pub fn encode_query(query: &str) -> String {
    encode(query, b"/?-._~!$&'()*+,;=:@%")
}

/// Percent-encodes a value put into a query (nginx's argument escaping):
/// it cannot start another parameter or end the URI.
pub fn encode_arg(value: &str) -> String {
    encode(value, b"/-._~!$'()*,;:@")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        let keep = c.is_ascii_alphanumeric() || keep.contains(&c);
        if keep {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// The map key of a Prefix rule: its path without trailing slashes (root: "").
pub fn prefix_key(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// Visits the keys a Prefix rule would need to match `path` element-wise,
/// longest first: `/a/b` gives `/a/b`, `/a`, "" (root).
pub fn prefix_candidates(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(path.trim_end_matches('/'));
    std::iter::from_fn(move || {
        let c = cur?;
        cur = if c.is_empty() {
            None
        } else {
            Some(&c[..c.rfind('/').unwrap_or(0)])
        };
        Some(c)
    })
}

/// Whether a request's Host (or authority) is something a route may be
/// chosen by and a redirect may name: DNS characters, an IPv4 or bracketed
/// IPv6 literal, an optional port (empty: no Host at all). `/`, `@`, `#`,
/// `%` and the like would let a wildcard rule's ssl-redirect point at
/// another host, so such a request is a 400 (as nginx's host check).
pub fn is_valid_host(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// Host as routing compares it: lower-cased, port and trailing dot stripped.
/// Borrowed when already in that form (the common case).
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let h = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

/// The map key of an Exact/Prefix rule path: percent-decoded, as requests are.
pub fn spec_key(path: &str) -> std::borrow::Cow<'_, str> {
    normalize_path(path).unwrap_or(std::borrow::Cow::Borrowed(path))
}

/// Checks an Exact/Prefix path as the API server does: absolute, no `//`,
/// no `.`/`..` segments, no encoded slash (such a rule could never match a
/// normalized request).
pub fn check_spec_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must be an absolute path (start with '/')"));
    }
    if p.contains("//") {
        return Err(format!("{p:?} must not contain '//'"));
    }
    for seg in p.split('/') {
        if seg == "." || seg == ".." {
            return Err(format!("{p:?} must not contain '.' or '..' segments"));
        }
    }
    let lower = p.to_ascii_lowercase();
    if lower.contains("%2f") {
        return Err(format!("{p:?} must not contain an encoded '/' (%2F)"));
    }
    match normalize_path(p) {
        Err(_) => Err(format!("{p:?} holds an invalid percent-escape")),
        // `%2e%2e` and friends decode to dot segments.
        Ok(n) if n.trim_end_matches('/') != percent_only(p).trim_end_matches('/') => Err(format!(
            "{p:?} must not contain '.' or '..' segments, even encoded"
        )),
        Ok(_) => Ok(()),
    }
}

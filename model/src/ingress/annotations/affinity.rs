//! `affinity: cookie` and the `session-cookie-*` annotations: which cookie
//! ties a client to an endpoint, and the attributes it is set with.

/// The cookie's SameSite attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// `affinity: cookie`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieAffinity {
    pub name: String,
    /// `None`: the route's own path.
    pub path: Option<String>,
    /// `session-cookie-max-age`, seconds.
    pub max_age: Option<u64>,
    /// `session-cookie-expires`, seconds from when the cookie is set.
    pub expires: Option<u64>,
    /// `session-cookie-secure`: Secure even over plain HTTP (it always is
    /// over HTTPS).
    pub secure: bool,
    pub same_site: Option<SameSite>,
    /// `session-cookie-conditional-samesite-none`: leave `SameSite=None`
    /// out for the browsers that mistake it for Strict.
    pub conditional_same_site_none: bool,
    /// `session-cookie-change-on-failure`: a request whose endpoint failed
    /// goes to another one and the cookie follows it; without it the request
    /// stays with the cookie's endpoint, as in ingress-nginx.
    pub change_on_failure: bool,
}

/// The affinity annotations as read.
pub struct AffinityBuilder {
    on: bool,
    cookie: CookieAffinity,
}

impl Default for AffinityBuilder {
    fn default() -> Self {
        AffinityBuilder {
            on: false,
            cookie: CookieAffinity {
                // ingress-nginx's default name.
                name: "INGRESSCOOKIE".into(),
                path: None,
                max_age: None,
                expires: None,
                secure: false,
                same_site: None,
                conditional_same_site_none: false,
                change_on_failure: false,
            },
        }
    }
}

/// The longest cookie lifetime kept, 100 years. Browsers cap a cookie's
/// life at 400 days anyway; the cap keeps `Expires` a date that can be
/// written (HTTP dates end in year 9999) however large the annotation.
pub const MAX_COOKIE_SECONDS: u64 = 100 * 365 * 24 * 3600;

fn seconds(v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map(|s| s.min(MAX_COOKIE_SECONDS))
        .map_err(|_| format!("{v:?} is not a number of seconds"))
}

fn boolean(v: &str) -> Result<bool, String> {
    super::parse_bool(v).ok_or_else(|| format!("{v:?} is not true or false"))
}

impl AffinityBuilder {
    /// Reads `affinity` or one `session-cookie-*` annotation (`name`
    /// without the prefix).
    pub fn set(&mut self, name: &str, v: &str) -> Result<(), String> {
        let c = &mut self.cookie;
        match name {
            "affinity" => match v.trim() {
                "cookie" => self.on = true,
                "" => {}
                _ => return Err(format!("{v:?} is not supported (only \"cookie\")")),
            },
            "session-cookie-name" => {
                let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
                if v.is_empty() || !v.bytes().all(ok) {
                    return Err(format!("{v:?} is not a valid cookie name"));
                }
                c.name = v.to_string()
            }
            "session-cookie-path" => {
                if !v.starts_with('/') || v.contains(';') || v.bytes().any(|b| b.is_ascii_control())
                {
                    return Err(format!("{v:?} is not a path"));
                }
                c.path = Some(v.to_string())
            }
            "session-cookie-max-age" => c.max_age = Some(seconds(v)?),
            "session-cookie-expires" => c.expires = Some(seconds(v)?),
            "session-cookie-secure" => c.secure = boolean(v)?,
            "session-cookie-conditional-samesite-none" => {
                c.conditional_same_site_none = boolean(v)?
            }
            "session-cookie-change-on-failure" => c.change_on_failure = boolean(v)?,
            // ingress-nginx accepts any case here but sends the attribute
            // only when written exactly `Strict`, `Lax` or `None`; nodeway
            // sends it either way.
            "session-cookie-samesite" => {
                c.same_site = Some(match v.trim().to_ascii_lowercase().as_str() {
                    "strict" => SameSite::Strict,
                    "lax" => SameSite::Lax,
                    "none" => SameSite::None,
                    _ => return Err(format!("{v:?} is not one of Strict, Lax, None")),
                })
            }
            _ => unreachable!("only affinity annotations come here"),
        }
        Ok(())
    }

    /// The route's cookie affinity: `None` unless `affinity: cookie`.
    pub fn finish(self) -> Option<CookieAffinity> {
        self.on.then_some(self.cookie)
    }
}

/// Whether a browser with this User-Agent treats `SameSite=None` as Strict
/// or drops the cookie (Chrome 4x to 6x, iOS 12, macOS 10.14 Safari), so
/// conditional-samesite-none leaves the attribute out: ingress-nginx's list.
pub fn same_site_none_incompatible(user_agent: &str) -> bool {
    let ua = user_agent;
    ua.contains("Chrome/5")
        || ua.contains("Chrome/6")
        || ua.contains("Chrome/4")
        || ua.contains("CPU iPhone OS 12")
        || ua.contains("iPad; CPU OS 12")
        || (ua.contains("Macintosh")
            && ua.contains("Intel Mac OS X 10_14")
            && ua.contains("Safari")
            && !ua.contains("Chrome"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity(pairs: &[(&str, &str)]) -> Result<Option<CookieAffinity>, String> {
        let mut b = AffinityBuilder::default();
        for (k, v) in pairs {
            b.set(k, v)?;
        }
        Ok(b.finish())
    }

    #[test]
    fn attributes_parse_with_ingress_nginx_defaults() {
        assert_eq!(affinity(&[("session-cookie-name", "x")]).unwrap(), None);
        let c = affinity(&[("affinity", "cookie")]).unwrap().unwrap();
        assert_eq!(c.name, "INGRESSCOOKIE");
        assert!(!c.secure && !c.change_on_failure && c.same_site.is_none());
        let c = affinity(&[
            ("affinity", "cookie"),
            ("session-cookie-samesite", "none"),
            ("session-cookie-conditional-samesite-none", "true"),
            ("session-cookie-secure", "true"),
            ("session-cookie-expires", "172800"),
            ("session-cookie-change-on-failure", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.same_site, Some(SameSite::None));
        assert!(c.conditional_same_site_none && c.secure && c.change_on_failure);
        assert_eq!(c.expires, Some(172800));
        let huge = u64::MAX.to_string();
        let c = affinity(&[
            ("affinity", "cookie"),
            ("session-cookie-expires", &huge),
            ("session-cookie-max-age", &huge),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.expires, Some(MAX_COOKIE_SECONDS));
        assert_eq!(c.max_age, Some(MAX_COOKIE_SECONDS));
        for (k, v, why) in [
            ("session-cookie-samesite", "sometimes", "not one of Strict"),
            ("session-cookie-expires", "tomorrow", "number of seconds"),
            ("session-cookie-secure", "yes", "true or false"),
            ("session-cookie-name", "a;b", "not a valid cookie name"),
        ] {
            let e = affinity(&[(k, v)]).unwrap_err();
            assert!(e.contains(why), "{k}={v}: {e}");
        }
    }

    #[test]
    fn old_browsers_are_spared_same_site_none() {
        let chrome60 = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.113 Safari/537.36";
        let chrome120 = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let ios12 = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) AppleWebKit/605.1.15";
        let mojave = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Safari/605.1.15";
        assert!(same_site_none_incompatible(chrome60));
        assert!(same_site_none_incompatible(ios12));
        assert!(same_site_none_incompatible(mojave));
        assert!(!same_site_none_incompatible(chrome120));
        assert!(!same_site_none_incompatible("curl/8.5.0"));
    }
}

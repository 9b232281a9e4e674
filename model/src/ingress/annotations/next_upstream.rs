//! `proxy-next-upstream`, `-tries` and `-timeout`: when a request that
//! failed at one endpoint goes to the next, as nginx's `proxy_next_upstream`
//! directives decide it (ingress-nginx passes the values through).

use std::time::Duration;

/// The failures after which a request is passed to the next endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    /// `error`: the endpoint could not be reached, or the exchange broke
    /// before a response head arrived.
    pub on_error: bool,
    /// `timeout`: connecting, sending, or waiting for the head timed out.
    pub on_timeout: bool,
    /// `http_500` .. `http_504`, `http_403`, `http_404`, `http_429`: the
    /// endpoint answered with one of these.
    pub statuses: Vec<u16>,
    /// `non_idempotent`: POST, LOCK and PATCH go again too, even after they
    /// reached an endpoint (nginx never repeats those otherwise).
    pub non_idempotent: bool,
    /// `proxy-next-upstream-tries`: attempts in all, the first included.
    /// 0 lifts nginx's limit; nodeway then tries each endpoint once.
    pub tries: u32,
    /// `proxy-next-upstream-timeout`: no new attempt starts once this long
    /// has passed since the first one (`None`: no limit).
    pub timeout: Option<Duration>,
}

impl Default for NextUpstream {
    /// ingress-nginx's defaults: `error timeout`, 3 tries, no time limit.
    fn default() -> Self {
        NextUpstream {
            on_error: true,
            on_timeout: true,
            statuses: Vec::new(),
            non_idempotent: false,
            tries: 3,
            timeout: None,
        }
    }
}

impl NextUpstream {
    /// Whether nothing ever goes to a second endpoint (`off`, or one try).
    pub fn is_off(&self) -> bool {
        self.tries == 1 || (!self.on_error && !self.on_timeout && self.statuses.is_empty())
    }

    /// Whether an answer with `status` is passed over for the next endpoint.
    pub fn retries_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }

    /// Reads one of the three annotations (`name` without the prefix).
    pub fn set(&mut self, name: &str, v: &str) -> Result<(), String> {
        match name {
            "proxy-next-upstream" => self.set_conditions(v),
            "proxy-next-upstream-tries" => match v.trim().parse::<u32>() {
                Ok(n) => {
                    self.tries = n;
                    Ok(())
                }
                Err(_) => Err(format!("{v:?} is not a whole number")),
            },
            "proxy-next-upstream-timeout" => match v.trim() {
                // 0, with or without a unit, is nginx's "no limit".
                t if t.strip_suffix(['s', 'm']).unwrap_or(t).parse::<u64>() == Ok(0) => {
                    self.timeout = None;
                    Ok(())
                }
                t => match super::parse_timeout(t) {
                    Some(d) => {
                        self.timeout = Some(d);
                        Ok(())
                    }
                    None => Err(format!("{v:?} is not a number of seconds")),
                },
            },
            _ => unreachable!("only proxy-next-upstream annotations come here"),
        }
    }

    /// nginx's list: space-separated tokens, `off` alone.
    fn set_conditions(&mut self, v: &str) -> Result<(), String> {
        let mut next = NextUpstream {
            on_error: false,
            on_timeout: false,
            statuses: Vec::new(),
            non_idempotent: false,
            ..self.clone()
        };
        let tokens: Vec<&str> = v.split_ascii_whitespace().collect();
        if tokens == ["off"] {
            *self = next;
            return Ok(());
        }
        if tokens.is_empty() {
            return Err("is empty (\"off\" turns retries off)".into());
        }
        for t in tokens {
            match t {
                "error" => next.on_error = true,
                "timeout" => next.on_timeout = true,
                "non_idempotent" => next.non_idempotent = true,
                // nodeway reads no header it cannot parse as valid: that
                // is an error like any broken exchange.
                "invalid_header" => next.on_error = true,
                "http_500" | "http_502" | "http_503" | "http_504" | "http_403" | "http_404"
                | "http_429" => next.statuses.push(t[5..].parse().expect("three digits")),
                "off" => return Err("\"off\" cannot be combined with other conditions".into()),
                other => {
                    return Err(format!(
                        "{other:?} is not one of error, timeout, invalid_header, http_500, \
                         http_502, http_503, http_504, http_403, http_404, http_429, \
                         non_idempotent, off"
                    ));
                }
            }
        }
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(pairs: &[(&str, &str)]) -> Result<NextUpstream, String> {
        let mut n = NextUpstream::default();
        for (k, v) in pairs {
            n.set(k, v)?;
        }
        Ok(n)
    }

    #[test]
    fn defaults_are_error_timeout_three_tries() {
        let n = NextUpstream::default();
        assert!(n.on_error && n.on_timeout && !n.non_idempotent && !n.is_off());
        assert_eq!((n.tries, n.timeout), (3, None));
    }

    #[test]
    fn conditions_replace_the_defaults() {
        let n = parsed(&[("proxy-next-upstream", "http_502  http_503 non_idempotent")]).unwrap();
        assert!(!n.on_error && !n.on_timeout && n.non_idempotent);
        assert!(n.retries_status(502) && n.retries_status(503) && !n.retries_status(504));
        let off = parsed(&[("proxy-next-upstream", "off")]).unwrap();
        assert!(off.is_off());
        let one = parsed(&[("proxy-next-upstream-tries", "1")]).unwrap();
        assert!(one.is_off(), "one try is the first and only");
        let t = parsed(&[
            ("proxy-next-upstream-tries", "5"),
            ("proxy-next-upstream-timeout", "2"),
        ])
        .unwrap();
        assert_eq!((t.tries, t.timeout), (5, Some(Duration::from_secs(2))));
        for zero in ["0", "0s", "0m"] {
            let t = parsed(&[
                ("proxy-next-upstream-timeout", "2"),
                ("proxy-next-upstream-timeout", zero),
            ]);
            assert_eq!(t.unwrap().timeout, None, "{zero} is no limit");
        }
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        let e = parsed(&[("proxy-next-upstream", "error http_418")]).unwrap_err();
        assert!(e.contains("\"http_418\" is not one of"), "{e}");
        let e = parsed(&[("proxy-next-upstream", "off error")]).unwrap_err();
        assert!(e.contains("cannot be combined"), "{e}");
        assert!(parsed(&[("proxy-next-upstream-tries", "-1")]).is_err());
        assert!(parsed(&[("proxy-next-upstream-timeout", "soon")]).is_err());
    }
}

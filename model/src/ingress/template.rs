//! Redirect values with nginx variables, as ingress-nginx users write them
//! (`permanent-redirect: https://new.example.com$request_uri`). ingress-nginx
//! pastes the value into an nginx `return`, so nginx expands the variables;
//! here the value is parsed once at compile time (an unknown variable is a
//! config error) and rendered per request by the ingress plane.

/// A variable a redirect may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    /// `http` or `https`.
    Scheme,
    /// The request's host without port (`$host`), or as sent (`$http_host`).
    Host,
    HttpHost,
    ServerPort,
    /// Path and query as the client sent them.
    RequestUri,
    /// The normalized path (`$uri`, `$document_uri`).
    Uri,
    /// The query string, without `?` (`$args`, `$query_string`).
    Args,
    /// `?` when there is a query string, else nothing.
    IsArgs,
    RemoteAddr,
    RequestMethod,
    /// `$http_<name>`: a request header (`_` stands for `-`).
    Header(String),
    /// `$arg_<name>`: a query parameter.
    Arg(String),
    /// `$cookie_<name>`.
    Cookie(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Var),
}

/// A parsed value: text and variables in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

impl Template {
    /// Parses `$name` and `${name}` references; `$` not followed by a name
    /// is kept as text, as nginx does.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, used) = match after.strip_prefix('{') {
                Some(inner) => match inner.find('}') {
                    Some(end) => (&inner[..end], end + 2),
                    None => return Err(format!("unclosed \"${{\" in {s:?}")),
                },
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], end)
                }
            };
            if name.is_empty() {
                text.push('$');
                rest = after;
                continue;
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Var(var(name)?));
            rest = &after[used..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    /// The text before the first variable ("" when it starts with one).
    pub fn prefix(&self) -> &str {
        match self.0.first() {
            Some(Piece::Text(t)) => t,
            _ => "",
        }
    }

    pub fn has_vars(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::Var(_)))
    }

    /// Renders with `value` supplying each variable (an unset one is empty,
    /// as in nginx).
    pub fn render(&self, mut value: impl FnMut(&Var, &mut String)) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => value(v, &mut out),
            }
        }
        out
    }
}

fn var(name: &str) -> Result<Var, String> {
    let lower = name.to_ascii_lowercase();
    let prefixed = |p: &str| {
        lower
            .strip_prefix(p)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    Ok(match lower.as_str() {
        "scheme" => Var::Scheme,
        "host" => Var::Host,
        "http_host" => Var::HttpHost,
        "server_port" => Var::ServerPort,
        "request_uri" => Var::RequestUri,
        "uri" | "document_uri" => Var::Uri,
        "args" | "query_string" => Var::Args,
        "is_args" => Var::IsArgs,
        "remote_addr" => Var::RemoteAddr,
        "request_method" => Var::RequestMethod,
        _ => {
            if let Some(h) = prefixed("http_") {
                Var::Header(h.replace('_', "-"))
            } else if let Some(a) = prefixed("arg_") {
                Var::Arg(a)
            } else if let Some(c) = prefixed("cookie_") {
                Var::Cookie(c)
            } else {
                return Err(format!("unknown nginx variable ${name}"));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_braces_and_lone_dollars() {
        let t = Template::parse("https://new.example.com${uri}x?$args&y=$http_x_user$").unwrap();
        assert_eq!(
            t.0,
            vec![
                Piece::Text("https://new.example.com".into()),
                Piece::Var(Var::Uri),
                Piece::Text("x?".into()),
                Piece::Var(Var::Args),
                Piece::Text("&y=".into()),
                Piece::Var(Var::Header("x-user".into())),
                Piece::Text("$".into()),
            ]
        );
        assert_eq!(t.prefix(), "https://new.example.com");
        assert!(t.has_vars());
        let plain = Template::parse("/a/b").unwrap();
        assert_eq!(plain.0, vec![Piece::Text("/a/b".into())]);
        assert!(!plain.has_vars());
    }

    #[test]
    fn unknown_and_unclosed_are_errors() {
        assert!(
            Template::parse("/x$nosuchvar")
                .unwrap_err()
                .contains("$nosuchvar")
        );
        assert!(Template::parse("/x${uri").is_err());
    }

    #[test]
    fn renders_with_the_lookup() {
        let t = Template::parse("$scheme://b.test$request_uri").unwrap();
        let out = t.render(|v, out| match v {
            Var::Scheme => out.push_str("https"),
            Var::RequestUri => out.push_str("/p?q=1"),
            _ => {}
        });
        assert_eq!(out, "https://b.test/p?q=1");
    }
}

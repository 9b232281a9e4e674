//! `upstream-hash-by`, `-subset` and `-subset-size`: the endpoint is chosen
//! by a key made of nginx variables, so one key keeps reaching one endpoint
//! (or, with subsets, one group of endpoints).

use crate::ingress::template::Template;

/// A route's consistent hashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashBy {
    /// The key, e.g. `$request_uri` or `$http_x_user$arg_tenant`.
    pub key: Template,
    /// `upstream-hash-by-subset`: the key picks a group of this many
    /// endpoints and requests spread over the group.
    pub subset_size: Option<usize>,
}

/// ingress-nginx's `upstream-hash-by-subset-size` (also what 0 means).
const DEFAULT_SUBSET_SIZE: usize = 3;

/// The hash-by annotations as read.
#[derive(Default)]
pub struct HashByBuilder {
    key: Option<Template>,
    subset: bool,
    size: Option<usize>,
}

impl HashByBuilder {
    /// Reads one `upstream-hash-by*` annotation (`name` without the prefix).
    pub fn set(&mut self, name: &str, v: &str) -> Result<(), String> {
        match name {
            "upstream-hash-by" => {
                if v.trim().is_empty() || v.bytes().any(|b| b.is_ascii_whitespace()) {
                    return Err(format!("{v:?} is not a key such as $request_uri"));
                }
                self.key = Some(Template::parse(v)?)
            }
            "upstream-hash-by-subset" => {
                self.subset = super::parse_bool(v).ok_or(format!("{v:?} is not true or false"))?
            }
            "upstream-hash-by-subset-size" => match v.trim().parse::<usize>() {
                Ok(n) => self.size = Some(n),
                Err(_) => return Err(format!("{v:?} is not a whole number")),
            },
            _ => unreachable!("only upstream-hash-by annotations come here"),
        }
        Ok(())
    }

    /// The route's hashing: `None` without `upstream-hash-by`.
    pub fn finish(self) -> Option<HashBy> {
        let size = match self.size {
            None | Some(0) => DEFAULT_SUBSET_SIZE,
            Some(n) => n,
        };
        Some(HashBy {
            key: self.key?,
            subset_size: self.subset.then_some(size),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::template::{Piece, Var};

    fn hash_by(pairs: &[(&str, &str)]) -> Result<Option<HashBy>, String> {
        let mut b = HashByBuilder::default();
        for (k, v) in pairs {
            b.set(k, v)?;
        }
        Ok(b.finish())
    }

    #[test]
    fn keys_are_nginx_variables_and_subsets_default_to_three() {
        let h = hash_by(&[("upstream-hash-by", "$http_x_user$arg_tenant")])
            .unwrap()
            .unwrap();
        assert_eq!(
            h.key.0,
            [
                Piece::Var(Var::Header("x-user".into())),
                Piece::Var(Var::Arg("tenant".into()))
            ]
        );
        assert_eq!(h.subset_size, None);
        let s = hash_by(&[
            ("upstream-hash-by", "$remote_addr"),
            ("upstream-hash-by-subset", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.subset_size, Some(3));
        let s = hash_by(&[
            ("upstream-hash-by", "$remote_addr"),
            ("upstream-hash-by-subset", "true"),
            ("upstream-hash-by-subset-size", "5"),
        ]);
        assert_eq!(s.unwrap().unwrap().subset_size, Some(5));
        assert_eq!(
            hash_by(&[("upstream-hash-by-subset", "true")]).unwrap(),
            None
        );
        assert!(hash_by(&[("upstream-hash-by", "$nonsense")]).is_err());
        assert!(hash_by(&[("upstream-hash-by", "$host $uri")]).is_err());
    }
}

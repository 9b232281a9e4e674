//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), for
//! a listener's `allowedRoutes.namespaces.selector`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Whether `labels` satisfy the selector; an empty selector selects all.
/// An operator the API does not define selects nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let listed = |v: &String| e.values.iter().flatten().any(|x| x == v);
        match e.operator.as_str() {
            "In" => value.is_some_and(listed),
            "NotIn" => !value.is_some_and(listed),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

#[cfg(test)]
mod tests {
    use super::matches;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn labels_and_expressions() {
        let team = labels(&[("team", "a"), ("env", "prod")]);
        let by_label = LabelSelector {
            match_labels: Some(labels(&[("team", "a")])),
            ..Default::default()
        };
        assert!(matches(&by_label, &team));
        assert!(!matches(&by_label, &labels(&[("team", "b")])));
        assert!(matches(&LabelSelector::default(), &team));
        assert!(matches(&expression("env", "In", &["prod", "dev"]), &team));
        assert!(!matches(&expression("env", "NotIn", &["prod"]), &team));
        assert!(matches(&expression("tier", "DoesNotExist", &[]), &team));
        assert!(!matches(&expression("tier", "Exists", &[]), &team));
        assert!(!matches(&expression("env", "Near", &["prod"]), &team));
    }
}

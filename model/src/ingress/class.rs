//! Which Ingresses are ours: by `spec.ingressClassName`, the legacy
//! `kubernetes.io/ingress.class` annotation, or the default IngressClass.

use super::IngressOptions;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The `spec.controller` value of IngressClasses this controller serves.
pub const CONTROLLER: &str = "nodeway.io/ingress-controller";
const LEGACY_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

fn class_is_ours(name: &str, classes: &[&IngressClass], opts: &IngressOptions) -> bool {
    opts.classes.iter().any(|c| c == name)
        || classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
        })
}

/// `Ok(())` when the Ingress is ours, else why it is skipped.
pub fn is_ours(
    ing: &Ingress,
    classes: &[&IngressClass],
    opts: &IngressOptions,
) -> Result<(), String> {
    let named = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .map(|c| (c, "spec.ingressClassName"))
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_ANNOTATION))
                .map(|c| (c.as_str(), "annotation kubernetes.io/ingress.class"))
        });
    match named {
        Some((c, _)) if class_is_ours(c, classes, opts) => Ok(()),
        Some((c, how)) => Err(format!(
            "skipped: its class {c:?} ({how}) is not served here (classes: {})",
            opts.classes.join(", ")
        )),
        None => {
            // The DefaultIngressClass admission plugin would have stamped a
            // class-less Ingress with the default class: the newest one
            // when several are marked (then by name).
            let mut defaults: Vec<&IngressClass> = classes
                .iter()
                .copied()
                .filter(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(DEFAULT_ANNOTATION))
                        .map(String::as_str)
                        == Some("true")
                })
                .collect();
            defaults.sort_by(|a, b| {
                let created = |c: &IngressClass| c.metadata.creation_timestamp.clone();
                created(b)
                    .cmp(&created(a))
                    .then_with(|| a.metadata.name.cmp(&b.metadata.name))
            });
            let default = defaults
                .first()
                .map(|c| c.metadata.name.as_deref().unwrap_or(""));
            if default.is_some_and(|d| class_is_ours(d, classes, opts)) {
                Ok(())
            } else if let Some(other) = default {
                Err(format!(
                    "skipped: it names no ingress class, so it is the default class {other:?}'s, which another controller serves"
                ))
            } else if opts.watch_without_class {
                Ok(())
            } else {
                Err(
                    "skipped: it names no ingress class and --watch-ingress-without-class is off"
                        .into(),
                )
            }
        }
    }
}

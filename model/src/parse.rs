//! Manifest files in, objects out: YAML (multi-document, `kind: List`, anchors)
//! or JSON, with limits so that no file can exhaust the process.

use crate::error::{ConfigError, FieldError, ObjectKey, Warning};
use crate::object::Object;
use crate::service_object::ServiceObject;
use crate::slice::Slice;
use crate::validate::ValidateOptions;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

/// Largest manifest file we read. kubectl's own limit on a request body is 3 MiB
/// per object; a folder file can bundle many objects.
pub const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;
/// Deepest nesting accepted; Kubernetes objects are far shallower.
pub const MAX_DEPTH: usize = 64;
/// Most documents in one stream.
pub const MAX_DOCUMENTS: usize = 100_000;
/// Most YAML nodes in one file, after alias expansion ("billion laughs" stops here).
pub const MAX_NODES: usize = 5_000_000;

/// What one file holds: objects of our kinds (or per-object decode errors),
/// and warnings for what was skipped.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// In file order; a bad object with every problem found in it.
    pub objects: Vec<Result<Object, (ObjectKey, Vec<FieldError>)>>,
    pub warnings: Vec<Warning>,
}

/// Parses one manifest file. An `Err` means the file as a whole is unreadable
/// (syntax, limits); a single object that does not decode is reported per object.
/// Kinds kept in a compact form are validated here, with `opts`.
pub fn parse_file(
    path: &Path,
    bytes: &[u8],
    opts: &ValidateOptions,
) -> Result<ParsedFile, ConfigError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ConfigError::file(
            path,
            format!(
                "file is {} bytes, more than the limit of {MAX_FILE_BYTES}",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::file(path, format!("not UTF-8: {e}")))?;
    let template = || {
        ConfigError::file(
            path,
            "a template (Helm?), not a manifest: render it first (helm template)",
        )
    };
    if text.trim_start().starts_with("{{") {
        return Err(template());
    }
    let docs = if looks_like_json(path, text) {
        parse_json(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        parse_yaml(text).map_err(|e| format!("invalid YAML: {e}"))
    };
    let docs = match docs {
        Ok(d) => d,
        // Template actions make YAML that does not parse.
        Err(_) if text.contains("{{") => return Err(template()),
        Err(e) => return Err(ConfigError::file(path, e)),
    };
    let mut out = ParsedFile::default();
    for doc in docs {
        collect(path, doc, opts, &mut out, 0);
    }
    Ok(out)
}

fn looks_like_json(path: &Path, text: &str) -> bool {
    path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{')
}

fn parse_json(text: &str) -> Result<Vec<Value>, String> {
    // serde_json stops at 128 levels of nesting on its own; we check ours after.
    let mut docs = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let v = v.map_err(|e| e.to_string())?;
        if depth(&v) > MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        docs.push(v);
    }
    Ok(docs)
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = MAX_NODES;
    budget.max_events = 2 * MAX_NODES;
    budget.max_depth = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    // Comment-only documents and bare `---` decode as null: not objects.
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn collect(path: &Path, doc: Value, opts: &ValidateOptions, out: &mut ParsedFile, level: usize) {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind == "List" || kind.ends_with("List") && doc.get("items").is_some() {
        if level > 0 {
            out.warnings.push(Warning {
                file: path.into(),
                object: None,
                message: "nested List skipped".into(),
            });
            return;
        }
        if let Some(Value::Array(items)) = doc.get("items") {
            for item in items.clone() {
                collect(path, item, opts, out, level + 1);
            }
        }
        return;
    }
    let decoded = match (api_version.as_str(), kind.as_str()) {
        // Both validated now, in their API form: they are kept compact.
        ("v1", "Service") => decode_compact(
            doc,
            |s| crate::validate::service(s, opts),
            |s: core::Service| Object::Service(Box::new(ServiceObject::from(s))),
        ),
        ("v1", "Endpoints") => decode(doc, |o| Object::Endpoints(Box::new(o))),
        ("discovery.k8s.io/v1", "EndpointSlice") => decode_compact(
            doc,
            crate::validate::slice,
            |s: discovery::EndpointSlice| Object::EndpointSlice(Box::new(Slice::from(s))),
        ),
        ("networking.k8s.io/v1", "Ingress") => {
            let old_fields = v1beta1_ingress_fields(&doc);
            match decode(doc, |o| Object::Ingress(Box::new(o))) {
                Ok(o) if !old_fields.is_empty() => Err((o.key(), old_fields)),
                decoded => decoded,
            }
        }
        ("networking.k8s.io/v1", "IngressClass") => {
            decode(doc, |o| Object::IngressClass(Box::new(o)))
        }
        ("v1", "Secret") => decode(doc, |o| Object::Secret(Box::new(o))),
        ("v1", "Pod") => decode(doc, |o| Object::Pod(Box::new(o))),
        ("v1", "Namespace") => decode(doc, |o| Object::Namespace(Box::new(o))),
        (v, k) if is_gateway_api(v, k) => decode_gateway_api(doc, k),
        (_, "") => {
            out.warnings.push(Warning {
                file: path.into(),
                object: None,
                message: "document without `kind` skipped".into(),
            });
            return;
        }
        _ => {
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            tracing::debug!(file = %path.display(), %api_version, %kind, name, "kind not served, skipped");
            if let Some(removed) = retired(&api_version, &kind) {
                // The API server refuses these: nothing would be served.
                let ns = doc
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let key = ObjectKey::new(removed.kind, ns, name);
                let fe = FieldError::new(
                    "apiVersion",
                    format!(
                        "{api_version} {kind} was removed in Kubernetes {}; write it as {}",
                        removed.since, removed.now
                    ),
                );
                out.objects.push(Err((key, vec![fe])));
            }
            return;
        }
    };
    out.objects.push(decoded);
}

/// The Gateway API kinds (and versions) read.
fn is_gateway_api(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        (
            "gateway.networking.k8s.io/v1",
            "GatewayClass" | "Gateway" | "HTTPRoute"
        ) | ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant")
    )
}

fn decode_gateway_api(doc: Value, kind: &str) -> Result<Object, (ObjectKey, Vec<FieldError>)> {
    match kind {
        "GatewayClass" => decode(doc, |o| Object::GatewayClass(Box::new(o))),
        "Gateway" => decode(doc, |o| Object::Gateway(Box::new(o))),
        "HTTPRoute" => decode(doc, |o| Object::HttpRoute(Box::new(o))),
        _ => decode(doc, |o| Object::ReferenceGrant(Box::new(o))),
    }
}

/// An API version of a kind we serve that the API server no longer has.
struct Retired {
    kind: &'static str,
    since: &'static str,
    now: &'static str,
}

fn retired(api_version: &str, kind: &str) -> Option<Retired> {
    match (api_version, kind) {
        ("networking.k8s.io/v1beta1" | "extensions/v1beta1", "Ingress") => Some(Retired {
            kind: "Ingress",
            since: "1.22",
            now: "networking.k8s.io/v1 (backend.service.name and .port instead of serviceName and servicePort)",
        }),
        ("discovery.k8s.io/v1beta1", "EndpointSlice") => Some(Retired {
            kind: "EndpointSlice",
            since: "1.25",
            now: "discovery.k8s.io/v1",
        }),
        _ => None,
    }
}

/// Fields of the retired Ingress API in a v1 Ingress: v1 has none of
/// them, so a decode would drop them silently and serve nothing.
fn v1beta1_ingress_fields(doc: &Value) -> Vec<FieldError> {
    fn backend(b: &Value, at: &str, out: &mut Vec<FieldError>) {
        for (old, new) in [
            ("serviceName", "service.name"),
            ("servicePort", "service.port"),
        ] {
            if b.get(old).is_some() {
                out.push(FieldError::new(
                    format!("{at}.{old}"),
                    format!("a networking.k8s.io/v1beta1 field; in v1 it is {at}.{new}"),
                ));
            }
        }
    }
    let mut out = Vec::new();
    let spec = &doc["spec"];
    if spec.get("backend").is_some() {
        out.push(FieldError::new(
            "spec.backend",
            "a networking.k8s.io/v1beta1 field; in v1 it is spec.defaultBackend",
        ));
    }
    for (ri, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        let paths = rule["http"]["paths"].as_array().into_iter().flatten();
        for (pi, p) in paths.enumerate() {
            let at = format!("spec.rules[{ri}].http.paths[{pi}].backend");
            backend(&p["backend"], &at, &mut out);
        }
    }
    out
}

fn decode<T: DeserializeOwned>(
    doc: Value,
    wrap: impl FnOnce(T) -> Object,
) -> Result<Object, (ObjectKey, Vec<FieldError>)> {
    decode_as(doc)
        .map(|(_, v)| wrap(v))
        .map_err(|(key, e)| (key, vec![e]))
}

/// Decodes a kind that is kept in a compact form: validated in its API
/// form first, so the conversion loses nothing a user could get wrong.
fn decode_compact<T: DeserializeOwned>(
    doc: Value,
    validate: impl FnOnce(&T) -> Vec<FieldError>,
    wrap: impl FnOnce(T) -> Object,
) -> Result<Object, (ObjectKey, Vec<FieldError>)> {
    let (key, api) = decode_as(doc).map_err(|(key, e)| (key, vec![e]))?;
    let errs = validate(&api);
    if errs.is_empty() {
        Ok(wrap(api))
    } else {
        Err((key, errs))
    }
}

/// Decodes one document into its API type, with the key it names.
fn decode_as<T: DeserializeOwned>(doc: Value) -> Result<(ObjectKey, T), (ObjectKey, FieldError)> {
    let kind: &'static str = match doc.get("kind").and_then(Value::as_str) {
        Some("Service") => "Service",
        Some("Endpoints") => "Endpoints",
        Some("EndpointSlice") => "EndpointSlice",
        Some("Ingress") => "Ingress",
        Some("IngressClass") => "IngressClass",
        Some("Secret") => "Secret",
        Some("Pod") => "Pod",
        Some("GatewayClass") => "GatewayClass",
        Some("Gateway") => "Gateway",
        Some("HTTPRoute") => "HTTPRoute",
        Some("ReferenceGrant") => "ReferenceGrant",
        _ => "Namespace",
    };
    let mut doc = doc;
    unset_empty_fields(&mut doc, kind);
    let namespaced = !matches!(kind, "Namespace" | "IngressClass" | "GatewayClass");
    // Name the object even when a field is of the wrong type (`name: off`
    // is a YAML boolean): the error must say which object it is.
    let text = |v: Option<&Value>, default: &str| match v {
        None | Some(Value::Null) => default.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let namespace = if namespaced {
        text(doc.pointer("/metadata/namespace"), "default")
    } else {
        String::new()
    };
    let key = ObjectKey::new(kind, &namespace, &text(doc.pointer("/metadata/name"), ""));
    strip(&mut doc);
    match serde_path_to_error(doc) {
        Ok(v) => Ok((key, v)),
        Err(e) => Err((key, e)),
    }
}

/// Fields whose empty value (`""`, and `0` for a targetPort) the API
/// server's defaulting treats as left out: they get the default, as if not
/// written, instead of failing validation.
fn unset_empty_fields(doc: &mut Value, kind: &str) {
    const SERVICE: [&[&str]; 8] = [
        &["spec", "type"],
        &["spec", "sessionAffinity"],
        &["spec", "externalTrafficPolicy"],
        &["spec", "internalTrafficPolicy"],
        &["spec", "ipFamilyPolicy"],
        &["spec", "clusterIP"],
        &["spec", "ports", "*", "protocol"],
        &["spec", "ports", "*", "targetPort"],
    ];
    unset_empty(doc, &["metadata", "namespace"]);
    let paths: &[&[&str]] = match kind {
        "Service" => &SERVICE,
        "EndpointSlice" => &[&["ports", "*", "protocol"]],
        "Endpoints" => &[&["subsets", "*", "ports", "*", "protocol"]],
        _ => &[],
    };
    for p in paths {
        unset_empty(doc, p);
    }
}

/// Removes the field at `path` (`*`: every element of an array) when empty.
fn unset_empty(v: &mut Value, path: &[&str]) {
    match path {
        [] => {}
        ["*", rest @ ..] => {
            for e in v.as_array_mut().into_iter().flatten() {
                unset_empty(e, rest);
            }
        }
        [last] => {
            let empty = |f: &Value| {
                f.as_str() == Some("") || (*last == "targetPort" && f.as_u64() == Some(0))
            };
            if let Some(o) = v.as_object_mut()
                && o.get(*last).is_some_and(empty)
            {
                o.remove(*last);
            }
        }
        [key, rest @ ..] => {
            if let Some(child) = v.get_mut(*key) {
                unset_empty(child, rest);
            }
        }
    }
}

/// Annotation kubectl keeps a whole copy of the object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no plane reads and can be large: `managedFields` (often
/// bigger than the object) and kubectl's last-applied copy of the object.
/// Kept objects are then about the size of what was written. The
/// `resourceVersion` goes too: a status write changes only it and the
/// status, so an object whose status nothing reads compares equal and
/// costs no recompile.
fn strip(doc: &mut Value) {
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    meta.remove("managedFields");
    meta.remove("resourceVersion");
    if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        ann.remove(LAST_APPLIED);
    }
}

/// Decodes and, on failure, names the field as well as serde_json lets us:
/// its message carries the offending value and expected type.
fn serde_path_to_error<T: DeserializeOwned>(doc: Value) -> Result<T, FieldError> {
    // From a reference: the document stays whole for locating a bad field,
    // without a copy per object.
    T::deserialize(&doc).map_err(|e| {
        let field = locate_bad_field::<T>(&doc).unwrap_or_else(|| "(object)".to_string());
        FieldError::new(field, e.to_string())
    })
}

/// Finds the first field whose removal makes the object decode: a cheap way to
/// point the user at the field, without another dependency.
fn locate_bad_field<T: DeserializeOwned>(doc: &Value) -> Option<String> {
    fn walk<T: DeserializeOwned>(root: &Value, path: &mut Vec<String>, here: &Value) -> bool {
        let children: Vec<(String, &Value)> = match here {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), v))
                .collect(),
            _ => return false,
        };
        for (k, child) in children {
            path.push(k);
            let mut trial = root.clone();
            if remove_at(&mut trial, path) && serde_json::from_value::<T>(trial).is_ok() {
                // This subtree holds the problem; look deeper for the exact leaf.
                walk::<T>(root, path, child);
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    if walk::<T>(doc, &mut path, doc) {
        let mut s = String::new();
        for p in path {
            if !p.starts_with('[') && !s.is_empty() {
                s.push('.');
            }
            s.push_str(&p);
        }
        Some(s)
    } else {
        None
    }
}

fn remove_at(v: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for p in parents {
        cur = match (cur, p.strip_prefix('[')) {
            (Value::Array(a), Some(i)) => match i.trim_end_matches(']').parse::<usize>() {
                Ok(i) if i < a.len() => &mut a[i],
                _ => return false,
            },
            (Value::Object(m), None) => match m.get_mut(p) {
                Some(c) => c,
                None => return false,
            },
            _ => return false,
        };
    }
    match (cur, last.strip_prefix('[')) {
        (Value::Array(a), Some(i)) => match i.trim_end_matches(']').parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        (Value::Object(m), None) => m.remove(last).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;

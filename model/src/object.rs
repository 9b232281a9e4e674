//! The manifest kinds nodeway understands, as the real Kubernetes API types.

use crate::error::ObjectKey;
use crate::gateway::types as gateway;
use crate::service_object::ServiceObject;
use crate::slice::Slice;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One parsed manifest object of a kind we serve.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// Kept compact (see [`ServiceObject`]); validated in its API form
    /// when parsed.
    Service(Box<ServiceObject>),
    Endpoints(Box<core::Endpoints>),
    /// Kept compact (see [`Slice`]); validated in its API form when parsed.
    EndpointSlice(Box<Slice>),
    Ingress(Box<networking::Ingress>),
    IngressClass(Box<networking::IngressClass>),
    Secret(Box<core::Secret>),
    Pod(Box<core::Pod>),
    Namespace(Box<core::Namespace>),
    GatewayClass(Box<gateway::GatewayClass>),
    Gateway(Box<gateway::Gateway>),
    HttpRoute(Box<gateway::HttpRoute>),
    ReferenceGrant(Box<gateway::ReferenceGrant>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Service(_) => "Service",
            Object::Endpoints(_) => "Endpoints",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::Secret(_) => "Secret",
            Object::Pod(_) => "Pod",
            Object::Namespace(_) => "Namespace",
            Object::GatewayClass(_) => "GatewayClass",
            Object::Gateway(_) => "Gateway",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::ReferenceGrant(_) => "ReferenceGrant",
        }
    }

    /// The object's metadata; `None` for a Service or an EndpointSlice,
    /// which keep only the fields they are read for.
    pub fn metadata(&self) -> Option<&ObjectMeta> {
        Some(match self {
            Object::Service(_) | Object::EndpointSlice(_) => return None,
            Object::Endpoints(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
        })
    }

    /// `metadata.name` and `metadata.namespace` as written.
    pub fn name_and_namespace(&self) -> (Option<&str>, Option<&str>) {
        match (self, self.metadata()) {
            (Object::Service(s), _) => (s.name.as_deref(), s.namespace.as_deref()),
            (Object::EndpointSlice(s), _) => (s.name.as_deref(), s.namespace.as_deref()),
            (_, Some(m)) => (m.name.as_deref(), m.namespace.as_deref()),
            (_, None) => (None, None),
        }
    }

    /// Cluster-scoped kinds have no namespace; namespaced ones default to `default`
    /// as kubectl does.
    pub fn is_namespaced(&self) -> bool {
        !matches!(
            self,
            Object::IngressClass(_) | Object::Namespace(_) | Object::GatewayClass(_)
        )
    }

    pub fn namespace(&self) -> &str {
        if !self.is_namespaced() {
            return "";
        }
        self.name_and_namespace().1.unwrap_or("default")
    }

    pub fn name(&self) -> &str {
        self.name_and_namespace().0.unwrap_or("")
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind(), self.namespace(), self.name())
    }
}

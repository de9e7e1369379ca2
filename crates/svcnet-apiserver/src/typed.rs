//! The typed (k8s-openapi) form of each served kind, which the server uses in two places: request
//! bodies are type-checked and pruned by a round trip through it, and the OpenAPI v3 documents are
//! generated from its schema. Found by the kind's definition, never by its name.

use k8s_openapi::api::{apps, certificates, coordination, core, discovery, networking, rbac};
use schemars::{JsonSchema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use svcnet_api::resources::ResourceType;
use svcnet_kinds::{Kind, kinds};

/// What the server does with a kind's typed form.
pub struct Typed {
    /// Round-trips an object through the type: the result holds only known fields, normalized.
    pub roundtrip: fn(&Value) -> Result<Value, String>,
    /// Adds the type's schema (and those it refers to) to an OpenAPI generator.
    pub schema: fn(&mut SchemaGenerator),
}

fn roundtrip_as<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) {
    generator.subschema_for::<T>();
}

const fn typed<T: DeserializeOwned + Serialize + JsonSchema>() -> Typed {
    Typed {
        roundtrip: roundtrip_as::<T>,
        schema: schema_of::<T>,
    }
}

/// The typed form of every served kind, by the kind's definition.
static TYPED: &[(&Kind, Typed)] = &[
    (&kinds::namespace::KIND, typed::<core::v1::Namespace>()),
    (&kinds::service::KIND, typed::<core::v1::Service>()),
    (&kinds::endpoints::KIND, typed::<core::v1::Endpoints>()),
    (&kinds::pod::KIND, typed::<core::v1::Pod>()),
    (&kinds::node::KIND, typed::<core::v1::Node>()),
    (&kinds::event::KIND, typed::<core::v1::Event>()),
    (
        &kinds::endpointslice::KIND,
        typed::<discovery::v1::EndpointSlice>(),
    ),
    (&kinds::lease::KIND, typed::<coordination::v1::Lease>()),
    (&kinds::deployment::KIND, typed::<apps::v1::Deployment>()),
    (&kinds::replicaset::KIND, typed::<apps::v1::ReplicaSet>()),
    (&kinds::configmap::KIND, typed::<core::v1::ConfigMap>()),
    (&kinds::secret::KIND, typed::<core::v1::Secret>()),
    (&kinds::serviceaccount::KIND, typed::<core::v1::ServiceAccount>()),
    (&kinds::daemonset::KIND, typed::<apps::v1::DaemonSet>()),
    (&kinds::rbac::ROLE, typed::<rbac::v1::Role>()),
    (&kinds::rbac::CLUSTER_ROLE, typed::<rbac::v1::ClusterRole>()),
    (&kinds::rbac::ROLE_BINDING, typed::<rbac::v1::RoleBinding>()),
    (
        &kinds::rbac::CLUSTER_ROLE_BINDING,
        typed::<rbac::v1::ClusterRoleBinding>(),
    ),
    (
        &kinds::csr::KIND,
        typed::<certificates::v1::CertificateSigningRequest>(),
    ),
    (&kinds::servicecidr::KIND, typed::<networking::v1::ServiceCIDR>()),
    (&kinds::ipaddress::KIND, typed::<networking::v1::IPAddress>()),
];

/// The typed form of a resource type, if it has one.
pub fn of(rt: &ResourceType) -> Option<&'static Typed> {
    let kind = kinds::of(rt);
    TYPED.iter().find(|(k, _)| std::ptr::eq(*k, kind)).map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_served_kind_has_a_typed_form() {
        for k in svcnet_kinds::KINDS {
            assert!(super::of(&k.resource).is_some(), "{}", k.resource.kind);
        }
    }
}

//! Services and EndpointSlices from a YAML file, for `svcnet proxy --manifests` (the data plane without an
//! API server).
//!
//! The file holds YAML documents separated by `---`, each a `Service`, an `EndpointSlice` or a `List` of
//! them; anything else is an error naming the document, so a typo is never silently ignored. Objects
//! without a namespace go to `default`, as kubectl would put them.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::model::Model;

/// The objects of a manifests file.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    /// The Services, in file order.
    pub services: Vec<Service>,
    /// The EndpointSlices, in file order.
    pub slices: Vec<EndpointSlice>,
}

/// A manifests file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A document is not valid YAML or does not fit its kind's schema.
    #[error("document {doc}: {message}")]
    Invalid {
        /// 1-based document number.
        doc: usize,
        /// What is wrong.
        message: String,
    },
    /// A document of a kind the data plane does not use.
    #[error("document {doc}: kind {kind:?} is not a Service, EndpointSlice or List")]
    UnsupportedKind {
        /// 1-based document number.
        doc: usize,
        /// The kind found.
        kind: String,
    },
}

impl Manifests {
    /// Parses the text of a manifests file.
    pub fn parse(text: &str) -> Result<Manifests, ManifestError> {
        let mut out = Manifests::default();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let doc_no = i + 1;
            let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Invalid {
                doc: doc_no,
                message: e.to_string(),
            })?;
            if value.is_null() {
                continue;
            }
            out.add(doc_no, value)?;
        }
        Ok(out)
    }

    fn add(&mut self, doc: usize, value: serde_yaml::Value) -> Result<(), ManifestError> {
        let invalid = |e: serde_yaml::Error| ManifestError::Invalid {
            doc,
            message: e.to_string(),
        };
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "Service" => {
                let mut s: Service = serde_yaml::from_value(value).map_err(invalid)?;
                s.metadata.namespace.get_or_insert_with(|| "default".into());
                self.services.push(s);
            }
            "EndpointSlice" => {
                let mut s: EndpointSlice = serde_yaml::from_value(value).map_err(invalid)?;
                s.metadata.namespace.get_or_insert_with(|| "default".into());
                self.slices.push(s);
            }
            "List" | "ServiceList" | "EndpointSliceList" => {
                let items = value
                    .get("items")
                    .and_then(|i| i.as_sequence())
                    .cloned()
                    .unwrap_or_default();
                for item in items {
                    self.add(doc, item)?;
                }
            }
            _ => return Err(ManifestError::UnsupportedKind { doc, kind }),
        }
        Ok(())
    }

    /// Feeds every object into `model`.
    pub fn load_into(&self, model: &mut Model) {
        for s in &self.services {
            model.upsert_service(s);
        }
        for s in &self.slices {
            model.upsert_slice(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    const FILE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 127.0.0.1
  ports: [{port: 18183, targetPort: 8080}]
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-a, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{port: 18081}]
  endpoints: [{addresses: [127.0.0.1]}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-b, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{port: 18082}]
  endpoints: [{addresses: [127.0.0.1]}]
"#;

    #[test]
    fn parses_services_slices_and_lists() {
        let m = Manifests::parse(FILE).expect("parses");
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.slices.len(), 2);
        let mut model = Model::new(ModelConfig::default());
        m.load_into(&mut model);
        let out = model.take_changes();
        assert_eq!(out.changes.len(), 1);
        let port = model.ports().next().expect("one port");
        assert_eq!(port.port, 18183);
        let eps: Vec<_> = port
            .internal_endpoints
            .iter()
            .map(|e| e.addr().to_string())
            .collect();
        assert_eq!(eps, ["127.0.0.1:18081", "127.0.0.1:18082"]);
    }

    #[test]
    fn rejects_other_kinds_and_bad_yaml_with_the_document_number() {
        let e = Manifests::parse("kind: Service\nmetadata: {name: a}\n---\nkind: Pod\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 2: kind \"Pod\" is not a Service, EndpointSlice or List"
        );
        let e = Manifests::parse("kind: Service\nspec: {ports: 7}\n").unwrap_err();
        assert!(e.to_string().starts_with("document 1: "), "{e}");
        let e = Manifests::parse("kind: [\n").unwrap_err();
        assert!(e.to_string().starts_with("document 1: "), "{e}");
    }
}

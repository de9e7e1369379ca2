//! The ServiceCIDR and IPAddress strategies (kube's `pkg/registry/networking/{servicecidr,ipaddress}`),
//! with kube's validation (`pkg/apis/networking/validation`): a ServiceCIDR holds one or two CIDRs, one
//! per family, that never change; an IPAddress names its parent, which never changes either. A new
//! ServiceCIDR carries the protection finalizer from the start, so that no window exists in which it
//! could be deleted with addresses still allocated from it.

use ipnet::IpNet;
use serde_json::{Value, json};
use svcnet_api::field::{BadValue, FieldError, Path, go_string_slice};
use svcnet_api::validation::{self, FIELD_IMMUTABLE_ERROR_MSG};
use svcnet_kinds::go_quote;
use svcnet_kinds::kinds::servicecidr::FINALIZER;

use super::Strategy;

/// ServiceCIDRs.
pub(super) struct ServiceCidr;

/// IPAddresses.
pub(super) struct IpAddress;

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The CIDRs of a ServiceCIDR as written.
pub fn service_cidr_cidrs(obj: &Value) -> Vec<String> {
    strings(obj.pointer("/spec/cidrs"))
}

/// Go's `%#v` of the spec, which kube prints as the bad value of the list-level errors.
fn go_spec(cidrs: &[String]) -> BadValue {
    let quoted: Vec<String> = cidrs.iter().map(|c| go_quote(c)).collect();
    BadValue::Raw(format!(
        "networking.ServiceCIDRSpec{{CIDRs:[]string{{{}}}}}",
        quoted.join(", ")
    ))
}

impl Strategy for ServiceCidr {
    fn prepare_create(&self, obj: &mut Value) {
        let Some(map) = obj.as_object_mut() else { return };
        // kube resets the status of a new ServiceCIDR; the servicecidrs controller reports Ready.
        map.remove("status");
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let finalizers = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f == FINALIZER)
            {
                list.push(json!(FINALIZER));
            }
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let cidrs = service_cidr_cidrs(obj);
        if let Some(old) = old {
            let was = service_cidr_cidrs(old);
            if was != cidrs {
                return vec![FieldError::invalid(
                    "spec.cidrs",
                    go_string_slice(&cidrs),
                    FIELD_IMMUTABLE_ERROR_MSG,
                )];
            }
            return Vec::new();
        }
        let path = Path::new("spec").child("cidrs");
        if cidrs.is_empty() {
            return vec![FieldError::required(path.as_str(), "at least one CIDR required")];
        }
        if cidrs.len() > 2 {
            return vec![FieldError::invalid(
                path.as_str(),
                go_spec(&cidrs),
                "may only hold up to 2 values",
            )];
        }
        if cidrs.len() == 2 {
            let fams: Vec<Option<bool>> = cidrs
                .iter()
                .map(|c| c.parse::<IpNet>().ok().map(|n| n.addr().is_ipv4()))
                .collect();
            if fams[0].is_none() || fams[1].is_none() || fams[0] == fams[1] {
                return vec![FieldError::invalid(
                    path.as_str(),
                    go_spec(&cidrs),
                    "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64",
                )];
            }
        }
        cidrs
            .iter()
            .enumerate()
            .flat_map(|(i, c)| validation::is_valid_cidr(&path.index(i), c))
            .collect()
    }
}

/// Go's `%#v` of a `*networking.ParentReference`, the bad value of kube's immutability error.
fn go_parent_ref(p: Option<&Value>) -> BadValue {
    let Some(p) = p.filter(|p| p.is_object()) else {
        return BadValue::Raw("(*networking.ParentReference)(nil)".into());
    };
    let f = |k: &str| go_quote(p.get(k).and_then(Value::as_str).unwrap_or_default());
    BadValue::Raw(format!(
        "&networking.ParentReference{{Group:{}, Resource:{}, Namespace:{}, Name:{}}}",
        f("group"),
        f("resource"),
        f("namespace"),
        f("name")
    ))
}

impl Strategy for IpAddress {
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let parent = obj.pointer("/spec/parentRef");
        if let Some(old) = old {
            let was = old.pointer("/spec/parentRef");
            if was != parent {
                return vec![FieldError::invalid(
                    "spec.parentRef",
                    go_parent_ref(parent),
                    FIELD_IMMUTABLE_ERROR_MSG,
                )];
            }
            return Vec::new();
        }
        let Some(p) = parent.filter(|p| p.is_object()) else {
            return vec![FieldError::required("spec.parentRef", "")];
        };
        let path = Path::new("spec").child("parentRef");
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
        let mut errs = Vec::new();
        // The core group of Services is the empty string, so the group cannot be required.
        if !s("group").is_empty() {
            for msg in validation::is_dns1123_subdomain(s("group")) {
                errs.push(FieldError::invalid(path.child("group").as_str(), s("group"), msg));
            }
        }
        for (field, required) in [("resource", true), ("name", true), ("namespace", false)] {
            let v = s(field);
            if v.is_empty() {
                if required {
                    errs.push(FieldError::required(path.child(field).as_str(), ""));
                }
                continue;
            }
            for msg in validation::name_is_path_segment(v, false) {
                errs.push(FieldError::invalid(path.child(field).as_str(), v, msg));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn service_cidrs_are_one_or_two_of_different_families_and_immutable() {
        let v = |c: Value| ServiceCidr.validate(&json!({"spec": {"cidrs": c}}), None);
        assert!(v(json!(["10.0.0.0/24"])).is_empty());
        assert!(v(json!(["10.0.0.0/24", "fd00::/112"])).is_empty());
        assert_eq!(
            messages(&v(json!([]))),
            ["spec.cidrs: Required value: at least one CIDR required"]
        );
        assert_eq!(
            messages(&v(json!(["10.0.0.0/24", "10.1.0.0/24"]))),
            [
                "spec.cidrs: Invalid value: networking.ServiceCIDRSpec{CIDRs:[]string{\"10.0.0.0/24\", \"10.1.0.0/24\"}}: may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64"
            ]
        );
        assert_eq!(
            messages(&v(json!(["bad"]))),
            [
                "spec.cidrs[0]: Invalid value: \"bad\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
            ]
        );
        let old = json!({"spec": {"cidrs": ["10.0.0.0/24"]}});
        let new = json!({"spec": {"cidrs": ["10.0.1.0/24"]}});
        assert_eq!(
            messages(&ServiceCidr.validate(&new, Some(&old))),
            ["spec.cidrs: Invalid value: []string{\"10.0.1.0/24\"}: field is immutable"]
        );
        let mut created = json!({"metadata": {"name": "x"}, "spec": {"cidrs": ["10.0.0.0/24"]}, "status": {"conditions": []}});
        ServiceCidr.prepare_create(&mut created);
        assert_eq!(created["metadata"]["finalizers"], json!([FINALIZER]));
        assert!(created.get("status").is_none());
    }

    #[test]
    fn ip_addresses_need_a_parent_that_never_changes() {
        assert_eq!(
            messages(&IpAddress.validate(&json!({"spec": {}}), None)),
            ["spec.parentRef: Required value"]
        );
        let ok = json!({"spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "web"}}});
        assert!(IpAddress.validate(&ok, None).is_empty());
        let no_name = json!({"spec": {"parentRef": {"resource": "services"}}});
        assert_eq!(
            messages(&IpAddress.validate(&no_name, None)),
            ["spec.parentRef.name: Required value"]
        );
        let moved = json!({"spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "other"}}});
        assert_eq!(
            messages(&IpAddress.validate(&moved, Some(&ok))),
            [
                "spec.parentRef: Invalid value: &networking.ParentReference{Group:\"\", Resource:\"services\", Namespace:\"default\", Name:\"other\"}: field is immutable"
            ]
        );
        assert_eq!(
            validation::name_is_ip_address("10.0.0.01", false).len(),
            1,
            "a sloppy form is refused"
        );
        assert_eq!(
            validation::name_is_ip_address("2001:DB8::1", false),
            ["must be in canonical form (\"2001:db8::1\")"]
        );
        assert!(validation::name_is_ip_address("10.0.0.1", false).is_empty());
    }
}

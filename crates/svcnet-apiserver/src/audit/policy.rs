//! The audit policy (`audit.k8s.io/v1` `Policy`, kube-apiserver's `--audit-policy-file`): reading it
//! strictly, validating it with kube's rules, and choosing a request's level — the first rule that
//! matches wins, as in kube's `policy.NewPolicyRuleEvaluator`. Pure: no I/O besides reading the file.

use std::path::Path;

use serde::Deserialize;
use svcnet_api::field::{FieldError, Path as FieldPath, aggregate_message, go_string_slice};

use crate::authn::UserInfo;
use crate::authz::rbac::Attributes;

/// How much of a request an event records (kube's `audit.Level`), least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Level {
    /// No event.
    None,
    /// User, verb, resource, timestamps, response status: no bodies.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, the request body and the response body.
    RequestResponse,
}

impl Level {
    const NAMES: [&'static str; 4] = ["None", "Metadata", "Request", "RequestResponse"];

    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "None" => Level::None,
            "Metadata" => Level::Metadata,
            "Request" => Level::Request,
            "RequestResponse" => Level::RequestResponse,
            _ => return None,
        })
    }

    /// The level's name as events spell it.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The stages a request goes through (kube's `audit.Stage`); each may produce an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stage {
    /// As soon as the request is received, before it is handled.
    RequestReceived,
    /// Long-running requests (watch, logs): once the response headers are sent.
    ResponseStarted,
    /// Once the response is complete.
    ResponseComplete,
    /// When handling the request panicked.
    Panic,
}

impl Stage {
    const NAMES: [&'static str; 4] = ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"];

    fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "RequestReceived" => Stage::RequestReceived,
            "ResponseStarted" => Stage::ResponseStarted,
            "ResponseComplete" => Stage::ResponseComplete,
            "Panic" => Stage::Panic,
            _ => return None,
        })
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of stages (a policy's `omitStages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages(u8);

impl Stages {
    /// Whether the set holds `stage`.
    pub fn contains(self, stage: Stage) -> bool {
        self.0 & stage.bit() != 0
    }

    fn union(self, other: Stages) -> Stages {
        Stages(self.0 | other.0)
    }
}

/// What the policy decided for one request (kube's `RequestAuditConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The level of its events.
    pub level: Level,
    /// The stages that produce no event: the policy's and the matching rule's.
    pub omit_stages: Stages,
    /// Whether request and response bodies lose `metadata.managedFields`.
    pub omit_managed_fields: bool,
}

// The file as written: unknown fields are refused (a typo such as `userGroup` would otherwise widen a
// rule silently).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // ObjectMeta: accepted, not used (kube ignores it too)
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleFile {
    #[serde(default)]
    level: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

/// A rule's `resources` entry: a group and resources in it (`""` is the core group).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// One rule of the policy (kube's `audit.PolicyRule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    level: Level,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
    omit_stages: Stages,
    omit_managed_fields: Option<bool>,
}

/// A loaded, valid audit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Stages,
    omit_managed_fields: bool,
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a Policy as `audit.k8s.io/v1` defines it (syntax, unknown field, wrong kind).
    #[error("decoding {path}: {message}")]
    Decode {
        /// The file.
        path: String,
        /// What is wrong, where.
        message: String,
    },
    /// The Policy breaks kube's validation rules.
    #[error("invalid audit policy {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// kube's field errors.
        message: String,
    },
    /// kube-apiserver refuses a policy without rules, in these words.
    #[error("loaded illegal policy with 0 rules from file {0}")]
    NoRules(String),
}

fn stages(list: &[String], path: &FieldPath, errs: &mut Vec<FieldError>) -> Stages {
    let mut set = Stages::default();
    for (i, s) in list.iter().enumerate() {
        match Stage::parse(s) {
            Some(st) => set.0 |= st.bit(),
            None => errs.push(FieldError::not_supported(
                path.index(i),
                s.as_str(),
                &Stage::NAMES,
            )),
        }
    }
    set
}

impl Policy {
    /// Reads and validates the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates a policy (`name` names it in errors).
    pub fn parse(text: &str, name: &str) -> Result<Policy, PolicyError> {
        let decode = |message: String| PolicyError::Decode {
            path: name.to_string(),
            message,
        };
        let file: PolicyFile = serde_yaml::from_str(text).map_err(|e| decode(e.to_string()))?;
        match (file.api_version.as_deref(), file.kind.as_deref()) {
            (Some("audit.k8s.io/v1"), Some("Policy")) => {}
            (Some(v), Some(k)) => {
                return Err(decode(format!(
                    "no kind {k:?} is registered for version {v:?}: svcnet reads kind \"Policy\" of \
                     apiVersion \"audit.k8s.io/v1\""
                )));
            }
            _ => return Err(decode("Object 'Kind' or 'apiVersion' is missing: want kind \"Policy\", apiVersion \"audit.k8s.io/v1\"".into())),
        }
        // kube's `validation.ValidatePolicy`.
        let mut errs = Vec::new();
        let omit_stages = stages(&file.omit_stages, &FieldPath::new("omitStages"), &mut errs);
        let mut rules = Vec::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            let p = FieldPath::new("rules").index(i);
            let level = if r.level.is_empty() {
                errs.push(FieldError::required(p.child("level"), ""));
                Level::None
            } else {
                Level::parse(&r.level).unwrap_or_else(|| {
                    errs.push(FieldError::not_supported(
                        p.child("level"),
                        r.level.as_str(),
                        &Level::NAMES,
                    ));
                    Level::None
                })
            };
            if !r.non_resource_urls.is_empty() {
                if !r.namespaces.is_empty() || !r.resources.is_empty() {
                    errs.push(FieldError::invalid(
                        p.child("nonResourceURLs"),
                        go_string_slice(&r.non_resource_urls),
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
                for (j, u) in r.non_resource_urls.iter().enumerate() {
                    let up = p.child("nonResourceURLs").index(j);
                    if !u.starts_with('/') && u != "*" {
                        errs.push(FieldError::invalid(
                            up,
                            u.as_str(),
                            "non-resource URL rules must begin with a '/' character",
                        ));
                    } else if u.trim_end_matches('*').contains('*') {
                        errs.push(FieldError::invalid(
                            up,
                            u.as_str(),
                            "non-resource URL wildcards '*' must be the final character of the rule",
                        ));
                    }
                }
            }
            for (j, gr) in r.resources.iter().enumerate() {
                let gp = p.child("resources").index(j);
                // Group names must be DNS subdomains: `apps/v1` is refused, `apps` is meant.
                let msgs = svcnet_api::validation::name_is_dns_subdomain(&gr.group, false);
                if !gr.group.is_empty() && !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        gp.child("group"),
                        gr.group.as_str(),
                        msgs.join(","),
                    ));
                }
                if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                    errs.push(FieldError::invalid(
                        gp.child("resourceNames"),
                        go_string_slice(&gr.resource_names),
                        "using resourceNames requires at least one resource",
                    ));
                }
            }
            let omit = stages(&r.omit_stages, &p.child("omitStages"), &mut errs);
            rules.push(Rule {
                level,
                users: r.users,
                user_groups: r.user_groups,
                verbs: r.verbs,
                resources: r.resources,
                namespaces: r.namespaces,
                non_resource_urls: r.non_resource_urls,
                omit_stages: omit,
                omit_managed_fields: r.omit_managed_fields,
            });
        }
        if !errs.is_empty() {
            return Err(PolicyError::Invalid {
                path: name.to_string(),
                message: aggregate_message(&errs),
            });
        }
        if rules.is_empty() {
            return Err(PolicyError::NoRules(name.to_string()));
        }
        Ok(Policy {
            rules,
            omit_stages,
            omit_managed_fields: file.omit_managed_fields,
        })
    }

    /// The level and options for a request by `user` (`None`: unauthenticated) doing `attrs`: the
    /// first matching rule's, else level None.
    pub fn evaluate(&self, user: Option<&UserInfo>, attrs: &Attributes) -> Decision {
        match self.rules.iter().find(|r| r.matches(user, attrs)) {
            Some(r) => Decision {
                level: r.level,
                omit_stages: self.omit_stages.union(r.omit_stages),
                omit_managed_fields: r.omit_managed_fields.unwrap_or(self.omit_managed_fields),
            },
            None => Decision {
                level: Level::None,
                omit_stages: self.omit_stages,
                omit_managed_fields: self.omit_managed_fields,
            },
        }
    }
}

fn has(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == s)
}

impl Rule {
    /// kube's `ruleMatches`.
    fn matches(&self, user: Option<&UserInfo>, attrs: &Attributes) -> bool {
        if !self.users.is_empty() && !user.is_some_and(|u| has(&self.users, &u.name)) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !user.is_some_and(|u| u.groups.iter().any(|g| has(&self.user_groups, g)))
        {
            return false;
        }
        if !self.verbs.is_empty() && !has(&self.verbs, &attrs.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.matches_resource(attrs);
        }
        if !self.non_resource_urls.is_empty() {
            return !attrs.resource_request
                && self.non_resource_urls.iter().any(|spec| {
                    spec == "*"
                        || *spec == attrs.path
                        || (spec.ends_with('*') && attrs.path.starts_with(spec.trim_end_matches('*')))
                });
        }
        true
    }

    /// kube's `ruleMatchesResource`.
    fn matches_resource(&self, attrs: &Attributes) -> bool {
        if !attrs.resource_request {
            return false;
        }
        // Cluster-scoped resources are in the namespace "".
        if !self.namespaces.is_empty() && !has(&self.namespaces, &attrs.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        self.resources
            .iter()
            .filter(|gr| gr.group == attrs.api_group)
            .any(|gr| {
                if gr.resources.is_empty() {
                    return true;
                }
                if !gr.resource_names.is_empty() && !has(&gr.resource_names, &attrs.name) {
                    return false;
                }
                gr.resources.iter().any(|res| {
                    *res == combined
                        || res == "*"
                        || (!attrs.subresource.is_empty()
                            && res.strip_prefix("*/") == Some(attrs.subresource.as_str()))
                        || res.strip_suffix("/*") == Some(attrs.resource.as_str())
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, ns: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn path(verb: &str, p: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: p.into(),
            ..Default::default()
        }
    }

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-proxy"]
  verbs: [watch]
- level: None
  nonResourceURLs: ["/healthz*", /version]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps], resourceNames: [settings]}]
- level: Request
  userGroups: [dev]
  namespaces: [team-a]
  omitStages: [ResponseStarted]
- level: Metadata
  resources: [{group: "", resources: ["*/status", "pods/*"]}, {group: apps}]
  omitManagedFields: true
- level: Metadata
"#;

    #[test]
    fn first_matching_rule_wins() {
        let p = Policy::parse(POLICY, "p").unwrap();
        let proxy = UserInfo::new("system:kube-proxy", &[]);
        let dev = UserInfo::new("jane", &["dev"]);
        let d = p.evaluate(Some(&proxy), &attrs("watch", "", "", "services", "", ""));
        assert_eq!(d.level, Level::None);
        assert!(d.omit_stages.contains(Stage::RequestReceived));
        let d = p.evaluate(Some(&proxy), &attrs("list", "", "", "services", "", ""));
        assert_eq!(d.level, Level::Metadata);
        assert!(!d.omit_managed_fields);
        assert_eq!(p.evaluate(None, &path("get", "/healthz/etcd")).level, Level::None);
        assert_eq!(p.evaluate(None, &path("get", "/version")).level, Level::None);
        assert_eq!(p.evaluate(None, &path("get", "/versions")).level, Level::Metadata);
        let cm = |name: &str| attrs("get", "team-a", "", "configmaps", "", name);
        assert_eq!(
            p.evaluate(Some(&dev), &cm("settings")).level,
            Level::RequestResponse
        );
        let d = p.evaluate(Some(&dev), &cm("other"));
        assert_eq!(d.level, Level::Request);
        assert!(d.omit_stages.contains(Stage::ResponseStarted));
        assert!(d.omit_stages.contains(Stage::RequestReceived));
        assert_eq!(p.evaluate(None, &cm("other")).level, Level::Metadata);
        // Subresource patterns and a whole group.
        for a in [
            attrs("update", "x", "", "services", "status", "s"),
            attrs("get", "x", "", "pods", "log", "p"),
            attrs("create", "x", "apps", "deployments", "", ""),
        ] {
            let d = p.evaluate(None, &a);
            assert_eq!(d.level, Level::Metadata, "{a:?}");
            assert!(d.omit_managed_fields, "{a:?}");
        }
        // As kube's: `pods/*` also matches the pods themselves; `*/status` only subresources.
        assert!(
            p.evaluate(None, &attrs("get", "x", "", "pods", "", "p"))
                .omit_managed_fields
        );
        let d = p.evaluate(None, &attrs("get", "x", "", "services", "", "s"));
        assert!(!d.omit_managed_fields);
    }

    #[test]
    fn refuses_what_kube_refuses() {
        let err = |text: &str| Policy::parse(text, "p.yaml").unwrap_err().to_string();
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
        let e = err(&format!("{head}rules:\n- level: Metadata\n  userGroup: [dev]\n"));
        assert!(e.contains("unknown field `userGroup`"), "{e}");
        let e = err(&format!(
            "{head}rules:\n- level: Metadata\n  resources: [{{group: \"\", resource: [pods]}}]\n"
        ));
        assert!(e.contains("unknown field `resource`"), "{e}");
        let e = err(&format!("{head}rules:\n- level: Everything\n"));
        assert_eq!(
            e,
            "invalid audit policy p.yaml: rules[0].level: Unsupported value: \"Everything\": supported \
             values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\""
        );
        let e = err(&format!("{head}rules:\n- {{}}\n"));
        assert!(e.contains("rules[0].level: Required value"), "{e}");
        let e = err(&format!(
            "{head}rules:\n- level: None\n  nonResourceURLs: [healthz]\n  namespaces: [a]\n"
        ));
        assert!(
            e.contains("rules cannot apply to both regular resources and non-resource URLs")
                && e.contains("must begin with a '/' character"),
            "{e}"
        );
        let e = err(&format!("{head}omitStages: [Done]\nrules:\n- level: None\n"));
        assert!(e.contains("omitStages[0]: Unsupported value: \"Done\""), "{e}");
        let e = err(&format!(
            "{head}rules:\n- level: None\n  resources: [{{group: Apps/v1}}]\n"
        ));
        assert!(
            e.contains("rules[0].resources[0].group: Invalid value: \"Apps/v1\""),
            "{e}"
        );
        assert_eq!(err(head), "loaded illegal policy with 0 rules from file p.yaml");
        let e = err("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n");
        assert!(e.contains("audit.k8s.io/v1beta1"), "{e}");
    }
}

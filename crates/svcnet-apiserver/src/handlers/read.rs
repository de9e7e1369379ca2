//! Reads: `GET` of one object or a collection (with selectors, paging and the Table and metadata
//! representations), all from the watch cache.

use super::*;

impl ApiServer {
    /// `GET` one object.
    pub fn get(
        &self,
        route: &ResourceRoute,
        repr: Representation,
        params: &Params,
    ) -> Result<Reply, ApiError> {
        let name = route.name.as_deref().unwrap_or_default();
        let cached = self
            .cache
            .get(&route.key(name))
            .ok_or_else(|| ApiError::not_found(route.rt, name))?;
        let body = match repr {
            Representation::Object => return Ok(Reply::raw(cached.json.clone())),
            Representation::Table => {
                tables::table(route.rt, &[&cached.object()], params, self.cache.revision(), None)
            }
            Representation::Metadata => tables::partial_metadata(&cached.object()),
        };
        Ok(Reply::ok(body))
    }

    /// `GET` a collection.
    pub fn list(
        &self,
        route: &ResourceRoute,
        repr: Representation,
        params: &Params,
    ) -> Result<Reply, ApiError> {
        let rt = route.rt;
        let (labels, fields) = selectors(rt, params)?;
        let limit = params.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
        let prefix = route.collection_prefix();
        let (start_after, list_rev) = match params.get("continue") {
            Some(token) => {
                let (key, rev) = decode_continue(token)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::bad_request("continue key is not valid for this list"));
                }
                (Some(key), Some(rev))
            }
            None => (None, None),
        };
        // A name-only field selector narrows the scan to one key instead of filtering the collection.
        let (items, rev) = match (fields.required_value("metadata.name"), &route.namespace) {
            (Some(name), Some(ns)) if rt.namespaced && start_after.is_none() => {
                let obj = self.cache.get(&object_key(rt, Some(ns), name));
                (obj.into_iter().collect(), self.cache.revision())
            }
            _ => self.cache.list(&prefix, start_after.as_deref()),
        };
        let rev = list_rev.unwrap_or(rev);
        let mut selected: Vec<Cached> = Vec::new();
        let mut remaining = 0usize;
        let mut next_key = None;
        for c in items {
            if !(labels.matches_object(&c.view) && fields.matches(rt, &c.view)) {
                continue;
            }
            match limit {
                Some(l) if selected.len() >= l => {
                    remaining += 1;
                }
                _ => selected.push(c),
            }
        }
        if remaining > 0
            && let Some(last) = selected.last()
        {
            next_key = Some(encode_continue(&last.key, rev));
        }
        let mut list_meta = json!({"resourceVersion": rev.to_string()});
        if let Some(k) = &next_key {
            list_meta["continue"] = json!(k);
            list_meta["remainingItemCount"] = json!(remaining);
        }
        let body = match repr {
            Representation::Object => {
                // Join the cached encodings: no object is copied or re-serialized.
                let size: usize = selected.iter().map(|c| c.json.len() + 1).sum();
                let mut buf = Vec::with_capacity(size + 256);
                buf.extend_from_slice(b"{\"kind\":");
                buf.extend_from_slice(json!(rt.list_kind()).to_string().as_bytes());
                buf.extend_from_slice(b",\"apiVersion\":");
                buf.extend_from_slice(json!(rt.api_version()).to_string().as_bytes());
                buf.extend_from_slice(b",\"metadata\":");
                buf.extend_from_slice(list_meta.to_string().as_bytes());
                buf.extend_from_slice(b",\"items\":[");
                for (i, c) in selected.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(&c.json);
                }
                buf.extend_from_slice(b"]}");
                return Ok(Reply::raw(Bytes::from(buf)));
            }
            Representation::Table => {
                let decoded: Vec<Value> = selected.iter().map(Cached::object).collect();
                let objs: Vec<&Value> = decoded.iter().collect();
                let mut t = tables::table(rt, &objs, params, rev, next_key.as_deref());
                if next_key.is_some() {
                    t["metadata"]["remainingItemCount"] = json!(remaining);
                }
                t
            }
            Representation::Metadata => {
                let items: Vec<Value> = selected
                    .iter()
                    .map(|c| tables::partial_metadata(&c.object()))
                    .collect();
                json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items})
            }
        };
        Ok(Reply::ok(body))
    }
}

/// Parses the label and field selectors of a list or watch.
pub fn selectors(rt: &ResourceType, params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = match params.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.0))?,
        None => LabelSelector::default(),
    };
    let fields = match params.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.0))?,
        None => FieldSelector::default(),
    };
    for t in &fields.terms {
        if !rt.supports_field(&t.field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                t.field
            )));
        }
    }
    Ok((labels, fields))
}

fn encode_continue(key: &str, rev: Revision) -> String {
    use base64::Engine;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(String, Revision), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let key = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    let rev = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    Ok((key, rev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue("/core/services/default/b", 42);
        assert_eq!(
            decode_continue(&t).unwrap(),
            ("/core/services/default/b".to_string(), 42)
        );
        assert!(decode_continue("garbage!").is_err());
    }
}

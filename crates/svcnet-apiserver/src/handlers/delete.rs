//! Deletes: one object (finalizers, propagation policies, a pod's grace period, the kind's delete
//! rules) and a collection.

use super::*;

impl ApiServer {
    /// `DELETE` one object.
    pub async fn delete(&self, ctx: &WriteCtx<'_>, body: Option<Value>) -> Result<Reply, ApiError> {
        let rt = ctx.route.rt;
        let name = ctx.route.name.clone().unwrap_or_default();
        let opts = body.unwrap_or(Value::Null);
        let rules = kinds::of(rt).rules.delete;
        if rules.protected_names.contains(&name.as_str()) {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: this namespace may not be deleted",
                rt.qualified_resource()
            )));
        }
        if let Some(node) = &ctx.node {
            self.admit_node_write(ctx, node, Operation::Delete, None, None)?;
        }
        let key = ctx.route.key(&name);
        for _ in 0..RETRIES {
            let cur = self
                .cache
                .get(&key)
                .ok_or_else(|| ApiError::not_found(rt, &name))?;
            check_preconditions(rt, &name, &opts, &cur)?;
            if rules.grace_period {
                match self.delete_pod_gracefully(ctx, &cur, &opts).await? {
                    Graceful::Done(reply) => return Ok(reply),
                    // Someone (the node writing the pod's status) wrote it in between: read it again.
                    Graceful::Raced => continue,
                    Graceful::Immediate => {}
                }
            }
            let obj = &cur.object();
            let has_finalizers = meta(obj)
                .and_then(|m| m.get("finalizers"))
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            let propagation = opts
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .unwrap_or("");
            let orphan = opts.get("orphanDependents").and_then(Value::as_bool) == Some(true);
            let graceful = rules.always_marks
                || has_finalizers
                || propagation == "Foreground"
                || propagation == "Orphan"
                || orphan;
            if graceful {
                // Mark for deletion; finalizers (and the namespace and garbage collectors) finish it.
                // An object already marked stays as it is, unless a grace period was still running
                // (a pod whose node now deletes it with grace 0): that ends here, so the last
                // finalizer's removal can complete the deletion.
                if meta(obj).is_some_and(|m| m.contains_key("deletionTimestamp")) && !grace_pending(obj) {
                    return Ok(Reply {
                        code: 202,
                        body: obj.clone(),
                        warnings: Vec::new(),
                        raw: None,
                    });
                }
                let mut marked = obj.clone();
                {
                    let m = meta_mut(&mut marked);
                    m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                    let extra = match propagation {
                        "Foreground" => Some("foregroundDeletion"),
                        "Orphan" => Some("orphan"),
                        _ if orphan => Some("orphan"),
                        _ => None,
                    };
                    if let Some(f) = extra {
                        let fins = m.entry("finalizers").or_insert_with(|| json!([]));
                        if let Some(a) = fins.as_array_mut()
                            && !a.iter().any(|x| x == f)
                        {
                            a.push(json!(f));
                        }
                    }
                }
                if let Some(phase) = rules.marked_phase
                    && let Some(s) = marked.get_mut("status").and_then(Value::as_object_mut)
                {
                    s.insert("phase".into(), json!(phase));
                }
                if ctx.dry_run {
                    return Ok(Reply {
                        code: 202,
                        body: marked,
                        warnings: Vec::new(),
                        raw: None,
                    });
                }
                let bytes = Bytes::from(serde_json::to_vec(&marked).map_err(ApiError::internal)?);
                match self
                    .commit(Write::Put {
                        key: key.clone(),
                        value: bytes,
                        precondition: Precondition::ModRevision(cur.revision),
                    })
                    .await?
                {
                    Ok(rev) => {
                        Self::stamp(&mut marked, rev);
                        return Ok(Reply {
                            code: 202,
                            body: marked,
                            warnings: Vec::new(),
                            raw: None,
                        });
                    }
                    Err(_) => continue,
                }
            }
            if ctx.dry_run {
                return Ok(Reply::ok(obj.clone()));
            }
            match self
                .commit(Write::Delete {
                    key: key.clone(),
                    precondition: Precondition::ModRevision(cur.revision),
                })
                .await?
            {
                Ok(rev) => {
                    self.release(rt, obj, None).await;
                    let mut last = obj.clone();
                    Self::stamp(&mut last, rev);
                    // kube answers a delete with the deleted object for most kinds.
                    let body = if rules.answers_status {
                        success_status(rt, &name, meta_str(obj, "uid"))
                    } else {
                        last
                    };
                    return Ok(Reply::ok(body));
                }
                Err(_) => continue,
            }
        }
        Err(ApiError::conflict(rt, &name))
    }

    /// Graceful pod deletion, as kube-apiserver's pod strategy does it: a pod running on a node is only
    /// marked (`deletionTimestamp` = now + grace) so its node can stop it; the node then deletes it with
    /// grace 0. Unscheduled and finished pods, and grace 0, fall through to an immediate delete (`None`).
    async fn delete_pod_gracefully(
        &self,
        ctx: &WriteCtx<'_>,
        cur: &Cached,
        opts: &Value,
    ) -> Result<Graceful, ApiError> {
        let pod = &cur.object();
        let scheduled = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending");
        let grace = opts
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0);
        if grace == 0 || !scheduled || phase == "Succeeded" || phase == "Failed" {
            return Ok(Graceful::Immediate);
        }
        let current = pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if pod.pointer("/metadata/deletionTimestamp").is_some() && current.is_some_and(|c| c <= grace) {
            // Already terminating at least as fast as asked: nothing to change.
            return Ok(Graceful::Done(Reply::ok(pod.clone())));
        }
        let mut marked = pod.clone();
        let at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        {
            let m = meta_mut(&mut marked);
            m.insert(
                "deletionTimestamp".into(),
                json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if ctx.dry_run {
            return Ok(Graceful::Done(Reply::ok(marked)));
        }
        let bytes = Bytes::from(serde_json::to_vec(&marked).map_err(ApiError::internal)?);
        match self
            .commit(Write::Put {
                key: cur.key.to_string(),
                value: bytes,
                precondition: Precondition::ModRevision(cur.revision),
            })
            .await?
        {
            Ok(rev) => {
                Self::stamp(&mut marked, rev);
                Ok(Graceful::Done(Reply::ok(marked)))
            }
            Err(_) => Ok(Graceful::Raced),
        }
    }

    /// `DELETE` a collection: deletes every object the selectors match.
    pub async fn delete_collection(
        &self,
        ctx: &WriteCtx<'_>,
        body: Option<Value>,
    ) -> Result<Reply, ApiError> {
        let rt = ctx.route.rt;
        if !rt.delete_collection {
            return Err(ApiError::method_not_supported(rt, "deletecollection"));
        }
        let (labels, fields) = selectors(rt, ctx.params)?;
        let (items, _) = self.cache.list(&ctx.route.collection_prefix(), None);
        let mut deleted = Vec::new();
        for c in items {
            if !(labels.matches_object(&c.view) && fields.matches(rt, &c.view)) {
                continue;
            }
            let name = meta_str(&c.view, "name").unwrap_or_default().to_string();
            let ns = meta_str(&c.view, "namespace").map(str::to_string);
            let route = ResourceRoute {
                rt,
                namespace: ns,
                name: Some(name),
                subresource: None,
                watch_path: false,
            };
            let sub = WriteCtx {
                route: &route,
                params: ctx.params,
                manager: ctx.manager.clone(),
                dry_run: ctx.dry_run,
                node: ctx.node.clone(),
                user: ctx.user.clone(),
            };
            match self.delete(&sub, body.clone()).await {
                Ok(r) => deleted.push(r.body),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Reply::ok(json!({
            "kind": rt.list_kind(),
            "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": self.cache.revision().to_string()},
            "items": deleted,
        })))
    }
}

fn check_preconditions(rt: &ResourceType, name: &str, opts: &Value, cur: &Cached) -> Result<(), ApiError> {
    let Some(pre) = opts.get("preconditions").and_then(Value::as_object) else {
        return Ok(());
    };
    if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
        let actual = meta_str(&cur.view, "uid").unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict_msg(
                rt,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
    }
    if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str) {
        let actual = cur.revision.to_string();
        if rv != actual {
            return Err(ApiError::conflict_msg(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// What the graceful deletion of a pod did.
enum Graceful {
    /// Marked (or already terminating): this is the answer.
    Done(Reply),
    /// The pod changed since it was read: try again with the current one.
    Raced,
    /// No grace applies: delete it now.
    Immediate,
}

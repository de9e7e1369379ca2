//! Decoding Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into JSON.
//!
//! kubectl 1.33's typed commands (`kubectl create service …`, `kubectl create namespace`) send protobuf,
//! which kube-apiserver accepts, so we must too. We only ever need to *read* these bodies and we store
//! JSON, so instead of generating full protobuf bindings this module decodes the wire format driven by
//! the field tables of the kinds those commands send (field numbers from Kubernetes' generated.proto,
//! kept with each kind's definition in `svcnet_kinds`). A kind without a table gets a clear 415 that
//! tells the client to send JSON.
//!
//! The envelope is Kubernetes' own: the 4-byte magic `k8s\0`, then a `runtime.Unknown` message whose
//! `typeMeta` names the kind and whose `raw` bytes hold the object.

use base64::Engine;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use svcnet_kinds::proto::{Field, Wire as Kind, f};

use crate::errors::ApiError;

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

const QUANTITY: &[Field] = &[f(1, "q", Kind::Str)];

fn table_for(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    if kind == "DeleteOptions" && matches!(api_version, "v1" | "meta.k8s.io/v1") {
        return Some(svcnet_kinds::kinds::meta::DELETE_OPTIONS_PROTO);
    }
    svcnet_kinds::kinds::by_kind(api_version, kind)
        .and_then(|k| k.proto)
        .or_else(|| svcnet_kinds::reviews::proto_table(api_version, kind))
}

fn bad(msg: &str) -> ApiError {
    ApiError::bad_request(format!("unable to decode protobuf body: {msg}"))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            if shift >= 64 {
                return Err(bad("varint too long"));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad("truncated field"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn skip(&mut self, wire: u64) -> Result<(), ApiError> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => self.pos += 8,
            2 => {
                self.bytes()?;
            }
            5 => self.pos += 4,
            _ => return Err(bad("unsupported wire type")),
        }
        if self.pos > self.buf.len() {
            return Err(bad("truncated field"));
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

fn utf8(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("invalid UTF-8 in a string"))
}

/// Decodes one message by its field table. `depth` bounds recursion against hostile input.
fn message(buf: &[u8], fields: &[Field], depth: usize) -> Result<Map<String, Value>, ApiError> {
    if depth > 32 {
        return Err(bad("message nested too deeply"));
    }
    let mut out = Map::new();
    let mut rd = Reader { buf, pos: 0 };
    while !rd.done() {
        let key = rd.varint()?;
        let (tag, wire) = (key >> 3, key & 7);
        let Some(field) = fields.iter().find(|f| f.tag == tag) else {
            rd.skip(wire)?;
            continue;
        };
        let value = match (field.kind, wire) {
            (Kind::Str, 2) => Value::String(utf8(rd.bytes()?)?),
            (Kind::Bytes, 2) => Value::String(base64::engine::general_purpose::STANDARD.encode(rd.bytes()?)),
            // int32 fields are sign-extended to 64 bits on the wire.
            (Kind::Int, 0) => json!(rd.varint()? as i64),
            (Kind::Bool, 0) => json!(rd.varint()? != 0),
            (Kind::Msg(sub), 2) => Value::Object(message(rd.bytes()?, sub, depth + 1)?),
            (Kind::StrMap | Kind::BytesMap, 2) => {
                let value = match field.kind {
                    Kind::BytesMap => Kind::Bytes,
                    _ => Kind::Str,
                };
                let entry = message(rd.bytes()?, &[f(1, "k", Kind::Str), f(2, "v", value)], depth + 1)?;
                let k = entry
                    .get("k")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let v = entry.get("v").cloned().unwrap_or_else(|| json!(""));
                let map = out.entry(field.name).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Kind::QuantityMap, 2) => {
                let entry = message(
                    rd.bytes()?,
                    &[f(1, "k", Kind::Str), f(2, "v", Kind::Msg(QUANTITY))],
                    depth + 1,
                )?;
                let k = entry
                    .get("k")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let v = entry
                    .get("v")
                    .and_then(|v| v.get("q"))
                    .cloned()
                    .unwrap_or_else(|| json!("0"));
                let map = out.entry(field.name).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Kind::IntOrString, 2) => {
                let m = message(
                    rd.bytes()?,
                    &[
                        f(1, "type", Kind::Int),
                        f(2, "intVal", Kind::Int),
                        f(3, "strVal", Kind::Str),
                    ],
                    depth + 1,
                )?;
                if m.get("type").and_then(Value::as_i64) == Some(1) {
                    m.get("strVal").cloned().unwrap_or_else(|| json!(""))
                } else {
                    m.get("intVal").cloned().unwrap_or_else(|| json!(0))
                }
            }
            (Kind::Time, 2) => {
                let m = message(rd.bytes()?, &[f(1, "seconds", Kind::Int)], depth + 1)?;
                let secs = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                match Timestamp::from_second(secs) {
                    Ok(t) => json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    Err(_) => return Err(bad("timestamp out of range")),
                }
            }
            _ => return Err(bad(&format!("field {} has the wrong wire type", field.name))),
        };
        let zero = matches!(&value, Value::String(s) if s.is_empty())
            || value.as_i64() == Some(0)
            || value == Value::Bool(false);
        if zero && !field.pointer && !field.repeated && !matches!(field.kind, Kind::IntOrString) {
            continue;
        }
        if field.repeated {
            let list = out.entry(field.name).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(field.name.to_string(), value);
        }
    }
    Ok(out)
}

/// Decodes a protobuf request body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("the body does not start with the Kubernetes protobuf magic"))?;
    let unknown = {
        let mut rd = Reader { buf: rest, pos: 0 };
        let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
        while !rd.done() {
            let key = rd.varint()?;
            match (key >> 3, key & 7) {
                (1, 2) => {
                    let tm = message(
                        rd.bytes()?,
                        &[f(1, "apiVersion", Kind::Str), f(2, "kind", Kind::Str)],
                        1,
                    )?;
                    api_version = tm
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into();
                    kind = tm.get("kind").and_then(Value::as_str).unwrap_or_default().into();
                }
                (2, 2) => raw = rd.bytes()?,
                (_, wire) => rd.skip(wire)?,
            }
        }
        (api_version, kind, raw)
    };
    let (api_version, kind, raw) = unknown;
    let Some(fields) = table_for(&api_version, &kind) else {
        return Err(ApiError::unsupported_media_type(&format!(
            "{MEDIA_TYPE} for {api_version}/{kind}; send application/json"
        )));
    };
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    obj.extend(message(raw, fields, 0)?);
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn ld(tag: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn int(tag: u64, v: u64, out: &mut Vec<u8>) {
        varint(tag << 3, out);
        varint(v, out);
    }

    #[test]
    fn decodes_a_service_like_kubectl_create_sends() {
        let mut meta = Vec::new();
        ld(1, b"web", &mut meta);
        let mut entry = Vec::new();
        ld(1, b"app", &mut entry);
        ld(2, b"web", &mut entry);
        ld(11, &entry, &mut meta);
        let mut target = Vec::new();
        int(1, 0, &mut target);
        int(2, 8080, &mut target);
        let mut port = Vec::new();
        ld(1, b"80-8080", &mut port);
        ld(2, b"TCP", &mut port);
        int(3, 80, &mut port);
        ld(4, &target, &mut port);
        let mut spec = Vec::new();
        ld(1, &port, &mut spec);
        ld(4, b"ClusterIP", &mut spec);
        let mut svc = Vec::new();
        ld(1, &meta, &mut svc);
        ld(2, &spec, &mut svc);
        let mut tm = Vec::new();
        ld(1, b"v1", &mut tm);
        ld(2, b"Service", &mut tm);
        let mut unknown = Vec::new();
        ld(1, &tm, &mut unknown);
        ld(2, &svc, &mut unknown);
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Service");
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(v["spec"]["ports"][0]["port"], 80);
        assert_eq!(v["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(b"k8s\0\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        assert!(decode(b"k8s\0\x0a\x05ab").is_err());
        let mut deep = MAGIC.to_vec();
        deep.extend_from_slice(&[0x12, 0x02, 0x0a, 0x00]);
        // A valid envelope without a known kind is a 415.
        assert_eq!(decode(&deep).unwrap_err().code, 415);
        for i in 0..=255u8 {
            let _ = decode(&[b'k', b'8', b's', 0, i, i, i]);
        }
    }
}

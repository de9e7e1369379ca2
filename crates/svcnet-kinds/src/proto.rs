//! Protobuf field tables: the field numbers of Kubernetes' `generated.proto` for the kinds whose
//! bodies kubectl's typed commands send as protobuf (`kubectl create service …`). The API server's
//! decoder walks these tables; a kind without one gets a 415 that asks for JSON.

/// How a field is encoded on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Wire {
    /// A string.
    Str,
    /// `bytes`: base64 in JSON.
    Bytes,
    /// A varint integer.
    Int,
    /// A varint boolean.
    Bool,
    /// An embedded message with its own fields.
    Msg(&'static [Field]),
    /// `map<string,string>`: repeated entries with key 1 and value 2.
    StrMap,
    /// `map<string,bytes>`: as [`Wire::StrMap`], each value base64 in JSON (a Secret's `data`).
    BytesMap,
    /// `map<string,Quantity>`: entries whose value is a message holding the quantity's string.
    QuantityMap,
    /// `intstr.IntOrString`.
    IntOrString,
    /// `metav1.Time`.
    Time,
}

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The protobuf field number.
    pub tag: u64,
    /// The JSON field name.
    pub name: &'static str,
    /// The wire encoding.
    pub kind: Wire,
    /// A repeated field (a JSON list).
    pub repeated: bool,
    /// A Go pointer field: its zero value is meaningful and kept. Go's encoder writes every non-pointer
    /// scalar, zero or not, and decoding into a struct then serializing with `omitempty` drops the
    /// zeros again; the decoder drops them too for the same result.
    pub pointer: bool,
}

/// A plain field.
pub const fn f(tag: u64, name: &'static str, kind: Wire) -> Field {
    Field {
        tag,
        name,
        kind,
        repeated: false,
        pointer: false,
    }
}

/// A Go pointer field.
pub const fn p(tag: u64, name: &'static str, kind: Wire) -> Field {
    Field {
        tag,
        name,
        kind,
        repeated: false,
        pointer: true,
    }
}

/// A repeated field.
pub const fn r(tag: u64, name: &'static str, kind: Wire) -> Field {
    Field {
        tag,
        name,
        kind,
        repeated: true,
        pointer: false,
    }
}

//! Attribute values that survive a JSON round trip (open spans are persisted as JSON).

use std::collections::BTreeMap;

use opentelemetry::{Array, KeyValue, StringValue, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// Longest string kept for a JSON-valued attribute (payloads, structured reasons); longer
/// ones are cut at a character boundary and end in `…`.
pub const MAX_JSON_ATTRIBUTE_CHARS: usize = 4096;

/// One span or event attribute value in a form serde round-trips exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list of strings.
    StrList(Vec<String>),
}

impl From<AttrValue> for Value {
    fn from(value: AttrValue) -> Self {
        match value {
            AttrValue::Bool(b) => Value::Bool(b),
            AttrValue::Int(i) => Value::I64(i),
            AttrValue::Float(f) => Value::F64(f),
            AttrValue::Str(s) => Value::String(s.into()),
            AttrValue::StrList(list) => Value::Array(Array::String(list.into_iter().map(StringValue::from).collect())),
        }
    }
}

/// Attributes by key; a `BTreeMap` so their order (and the persisted JSON) is stable.
pub type Attributes = BTreeMap<String, AttrValue>;

/// Turns attributes into OpenTelemetry key-values, in key order.
pub(crate) fn to_key_values(attributes: Attributes) -> Vec<KeyValue> {
    attributes.into_iter().map(|(key, value)| KeyValue::new(key, Value::from(value))).collect()
}

/// A JSON scalar as an attribute value; `None` for null, arrays and objects.
pub(crate) fn scalar(value: &Json) -> Option<AttrValue> {
    match value {
        Json::Bool(b) => Some(AttrValue::Bool(*b)),
        Json::Number(n) => n.as_i64().map(AttrValue::Int).or_else(|| n.as_f64().map(AttrValue::Float)),
        Json::String(s) => Some(AttrValue::Str(s.clone())),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

/// A JSON value as an attribute: scalars as themselves, anything else as (bounded) JSON text.
pub(crate) fn json(value: &Json) -> AttrValue {
    scalar(value).unwrap_or_else(|| {
        let mut text = value.to_string();
        if text.chars().count() > MAX_JSON_ATTRIBUTE_CHARS {
            text = text.chars().take(MAX_JSON_ATTRIBUTE_CHARS).collect::<String>() + "…";
        }
        AttrValue::Str(text)
    })
}

/// Adds the scalar fields of `extra` as `<prefix>.<field>`; nested values are left out.
pub(crate) fn add_scalars(attributes: &mut Attributes, prefix: &str, extra: &Map<String, Json>) {
    for (field, value) in extra {
        if let Some(value) = scalar(value) {
            attributes.insert(format!("{prefix}.{field}"), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_round_trip_through_json() {
        for value in [
            AttrValue::Bool(true),
            AttrValue::Int(-3),
            AttrValue::Float(2.5),
            AttrValue::Float(2.0),
            AttrValue::Str("x".into()),
            AttrValue::StrList(vec!["a".into()]),
        ] {
            let text = serde_json::to_string(&value).unwrap();
            assert_eq!(serde_json::from_str::<AttrValue>(&text).unwrap(), value, "{text}");
        }
    }

    #[test]
    fn json_attributes_are_bounded() {
        assert_eq!(json(&json!(3)), AttrValue::Int(3));
        assert_eq!(json(&json!({"k": "v"})), AttrValue::Str(r#"{"k":"v"}"#.into()));
        let AttrValue::Str(long) = json(&json!(["x".repeat(10_000)])) else { panic!() };
        assert_eq!(long.chars().count(), MAX_JSON_ATTRIBUTE_CHARS + 1);
    }
}

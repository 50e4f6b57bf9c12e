//! Reading OTLP attributes (`KeyValue` lists).

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// The value of `key`, if present and set.
pub(crate) fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The value of `key` as text (numbers and booleans printed).
pub(crate) fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<Cow<'a, str>> {
    get(attrs, key).map(display)
}

/// The first of `keys` that is present, as text.
pub(crate) fn first_text<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<Cow<'a, str>> {
    keys.iter().find_map(|k| text(attrs, k))
}

/// The value of `key` as an integer (an int, or text that parses as one).
pub(crate) fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match get(attrs, key)? {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.trim().parse().ok(),
        Value::DoubleValue(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

/// Whether any attribute key starts with `prefix`.
pub(crate) fn any_prefixed(attrs: &[KeyValue], prefix: &str) -> bool {
    attrs.iter().any(|kv| kv.key.starts_with(prefix))
}

/// A value as text: strings as they are, scalars printed, bytes as hex,
/// arrays and maps as compact JSON-like text.
pub(crate) fn display(v: &Value) -> Cow<'_, str> {
    match v {
        Value::StringValue(s) => Cow::Borrowed(s),
        Value::BoolValue(b) => Cow::Owned(b.to_string()),
        Value::IntValue(i) => Cow::Owned(i.to_string()),
        Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        Value::BytesValue(b) => Cow::Owned(hex::encode(b)),
        Value::ArrayValue(a) => Cow::Owned(format!(
            "[{}]",
            a.values
                .iter()
                .filter_map(|v| v.value.as_ref())
                .map(display)
                .collect::<Vec<_>>()
                .join(",")
        )),
        Value::KvlistValue(l) => Cow::Owned(format!(
            "{{{}}}",
            l.values
                .iter()
                .map(|kv| format!(
                    "{}={}",
                    kv.key,
                    kv.value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map(display)
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(",")
        )),
        Value::StringValueStrindex(i) => Cow::Owned(i.to_string()),
    }
}

#[cfg(test)]
pub(crate) fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_text_and_numbers() {
        let attrs = vec![
            kv("s", Value::StringValue("x".into())),
            kv("i", Value::IntValue(404)),
            kv("n", Value::StringValue(" 200 ".into())),
            kv("b", Value::BoolValue(true)),
        ];
        assert_eq!(text(&attrs, "s").as_deref(), Some("x"));
        assert_eq!(text(&attrs, "i").as_deref(), Some("404"));
        assert_eq!(text(&attrs, "b").as_deref(), Some("true"));
        assert_eq!(int(&attrs, "i"), Some(404));
        assert_eq!(int(&attrs, "n"), Some(200));
        assert_eq!(int(&attrs, "s"), None);
        assert_eq!(first_text(&attrs, &["missing", "s"]).as_deref(), Some("x"));
        assert!(any_prefixed(&attrs, "i"));
        assert!(!any_prefixed(&attrs, "messaging."));
    }
}

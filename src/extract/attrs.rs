//! Lookups over OTLP attribute lists by semantic-convention name.
//!
//! Attribute lists are short (tens of entries), so a linear scan over the
//! borrowed wire values beats building a map per span.

use crate::receive::wire::{KeyValue, any_value::Value};

/// A borrowed view of one span's (or resource's) attributes.
#[derive(Clone, Copy)]
pub struct Attrs<'a>(pub &'a [KeyValue]);

/// An attribute value, borrowed from the request buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl<'a> Attrs<'a> {
    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.0
            .iter()
            .find(|kv| kv.key.as_ref() == key.as_bytes())
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    /// The value under the first of `keys` that is present.
    pub fn get(&self, keys: &[&str]) -> Option<AttrValue<'a>> {
        keys.iter().find_map(|key| {
            Some(match self.raw(key)? {
                // UTF-8 was validated for the whole span before extraction.
                Value::StringValue(b) => AttrValue::Str(std::str::from_utf8(b).ok()?),
                Value::IntValue(i) => AttrValue::Int(*i),
                Value::BoolValue(b) => AttrValue::Bool(*b),
                Value::DoubleValue(d) => AttrValue::Double(*d),
            })
        })
    }

    /// The first present key as a non-empty string; numbers are not strings.
    pub fn str(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|key| match self.get(&[key])? {
            AttrValue::Str(s) if !s.trim().is_empty() => Some(s),
            _ => None,
        })
    }

    /// The first present key as an integer; numeric strings are accepted
    /// because some SDKs send ports and line numbers as strings.
    pub fn int(&self, keys: &[&str]) -> Option<i64> {
        keys.iter().find_map(|key| match self.get(&[key])? {
            AttrValue::Int(i) => Some(i),
            AttrValue::Str(s) => s.trim().parse().ok(),
            AttrValue::Double(d) if d.fract() == 0.0 => Some(d as i64),
            _ => None,
        })
    }

    /// Whether every key and string value is valid UTF-8.
    pub fn is_valid_utf8(&self) -> bool {
        self.0.iter().all(|kv| {
            std::str::from_utf8(&kv.key).is_ok()
                && match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(b)) => std::str::from_utf8(b).is_ok(),
                    _ => true,
                }
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders of wire attributes for the tables in this module's tests.
    use crate::receive::wire::{AnyValue, KeyValue, any_value::Value};

    pub fn kv(key: &str, value: impl Into<TestValue>) -> KeyValue {
        let value = match value.into() {
            TestValue::Str(s) => Value::StringValue(s.into_bytes().into()),
            TestValue::Int(i) => Value::IntValue(i),
        };
        KeyValue {
            key: key.as_bytes().to_vec().into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    pub enum TestValue {
        Str(String),
        Int(i64),
    }
    impl From<&str> for TestValue {
        fn from(s: &str) -> Self {
            TestValue::Str(s.to_owned())
        }
    }
    impl From<i64> for TestValue {
        fn from(i: i64) -> Self {
            TestValue::Int(i)
        }
    }
}

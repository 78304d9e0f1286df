//! Lookups over OTLP attribute lists by semantic-convention name.
//!
//! Attribute lists are short (tens of entries), so a linear scan over the
//! borrowed wire values beats building a map per span.

use crate::receive::view::{KeyValueView, ValueView};

/// A borrowed view of one span's (or resource's) attributes.
#[derive(Clone, Copy)]
pub(crate) struct Attrs<'a>(pub &'a [KeyValueView<'a>]);

/// An attribute value, borrowed from the request buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl<'a> Attrs<'a> {
    fn raw(&self, key: &str) -> Option<ValueView<'a>> {
        self.0.iter().find(|kv| kv.key == key.as_bytes()).map(|kv| kv.value)
    }

    /// The value under the first of `keys` that is present.
    pub(crate) fn get(&self, keys: &[&str]) -> Option<AttrValue<'a>> {
        keys.iter().find_map(|key| {
            Some(match self.raw(key)? {
                // UTF-8 was validated for the whole span before extraction.
                ValueView::Str(b) => AttrValue::Str(std::str::from_utf8(b).ok()?),
                ValueView::Int(i) => AttrValue::Int(i),
                ValueView::Bool(b) => AttrValue::Bool(b),
                ValueView::Double(d) => AttrValue::Double(d),
                ValueView::Other => return None,
            })
        })
    }

    /// The first present key as a non-empty string; numbers are not strings.
    pub(crate) fn str(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|key| match self.get(&[key])? {
            AttrValue::Str(s) if !s.trim().is_empty() => Some(s),
            _ => None,
        })
    }

    /// The first present key as an integer; numeric strings are accepted
    /// because some SDKs send ports and line numbers as strings.
    pub(crate) fn int(&self, keys: &[&str]) -> Option<i64> {
        keys.iter().find_map(|key| match self.get(&[key])? {
            AttrValue::Int(i) => Some(i),
            AttrValue::Str(s) => s.trim().parse().ok(),
            AttrValue::Double(d) if d.fract() == 0.0 => Some(d as i64),
            _ => None,
        })
    }

    /// Whether every key and string value is valid UTF-8.
    pub(crate) fn is_valid_utf8(&self) -> bool {
        self.0.iter().all(|kv| {
            is_utf8(kv.key)
                && match kv.value {
                    ValueView::Str(b) => is_utf8(b),
                    _ => true,
                }
        })
    }
}

/// UTF-8 validity, with a fast path for the usual all-ASCII attribute.
#[inline]
pub(crate) fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders of attributes for the tables in this module's tests.
    use crate::receive::view::{KeyValueView, ValueView};

    /// An attribute; its strings are leaked, which is fine in a test.
    pub(crate) fn kv(key: &str, value: impl Into<TestValue>) -> KeyValueView<'static> {
        let leak = |s: &str| -> &'static [u8] { Box::leak(s.as_bytes().to_vec().into_boxed_slice()) };
        let value = match value.into() {
            TestValue::Str(s) => ValueView::Str(leak(&s)),
            TestValue::Int(i) => ValueView::Int(i),
        };
        KeyValueView { key: leak(key), value }
    }

    /// The same attribute as the protobuf message, to build requests.
    pub(crate) fn wire_kv(key: &str, value: impl Into<TestValue>) -> crate::receive::wire::KeyValue {
        use crate::receive::wire::{AnyValue, KeyValue, any_value::Value};
        let value = match value.into() {
            TestValue::Str(s) => Value::StringValue(s.into_bytes().into()),
            TestValue::Int(i) => Value::IntValue(i),
        };
        KeyValue {
            key: key.as_bytes().to_vec().into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    pub(crate) enum TestValue {
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

//! The OTLP trace messages as published, for the OTLP/JSON encoding only:
//! an `application/json` request is read into them and re-encoded as
//! protobuf for the one decoding path, and a recording is written from
//! them. The hot path never sees these types; it reads [`super::wire`].
//!
//! The messages are generated from `proto/opentelemetry` by `build.rs`,
//! with serde derives; [`json`] holds what the derives cannot say: hex
//! trace and span ids, 64-bit integers as strings (numbers accepted too),
//! base64 bytes, and `AnyValue`'s oneof as a single key.

#![allow(
    clippy::doc_markdown,
    clippy::all,
    missing_docs,
    dead_code,
    reason = "generated from the published protos: every message is kept, though OTLP/JSON reads only the trace request"
)]

pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.common.v1.rs"));
    }
}

pub mod resource {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.resource.v1.rs"));
    }
}

pub mod trace {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.trace.v1.rs"));
    }
}

pub mod collector {
    pub mod trace {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.collector.trace.v1.rs"));
        }
    }
}

pub use collector::trace::v1::ExportTraceServiceRequest;

/// The OTLP/JSON field encodings that differ from serde's defaults.
pub mod json {
    use std::fmt;

    use base64::Engine as _;
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use serde::{Deserialize, Serialize};

    use super::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValueList};

    /// Trace and span ids: lowercase hex on output, either case on input.
    pub mod hex_bytes {
        use super::{de, Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&hex::encode(bytes))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            hex::decode(text.as_bytes()).map_err(|e| de::Error::custom(format_args!("an id is not hex: {e}")))
        }
    }

    /// A number that JSON may carry as a number or as a decimal string.
    struct Lenient<T>(std::marker::PhantomData<T>);

    impl<'de, T> Visitor<'de> for Lenient<T>
    where
        T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer, as a number or a decimal string")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format_args!("{v} is out of range")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format_args!("{v} is out of range")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.trim()
                .parse()
                .map_err(|_| E::custom(format_args!("{v:?} is not an integer in range")))
        }
    }

    /// `int64` and `fixed64` values: a decimal string on output, a number
    /// or a decimal string on input.
    pub mod int_string {
        use super::{Deserializer, Lenient, Serializer};

        pub fn serialize<T: std::fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(value)
        }

        pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
        where
            T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr,
            D: Deserializer<'de>,
        {
            deserializer.deserialize_any(Lenient(std::marker::PhantomData))
        }
    }

    struct I64(i64);

    impl<'de> Deserialize<'de> for I64 {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            int_string::deserialize(deserializer).map(I64)
        }
    }

    /// A double: a number, or one of the strings proto3 JSON allows for
    /// the values a number cannot spell.
    struct Double(f64);

    impl<'de> Deserialize<'de> for Double {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = f64;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                    Ok(v)
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                    Ok(v as f64)
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                    Ok(v as f64)
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                    match v {
                        "NaN" => Ok(f64::NAN),
                        "Infinity" => Ok(f64::INFINITY),
                        "-Infinity" => Ok(f64::NEG_INFINITY),
                        _ => v.parse().map_err(|_| E::custom(format_args!("{v:?} is not a number"))),
                    }
                }
            }
            deserializer.deserialize_any(V).map(Double)
        }
    }

    struct Base64(Vec<u8>);

    impl<'de> Deserialize<'de> for Base64 {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(Base64)
                .map_err(|e| de::Error::custom(format_args!("bytesValue is not base64: {e}")))
        }
    }

    /// `AnyValue` is an object with at most one key naming its case:
    /// `{"stringValue": "x"}`, `{"intValue": "7"}`, `{}` for no value.
    impl Serialize for AnyValue {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let Some(value) = &self.value else {
                return serializer.serialize_map(Some(0))?.end();
            };
            let mut map = serializer.serialize_map(Some(1))?;
            match value {
                Value::StringValue(s) => map.serialize_entry("stringValue", s)?,
                Value::BoolValue(b) => map.serialize_entry("boolValue", b)?,
                Value::IntValue(i) => map.serialize_entry("intValue", &i.to_string())?,
                Value::DoubleValue(d) if d.is_finite() => map.serialize_entry("doubleValue", d)?,
                Value::DoubleValue(d) => {
                    let name = if d.is_nan() {
                        "NaN"
                    } else if *d > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    };
                    map.serialize_entry("doubleValue", name)?;
                }
                Value::ArrayValue(a) => map.serialize_entry("arrayValue", a)?,
                Value::KvlistValue(l) => map.serialize_entry("kvlistValue", l)?,
                Value::BytesValue(b) => {
                    map.serialize_entry("bytesValue", &base64::engine::general_purpose::STANDARD.encode(b))?;
                }
                Value::StringValueStrindex(i) => map.serialize_entry("stringValueStrindex", i)?,
            }
            map.end()
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum Case {
        StringValue,
        BoolValue,
        IntValue,
        DoubleValue,
        ArrayValue,
        KvlistValue,
        BytesValue,
        StringValueStrindex,
        #[serde(other)]
        Unknown,
    }

    impl<'de> Deserialize<'de> for AnyValue {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = AnyValue;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an OTLP AnyValue object")
                }
                fn visit_unit<E: de::Error>(self) -> Result<AnyValue, E> {
                    Ok(AnyValue { value: None })
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
                    let mut value = None;
                    while let Some(case) = map.next_key::<Case>()? {
                        let next = match case {
                            Case::StringValue => Value::StringValue(map.next_value()?),
                            Case::BoolValue => Value::BoolValue(map.next_value()?),
                            Case::IntValue => Value::IntValue(map.next_value::<I64>()?.0),
                            Case::DoubleValue => Value::DoubleValue(map.next_value::<Double>()?.0),
                            Case::ArrayValue => Value::ArrayValue(map.next_value::<ArrayValue>()?),
                            Case::KvlistValue => Value::KvlistValue(map.next_value::<KeyValueList>()?),
                            Case::BytesValue => Value::BytesValue(map.next_value::<Base64>()?.0),
                            Case::StringValueStrindex => Value::StringValueStrindex(map.next_value()?),
                            Case::Unknown => {
                                map.next_value::<IgnoredAny>()?;
                                continue;
                            }
                        };
                        if value.replace(next).is_some() {
                            return Err(de::Error::custom("an AnyValue holds more than one value"));
                        }
                    }
                    Ok(AnyValue { value })
                }
            }
            deserializer.deserialize_any(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// A request with every case of `AnyValue`, both id spellings, both
    /// integer spellings, and keys a newer OTLP may add.
    const REQUEST: &str = r#"{"resourceSpans":[{
        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}],"droppedAttributesCount":1},
        "scopeSpans":[{"scope":{"name":"io.opentelemetry.jdbc","version":"2.1"},"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","parentSpanId":"",
            "traceState":"a=b","name":"GET /cart","kind":2,"flags":257,
            "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000080000000,
            "attributes":[
                {"key":"s","value":{"stringValue":"x"}},
                {"key":"b","value":{"boolValue":true}},
                {"key":"i","value":{"intValue":"-9007199254740993"}},
                {"key":"n","value":{"intValue":42}},
                {"key":"d","value":{"doubleValue":1.5}},
                {"key":"inf","value":{"doubleValue":"Infinity"}},
                {"key":"a","value":{"arrayValue":{"values":[{"stringValue":"y"},{"intValue":"1"}]}}},
                {"key":"kv","value":{"kvlistValue":{"values":[{"key":"k","value":{"boolValue":false}}]}}},
                {"key":"raw","value":{"bytesValue":"AAEC/w=="}},
                {"key":"empty","value":{}},
                {"key":"future","value":{"someNewValue":3}}],
            "events":[{"timeUnixNano":"1700000000010000000","name":"exception",
                "attributes":[{"key":"exception.type","value":{"stringValue":"TimeoutError"}}]}],
            "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175"}],
            "status":{"code":2,"message":"boom"},
            "aNewField":{"nested":[1,2]}}]}]}]}"#;

    #[test]
    fn every_otlp_json_case_reads_to_the_right_values() {
        let request: ExportTraceServiceRequest = serde_json::from_str(REQUEST).expect("OTLP/JSON");
        let resource = &request.resource_spans[0];
        let span = &resource.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, hex::decode("5b8efff798038103d269b633813fc60c").expect("hex"));
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 80_000_000);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(resource.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("io.opentelemetry.jdbc"));
        let value = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        use common::v1::any_value::Value;
        assert_eq!(value("i"), Some(Value::IntValue(-9_007_199_254_740_993)));
        assert_eq!(value("n"), Some(Value::IntValue(42)));
        assert_eq!(value("inf"), Some(Value::DoubleValue(f64::INFINITY)));
        assert_eq!(value("raw"), Some(Value::BytesValue(vec![0, 1, 2, 255])));
        assert_eq!(value("empty"), None);
        assert_eq!(value("future"), None, "an unknown case is ignored, as protobuf would");
        assert_eq!(span.events[0].time_unix_nano, 1_700_000_000_010_000_000);
        assert_eq!(span.links[0].span_id, hex::decode("eee19b7ec3c1b175").expect("hex"));
    }

    #[test]
    fn a_request_survives_json_and_back_unchanged() {
        let request: ExportTraceServiceRequest = serde_json::from_str(REQUEST).expect("OTLP/JSON");
        let json = serde_json::to_string(&request).expect("serialises");
        let again: ExportTraceServiceRequest = serde_json::from_str(&json).expect("reads back");
        assert_eq!(again.encode_to_vec(), request.encode_to_vec());
        assert!(json.contains(r#""startTimeUnixNano":"1700000000000000000""#), "{json}");
        assert!(json.contains(r#""intValue":"-9007199254740993""#), "{json}");
    }

    #[test]
    fn it_reads_json_exactly_as_the_reference_types_do() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as Reference;
        // The reference types know neither the cases a newer OTLP adds, nor
        // an empty value, nor the spelled-out doubles: compare on what both
        // accept.
        let mut common: serde_json::Value = serde_json::from_str(REQUEST).expect("JSON");
        let attributes = common["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
            .as_array_mut()
            .expect("attributes");
        attributes.retain(|kv| !["inf", "empty", "future"].contains(&kv["key"].as_str().unwrap_or_default()));
        assert_eq!(attributes.len(), 8);
        let common = common.to_string();
        let ours: ExportTraceServiceRequest = serde_json::from_str(&common).expect("ours");
        let reference: Reference = serde_json::from_str(&common).expect("reference");
        assert_eq!(ours.encode_to_vec(), reference.encode_to_vec());
    }

    #[test]
    fn malformed_values_are_errors_that_say_what() {
        for (bad, says) in [
            (r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#, "not hex"),
            (r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-1"}]}]}]}"#, "not an integer"),
            (r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"stringValue":"a","intValue":1}}]}]}]}]}"#, "more than one"),
            (r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"bytesValue":"!"}}]}]}]}]}"#, "not base64"),
        ] {
            let error = serde_json::from_str::<ExportTraceServiceRequest>(bad).expect_err(bad).to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}

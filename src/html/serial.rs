//! Reading a report through its `Serialize` impl, in bounded memory.
//!
//! The pages are rendered from the serialized JSON of a report (so a field added to a report
//! later shows up without a change here), but a report of 100,000 pairs must not be turned
//! into one `serde_json::Value`. Two small serializers split it instead:
//! [`fields_without`] collects the top-level fields except the named big ones, which it never
//! serializes, and [`for_each_element`] hands a sequence over one element at a time.

use std::fmt;
use std::io;

use serde::ser::{self, Impossible, Serialize};
use serde_json::{Map, Value};

/// The error of these serializers: an I/O error of the callback, or a report shaped
/// differently than expected.
#[derive(Debug)]
pub struct Error(io::Error);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(io::Error::other(msg.to_string()))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        e.0
    }
}

fn unsupported(what: &str) -> Error {
    Error(io::Error::other(format!(
        "the report is not shaped as expected: {what} found"
    )))
}

fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error(io::Error::other(e)))
}

/// The top-level fields of `value` (a struct or a map, flattened fields included) as JSON
/// (keys sorted, as `serde_json::Map` keeps them), without the fields named in `skip` (which are not serialized).
pub fn fields_without<T: Serialize + ?Sized>(
    value: &T,
    skip: &[&str],
) -> io::Result<Map<String, Value>> {
    let mut map = Map::new();
    value.serialize(Fields {
        map: &mut map,
        skip,
        pending: None,
    })?;
    Ok(map)
}

/// Calls `each` with every element of `seq` (something that serializes as a sequence), as
/// JSON, one at a time.
pub fn for_each_element<T: Serialize + ?Sized>(
    seq: &T,
    each: &mut dyn FnMut(Value) -> io::Result<()>,
) -> io::Result<()> {
    seq.serialize(Elements { each })?;
    Ok(())
}

struct Fields<'a> {
    map: &'a mut Map<String, Value>,
    skip: &'a [&'a str],
    pending: Option<String>,
}

impl Fields<'_> {
    fn put<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        if !self.skip.contains(&key) {
            self.map.insert(key.to_string(), to_value(value)?);
        }
        Ok(())
    }
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.put(key, value)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeMap for Fields<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.pending = Some(match to_value(key)? {
            Value::String(s) => s,
            other => other.to_string(),
        });
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .pending
            .take()
            .ok_or_else(|| unsupported("a map value without a key"))?;
        self.put(&key, value)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

struct Elements<'a> {
    each: &'a mut dyn FnMut(Value) -> io::Result<()>,
}

impl ser::SerializeSeq for Elements<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        (self.each)(to_value(value)?).map_err(Error)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// The `Serializer` methods these collectors do not accept.
macro_rules! refuse {
    ($($name:ident($($t:ty),*) => $what:literal;)*) => {
        $(fn $name(self, $(_: $t),*) -> Result<(), Error> {
            Err(unsupported($what))
        })*
    };
}

/// The shared part of both serializers: everything but their one accepted shape.
macro_rules! common {
    () => {
        type Ok = ();
        type Error = Error;
        type SerializeTuple = Impossible<(), Error>;
        type SerializeTupleStruct = Impossible<(), Error>;
        type SerializeTupleVariant = Impossible<(), Error>;
        type SerializeStructVariant = Impossible<(), Error>;
        refuse! {
            serialize_bool(bool) => "a boolean";
            serialize_i8(i8) => "a number";
            serialize_i16(i16) => "a number";
            serialize_i32(i32) => "a number";
            serialize_i64(i64) => "a number";
            serialize_u8(u8) => "a number";
            serialize_u16(u16) => "a number";
            serialize_u32(u32) => "a number";
            serialize_u64(u64) => "a number";
            serialize_f32(f32) => "a number";
            serialize_f64(f64) => "a number";
            serialize_char(char) => "a character";
            serialize_str(&str) => "a string";
            serialize_bytes(&[u8]) => "bytes";
            serialize_none() => "null";
            serialize_unit() => "null";
            serialize_unit_struct(&'static str) => "null";
            serialize_unit_variant(&'static str, u32, &'static str) => "a string";
        }
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
            value.serialize(self)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            value: &T,
        ) -> Result<(), Error> {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Error> {
            Err(unsupported("an enum"))
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
            Err(unsupported("a tuple"))
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Error> {
            Err(unsupported("a tuple"))
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Error> {
            Err(unsupported("an enum"))
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Error> {
            Err(unsupported("an enum"))
        }
    };
}

impl<'a> ser::Serializer for Fields<'a> {
    type SerializeSeq = Impossible<(), Error>;
    type SerializeMap = Fields<'a>;
    type SerializeStruct = Fields<'a>;
    common!();
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(unsupported("a list"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Ok(self)
    }
}

impl<'a> ser::Serializer for Elements<'a> {
    type SerializeSeq = Elements<'a>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    common!();
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(unsupported("an object"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(unsupported("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;
    use std::cell::Cell;

    /// Counts how often it is serialized: a skipped field must not be.
    struct Big<'a>(&'a Cell<u32>, Vec<u32>);
    impl Serialize for Big<'_> {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.set(self.0.get() + 1);
            self.1.serialize(s)
        }
    }

    #[derive(Serialize)]
    struct Inner {
        source: &'static str,
        pairs: Vec<u32>,
    }

    #[derive(Serialize)]
    struct Report<'a> {
        kind: &'static str,
        #[serde(flatten)]
        inner: Inner,
        rows: Big<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        none: Option<u32>,
        summary: Value,
    }

    #[test]
    fn big_fields_are_skipped_unserialized_and_streamed_one_by_one() {
        let n = Cell::new(0);
        let r = Report {
            kind: "k",
            inner: Inner {
                source: "c.csv",
                pairs: vec![1, 2],
            },
            rows: Big(&n, vec![7, 8, 9]),
            none: None,
            summary: json!({"merged": 1}),
        };
        let small = fields_without(&r, &["rows", "pairs"]).unwrap();
        assert_eq!(n.get(), 0, "a skipped field is never serialized");
        assert_eq!(
            Value::Object(small),
            json!({"kind": "k", "source": "c.csv", "summary": {"merged": 1}})
        );
        let all = fields_without(&r, &[]).unwrap();
        assert_eq!(all["pairs"], json!([1, 2]));
        assert_eq!(all["rows"], json!([7, 8, 9]));
        assert_eq!(all.len(), 5);

        let mut got = Vec::new();
        for_each_element(&r.rows, &mut |v| {
            got.push(v);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [json!(7), json!(8), json!(9)]);
        // The callback's error comes back as it was.
        let e = for_each_element(&r.rows, &mut |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        // The wrong shape is an error, not a panic.
        assert!(for_each_element(&r, &mut |_| Ok(())).is_err());
        assert!(fields_without(&vec![1], &[]).is_err());
    }
}

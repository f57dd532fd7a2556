//! A `serde::Serializer` that writes canonical CBOR directly (no intermediate tree).
//!
//! The serde data model maps onto canonical values as it always has in cairn (the vectors and
//! the property tests pin it): unit, `None` and unit structs are `null`; unit variants are their
//! name; newtype structs are their content; sequences, tuples and tuple structs are arrays;
//! maps and structs are maps keyed by text (field names for structs); an enum variant with data
//! is a one-entry map `{variant: data}`; byte strings stay byte strings. Formats are
//! human-readable, as in JSON, so types such as `IpAddr` serialize as in `model.json`.
//!
//! A struct named `$serde_json::private::Number` is how a `serde_json::Number` serializes under
//! `arbitrary_precision`: it becomes the number its literal spells. A *map* with that key is a
//! user's map and is refused (FORMAT.md §2.2), unlike in a tree, where the two look alike.

use serde::ser::{self, Impossible, Serialize};

use super::encoder::{Encoder, Failed, NUMBER_TOKEN, Open, RESERVED_KEY};
use crate::error::CanonicalErrorKind;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("canonicalization failed")
    }
}

impl std::error::Error for Failed {}

impl ser::Error for Failed {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Failed
    }
}

impl Encoder {
    /// Appends the canonical encoding of `v`; on error, the error is in [`Encoder::take_error`].
    /// Called for every element and entry value, so that a serde failure inside is attributed to
    /// the innermost path.
    pub(crate) fn serialize<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Failed> {
        v.serialize(&mut *self).map_err(|_| self.serde_failed())
    }
}

/// An open array being filled by serde.
pub(crate) struct Seq<'a> {
    enc: &'a mut Encoder,
    open: Open,
}

/// An open map or struct being filled by serde; `variant` wraps it in `{variant: ..}`.
pub(crate) struct MapSer<'a> {
    enc: &'a mut Encoder,
    open: Open,
    variant: Option<Open>,
}

/// An enum variant with a tuple: the array inside `{variant: ..}`.
pub(crate) struct TupleVariant<'a> {
    seq: Seq<'a>,
    outer: Open,
}

/// A struct: a map, or a `serde_json::Number` (`seen` once its literal is written).
pub(crate) enum StructSer<'a> {
    Map(MapSer<'a>),
    Number { enc: &'a mut Encoder, seen: bool },
}

impl<'a> Seq<'a> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Failed> {
        self.enc.element(&self.open);
        self.enc.serialize(v)?;
        self.enc.end_element(&mut self.open, true);
        Ok(())
    }
}

impl<'a> MapSer<'a> {
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> Result<(), Failed> {
        self.enc.key(&mut self.open, key)?;
        self.enc.serialize(v)?;
        self.enc.end_entry();
        Ok(())
    }

    fn finish(self) -> Result<(), Failed> {
        self.enc.end_map(self.open)?;
        if let Some(outer) = self.variant {
            self.enc.end_entry();
            self.enc.end_map(outer)?;
        }
        Ok(())
    }
}

/// Opens `{variant: ` around what follows.
fn open_variant(enc: &mut Encoder, variant: &str) -> Result<Open, Failed> {
    let (mut outer, r) = enc.begin_map();
    r?;
    enc.key(&mut outer, variant)?;
    Ok(outer)
}

impl<'a> ser::Serializer for &'a mut Encoder {
    type Ok = ();
    type Error = Failed;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = TupleVariant<'a>;
    type SerializeMap = MapSer<'a>;
    type SerializeStruct = StructSer<'a>;
    type SerializeStructVariant = MapSer<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Failed> {
        self.bool(v);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Failed> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Failed> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Failed> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Failed> {
        self.i64(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Failed> {
        self.i128(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Failed> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Failed> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Failed> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Failed> {
        self.u64(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Failed> {
        match i128::try_from(v) {
            Ok(i) => self.i128(i),
            Err(_) => Err(self.fail(CanonicalErrorKind::IntegerOutOfRange(v.to_string()))),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<(), Failed> {
        self.f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Failed> {
        self.f64(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Failed> {
        self.text(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Failed> {
        self.text(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Failed> {
        self.bytes_value(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Failed> {
        self.null();
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Failed> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Failed> {
        self.null();
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Failed> {
        self.null();
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Failed> {
        self.text(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<(), Failed> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Failed> {
        let outer = open_variant(self, variant)?;
        self.serialize(v)?;
        self.end_entry();
        self.end_map(outer)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Failed> {
        let (open, r) = self.begin_array();
        r?;
        Ok(Seq { enc: self, open })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Failed> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>, Failed> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<TupleVariant<'a>, Failed> {
        let outer = open_variant(self, variant)?;
        let (open, r) = self.begin_array();
        r?;
        Ok(TupleVariant {
            seq: Seq { enc: self, open },
            outer,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapSer<'a>, Failed> {
        let (open, r) = self.begin_map();
        r?;
        Ok(MapSer {
            enc: self,
            open,
            variant: None,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructSer<'a>, Failed> {
        if name == NUMBER_TOKEN {
            return Ok(StructSer::Number {
                enc: self,
                seen: false,
            });
        }
        self.serialize_map(Some(len)).map(StructSer::Map)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<MapSer<'a>, Failed> {
        let outer = open_variant(self, variant)?;
        let (open, r) = self.begin_map();
        r?;
        Ok(MapSer {
            enc: self,
            open,
            variant: Some(outer),
        })
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Failed;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Failed> {
        self.element(v)
    }
    fn end(self) -> Result<(), Failed> {
        self.enc.end_array(self.open);
        Ok(())
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Failed;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Failed> {
        self.element(v)
    }
    fn end(self) -> Result<(), Failed> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Failed;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Failed> {
        self.element(v)
    }
    fn end(self) -> Result<(), Failed> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for TupleVariant<'_> {
    type Ok = ();
    type Error = Failed;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Failed> {
        self.seq.element(v)
    }
    fn end(self) -> Result<(), Failed> {
        let TupleVariant { seq, outer } = self;
        seq.enc.end_array(seq.open);
        seq.enc.end_entry();
        seq.enc.end_map(outer)
    }
}

impl ser::SerializeMap for MapSer<'_> {
    type Ok = ();
    type Error = Failed;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Failed> {
        key.serialize(KeySer {
            enc: &mut *self.enc,
            open: &mut self.open,
        })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Failed> {
        self.enc.serialize(v)?;
        self.enc.end_entry();
        Ok(())
    }
    fn end(self) -> Result<(), Failed> {
        self.finish()
    }
}

impl ser::SerializeStruct for StructSer<'_> {
    type Ok = ();
    type Error = Failed;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Failed> {
        match self {
            StructSer::Map(m) => m.field(key, v),
            StructSer::Number { enc, seen } => {
                if *seen || key != NUMBER_TOKEN {
                    return Err(enc.fail(RESERVED_KEY));
                }
                *seen = true;
                v.serialize(NumberSer { enc })
            }
        }
    }
    fn end(self) -> Result<(), Failed> {
        match self {
            StructSer::Map(m) => m.finish(),
            StructSer::Number { seen: true, .. } => Ok(()),
            StructSer::Number { enc, seen: false } => Err(enc.fail(RESERVED_KEY)),
        }
    }
}

impl ser::SerializeStructVariant for MapSer<'_> {
    type Ok = ();
    type Error = Failed;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Failed> {
        self.field(key, v)
    }
    fn end(self) -> Result<(), Failed> {
        self.finish()
    }
}

/// Serializes a map key: only text (strings, chars, unit variants, possibly wrapped in a
/// newtype or `Some`) is a key.
struct KeySer<'a, 'b> {
    enc: &'a mut Encoder,
    open: &'b mut Open,
}

impl KeySer<'_, '_> {
    fn not_text<T>(self) -> Result<T, Failed> {
        Err(self.enc.fail(CanonicalErrorKind::NonTextKey))
    }
}

/// The serde entry points of a serializer that accepts only text: all others call `not_text`.
macro_rules! refuse_non_text {
    () => {
        type Ok = ();
        type Error = Failed;
        type SerializeSeq = Impossible<(), Failed>;
        type SerializeTuple = Impossible<(), Failed>;
        type SerializeTupleStruct = Impossible<(), Failed>;
        type SerializeTupleVariant = Impossible<(), Failed>;
        type SerializeMap = Impossible<(), Failed>;
        type SerializeStruct = Impossible<(), Failed>;
        type SerializeStructVariant = Impossible<(), Failed>;

        fn serialize_bool(self, _: bool) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_i8(self, _: i8) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_i16(self, _: i16) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_i32(self, _: i32) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_i64(self, _: i64) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_i128(self, _: i128) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_u8(self, _: u8) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_u128(self, _: u128) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_u16(self, _: u16) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_u32(self, _: u32) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_u64(self, _: u64) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_f32(self, _: f32) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_f64(self, _: f64) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_none(self) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_unit(self) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Failed> {
            self.not_text()
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Failed> {
            self.not_text()
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Failed> {
            self.not_text()
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Failed> {
            self.not_text()
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Failed> {
            self.not_text()
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Failed> {
            self.not_text()
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Failed> {
            self.not_text()
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Failed> {
            self.not_text()
        }
    };
}

impl ser::Serializer for KeySer<'_, '_> {
    refuse_non_text!();

    fn serialize_char(self, v: char) -> Result<(), Failed> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Failed> {
        self.enc.key(self.open, v)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Failed> {
        self.serialize_str(variant)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Failed> {
        v.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Failed> {
        v.serialize(self)
    }
}

/// Serializes the literal inside a `serde_json::Number`: it must be text.
struct NumberSer<'a> {
    enc: &'a mut Encoder,
}

impl NumberSer<'_> {
    fn not_text<T>(self) -> Result<T, Failed> {
        Err(self.enc.fail(RESERVED_KEY))
    }
}

impl ser::Serializer for NumberSer<'_> {
    refuse_non_text!();

    fn serialize_char(self, v: char) -> Result<(), Failed> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Failed> {
        self.enc.number_literal(v)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Failed> {
        self.not_text()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Failed> {
        self.not_text()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Failed> {
        self.not_text()
    }
}

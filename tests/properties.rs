//! Property tests of the canonical value model, identity v1 and the run directory format
//! (FORMAT.md §2–§4).
//!
//! Values are generated directly as canonical [`Value`]s (so the expected result of every parse is
//! known) and written out as JSON text by a small writer here that can shuffle map keys, spell
//! numbers in different ways and escape text, which is exactly the freedom FORMAT.md says must not
//! change an identity.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use cairn::canonical::{self, INT_MAX, INT_MIN, Map, Value};
use cairn::identity::{Schema, document};
use cairn::{Empty, IdHeader, Identity, Model};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::Serialize;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Map keys: plain ASCII, arbitrary Unicode (controls and astral characters included) and a few
/// keys chosen to stress canonical order and normalization.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_]{0,4}",
        2 => "(?s).{0,6}",
        1 => "[a-z]{20,30}",
        2 => prop::sample::select(vec![
            "", "a", "b", "Z", "aa", "é", "e\u{301}", "日本語", "🦀", "\u{10FFFF}", "\u{7f}",
            "a.b", "\"\\/\n\t\u{0}", "\u{2028}", "\u{feff}", "v", "config", "module",
        ])
        .prop_map(String::from),
    ]
}

/// Text values, including long ones (1- and 2-byte CBOR length headers).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => key(),
        1 => "(?s).{0,40}",
        1 => "[a-zA-Z0-9 ]{250,300}",
    ]
}

/// Integers across the whole accepted range −2^64 … 2^64−1, with the edges over-represented.
fn int() -> impl Strategy<Value = i128> {
    prop_oneof![
        2 => -30i128..30,
        1 => any::<i64>().prop_map(i128::from),
        1 => any::<u64>().prop_map(i128::from),
        1 => INT_MIN..=INT_MAX,
        1 => prop::sample::select(vec![
            INT_MIN,
            INT_MIN + 1,
            -(1i128 << 63) - 1,
            -(1i128 << 63),
            -(1i128 << 53) - 1,
            -24,
            -25,
            -1,
            0,
            23,
            24,
            255,
            256,
            65535,
            65536,
            1i128 << 53,
            (1i128 << 53) + 1,
            i64::MAX as i128,
            i64::MAX as i128 + 1,
            INT_MAX - 1,
            INT_MAX,
        ]),
    ]
}

/// Finite doubles: any bit pattern, small binary fractions (half/single width), integral ones
/// (which numeric reduction turns into integers) and the documented edge cases.
fn finite_f64() -> impl Strategy<Value = f64> {
    use prop::num::f64 as F;
    prop_oneof![
        3 => F::POSITIVE | F::NEGATIVE | F::NORMAL | F::SUBNORMAL | F::ZERO,
        2 => (-40_000i32..40_000).prop_map(|i| f64::from(i) / 8.0),
        1 => any::<f32>().prop_filter("finite", |f| f.is_finite()).prop_map(f64::from),
        1 => any::<i64>().prop_map(|i| i as f64),
        1 => any::<u64>().prop_map(|i| i as f64),
        1 => prop::sample::select(vec![
            0.1,
            -0.0,
            0.5,
            100000.5,
            5e-324,
            1e300,
            -1e300,
            18446744073709551616.0,
            -18446744073709551616.0,
            -18446744073709555712.0,
            9007199254740992.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            65504.0,
            65504.5,
            6.103515625e-5,
        ]),
    ]
}

fn leaf(with_bytes: bool) -> BoxedStrategy<Value> {
    let json = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => int().prop_map(Value::Integer),
        3 => finite_f64().prop_map(|f| canonical::reduce_float(f).expect("finite")),
        3 => text().prop_map(Value::Text),
    ];
    if with_bytes {
        prop_oneof![
            5 => json,
            1 => vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ]
        .boxed()
    } else {
        json.boxed()
    }
}

/// A canonical map from generated entries (a repeated key keeps its first value).
fn map_of(entries: Vec<(String, Value)>) -> Map {
    let mut seen = BTreeSet::new();
    let entries = entries
        .into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    Map::from_entries(entries).expect("keys are unique")
}

/// Canonical values of bounded depth; without byte strings they are exactly the JSON data model.
fn value(with_bytes: bool) -> BoxedStrategy<Value> {
    leaf(with_bytes)
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                vec((key(), inner), 0..6).prop_map(|e| Value::Map(map_of(e))),
            ]
        })
        .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    value(false)
}

fn json_map() -> impl Strategy<Value = Map> {
    vec((key(), json_value()), 0..5).prop_map(map_of)
}

// ---------------------------------------------------------------------------------------------
// A JSON writer with the freedoms FORMAT.md allows
// ---------------------------------------------------------------------------------------------

/// How to write a value as JSON text; driven by a seed so proptest can shrink and replay it.
struct Writer {
    state: u64,
    /// Emit map entries in a pseudo-random order.
    shuffle: bool,
    /// Pick among equivalent number spellings and string escapings.
    vary: bool,
}

impl Writer {
    fn new(seed: u64, shuffle: bool, vary: bool) -> Self {
        Writer {
            state: seed | 1,
            shuffle,
            vary,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, options: &'a [String]) -> &'a str {
        if self.vary {
            &options[(self.next() % options.len() as u64) as usize]
        } else {
            &options[0]
        }
    }

    fn space(&mut self, out: &mut String) {
        if self.vary {
            out.push_str([" ", "", "\n  ", "\t", ""][(self.next() % 5) as usize]);
        }
    }

    fn write(&mut self, v: &Value) -> String {
        let mut out = String::new();
        self.value(v, &mut out);
        out
    }

    fn value(&mut self, v: &Value, out: &mut String) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Integer(n) => {
                let s = integer_spellings(*n);
                out.push_str(self.pick(&s));
            }
            Value::Float(f) => {
                let s = float_spellings(*f);
                out.push_str(self.pick(&s));
            }
            Value::Text(t) => {
                let s = [serde_json::to_string(t).unwrap(), escape_all(t)];
                out.push_str(self.pick(&s));
            }
            Value::Bytes(_) => panic!("JSON has no byte strings"),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.space(out);
                    self.value(item, out);
                }
                out.push(']');
            }
            Value::Map(m) => {
                let mut entries: Vec<(&str, &Value)> = m.iter().collect();
                if self.shuffle {
                    // Fisher–Yates.
                    for i in (1..entries.len()).rev() {
                        let j = (self.next() % (i as u64 + 1)) as usize;
                        entries.swap(i, j);
                    }
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.space(out);
                    let s = [serde_json::to_string(k).unwrap(), escape_all(k)];
                    out.push_str(self.pick(&s));
                    out.push(':');
                    self.space(out);
                    self.value(v, out);
                }
                out.push('}');
            }
        }
    }
}

/// Every character as a `\uXXXX` escape (surrogate pairs above the BMP).
fn escape_all(s: &str) -> String {
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        let _ = write!(out, "\\u{unit:04x}");
    }
    out.push('"');
    out
}

/// True when `n` survives a trip through f64 unchanged (so float spellings denote exactly `n`).
fn exact_in_f64(n: i128) -> bool {
    (n as f64) as i128 == n && (INT_MIN..=INT_MAX).contains(&n)
}

/// JSON spellings of the integer `n` (all denote the same canonical value). The first is the
/// plain integer literal; float spellings are only offered when `n` is exact in a double.
fn integer_spellings(n: i128) -> Vec<String> {
    let mut s = vec![n.to_string()];
    if !exact_in_f64(n) {
        return s;
    }
    let sign = if n < 0 { "-" } else { "" };
    let digits = n.unsigned_abs().to_string();
    s.push(format!("{n}.0"));
    s.push(format!("{n}e0"));
    s.push(format!("{n}E+0"));
    s.push(format!("{n}.000e-0"));
    if n == 0 {
        s.extend(["-0", "-0.0", "0e5", "0.0e-7", "-0E0"].map(String::from));
    } else {
        s.push(format!("{n}0e-1"));
        s.push(format!("{sign}0.{digits}e{}", digits.len()));
        s.push(format!("{sign}{digits}00E-2"));
    }
    s
}

/// JSON spellings of a non-integral (or out-of-range) finite double.
fn float_spellings(f: f64) -> Vec<String> {
    let debug = format!("{f:?}");
    let mut s = vec![debug.clone(), format!("{f:e}"), format!("{f:E}")];
    // A trailing zero in the mantissa changes nothing.
    let padded = match debug.find(['e', 'E']) {
        Some(i) if debug[..i].contains('.') => format!("{}0{}", &debug[..i], &debug[i..]),
        Some(i) => format!("{}.0{}", &debug[..i], &debug[i..]),
        None => format!("{debug}0"),
    };
    s.push(padded);
    s
}

fn request(module: &str, config: &str, predicate: Option<&str>) -> String {
    let module = serde_json::to_string(module).unwrap();
    match predicate {
        None => format!(r#"{{"config": {config}, "module": {module}}}"#),
        Some(p) => format!(r#"{{"predicate": {p}, "module": {module}, "config": {config}}}"#),
    }
}

fn identity_of_value(module: &str, config: &Value, predicate: &Map) -> Identity {
    Identity::of_document(
        &document(
            module,
            config.clone(),
            Value::Map(predicate.clone()),
            &Schema::empty(),
        )
        .unwrap(),
    )
}

/// Re-encodes a canonical value as a ciborium value in a non-canonical but equivalent shape: map
/// entries reversed and integral values exact in a double written as floats.
fn scrambled(v: &Value, floats: bool) -> ciborium::Value {
    use ciborium::Value as C;
    match v {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Integer(n) if floats && exact_in_f64(*n) => C::Float(*n as f64),
        Value::Integer(n) => C::Integer((*n).try_into().unwrap()),
        Value::Float(f) => C::Float(*f),
        Value::Text(t) => C::Text(t.clone()),
        Value::Bytes(b) => C::Bytes(b.clone()),
        Value::Array(items) => C::Array(items.iter().map(|i| scrambled(i, floats)).collect()),
        Value::Map(m) => {
            let mut entries: Vec<_> = m
                .iter()
                .map(|(k, v)| (C::Text(k.to_owned()), scrambled(v, floats)))
                .collect();
            entries.reverse();
            C::Map(entries)
        }
    }
}

/// True when the double `f` is exactly representable in IEEE 754 binary16: `f = m·2^k` with
/// `|m| < 2^11`, `k ≥ −24` and `|f| ≤ 65504`.
fn exact_in_half(f: f64) -> bool {
    if f.abs() > 65504.0 {
        return false;
    }
    let scaled = f * (1u64 << 24) as f64; // exact: a power-of-two scaling in range
    if scaled.trunc() != scaled {
        return false;
    }
    let mut m = scaled.abs() as u64;
    while m != 0 && m % 2 == 0 {
        m /= 2;
    }
    m < (1 << 11)
}

/// Checks FORMAT.md §2 independently of the encoder's own shortcuts: shortest integer arguments,
/// floats never integral-in-range and in the shortest exact width, map keys in the bytewise order
/// of their encodings (RFC 8949 §4.2.1) and unique.
fn check_canonical_shape(v: &Value) -> Result<(), TestCaseError> {
    let len = v.to_cbor().len();
    match v {
        Value::Integer(n) => {
            prop_assert!((INT_MIN..=INT_MAX).contains(n));
            let arg = if *n >= 0 { *n } else { -1 - *n } as u128;
            let expected = match arg {
                0..=23 => 1,
                24..=0xff => 2,
                0x100..=0xffff => 3,
                0x1_0000..=0xffff_ffff => 5,
                _ => 9,
            };
            prop_assert_eq!(len, expected, "integer {}", n);
        }
        Value::Float(f) => {
            prop_assert!(f.is_finite());
            prop_assert!(
                f.trunc() != *f || f.abs() >= 18446744073709551616.0,
                "integral float {} was not reduced",
                f
            );
            let expected = if exact_in_half(*f) {
                3
            } else if f64::from(*f as f32) == *f {
                5
            } else {
                9
            };
            prop_assert_eq!(len, expected, "float {:e}", f);
        }
        Value::Array(items) => items.iter().try_for_each(check_canonical_shape)?,
        Value::Map(m) => {
            let keys: Vec<Vec<u8>> = m
                .iter()
                .map(|(k, _)| Value::Text(k.to_owned()).to_cbor())
                .collect();
            for w in keys.windows(2) {
                prop_assert!(
                    w[0] < w[1],
                    "keys out of order: {:02x?} {:02x?}",
                    w[0],
                    w[1]
                );
            }
            m.iter().try_for_each(|(_, v)| check_canonical_shape(v))?;
        }
        Value::Null | Value::Bool(_) | Value::Text(_) | Value::Bytes(_) => {}
    }
    Ok(())
}

fn cases(n: u32) -> Config {
    Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// §2: canonical values
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(1024))]

    /// Strict decoding of the canonical encoding gives the value back, and encodes to the same
    /// bytes again.
    #[test]
    fn canonical_cbor_is_idempotent(v in value(true)) {
        check_canonical_shape(&v)?;
        let bytes = v.to_cbor();
        let decoded = Value::from_canonical_cbor(&bytes, "$").unwrap();
        prop_assert_eq!(&decoded, &v);
        prop_assert_eq!(decoded.to_cbor(), bytes);
    }

    /// Any CBOR encoding of a value canonicalizes to that value, but strict decoding accepts only
    /// the canonical bytes.
    #[test]
    fn only_the_canonical_encoding_is_accepted(v in value(true), floats in any::<bool>()) {
        let canonical_bytes = v.to_cbor();
        let raw = scrambled(&v, floats);
        prop_assert_eq!(&Value::from_cbor_value(raw.clone(), "$").unwrap(), &v);
        let mut other = Vec::new();
        ciborium::into_writer(&raw, &mut other).unwrap();
        match Value::from_canonical_cbor(&other, "$") {
            Ok(d) => {
                prop_assert_eq!(&other, &canonical_bytes);
                prop_assert_eq!(d, v);
            }
            Err(_) => prop_assert_ne!(&other, &canonical_bytes),
        }
    }

    /// JSON text → Value → to_json → text → Value is stable, and so is the text.
    #[test]
    fn json_round_trip_is_stable(v in json_value(), seed in any::<u64>(), vary in any::<bool>()) {
        let text = Writer::new(seed, true, vary).write(&v);
        let v1 = Value::from_json_slice(text.as_bytes(), "$").unwrap();
        prop_assert_eq!(&v1, &v, "from {}", text);
        let t2 = serde_json::to_string(&v1.to_json()).unwrap();
        let v2 = Value::from_json_slice(t2.as_bytes(), "$").unwrap();
        prop_assert_eq!(&v2, &v1, "from {}", t2);
        let t3 = serde_json::to_string(&v2.to_json()).unwrap();
        prop_assert_eq!(&t3, &t2);
        let pretty = serde_json::to_string_pretty(&v2.to_json()).unwrap();
        prop_assert_eq!(Value::from_json_slice(pretty.as_bytes(), "$").unwrap(), v);
    }
}

// ---------------------------------------------------------------------------------------------
// §3: identity v1
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(768))]

    /// Key order (at every level, request included) never changes the identity.
    #[test]
    fn key_order_never_changes_the_identity(
        config in json_value(),
        predicate in json_map(),
        module in "\\PC{1,12}",
        seeds in (any::<u64>(), any::<u64>()),
    ) {
        let expected = identity_of_value(&module, &config, &predicate);
        let pred = Value::Map(predicate);
        let mut ids = Vec::new();
        for seed in [seeds.0, seeds.1] {
            let mut w = Writer::new(seed, true, false);
            let text = request(&module, &w.write(&config), Some(&w.write(&pred)));
            let doc = cairn::document_of_json(text.as_bytes()).unwrap();
            prop_assert!(hex::encode(doc.to_cbor()).starts_with("a461760166636f6e666967"));
            ids.push(cairn::identity_of_json(text.as_bytes()).unwrap());
        }
        prop_assert_eq!(ids[0], expected);
        prop_assert_eq!(ids[1], expected);
    }

    /// Number spellings, string escapes and whitespace never change the identity either.
    #[test]
    fn spelling_never_changes_the_identity(config in json_value(), seed in any::<u64>()) {
        let plain = Writer::new(seed, false, false).write(&config);
        let varied = Writer::new(seed, true, true).write(&config);
        let a = cairn::identity_of_json(request("m", &plain, None).as_bytes()).unwrap();
        let b = cairn::identity_of_json(request("m", &varied, None).as_bytes()).unwrap();
        prop_assert_eq!(a, b, "{} vs {}", plain, varied);
        prop_assert_eq!(a, identity_of_value("m", &config, &Map::new()));
    }

    /// An integral value spelled `3`, `3.0`, `3e0`, `30e-1`, `0.3e1`, ... has one identity, the
    /// integer's; an integer-valued f64 field has the identity of the same i64/u64 field.
    #[test]
    fn int_and_float_spellings_of_one_value_agree(n in int()) {
        let expected = identity_of_value(
            "m",
            &Value::Map(map_of(vec![("x".into(), Value::Integer(n))])),
            &Map::new(),
        );
        for s in integer_spellings(n) {
            let text = request("m", &format!(r#"{{"x": {s}}}"#), None);
            prop_assert_eq!(cairn::identity_of_json(text.as_bytes()).unwrap(), expected, "{}", s);
        }
        #[derive(Serialize)]
        struct F { x: f64 }
        #[derive(Serialize)]
        struct I { x: i64 }
        #[derive(Serialize)]
        struct U { x: u64 }
        #[derive(Serialize)]
        struct W { x: i128 }
        prop_assert_eq!(cairn::identity("m", &W { x: n }, &Empty).unwrap(), expected);
        if let Ok(i) = i64::try_from(n) {
            prop_assert_eq!(cairn::identity("m", &I { x: i }, &Empty).unwrap(), expected);
        }
        if let Ok(u) = u64::try_from(n) {
            prop_assert_eq!(cairn::identity("m", &U { x: u }, &Empty).unwrap(), expected);
        }
        if exact_in_f64(n) {
            prop_assert_eq!(cairn::identity("m", &F { x: n as f64 }, &Empty).unwrap(), expected);
        } else {
            // The nearest double is a different number, so a different identity (or, at 2^64,
            // out of range and kept as a float).
            prop_assert_ne!(cairn::identity("m", &F { x: n as f64 }, &Empty).unwrap(), expected);
        }
    }
}

#[derive(Serialize, Debug, Clone)]
struct Optimizer {
    name: String,
    lr: f64,
    betas: Vec<f64>,
    warmup: Option<u64>,
}

#[derive(Serialize, Debug, Clone)]
enum Schedule {
    Constant,
    Step(f64),
    Cosine { min_lr: f64, cycles: u64 },
}

#[derive(Serialize, Debug, Clone)]
struct Train {
    epochs: u64,
    seed: i64,
    scale: f64,
    verbose: bool,
    name: String,
    note: Option<String>,
    optimizer: Optimizer,
    fallback: Option<Optimizer>,
    layers: Vec<i64>,
    weights: Vec<f64>,
    table: BTreeMap<String, i64>,
    nested: BTreeMap<String, Optimizer>,
    schedule: Schedule,
    pair: (u64, String),
    letter: char,
    nothing: (),
}

fn optimizer() -> impl Strategy<Value = Optimizer> {
    (
        text(),
        finite_f64(),
        vec(finite_f64(), 0..3),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(name, lr, betas, warmup)| Optimizer {
            name,
            lr,
            betas,
            warmup,
        })
}

fn schedule() -> impl Strategy<Value = Schedule> {
    prop_oneof![
        Just(Schedule::Constant),
        finite_f64().prop_map(Schedule::Step),
        (finite_f64(), any::<u64>())
            .prop_map(|(min_lr, cycles)| Schedule::Cosine { min_lr, cycles }),
    ]
}

prop_compose! {
    fn train()(
        (epochs, seed, scale, verbose) in (any::<u64>(), any::<i64>(), finite_f64(), any::<bool>()),
        (name, note) in (text(), proptest::option::of(text())),
        (optimizer, fallback) in (optimizer(), proptest::option::of(optimizer())),
        (layers, weights) in (vec(any::<i64>(), 0..4), vec(finite_f64(), 0..4)),
        table in proptest::collection::btree_map(key(), any::<i64>(), 0..4),
        nested in proptest::collection::btree_map(key(), optimizer(), 0..2),
        schedule in schedule(),
        pair in (any::<u64>(), text()),
        letter in any::<char>(),
    ) -> Train {
        Train {
            epochs, seed, scale, verbose, name, note, optimizer, fallback, layers, weights, table,
            nested, schedule, pair, letter, nothing: (),
        }
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// A derived `Serialize` struct and its serde_json text have the same identity.
    #[test]
    fn serialize_and_its_json_text_agree(t in train(), p in proptest::collection::btree_map(key(), any::<i64>(), 0..3)) {
        let direct = cairn::identity("m", &t, &p).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        let pjson = serde_json::to_string(&p).unwrap();
        let via_json = cairn::identity_of_json(request("m", &json, Some(&pjson)).as_bytes()).unwrap();
        prop_assert_eq!(direct, via_json, "{}", json);
        // And a model holding the struct as its config agrees too.
        let model = Model::new("m").with_config(&t).unwrap().with_predicate(&p).unwrap();
        prop_assert_eq!(model.identity().unwrap(), direct);
    }
}

// ---------------------------------------------------------------------------------------------
// §4: run directory format
// ---------------------------------------------------------------------------------------------

fn json_object(m: &Map) -> serde_json::Map<String, serde_json::Value> {
    match Value::Map(m.clone()).to_json() {
        serde_json::Value::Object(o) => o,
        _ => unreachable!(),
    }
}

fn created_at() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "2026-11-22T08:00:00Z",
        "2026-11-22T08:12:22.123456Z",
        "1970-01-01T00:00:00Z",
        "2099-12-31T23:59:59.5Z",
    ])
    .prop_map(String::from)
}

/// Unknown top-level fields: never one of the known names.
fn extra_fields() -> impl Strategy<Value = Map> {
    vec(("x_(?s).{0,5}", json_value()), 0..3).prop_map(map_of)
}

prop_compose! {
    fn model()(
        module in prop_oneof!["[a-z][a-z0-9_.]{0,10}", "\\PC{1,8}"],
        config in json_value(),
        predicate in json_map(),
        version in vec(text(), 0..3),
        inherits in vec("[a-z.]{1,8}", 0..3),
        context in json_map(),
        defaults in json_map(),
        non_identifying in vec("[a-z]{1,3}(\\.[a-z]{1,3}){0,2}", 0..3),
        created_at in proptest::option::of(created_at()),
        created_by in proptest::option::of(text()),
        extra in extra_fields(),
    ) -> Model {
        let non_identifying: Vec<&str> = non_identifying.iter().map(String::as_str).collect();
        let schema = Schema::new(&json_object(&defaults), &non_identifying).unwrap();
        let mut m = Model::new(module)
            .with_config(&config.to_json())
            .unwrap()
            .with_predicate(&json_object(&predicate))
            .unwrap()
            .with_schema(schema);
        m.version = version;
        m.inherits = inherits;
        m.context = json_object(&context);
        m.created_at = created_at;
        m.created_by = created_by;
        m.extra = json_object(&extra);
        m
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// model.json and id.json written by cairn read back to equal values, rewrite to the same
    /// bytes, and keep the identity (model.json is also a valid `cairn id` request).
    #[test]
    fn model_and_id_header_round_trip(
        model in model(),
        at in created_at(),
        header_extra in extra_fields(),
    ) {
        let path = Path::new("run/model.json");
        let bytes = model.to_json_bytes();
        prop_assert_eq!(bytes.last(), Some(&b'\n'));
        let read = Model::from_json_bytes(&bytes, path).unwrap();
        prop_assert_eq!(&read, &model);
        prop_assert_eq!(read.to_json_bytes(), bytes.clone());
        let id = model.identity().unwrap();
        prop_assert_eq!(Identity::of_document(&model.document().unwrap()), id);
        prop_assert_eq!(read.identity().unwrap(), id);
        prop_assert_eq!(cairn::identity_of_json(&bytes).unwrap(), id);

        let mut materialized = model;
        materialized.created_at = Some(at);
        let mut header = IdHeader::for_model(&materialized, id);
        header.extra = json_object(&header_extra);
        let path = Path::new("run/id.json");
        let hbytes = header.to_json_bytes();
        let hread = IdHeader::from_json_bytes(&hbytes, path).unwrap();
        prop_assert_eq!(&hread, &header);
        prop_assert_eq!(hread.to_json_bytes(), hbytes);
        prop_assert_eq!(hread.identity, id);
        prop_assert_eq!(&hread.created_at, materialized.created_at.as_ref().unwrap());
        // id.json carries the complete config too (FORMAT.md §4.2), equal to model.json's.
        prop_assert_eq!(&hread.config, &materialized.config);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by these properties
// ---------------------------------------------------------------------------------------------

/// The key `$serde_json::private::Number` is reserved (FORMAT.md §2.2): serde_json's parsed values
/// cannot tell a map using it from a number, so a map using it is refused, never misread as the
/// number its value spells.
#[test]
fn object_with_serde_number_token_key_is_refused_not_misread() {
    let text = br#"{"$serde_json::private::Number": "5"}"#;
    let err = Value::from_json_slice(text, "$").unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    let a =
        cairn::identity_of_json(br#"{"module":"m","config":{"$serde_json::private::Number":"5"}}"#);
    assert!(a.is_err());
    // Escaped spelling of the same key: refused as well.
    let escaped = br#"{"$serde_json::private::Numbe\u0072": "5"}"#;
    assert!(Value::from_json_slice(escaped, "$").is_err());
    // Real numbers still read exactly.
    assert_eq!(
        Value::from_json_slice(b"18446744073709551615", "$").unwrap(),
        Value::Integer(18446744073709551615)
    );
}

/// FORMAT.md §4: writers emit files that readers accept. A model whose non-identifying parts
/// (context, unknown fields, schema defaults, created_at) break §2 or §4, or whose config makes
/// `id.json` exceed its size limit, is still materialized by `Store::get_or_create`, leaving a run
/// whose files cairn itself refuses to read (and, for `id.json`, a store where the same model can
/// never be created or found again).
#[test]
fn store_never_writes_a_run_it_cannot_read() {
    fn nested(n: usize) -> serde_json::Value {
        (1..n).fold(serde_json::json!([]), |v, _| {
            serde_json::Value::Array(vec![v])
        })
    }
    let too_big = serde_json::to_value(1i128 << 70).unwrap();
    let mut cases: Vec<(&str, Model)> = Vec::new();
    let mut m = Model::new("m");
    m.context.insert("deep".into(), nested(126));
    cases.push(("context nested 126 levels", m));
    let mut m = Model::new("m");
    m.context.insert("n".into(), too_big.clone());
    cases.push(("context integer 2^70", m));
    let mut m = Model::new("m");
    m.extra.insert("n".into(), too_big);
    cases.push(("unknown field integer 2^70", m));
    let schema = Schema::new(&serde_json::json!({"a": nested(125)}), &[]).unwrap();
    cases.push((
        "schema default nested 125 levels",
        Model::new("m").with_schema(schema),
    ));
    let mut m = Model::new("m");
    m.created_at = Some("yesterday".into());
    cases.push(("created_at not RFC 3339", m));
    let blob = "x".repeat((cairn::run::ID_FILE_LIMIT as usize) + 1);
    cases.push((
        "config over the id.json size limit",
        Model::new("m")
            .with_config(&serde_json::json!({ "blob": blob }))
            .unwrap(),
    ));

    let mut broken = Vec::new();
    for (name, model) in cases {
        let root = tempfile::tempdir().unwrap();
        let store = cairn::Store::open(root.path()).unwrap();
        let Ok(run) = store.get_or_create(&model) else {
            continue; // refused up front: fine
        };
        if let Err(e) = Model::read(run.path()) {
            broken.push(format!("{name}: model.json unreadable: {e}"));
        }
        if let Err(e) = IdHeader::read(run.path()) {
            broken.push(format!("{name}: id.json unreadable: {e}"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// FORMAT.md §2.5: at most 127 levels counted from the outermost container of a document, so a
/// value alone nests 127 levels and a config or predicate (one level inside the identity
/// document) 126, whether it comes from JSON text, CBOR or a `Serialize` value.
#[test]
fn nesting_limits() {
    let max = canonical::MAX_DEPTH;
    assert_eq!(max, 127);
    let json = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let cbor = |n: usize| {
        let mut c = vec![0x81u8; n - 1];
        c.push(0x80);
        c
    };
    let serde = |n: usize| -> serde_json::Value {
        (1..n).fold(serde_json::json!([]), |v, _| {
            serde_json::Value::Array(vec![v])
        })
    };
    for (n, ok) in [(max, true), (max + 1, false)] {
        assert_eq!(
            Value::from_json_slice(json(n).as_bytes(), "$").is_ok(),
            ok,
            "JSON {n}"
        );
        assert_eq!(
            Value::from_canonical_cbor(&cbor(n), "$").is_ok(),
            ok,
            "CBOR {n}"
        );
    }
    for (n, ok) in [(max - 1, true), (max, false)] {
        let request = format!(r#"{{"module": "m", "config": {}}}"#, json(n));
        assert_eq!(
            cairn::identity_of_json(request.as_bytes()).is_ok(),
            ok,
            "request config {n}"
        );
        let request = format!(
            r#"{{"module": "m", "predicate": {{"p": {}}}}}"#,
            json(n - 1)
        );
        assert_eq!(
            cairn::identity_of_json(request.as_bytes()).is_ok(),
            ok,
            "predicate {n}"
        );
        assert_eq!(
            cairn::identity("m", &serde(n), &Empty).is_ok(),
            ok,
            "Serialize config {n}"
        );
        let model = Model::new("m").with_config(&serde(n)).unwrap();
        assert_eq!(model.identity().is_ok(), ok, "model config {n}");
        if ok {
            // Whatever has an identity is a readable model.json with the same identity.
            let bytes = model.to_json_bytes();
            let read = Model::from_json_bytes(&bytes, Path::new("model.json")).unwrap();
            assert_eq!(read.identity().unwrap(), model.identity().unwrap());
            assert_eq!(
                cairn::identity_of_json(&bytes).unwrap(),
                model.identity().unwrap()
            );
        }
    }
}

/// The reserved key through the `Serialize` path: `Value::from_serialize` reads any one-entry map
/// `{"$serde_json::private::Number": text}` as the number the text spells (so that a
/// `serde_json::Value` inside a config struct keeps its numbers), but it cannot tell a user's own
/// map from a `serde_json::Number`. A `BTreeMap` config with that key therefore gets the identity
/// of a number (`identity(&{"$serde_json::private::Number": "5"})` == `identity(&5)`), accepts
/// literals JSON does not (`"+5"`, `"05"`, `"1."`, `".5e1"`), and disagrees with
/// `Model::with_config(&same_map).identity()`, which refuses the key as FORMAT.md §2.2 says.
#[test]
fn serialize_map_with_reserved_key_is_refused_like_json() {
    let token = "$serde_json::private::Number";
    for lit in ["5", "+5", "05", "1.", ".5e1"] {
        let map: BTreeMap<&str, &str> = [(token, lit)].into();
        let direct = cairn::identity("m", &map, &Empty);
        let model = Model::new("m").with_config(&map).unwrap().identity();
        assert!(model.is_err(), "model accepted the reserved key");
        assert!(
            direct.is_err(),
            "identity(&{{{token:?}: {lit:?}}}) = {} (the identity of a number), not an error",
            direct.unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The direct encoder against the tree reference
// ---------------------------------------------------------------------------------------------

/// A JSON-like tree that may break the rules: repeated and reserved keys, NaN, and containers
/// wide enough (≥ 24 items) to need a two-byte CBOR head. Maps are serialized either as serde
/// maps or as structs.
#[derive(Debug, Clone)]
enum Raw {
    Leaf(Value),
    Nan,
    Array(Vec<Raw>),
    Map {
        is_struct: bool,
        entries: Vec<(&'static str, Raw)>,
    },
}

/// Keys drawn from a small set (so repeats happen), including the reserved one and keys longer
/// than 23 bytes.
fn raw_key() -> impl Strategy<Value = &'static str> {
    const KEYS: [&str; 12] = [
        "a",
        "b",
        "z",
        "aa",
        "é",
        "",
        "lr",
        "optimizer",
        "a key longer than twenty-three bytes",
        "another key over twenty-three bytes",
        "$serde_json::private::Number",
        "日本語",
    ];
    prop_oneof![
        20 => prop::sample::select(&KEYS[..10]),
        1 => Just(KEYS[10]),
        2 => Just(KEYS[11]),
        // Many distinct keys, for wide maps without repeats.
        4 => (0..60usize).prop_map(|i| WIDE_KEYS[i]),
    ]
}

const WIDE_KEYS: [&str; 60] = [
    "k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08", "k09", "k10", "k11", "k12",
    "k13", "k14", "k15", "k16", "k17", "k18", "k19", "k20", "k21", "k22", "k23", "k24", "k25",
    "k26", "k27", "k28", "k29", "k30", "k31", "k32", "k33", "k34", "k35", "k36", "k37", "k38",
    "k39", "k40", "k41", "k42", "k43", "k44", "k45", "k46", "k47", "k48", "k49", "k50", "k51",
    "k52", "k53", "k54", "k55", "k56", "k57", "k58", "k59",
];

fn raw() -> BoxedStrategy<Raw> {
    let leaf = prop_oneof![
        30 => leaf(false).prop_map(Raw::Leaf),
        1 => Just(Raw::Nan),
    ];
    leaf.prop_recursive(4, 160, 30, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..30).prop_map(Raw::Array),
            (any::<bool>(), vec((raw_key(), inner), 0..30))
                .prop_map(|(is_struct, entries)| Raw::Map { is_struct, entries }),
        ]
    })
    .boxed()
}

impl Raw {
    /// JSON text (NaN has no JSON spelling: it is written as `null` here).
    fn json(&self, out: &mut String) {
        match self {
            Raw::Leaf(v) => out.push_str(&Writer::new(1, false, false).write(v)),
            Raw::Nan => out.push_str("null"),
            Raw::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.json(out);
                }
                out.push(']');
            }
            Raw::Map { entries, .. } => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    v.json(out);
                }
                out.push('}');
            }
        }
    }
}

impl Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
        match self {
            Raw::Leaf(Value::Null) => s.serialize_unit(),
            Raw::Leaf(Value::Bool(b)) => s.serialize_bool(*b),
            Raw::Leaf(Value::Integer(i)) => s.serialize_i128(*i),
            Raw::Leaf(Value::Float(f)) => s.serialize_f64(*f),
            Raw::Leaf(Value::Text(t)) => s.serialize_str(t),
            Raw::Leaf(other) => unreachable!("not a leaf: {other:?}"),
            Raw::Nan => s.serialize_f64(f64::NAN),
            Raw::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                items.iter().try_for_each(|i| seq.serialize_element(i))?;
                seq.end()
            }
            Raw::Map {
                is_struct: true,
                entries,
            } => {
                let mut st = s.serialize_struct("Raw", entries.len())?;
                for (k, v) in entries {
                    st.serialize_field(k, v)?;
                }
                st.end()
            }
            Raw::Map { entries, .. } => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// The result as comparable text: the canonical bytes, or the error message.
fn outcome(r: cairn::Result<Value>) -> Result<Vec<u8>, String> {
    r.map(|v| v.to_cbor()).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(cases(1024))]

    /// JSON text straight to canonical bytes gives what the tree path gives (json::parse, then
    /// canonicalization of the tree): the same value, or the same error at the same path.
    #[test]
    fn direct_json_encoding_matches_the_tree_path(r in raw()) {
        let mut text = String::new();
        r.json(&mut text);
        let tree = cairn::json::parse(text.as_bytes()).and_then(|t| Value::from_cbor_value(t, "$"));
        prop_assert_eq!(
            outcome(Value::from_json_slice(text.as_bytes(), "$")),
            outcome(tree),
            "{}",
            text
        );
    }

    /// A `Serialize` value straight to canonical bytes gives what the tree path gives (serde into
    /// a ciborium tree, then canonicalization): the same value, or the same error at the same
    /// path. Structs and maps with the same entries agree, and the reserved key is refused in
    /// both.
    #[test]
    fn direct_serialize_encoding_matches_the_tree_path(r in raw()) {
        let tree = Value::from_cbor_value(ciborium::Value::serialized(&r).unwrap(), "config");
        // (Depth limits differ by one level between the two and are out of this strategy's
        // reach; `nesting_limits` checks them.)
        let direct = Value::from_serialize(&r, "config");
        prop_assert_eq!(outcome(direct), outcome(tree));
    }

    /// Serialize, JSON text and the tree agree on identities for arbitrary JSON values (including
    /// wide containers), and `Value::from_serialize` of a `serde_json::Value` is the value.
    #[test]
    fn serialize_path_equals_json_path(v in wide_json_value(), p in json_map(), seed in any::<u64>()) {
        let json = v.to_json();
        prop_assert_eq!(&Value::from_serialize(&json, "config").unwrap(), &v);
        prop_assert_eq!(&Value::from_json_value(&json, "config").unwrap(), &v);
        let expected = identity_of_value("m", &v, &p);
        let pjson = serde_json::Value::Object(json_object(&p));
        prop_assert_eq!(cairn::identity("m", &json, &pjson).unwrap(), expected);
        let mut w = Writer::new(seed, true, true);
        let text = request("m", &w.write(&v), Some(&w.write(&Value::Map(p.clone()))));
        prop_assert_eq!(cairn::identity_of_json(text.as_bytes()).unwrap(), expected);
        prop_assert_eq!(
            cairn::document_of_json(text.as_bytes()).unwrap(),
            document("m", v, Value::Map(p), &Schema::empty()).unwrap()
        );
    }

    /// A `serde_json::Number` (a struct named `$serde_json::private::Number`) is the number its
    /// literal spells; a user's map with that key is refused, whatever the literal.
    #[test]
    fn serde_json_numbers_are_numbers_and_the_reserved_key_is_refused(
        n in prop_oneof![
            int().prop_map(integer_spellings),
            finite_f64().prop_map(float_spellings),
        ],
        pick in any::<prop::sample::Index>(),
    ) {
        let lit = pick.get(&n);
        let number: serde_json::Value = serde_json::from_str(lit).unwrap();
        prop_assert_eq!(
            Value::from_serialize(&number, "c").unwrap(),
            Value::from_json_slice(lit.as_bytes(), "c").unwrap()
        );
        let map: BTreeMap<&str, &str> = [("$serde_json::private::Number", lit.as_str())].into();
        let err = Value::from_serialize(&map, "c").unwrap_err();
        prop_assert!(err.to_string().contains("reserved"), "{}", err);
    }
}

/// JSON values whose arrays and maps may hold 24 or more items (a two-byte CBOR head).
fn wide_json_value() -> BoxedStrategy<Value> {
    leaf(false)
        .prop_recursive(3, 120, 40, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..40).prop_map(Value::Array),
                vec((key(), inner), 0..40).prop_map(|e| Value::Map(map_of(e))),
            ]
        })
        .boxed()
}

/// Types whose serde form depends on `is_human_readable` (addresses) get the identity of their
/// JSON form, as in `model.json`.
#[test]
fn human_readable_forms_are_used_like_json() {
    #[derive(Serialize)]
    struct Net {
        ip: std::net::IpAddr,
        addr: std::net::SocketAddr,
    }
    let net = Net {
        ip: "10.0.0.1".parse().unwrap(),
        addr: "[::1]:8080".parse().unwrap(),
    };
    let direct = cairn::identity("m", &net, &Empty).unwrap();
    let model = Model::new("m").with_config(&net).unwrap();
    assert_eq!(model.identity().unwrap(), direct);
    let text = br#"{"module": "m", "config": {"ip": "10.0.0.1", "addr": "[::1]:8080"}}"#;
    assert_eq!(cairn::identity_of_json(text).unwrap(), direct);
}

/// Errors on the `Serialize` path name the place, as on the JSON path.
#[test]
fn serialize_errors_name_the_path() {
    #[derive(Serialize)]
    struct Opt {
        betas: Vec<f64>,
    }
    #[derive(Serialize)]
    struct Cfg {
        optimizer: Opt,
        big: Option<u128>,
    }
    let nan = Cfg {
        optimizer: Opt {
            betas: vec![0.9, f64::NAN],
        },
        big: None,
    };
    assert_eq!(
        cairn::identity("m", &nan, &Empty).unwrap_err().to_string(),
        "config.optimizer.betas[1]: NaN and infinities are not allowed"
    );
    let big = Cfg {
        optimizer: Opt { betas: vec![] },
        big: Some(1 << 64),
    };
    assert_eq!(
        cairn::identity("m", &big, &Empty).unwrap_err().to_string(),
        "config.big: integer 18446744073709551616 is outside the range -2^64 ..= 2^64-1"
    );
    /// A `Serialize` impl that fails on its own.
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let pred: BTreeMap<&str, Vec<Refuses>> = [("p q", vec![Refuses])].into();
    assert_eq!(
        cairn::identity("m", &Empty, &pred).unwrap_err().to_string(),
        "predicate[\"p q\"][0]: a value that serde cannot express in CBOR is not allowed"
    );
    let keyed: BTreeMap<u32, u32> = [(1, 2)].into();
    assert_eq!(
        cairn::identity("m", &keyed, &Empty)
            .unwrap_err()
            .to_string(),
        "config: map key is not text"
    );
}

/// Values from a small universe (few keys, few leaves), so that configs and defaults overlap and
/// often agree.
fn small_value() -> BoxedStrategy<Value> {
    let leaf = prop::sample::select(vec![
        Value::Integer(0),
        Value::Integer(1),
        Value::Float(0.5),
        Value::Text("x".into()),
        Value::Bool(true),
        Value::Null,
        Value::Map(Map::new()),
    ]);
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            1 => vec(inner.clone(), 0..3).prop_map(Value::Array),
            3 => vec((prop::sample::select(vec!["a", "b", "c"]), inner), 0..4).prop_map(|e| {
                Value::Map(map_of(e.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
            }),
        ]
    })
    .boxed()
}

proptest! {
    #![proptest_config(cases(2048))]

    /// A schema reduces a config the same on every path: the `Serialize` path and the JSON path
    /// (which reduce canonical bytes) agree with `Schema::reduce` on values.
    #[test]
    fn schema_reduction_agrees_on_every_path(
        config in small_value(),
        defaults in small_value(),
        ni in vec(prop::sample::select(vec!["a", "b", "c", "a.b", "b.c", "a.a.c", "c.a", "a.b.c"]), 0..3),
    ) {
        let Value::Map(defaults) = defaults else { return Ok(()) };
        let schema = Schema::new(&json_object(&defaults), &ni).unwrap();
        let expected = Identity::of_document(
            &document("m", config.clone(), Value::Map(Map::new()), &schema).unwrap(),
        );
        let json = config.to_json();
        prop_assert_eq!(cairn::identity_with_schema("m", &json, &Empty, &schema).unwrap(), expected);
        let text = serde_json::to_string(&serde_json::json!({
            "module": "m",
            "config": json,
            "schema": schema,
        }))
        .unwrap();
        prop_assert_eq!(cairn::identity_of_json(text.as_bytes()).unwrap(), expected);
    }
}

/// Bad JSON of every kind gets the same error on the direct path as on the tree path, including
/// which error wins when several are present.
#[test]
fn direct_json_errors_match_the_tree_path() {
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let cases: Vec<String> = [
        "",
        "{",
        "[1,]",
        "{} x",
        "NaN",
        "[1e400]",
        "-1e400",
        r#"{"a": 18446744073709551616}"#,
        "-18446744073709551617",
        r#"{"a": 1, "a": 2}"#,
        r#"{"b": {"x": 1, "x": 2}, "a": 1e400}"#,
        r#"{"a": {"x": 1, "x": 2}, "b": [1, 2, {"c": 1, "c": 2}]}"#,
        r#"{"a": 1, "a": 2, "b": {"x": 1, "x": 1}}"#,
        r#"{"$serde_json::private::Number": "5"}"#,
        r#"{"a": 1, "$serde_json::private::Numbe\u0072": 2}"#,
        r#"[{"a": 1, "a": 2}, {"k": 1, "k": 2} x"#,
        r#"{"a": "\ud800"}"#,
    ]
    .into_iter()
    .map(String::from)
    .chain([
        deep(127),
        deep(128),
        deep(129),
        format!("[{}, 1e400]", deep(128)),
    ])
    .collect();
    for text in cases {
        let tree = cairn::json::parse(text.as_bytes()).and_then(|t| Value::from_cbor_value(t, "$"));
        assert_eq!(
            outcome(Value::from_json_slice(text.as_bytes(), "$")),
            outcome(tree),
            "{text}"
        );
    }
}

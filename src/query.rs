//! Finding runs by predicate and config values (FORMAT.md §5.4).
//!
//! Filters compare canonical values: `1`, `1.0` and `1e0` are one value. Ranges compare numbers
//! with numbers (integers and floats exactly, never through a lossy cast) and text with text
//! (bytewise); a value of another kind never satisfies a range.

use std::cmp::Ordering;

use crate::canonical::Value;
use crate::error::{Error, Result};
use crate::index::{Availability, RunRecord};

/// A condition on one field.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Condition {
    /// Equal to the value.
    Eq(Value),
    /// Less than.
    Lt(Value),
    /// Less than or equal.
    Le(Value),
    /// Greater than.
    Gt(Value),
    /// Greater than or equal.
    Ge(Value),
    /// Equal to one of the values.
    In(Vec<Value>),
    /// The field is present.
    Exists,
}

/// A condition on a field named by a dotted path: `config.optimizer.lr`, `predicate.split`,
/// `module`, `created_at`, `location` or `state`.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// The field.
    pub path: String,
    /// The condition.
    pub condition: Condition,
}

impl Filter {
    /// A filter; the path must start with `config`, `predicate` or name a record field.
    pub fn new(path: impl Into<String>, condition: Condition) -> Result<Self> {
        let path = path.into();
        let head = path.split('.').next().unwrap_or("");
        let plain = matches!(head, "module" | "created_at" | "location" | "state");
        if !(matches!(head, "config" | "predicate") || (plain && path == head))
            || path.split('.').any(str::is_empty)
        {
            return Err(Error::InvalidQuery {
                reason: format!(
                    "field {path:?}: use config.<path>, predicate.<path>, module, created_at, location or state"
                ),
            });
        }
        Ok(Filter { path, condition })
    }

    /// Whether `rec` satisfies this filter.
    pub fn matches(&self, rec: &RunRecord) -> bool {
        field(rec, &self.path).is_some_and(|v| self.condition.holds(&v))
    }
}

impl Condition {
    /// Whether a present `value` satisfies this condition.
    fn holds(&self, value: &Value) -> bool {
        let cmp = |w: &Value| compare(value, w);
        match self {
            Condition::Exists => true,
            Condition::Eq(w) => value == w,
            Condition::In(ws) => ws.contains(value),
            Condition::Lt(w) => cmp(w) == Some(Ordering::Less),
            Condition::Le(w) => matches!(cmp(w), Some(Ordering::Less | Ordering::Equal)),
            Condition::Gt(w) => cmp(w) == Some(Ordering::Greater),
            Condition::Ge(w) => matches!(cmp(w), Some(Ordering::Greater | Ordering::Equal)),
        }
    }
}

/// A query compiled for encoded run records (FORMAT.md §5.2): each condition is evaluated on
/// the record's canonical CBOR without decoding it. Equality compares encodings, which is exact
/// because a canonical value has exactly one encoding; ranges decode only the field.
pub(crate) struct EncodedQuery<'q> {
    /// (record item, path inside it, test).
    tests: Vec<(usize, Vec<&'q str>, Test<'q>)>,
}

enum Test<'q> {
    /// The field is present.
    Exists,
    /// The field's encoding is one of these.
    OneOf(Vec<Vec<u8>>),
    /// A range, on the decoded field.
    Range(&'q Condition),
}

impl<'q> EncodedQuery<'q> {
    /// Compiles `query`'s module, state and filters.
    pub(crate) fn new(query: &'q Query) -> Self {
        use crate::index::{
            AT_CONFIG, AT_CREATED_AT, AT_LOCATION, AT_MODULE, AT_PREDICATE, AT_STATE,
        };
        let text = |s: &str| Value::Text(s.to_owned()).to_cbor();
        let mut tests = Vec::new();
        if let Some(m) = &query.module {
            tests.push((AT_MODULE, Vec::new(), Test::OneOf(vec![text(m)])));
        }
        if let Some(s) = query.state {
            tests.push((AT_STATE, Vec::new(), Test::OneOf(vec![text(s.as_str())])));
        }
        for f in &query.filters {
            let test = match &f.condition {
                Condition::Exists => Test::Exists,
                Condition::Eq(w) => Test::OneOf(vec![w.to_cbor()]),
                Condition::In(ws) => Test::OneOf(ws.iter().map(Value::to_cbor).collect()),
                range => Test::Range(range),
            };
            let mut path = f.path.split('.');
            let item = match path.next() {
                Some("config") => AT_CONFIG,
                Some("predicate") => AT_PREDICATE,
                Some("module") => AT_MODULE,
                Some("state") => AT_STATE,
                Some("location") => AT_LOCATION,
                _ => AT_CREATED_AT, // `Filter::new` admits no other head
            };
            tests.push((item, path.collect(), test));
        }
        EncodedQuery { tests }
    }

    /// Whether the encoded `record` matches; also true for bytes that are not a well-formed
    /// record, so that decoding it reports the damage.
    pub(crate) fn matches(&self, record: &[u8]) -> bool {
        self.tests.iter().all(|(item, path, test)| {
            // Only the items up to the one tested are walked.
            let Some(tail) = crate::index::record_tail(record, *item) else {
                return true;
            };
            let Ok(found) = crate::cbor::find_path(tail, path.iter().copied()) else {
                return true;
            };
            let Some(field) = found else {
                return false;
            };
            match test {
                Test::Exists => true,
                Test::OneOf(encodings) => encodings.iter().any(|e| e == field),
                Test::Range(c) => {
                    crate::cbor::decode(field, "record").map_or(true, |v| c.holds(&v))
                }
            }
        })
    }
}

/// The value of the field at `path` of `rec`: the reference evaluation, on decoded trees.
fn field(rec: &RunRecord, path: &str) -> Option<Value> {
    let (head, rest) = path
        .split_once('.')
        .map_or((path, None), |(h, r)| (h, Some(r)));
    let root = match head {
        "config" => rec.config(),
        "predicate" => rec.predicate(),
        "module" => return Some(Value::Text(rec.module.clone())),
        "created_at" => return Some(Value::Text(rec.created_at.clone())),
        "location" => return Some(Value::Text(rec.location.clone())),
        "state" => return Some(Value::Text(rec.state.as_str().into())),
        _ => return None,
    };
    let mut v = &root;
    if let Some(rest) = rest {
        for seg in rest.split('.') {
            v = v.as_map()?.get(seg)?;
        }
    }
    Some(v.clone())
}

/// The value of the field at `path` of `rec`, decoding only that field.
fn sort_key(rec: &RunRecord, path: &str) -> Option<Value> {
    let (head, rest) = path
        .split_once('.')
        .map_or((path, None), |(h, r)| (h, Some(r)));
    let bytes = match head {
        "config" => rec.config_cbor(),
        "predicate" => rec.predicate_cbor(),
        _ => return field(rec, path),
    };
    let found = crate::cbor::find_path(bytes, rest.into_iter().flat_map(|r| r.split('.')));
    // The record's values are valid canonical CBOR: neither step fails.
    found
        .ok()?
        .and_then(|f| crate::cbor::decode(f, "record").ok())
}

/// Orders two numbers or two texts; `None` for any other pair.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Integer(i), Value::Float(f)) => Some(int_float(*i, *f)),
        (Value::Float(f), Value::Integer(i)) => Some(int_float(*i, *f).reverse()),
        (Value::Text(x), Value::Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

/// Exact order of an integer and a canonical float (finite, and non-integral or outside the
/// integer range, so never equal to an integer).
fn int_float(i: i128, f: f64) -> Ordering {
    if f >= 18446744073709551616.0 {
        return Ordering::Less;
    }
    if f < -18446744073709551616.0 {
        return Ordering::Greater;
    }
    // |f| < 2^64, so floor(f) is exact as i128; f is not integral, so floor(f) < f < floor(f)+1.
    if i <= f.floor() as i128 {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// A total order for sorting: kinds in the order null, false/true, numbers, text, bytes,
/// arrays, maps, missing; within a kind by [`compare`] or by canonical encoding.
pub fn sort_order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Integer(_) | Value::Float(_)) => 2,
            Some(Value::Text(_)) => 3,
            Some(Value::Bytes(_)) => 4,
            Some(Value::Array(_)) => 5,
            Some(Value::Map(_)) => 6,
            None => 7,
        }
    }
    rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => compare(x, y).unwrap_or_else(|| x.to_cbor().cmp(&y.to_cbor())),
        _ => Ordering::Equal,
    })
}

/// A search: optional module and state, filters that must all hold, sort and limit.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Query {
    /// Only runs of this module.
    pub module: Option<String>,
    /// Only runs in this state.
    pub state: Option<Availability>,
    /// Conditions that must all hold.
    pub filters: Vec<Filter>,
    /// Sort by this field (missing values last); `true` for descending.
    pub sort: Option<(String, bool)>,
    /// At most this many results.
    pub limit: Option<usize>,
}

impl Query {
    /// An empty query (every run).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only runs of `module`.
    pub fn module(mut self, module: impl Into<String>) -> Self {
        self.module = Some(module.into());
        self
    }

    /// Adds a filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Sorts by a field.
    pub fn sort(mut self, path: impl Into<String>, descending: bool) -> Self {
        self.sort = Some((path.into(), descending));
        self
    }

    /// Keeps at most `n` results.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether `rec` matches module, state and every filter.
    pub fn matches(&self, rec: &RunRecord) -> bool {
        self.module.as_ref().is_none_or(|m| *m == rec.module)
            && self.state.is_none_or(|s| s == rec.state)
            && self.filters.iter().all(|f| f.matches(rec))
    }

    /// Sorts and truncates matches.
    pub(crate) fn finish(&self, mut hits: Vec<RunRecord>) -> Vec<RunRecord> {
        match &self.sort {
            Some((path, desc)) => {
                let mut keyed: Vec<_> = hits.into_iter().map(|r| (sort_key(&r, path), r)).collect();
                keyed.sort_by(|a, b| {
                    let o = sort_order(a.0.as_ref(), b.0.as_ref());
                    let o = if *desc && a.0.is_some() && b.0.is_some() {
                        o.reverse()
                    } else {
                        o
                    };
                    o.then_with(|| a.1.identity.cmp(&b.1.identity))
                });
                hits = keyed.into_iter().map(|(_, r)| r).collect();
            }
            None => hits.sort_by_key(|r| r.identity),
        }
        if let Some(n) = self.limit {
            hits.truncate(n);
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    proptest! {
        /// Evaluating a query on the encoded record agrees with evaluating it on the decoded one.
        #[test]
        fn encoded_evaluation_agrees_with_decoded(
            config in crate::cbor::tests::value(),
            w in crate::cbor::tests::value(),
            ws in proptest::collection::vec(crate::cbor::tests::value(), 0..3),
            kind in 0u8..7,
            path in prop_oneof![
                Just("config"), Just("config.a"), Just("config.b"), Just("config.a.b"),
                Just("predicate.split"), Just("module"), Just("state"), Just("location"),
            ],
            module in prop_oneof![Just(None), Just(Some("train")), Just(Some("eval"))],
        ) {
            let r = with_config(&config);
            let condition = match kind {
                0 => Condition::Eq(w),
                1 => Condition::Lt(w),
                2 => Condition::Le(w),
                3 => Condition::Gt(w),
                4 => Condition::Ge(w),
                5 => Condition::In(ws),
                _ => Condition::Exists,
            };
            let mut q = Query::new().filter(Filter::new(path, condition).unwrap());
            q.module = module.map(str::to_owned);
            prop_assert_eq!(EncodedQuery::new(&q).matches(&r.encode()), q.matches(&r));
        }
    }

    fn with_config(config: &Value) -> RunRecord {
        RunRecord::new(
            Identity::from_bytes([1; 32]),
            "a".into(),
            "train".into(),
            "2026-01-01T00:00:00Z".into(),
            config,
            &Value::from_json_slice(br#"{"split": "val"}"#, "p").unwrap(),
        )
    }

    fn rec(config: &str) -> RunRecord {
        with_config(&Value::from_json_slice(config.as_bytes(), "c").unwrap())
    }

    fn v(json: &str) -> Value {
        Value::from_json_slice(json.as_bytes(), "v").unwrap()
    }

    #[test]
    fn equality_is_on_canonical_values() {
        let r = rec(r#"{"opt": {"lr": 1.0}, "tags": [1, 2]}"#);
        assert!(
            Filter::new("config.opt.lr", Condition::Eq(v("1")))
                .unwrap()
                .matches(&r)
        );
        assert!(
            Filter::new("config.tags", Condition::Eq(v("[1, 2.0]")))
                .unwrap()
                .matches(&r)
        );
        assert!(
            !Filter::new("config.opt.lr", Condition::Eq(v("\"1\"")))
                .unwrap()
                .matches(&r)
        );
        assert!(
            Filter::new(
                "predicate.split",
                Condition::In(vec![v("\"train\""), v("\"val\"")])
            )
            .unwrap()
            .matches(&r)
        );
        assert!(
            Filter::new("config.opt", Condition::Exists)
                .unwrap()
                .matches(&r)
        );
        assert!(
            !Filter::new("config.nope", Condition::Exists)
                .unwrap()
                .matches(&r)
        );
    }

    #[test]
    fn ranges_compare_integers_and_floats_exactly() {
        let r = rec(r#"{"n": 9007199254740993, "x": 0.5}"#);
        // 2^53 + 1 is not representable as f64: a lossy cast would call it equal to 2^53.
        assert!(
            Filter::new("config.n", Condition::Gt(v("9007199254740992.0")))
                .unwrap()
                .matches(&r)
        );
        assert!(
            Filter::new("config.x", Condition::Lt(v("1")))
                .unwrap()
                .matches(&r)
        );
        assert!(
            Filter::new("config.x", Condition::Ge(v("0.5")))
                .unwrap()
                .matches(&r)
        );
        assert!(
            !Filter::new("config.x", Condition::Lt(v("\"a\"")))
                .unwrap()
                .matches(&r)
        );
        assert_eq!(int_float(-1, -0.5), Ordering::Less);
        assert_eq!(int_float(0, -0.5), Ordering::Greater);
        assert_eq!(int_float(i128::from(u64::MAX), 1e300), Ordering::Less);
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(Filter::new("lr", Condition::Exists).is_err());
        assert!(Filter::new("config..lr", Condition::Exists).is_err());
        assert!(Filter::new("module.x", Condition::Exists).is_err());
        assert!(Filter::new("module", Condition::Exists).is_ok());
    }
}

//! Statistics decoding: `recorder/list_statistic_ids` / `recorder/get_statistics_metadata` and
//! `recorder/statistics_during_period` results (`ha_client`'s decoders, as `WsClient::command`
//! runs them), the metadata and rows the ingestor makes of them (`ha_ingestor`'s statistics
//! read), and those rows written to and read back from an in-memory store.
//!
//! An input with a NUL byte is a metadata list, the NUL, and an answer to a request for the
//! listed statistics; any other input is tried as both (its answer then asks for each of its
//! statistics). The period is the hour for inputs of even length, 5 minutes for odd ones.
//!
//! Invariants, checked against an independent reading of the same JSON (`RawValue` texts and
//! std's float parsing): a row's times are its epoch milliseconds × 1000, exact for integral
//! milliseconds before 2109 and within 1 µs below 2^53 µs, saturating beyond i64; its values are
//! the JSON numbers (null and absent are `None`); metadata carries its fields and `mean_type`
//! falls back to `has_mean`. The ingestor keeps the rows of statistics asked for only, each with
//! the metadata asked with, in (start, statistic) order. The store takes one row per (statistic,
//! period, start), the last one read, counts inserted/corrected/unchanged as the sequence implies,
//! and reads back the values and unit written.
#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ha_client::fuzzing::{decode_statistic_metadata, decode_statistics};
use ha_client::ws::StatisticMetadata;
use ha_ingestor::fuzzing::{statistic_meta, statistic_rows};
use ha_ingestor::record::{StatisticMeta, StatisticPeriod, StatisticRow};
use ha_ingestor::store::SqliteStore;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let period = if data.len().is_multiple_of(2) {
        StatisticPeriod::Hour
    } else {
        StatisticPeriod::FiveMinute
    };
    match text.split_once('\0') {
        Some((listed, answer)) => {
            let metas = metadata(listed).unwrap_or_default();
            rows(answer, Some(&metas), period);
        }
        None => {
            metadata(text);
            rows(text, None, period);
        }
    }
});

/// Decodes a metadata list, checks it, and returns the ingestor's metadata of it.
fn metadata(json: &str) -> Option<Vec<Arc<StatisticMeta>>> {
    let listed = decode_statistic_metadata(json).ok()?;
    // Items as raw text: a field the decoder ignores may hold a number beyond f64, which is JSON
    // serde_json's Value refuses (a long run found it), so only the fields read are parsed.
    let oracle: Vec<&RawValue> = serde_json::from_str(json).expect("the decoder took it: JSON");
    assert_eq!(listed.len(), oracle.len());
    Some(
        listed
            .iter()
            .zip(&oracle)
            .map(|(m, o)| {
                check_metadata(m, o);
                let meta = statistic_meta(m);
                assert_eq!(meta.statistic_id, m.statistic_id);
                assert_eq!(meta.source, m.source);
                assert_eq!(meta.unit, m.statistics_unit_of_measurement);
                assert_eq!(meta.unit_class, m.unit_class);
                assert_eq!(meta.name, m.name);
                assert_eq!(meta.has_sum, m.has_sum);
                let mean_type = m.mean_type.unwrap_or(u8::from(m.has_mean == Some(true)));
                assert_eq!(meta.mean_type, mean_type);
                Arc::new(meta)
            })
            .collect(),
    )
}

const META_FIELDS: [&str; 9] = [
    "statistic_id",
    "source",
    "name",
    "statistics_unit_of_measurement",
    "display_unit_of_measurement",
    "unit_class",
    "has_mean",
    "mean_type",
    "has_sum",
];

/// The decoded metadata against the JSON item (an object, or serde's array form of a struct).
fn check_metadata(m: &StatisticMetadata, item: &RawValue) {
    let object: Option<HashMap<String, &RawValue>> = serde_json::from_str(item.get()).ok();
    let array: Option<Vec<&RawValue>> = serde_json::from_str(item.get()).ok();
    let field = |name: &str| -> Option<Value> {
        let raw = match (&object, &array) {
            (Some(o), _) => o.get(name).copied(),
            (None, Some(a)) => a
                .get(META_FIELDS.iter().position(|f| *f == name).unwrap())
                .copied(),
            (None, None) => panic!("metadata decoded from {}", item.get()),
        };
        raw.map(|r| serde_json::from_str(r.get()).expect("a field the decoder read"))
    };
    let string = |name: &str| field(name).and_then(|v| v.as_str().map(str::to_owned));
    assert_eq!(Some(m.statistic_id.clone()), string("statistic_id"));
    assert_eq!(m.source, string("source").unwrap_or_default());
    assert_eq!(m.name, string("name"));
    assert_eq!(
        m.statistics_unit_of_measurement,
        string("statistics_unit_of_measurement")
    );
    assert_eq!(
        m.display_unit_of_measurement,
        string("display_unit_of_measurement")
    );
    assert_eq!(m.unit_class, string("unit_class"));
    assert_eq!(m.has_mean, field("has_mean").and_then(|v| v.as_bool()));
    assert_eq!(
        m.mean_type.map(u64::from),
        field("mean_type").and_then(|v| v.as_u64())
    );
    assert_eq!(
        m.has_sum,
        field("has_sum").and_then(|v| v.as_bool()).unwrap_or(false)
    );
}

const ROW_FIELDS: [&str; 9] = [
    "start",
    "end",
    "mean",
    "min",
    "max",
    "state",
    "sum",
    "last_reset",
    "change",
];

type OracleAnswer = BTreeMap<String, Vec<HashMap<&'static str, String>>>;

/// The answer as raw number texts per field (`null` and absent fields left out).
fn oracle_answer(json: &str) -> OracleAnswer {
    let raw: BTreeMap<String, Vec<&RawValue>> =
        serde_json::from_str(json).expect("the decoder took it: an object of arrays");
    raw.into_iter()
        .map(|(id, list)| {
            let rows = list
                .into_iter()
                .map(|row| {
                    let fields: Vec<(&'static str, &RawValue)> = match row.get().as_bytes()[0] {
                        b'{' => {
                            let o: HashMap<String, &RawValue> =
                                serde_json::from_str(row.get()).unwrap();
                            ROW_FIELDS
                                .iter()
                                .filter_map(|f| o.get(*f).map(|v| (*f, *v)))
                                .collect()
                        }
                        b'[' => {
                            let a: Vec<&RawValue> = serde_json::from_str(row.get()).unwrap();
                            ROW_FIELDS.iter().copied().zip(a).collect()
                        }
                        _ => panic!("a row decoded from {}", row.get()),
                    };
                    fields
                        .into_iter()
                        .filter(|(_, v)| v.get() != "null")
                        .map(|(f, v)| (f, v.get().to_owned()))
                        .collect()
                })
                .collect();
            (id, rows)
        })
        .collect()
}

fn rows(json: &str, listed: Option<&[Arc<StatisticMeta>]>, period: StatisticPeriod) {
    let Ok(answer) = decode_statistics(json) else {
        return;
    };
    let oracle = oracle_answer(json);
    assert_eq!(
        answer.keys().collect::<Vec<_>>(),
        oracle.keys().collect::<Vec<_>>()
    );
    for (id, decoded) in &answer {
        assert_eq!(decoded.len(), oracle[id].len());
        for (r, o) in decoded.iter().zip(&oracle[id]) {
            check_time(r.start, o.get("start").expect("start is required"));
            check_opt_time(r.end, o.get("end"));
            check_opt_time(r.last_reset, o.get("last_reset"));
            for (value, name) in [
                (r.mean, "mean"),
                (r.min, "min"),
                (r.max, "max"),
                (r.state, "state"),
                (r.sum, "sum"),
                (r.change, "change"),
            ] {
                check_value(value, o.get(name), name);
            }
        }
    }

    // Asked for: the listed statistics, or each of the answer's.
    let asked: Vec<Arc<StatisticMeta>> = match listed {
        Some(l) => l.to_vec(),
        None => answer
            .keys()
            .map(|id| {
                Arc::new(StatisticMeta {
                    statistic_id: id.clone(),
                    source: "recorder".into(),
                    unit: Some("kWh".into()),
                    unit_class: Some("energy".into()),
                    mean_type: 0,
                    has_sum: true,
                    name: None,
                })
            })
            .collect(),
    };
    // A statistic listed twice is asked for with its last metadata.
    let asked_by_id: HashMap<&str, &Arc<StatisticMeta>> =
        asked.iter().map(|m| (m.statistic_id.as_str(), m)).collect();
    let instance: Arc<str> = Arc::from("home");
    let made = statistic_rows(&instance, &asked, period, answer.clone());
    let mut expected: Vec<(&str, &ha_client::ws::StatisticRow)> = answer
        .iter()
        .filter(|(id, _)| asked_by_id.contains_key(id.as_str()))
        .flat_map(|(id, list)| list.iter().map(move |r| (id.as_str(), r)))
        .collect();
    // Stable: rows of one statistic with the same start keep the answer's order.
    expected.sort_by(|a, b| (a.1.start, a.0).cmp(&(b.1.start, b.0)));
    assert_eq!(made.len(), expected.len());
    for (row, (id, r)) in made.iter().zip(&expected) {
        assert!(Arc::ptr_eq(&row.meta, asked_by_id[id]));
        assert!(Arc::ptr_eq(&row.instance, &instance));
        assert_eq!(row.period, period);
        assert_eq!(row.start_us, r.start);
        assert_eq!(row.last_reset_us, r.last_reset);
        let values = |x: &StatisticRow| [x.mean, x.min, x.max, x.state, x.sum].map(bits);
        assert_eq!(
            values(row),
            [r.mean, r.min, r.max, r.state, r.sum].map(bits)
        );
    }
    store(&instance, &made);
}

fn bits(x: Option<f64>) -> Option<u64> {
    x.map(f64::to_bits)
}

/// Writes the rows to the store and reads them back.
fn store(instance: &Arc<str>, rows: &[StatisticRow]) {
    STORE.with_borrow_mut(|(store, uses)| {
        // One database for many inputs, emptied of rows before each: a fresh one per input would
        // cost most of the run, and memory that grows each input sets off libFuzzer's leak scans.
        // Its metadata stays (so that the store's metadata cache stays true); a fresh database now
        // and then bounds it.
        *uses += 1;
        if *uses % 4096 == 0 {
            *store = SqliteStore::in_memory().unwrap();
        }
        store
            .connection()
            .execute("DELETE FROM statistics", [])
            .unwrap();
        let written = store.write_statistics(rows).expect("rows are stored");
        // What the sequence implies: the first row of a key is inserted, a later one with the
        // values of the previous unchanged, with other values corrected.
        type Key<'a> = (&'a str, i64);
        let mut last: BTreeMap<Key<'_>, &StatisticRow> = BTreeMap::new();
        let (mut inserted, mut corrected, mut unchanged) = (0, 0, 0);
        for row in rows {
            let key = (row.meta.statistic_id.as_str(), row.start_us);
            match last.insert(key, row) {
                None => inserted += 1,
                Some(prev) if stored_values(prev) == stored_values(row) => unchanged += 1,
                Some(_) => corrected += 1,
            }
        }
        assert_eq!(
            (written.inserted, written.corrected, written.unchanged),
            (inserted, corrected, unchanged)
        );
        let stored = ha_ingestor::store::statistics::read_after(store.connection(), 0, 1 << 20)
            .expect("rows read back");
        assert_eq!(stored.len(), last.len());
        for s in &stored {
            assert_eq!(s.instance, *instance);
            let row = last[&(s.statistic_id.as_str(), s.start_us)];
            assert_eq!(s.period, row.period);
            assert_eq!(s.unit, row.meta.unit);
            assert_eq!(
                (s.mean, s.min, s.max, s.state, s.sum, s.last_reset_us),
                stored_values(row)
            );
        }
    });
}

type Values = (
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
);

fn stored_values(r: &StatisticRow) -> Values {
    (r.mean, r.min, r.max, r.state, r.sum, r.last_reset_us)
}

thread_local! {
    static STORE: RefCell<(SqliteStore, u64)> =
        RefCell::new((SqliteStore::in_memory().unwrap(), 0));
}

fn check_opt_time(us: Option<i64>, text: Option<&String>) {
    match (us, text) {
        (None, None) => {}
        (Some(us), Some(text)) => check_time(us, text),
        _ => panic!("time {us:?} from {text:?}"),
    }
}

/// `us` against the JSON number `text` of epoch milliseconds, in exact decimal arithmetic.
fn check_time(us: i64, text: &str) {
    let Some((exact, integral)) = exact_micros(text) else {
        // Too many digits for the exact check: the sign at least.
        let ms: f64 = text.parse().unwrap();
        assert!(
            ms == 0.0 || (us >= 0) == (ms > 0.0) || us == 0,
            "{text} ms gave {us} µs"
        );
        return;
    };
    let us = i128::from(us);
    // Exact only for whole milliseconds below 2^42 (each a float, and so is ×1000); a fraction of a
    // millisecond is a float only to within half an ulp, so ×1000 may round one µs away.
    if integral && exact % 1000 == 0 && exact.abs() < 1000 << 42 {
        assert_eq!(us, exact, "{text} ms");
    } else if exact.abs() < 1 << 53 {
        assert!((us - exact).abs() <= 1, "{text} ms gave {us} µs");
    } else if exact >= 1 << 64 {
        assert_eq!(us, i128::from(i64::MAX), "{text} ms saturates");
    } else if exact <= -(1 << 64) {
        assert_eq!(us, i128::from(i64::MIN), "{text} ms saturates");
    } else if exact.abs() < 1 << 62 {
        assert!(
            (us - exact).abs() <= exact.abs() >> 50,
            "{text} ms gave {us} µs"
        );
    }
}

/// The JSON number `text` × 1000, rounded toward zero, and whether that is exact; `None` beyond
/// 36 significant digits.
fn exact_micros(text: &str) -> Option<(i128, bool)> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return None;
    }
    let d: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().unwrap()
    };
    // exp may be huge: clamp (any |exponent| past 80 moves 36 digits out of range either way).
    let exp: i64 = exp
        .trim_start_matches('+')
        .parse()
        .unwrap_or(if exp.starts_with('-') { -100 } else { 100 });
    let scale = exp.clamp(-100, 100) - frac.len() as i64 + 3;
    let (value, integral) = if d == 0 {
        (0, true)
    } else if scale >= 0 {
        // Past i128 the value only needs to be huge.
        let v = 10i128
            .checked_pow(scale as u32)
            .and_then(|p| d.checked_mul(p));
        (v.unwrap_or(i128::MAX), true)
    } else if scale < -38 {
        (0, false)
    } else {
        let p = 10i128.pow((-scale) as u32);
        (d / p, d % p == 0)
    };
    Some((if neg { -value } else { value }, integral))
}

/// A decoded value against its JSON number text: std's correctly rounded parse, or one float
/// away (serde_json's fast parse may miss by an ulp). Past 17 significant digits (Python's float
/// repr, and so HA, never writes more) serde_json drops the digits past the 19th and scales in
/// floats: a few ulps away (a long run found two).
fn check_value(value: Option<f64>, text: Option<&String>, name: &str) {
    match (value, text) {
        (None, None) => {}
        (Some(v), Some(text)) => {
            let expected: f64 = text.parse().unwrap();
            let ulps = if significant_digits(text) > 17 { 8 } else { 1 };
            let close = v == expected
                || (v.signum() == expected.signum()
                    && v.to_bits().abs_diff(expected.to_bits()) <= ulps);
            assert!(close, "{name}: {text} decoded as {v:e}");
        }
        _ => panic!("{name}: {value:?} from {text:?}"),
    }
}

/// The digits of a JSON number's mantissa without its leading and trailing zeros.
fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

//! Private functions for the fuzz targets in `fuzz/` (the `fuzzing` feature). Not an API: it may
//! change at any time. Each function drives the code the ingestor itself runs.

use std::collections::HashMap;
use std::sync::Arc;

use ha_client::ws::{StatisticMetadata, StatisticsAnswer};

use crate::record::{StatisticMeta, StatisticPeriod, StatisticRow};
use crate::sink::influx::python::{self, Py};

/// Python's `float(text)`.
pub fn py_float(text: &str) -> Option<f64> {
    python::py_float(text)
}

/// Python's `repr(f)`.
pub fn py_float_repr(f: f64) -> String {
    let mut out = String::new();
    let _ = python::write_py_float(&mut out, f);
    out
}

/// Python's `repr()` and `str()` of the value `json.loads(json)` gives; `None` if not JSON.
pub fn py_repr_and_str(json: &str) -> Option<(String, String)> {
    let value: Py<'_> = serde_json::from_str(json).ok()?;
    let mut repr = String::new();
    let _ = python::write_py_repr(&mut repr, &value);
    Some((repr, python::py_str(&value).into_owned()))
}

/// HA's `RE_DIGIT_TAIL` test and, when it holds, the numeric companion field's value.
pub fn digit_tail_value(text: &str) -> Option<f64> {
    python::has_digit_tail(text).then(|| python::digits_value(text))
}

/// The day slices a history read of `[since, until)` is split into.
pub fn history_slices(since_us: i64, until_us: i64) -> Vec<(i64, i64)> {
    crate::history::slices(since_us, until_us)
}

/// A listed statistic's metadata, as the statistics mirror and import keep it.
pub fn statistic_meta(m: &StatisticMetadata) -> StatisticMeta {
    crate::history::statistics::meta_of(m)
}

/// The rows, ready to store, that the statistics read makes of one answer to a request for
/// `asked` (in the order the read returns them).
pub fn statistic_rows(
    instance: &Arc<str>,
    asked: &[Arc<StatisticMeta>],
    period: StatisticPeriod,
    answer: StatisticsAnswer,
) -> Vec<StatisticRow> {
    let by_id: HashMap<&str, &Arc<StatisticMeta>> =
        asked.iter().map(|m| (m.statistic_id.as_str(), m)).collect();
    let mut rows = Vec::new();
    crate::history::statistics::answer_rows(instance, &by_id, period, answer, &mut rows);
    crate::history::statistics::sort_rows(&mut rows);
    rows
}

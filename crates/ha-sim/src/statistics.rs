//! HA's statistics as the recorder keeps them: metadata per statistic and rows per period, with
//! the WebSocket commands that read them (`recorder/list_statistic_ids`,
//! `recorder/get_statistics_metadata`, `recorder/statistics_during_period`) and import them
//! (`recorder/import_statistics`, admin only), in the shapes and errors HA 2026.2.3 showed
//! (`/work/shared/reference/ha-history-beyond-states.md`). Unit conversion and the calendar
//! periods (`day`, `week`, `month`) are not simulated.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::services::CmdError;
use crate::time::parse_iso;

/// Periods HA stores rows for.
pub const PERIODS: [&str; 2] = ["5minute", "hour"];

/// One statistic's metadata, as HA lists it.
#[derive(Clone, Debug, PartialEq)]
struct Meta {
    source: String,
    name: Option<String>,
    unit: Option<String>,
    unit_class: Option<String>,
    mean_type: u8,
    has_sum: bool,
}

/// One row; times in µs.
#[derive(Clone, Debug, Default, PartialEq)]
struct Row {
    mean: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    state: Option<f64>,
    sum: Option<f64>,
    last_reset: Option<i64>,
}

/// Every statistic and its rows.
#[derive(Default)]
pub struct Statistics {
    meta: BTreeMap<String, Meta>,
    /// (statistic id, period) → rows by start.
    rows: BTreeMap<(String, &'static str), BTreeMap<i64, Row>>,
}

fn home_assistant_error(message: impl Into<String>) -> CmdError {
    CmdError::new("home_assistant_error", message)
}

fn opt_f64(v: &Value, k: &str) -> Result<Option<f64>, CmdError> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| CmdError::new("invalid_format", format!("expected float for {k}"))),
    }
}

/// A start time with a time zone (HA refuses naive ones).
fn aware_time(s: &str) -> Option<i64> {
    let t = s.split_once('T').map_or(s, |(_, t)| t);
    let aware = t.ends_with('Z') || t.contains('+') || t.contains('-');
    aware.then(|| parse_iso(s)).flatten()
}

impl Statistics {
    /// Validates and stores `metadata` and `stats` for `period` (`recorder/import_statistics`
    /// imports `hour` rows; the simulator's own compilation also writes `5minute` ones). A row of
    /// an existing start replaces it, as HA's import does.
    pub fn import(
        &mut self,
        metadata: &Value,
        period: &str,
        stats: &Value,
    ) -> Result<(), CmdError> {
        let period = PERIODS
            .into_iter()
            .find(|p| *p == period)
            .ok_or_else(|| CmdError::new("invalid_format", "unknown period"))?;
        let field = |k: &str| metadata.get(k);
        let statistic_id = field("statistic_id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CmdError::new(
                    "invalid_format",
                    "required key not provided @ data['metadata']['statistic_id']",
                )
            })?
            .to_string();
        let source = field("source")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CmdError::new(
                    "invalid_format",
                    "required key not provided @ data['metadata']['source']",
                )
            })?
            .to_string();
        let has_sum = field("has_sum").and_then(Value::as_bool).ok_or_else(|| {
            CmdError::new(
                "invalid_format",
                "required key not provided @ data['metadata']['has_sum']",
            )
        })?;
        if !metadata
            .as_object()
            .is_some_and(|m| m.contains_key("name") && m.contains_key("unit_of_measurement"))
        {
            return Err(CmdError::new(
                "invalid_format",
                "required key not provided @ data['metadata']['unit_of_measurement']",
            ));
        }
        // An entity-style id belongs to the recorder, an external `x:y` to source `x`.
        let valid_source = match statistic_id.split_once(':') {
            Some((domain, _)) => domain == source,
            None => source == "recorder" && statistic_id.contains('.'),
        };
        if !valid_source {
            return Err(home_assistant_error("Invalid source"));
        }
        let mean_type = field("mean_type")
            .and_then(Value::as_u64)
            .map(|m| m as u8)
            .unwrap_or(u8::from(
                field("has_mean").and_then(Value::as_bool).unwrap_or(false),
            ));
        let str_field = |k: &str| field(k).and_then(Value::as_str).map(str::to_string);
        let meta = Meta {
            source,
            name: str_field("name"),
            unit: str_field("unit_of_measurement"),
            unit_class: str_field("unit_class"),
            mean_type,
            has_sum,
        };
        let step = if period == "hour" {
            3_600_000_000
        } else {
            300_000_000
        };
        let mut rows = Vec::new();
        for s in stats.as_array().into_iter().flatten() {
            let start = s
                .get("start")
                .and_then(Value::as_str)
                .and_then(aware_time)
                .ok_or_else(|| home_assistant_error("Invalid timestamp: naive or unparsable"))?;
            if start % step != 0 {
                return Err(home_assistant_error(
                    "Invalid timestamp: timestamps must be from the top of the hour",
                ));
            }
            let last_reset = match s.get("last_reset") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(aware_time)
                        .ok_or_else(|| home_assistant_error("Invalid timestamp: last_reset"))?,
                ),
            };
            rows.push((
                start,
                Row {
                    mean: opt_f64(s, "mean")?,
                    min: opt_f64(s, "min")?,
                    max: opt_f64(s, "max")?,
                    state: opt_f64(s, "state")?,
                    sum: opt_f64(s, "sum")?,
                    last_reset,
                },
            ));
        }
        self.meta.insert(statistic_id.clone(), meta);
        self.rows
            .entry((statistic_id, period))
            .or_default()
            .extend(rows);
        Ok(())
    }

    fn meta_json(id: &str, m: &Meta) -> Value {
        json!({
            "statistic_id": id,
            "display_unit_of_measurement": m.unit,
            "has_mean": m.mean_type != 0,
            "mean_type": m.mean_type,
            "has_sum": m.has_sum,
            "name": m.name,
            "source": m.source,
            "statistics_unit_of_measurement": m.unit,
            "unit_class": m.unit_class,
        })
    }

    /// `recorder/list_statistic_ids` (`statistic_type`: `sum` or `mean` narrows the list).
    pub fn list(&self, statistic_type: Option<&str>) -> Value {
        Value::Array(
            self.meta
                .iter()
                .filter(|(_, m)| match statistic_type {
                    Some("sum") => m.has_sum,
                    Some("mean") => m.mean_type != 0,
                    _ => true,
                })
                .map(|(id, m)| Self::meta_json(id, m))
                .collect(),
        )
    }

    /// `recorder/get_statistics_metadata` (all when `ids` is `None`).
    pub fn metadata(&self, ids: Option<&[String]>) -> Value {
        Value::Array(
            self.meta
                .iter()
                .filter(|(id, _)| ids.is_none_or(|ids| ids.iter().any(|i| i == *id)))
                .map(|(id, m)| Self::meta_json(id, m))
                .collect(),
        )
    }

    /// `recorder/statistics_during_period`: rows with `start` in `[start, end)`, in ms. The keys of
    /// every row depend on all requested statistics together, as in HA.
    pub fn during_period(
        &self,
        start: i64,
        end: i64,
        ids: &[String],
        period: &str,
    ) -> Result<Value, CmdError> {
        let period = PERIODS
            .into_iter()
            .find(|p| *p == period)
            .ok_or_else(|| CmdError::new("invalid_format", "period not simulated"))?;
        let step = if period == "hour" {
            3_600_000_000
        } else {
            300_000_000
        };
        let known: Vec<&Meta> = ids.iter().filter_map(|i| self.meta.get(i)).collect();
        let any_mean = known.iter().any(|m| m.mean_type != 0);
        let any_sum = known.iter().any(|m| m.has_sum);
        let mut out = Map::new();
        for id in ids {
            let Some(rows) = self.rows.get(&(id.clone(), period)) else {
                continue;
            };
            let mut prev_sum = rows.range(..start).next_back().and_then(|(_, r)| r.sum);
            let mut list = Vec::new();
            for (t, r) in rows.range(start..end) {
                let ms = |us: i64| Value::from(us / 1000);
                let mut row = Map::new();
                row.insert("start".into(), ms(*t));
                row.insert("end".into(), ms(t + step));
                if any_mean {
                    row.insert("mean".into(), json!(r.mean));
                    row.insert("min".into(), json!(r.min));
                    row.insert("max".into(), json!(r.max));
                }
                if any_sum {
                    row.insert("last_reset".into(), json!(r.last_reset.map(|u| u / 1000)));
                    row.insert("state".into(), json!(r.state));
                    row.insert("sum".into(), json!(r.sum));
                    let change = r.sum.map(|s| s - prev_sum.unwrap_or(0.0));
                    row.insert("change".into(), json!(change));
                    prev_sum = r.sum.or(prev_sum);
                }
                list.push(Value::Object(row));
            }
            if !list.is_empty() {
                out.insert(id.clone(), Value::Array(list));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energy() -> Value {
        json!({"has_mean":false,"mean_type":0,"has_sum":true,"name":"Probe energy",
               "source":"probe","statistic_id":"probe:energy","unit_class":"energy","unit_of_measurement":"kWh"})
    }

    #[test]
    fn imported_rows_read_back_in_ms_with_end_exclusive() {
        let mut s = Statistics::default();
        s.import(
            &energy(),
            "hour",
            &json!([{"start":"2026-12-06T14:00:00+00:00","state":10,"sum":0.0},
                    {"start":"2026-12-06T15:00:00+00:00","state":12,"sum":2.0}]),
        )
        .unwrap();
        let t14 = parse_iso("2026-12-06T14:00:00Z").unwrap();
        let a = s
            .during_period(t14, t14 + 3_600_000_000, &["probe:energy".into()], "hour")
            .unwrap();
        assert_eq!(
            a,
            json!({"probe:energy":[{"start":t14/1000,"end":t14/1000+3_600_000,"last_reset":null,"state":10.0,"sum":0.0,"change":0.0}]})
        );
    }

    #[test]
    fn bad_imports_get_ha_errors() {
        let mut s = Statistics::default();
        let mut wrong_source = energy();
        wrong_source["source"] = json!("other");
        let e = s.import(&wrong_source, "hour", &json!([])).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("home_assistant_error", "Invalid source")
        );
        let e = s
            .import(
                &energy(),
                "hour",
                &json!([{"start":"2026-12-06T14:30:00+00:00","sum":1}]),
            )
            .unwrap_err();
        assert!(e.message.contains("top of the hour"), "{e:?}");
        assert_eq!(s.list(None), json!([]));
    }
}

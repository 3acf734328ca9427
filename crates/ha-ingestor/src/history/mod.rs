//! Reading HA's recorder history into the store: the gap fill after every (re)connect and at
//! start ([`gap_fill`]), and the import of everything HA still holds ([`import`]); HA's statistics
//! likewise, live ([`statistics`]) and in bulk ([`statistics_import`]). Both read
//! through [`read_history`], so a row from history is built one way: the live row's
//! microseconds ([`ha_client::time::micros_from_seconds`]), HA's attribute order, time order
//! across entities.

pub mod gap_fill;
pub mod import;
pub mod statistics;
pub mod statistics_import;

use std::sync::Arc;

use ha_client::ws::{HistoryQuery, HistoryState, WsClient};
use serde_json::Value;

use crate::filter::AttributeRules;
use crate::record::{Record, StateRow, numeric_value};

pub(crate) const DAY_US: i64 = 86_400_000_000;
/// Each slice starts this much before the previous one ended: HA's history window leaves out rows
/// exactly at its start, and the overlap costs only idempotent re-writes.
pub(crate) const OVERLAP_US: i64 = 1_000_000;

/// Day slices `[start, end)` covering `[since, until)`.
pub(crate) fn slices(since: i64, until: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = since;
    while start < until {
        let end = ((start.div_euclid(DAY_US) + 1) * DAY_US).min(until);
        out.push((start, end));
        start = end;
    }
    out
}

/// Now, in epoch microseconds.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

pub(crate) fn iso(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Reads `[start_us, end_us)` of `entities`' history (open-ended without `end_us`), `chunk`
/// entities per request, calling `on_request` after each, and returns the rows in time order
/// across entities: HA's own outputs see changes in that order, and an InfluxDB measurement that
/// two entities write with different field types keeps the type of the first point written.
#[allow(clippy::too_many_arguments)] // one read, its parts named at the call sites
pub async fn read_history(
    ws: &WsClient,
    instance: &Arc<str>,
    rules: &AttributeRules,
    entities: &[String],
    chunk: usize,
    start_us: i64,
    end_us: Option<i64>,
    mut on_request: impl FnMut(),
) -> Result<Vec<Record>, String> {
    let mut rows = Vec::new();
    for chunk in entities.chunks(chunk.max(1)) {
        let mut query = HistoryQuery::new(iso(start_us), chunk.to_vec());
        if let Some(end) = end_us {
            query = query.end_time(iso(end));
        }
        let history = ws
            .history_during_period(&query)
            .await
            .map_err(|e| format!("history from {}: {e}", query.start_time))?;
        tracing::debug!(%instance, from = %query.start_time, entities = chunk.len(), states = history.values().map(Vec::len).sum::<usize>(), "history read");
        // Rows, not HA's maps, are kept until the sort: a day of history is held at once.
        for (entity_id, states) in history {
            rows.extend(
                states
                    .into_iter()
                    .map(|s| history_record(instance, rules, &entity_id, s)),
            );
        }
        on_request();
    }
    rows.sort_by(|a, b| a.time_order().cmp(&b.time_order()));
    Ok(rows)
}

/// A state from HA's history as a row (no `time_fired` or context: history has neither).
/// The progress bar every import draws on a terminal (history, statistics, recorder): `counts`
/// is the middle of the template, e.g. `"{pos}/{len} requests, {msg}"`.
pub fn progress_bar(len: u64, prefix: String, counts: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        progress_style(counts)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

fn progress_style(
    counts: &str,
) -> Result<indicatif::ProgressStyle, indicatif::style::TemplateError> {
    indicatif::ProgressStyle::with_template(&format!(
        "{{prefix}} [{{bar:30}}] {counts} ({{eta}} left)"
    ))
}

pub fn history_record(
    instance: &Arc<str>,
    rules: &AttributeRules,
    entity_id: &str,
    s: HistoryState,
) -> Record {
    // The microseconds of the live event's ISO time, so the unique key matches the live row.
    let (last_changed_us, last_updated_us) = (s.last_changed_us(), s.last_updated_us());
    let mut attributes = s.attributes;
    rules.for_entity(entity_id).retain(&mut attributes);
    Record::State(StateRow {
        instance: instance.clone(),
        entity_id: entity_id.to_string(),
        value: numeric_value(&s.state),
        state: s.state,
        attributes: Value::Object(attributes).to_string(),
        last_changed_us,
        last_updated_us,
        time_fired_us: None,
        context_id: None,
        context_user_id: None,
        context_parent_id: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_import_s_progress_template_is_valid() {
        for counts in [
            "{pos}/{len} requests, {msg}",
            "{pos}/{len} slices, {msg}",
            "{pos}/{len} recorder rows, {per_sec}",
        ] {
            assert!(super::progress_style(counts).is_ok(), "{counts}");
        }
    }

    use super::*;
    use crate::filter::{AttributesConfig, EntityFilter};
    use crate::sink::config::TimeColumn;
    use crate::sink::influx::{HaEncoder, HaSchemaOptions};
    use crate::store::SqliteStore;
    use crate::store::journal::Journal;

    /// The same state, received live, read back from history, and filtered by a sink's own
    /// attribute rules, is stored and encoded as one and the same InfluxDB line: HA's attribute
    /// order (which decides colliding field names) and HA's microseconds survive every path.
    #[test]
    fn a_live_a_backfilled_and_a_sink_filtered_row_give_the_same_influxdb_line() {
        // Attributes in HA's order, not sorted; `zone` and `zone_str` collide in HA's schema, so
        // their order decides the fields.
        let attributes = r#"{"zone_str":5,"zone":"north","icon":"mdi:x","unit_of_measurement":"W","friendly_name":"Order"}"#;
        let seconds = 1_796_591_204.845_886_7; // a float with HA's sub-microsecond digits
        let iso = "2026-12-06T21:06:44.845887+00:00"; // what HA showed live for it
        let without_icon: AttributesConfig = toml::from_str(r#"exclude = ["icon"]"#).unwrap();
        let without_icon = AttributeRules::new(&without_icon).unwrap();
        let keep_all = AttributeRules::default();
        let event = format!(
            r#"{{"event_type":"state_changed","data":{{"entity_id":"sensor.order","old_state":null,"new_state":{{"entity_id":"sensor.order","state":"5","attributes":{attributes},"last_changed":"{iso}","last_updated":"{iso}","context":{{"id":"01C","parent_id":null,"user_id":null}}}}}},"origin":"LOCAL","time_fired":"{iso}"}}"#
        );
        let live = |instance: &str, rules: &AttributeRules| {
            crate::source::convert(
                &Arc::from(instance),
                &event,
                &EntityFilter::new(&Default::default()).unwrap(),
                rules,
            )
            .unwrap()
            .unwrap()
        };
        let history = HistoryState {
            state: "5".into(),
            attributes: serde_json::from_str(attributes).unwrap(),
            last_changed: seconds,
            last_updated: seconds,
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("same.db");
        let mut store = SqliteStore::open(&db).unwrap();
        store
            .write_batch(&[
                live("live", &without_icon),
                history_record(
                    &Arc::from("backfilled"),
                    &without_icon,
                    "sensor.order",
                    history,
                ),
                live("filtered_by_the_sink", &keep_all),
            ])
            .unwrap();
        let mut rows = Journal::open(&db).unwrap().read_after(0, 10).unwrap();
        assert_eq!(rows.len(), 3);
        let sink_rule = without_icon.for_entity("sensor.order");
        rows[2].attributes = sink_rule
            .retain_json(&rows[2].attributes)
            .unwrap()
            .into_owned();
        let encoder = HaEncoder::new(&HaSchemaOptions::default()).unwrap();
        let lines: Vec<String> = rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                encoder.encode(row, TimeColumn::LastUpdated, &mut line);
                line
            })
            .collect();
        // HA's order: `zone_str` = 5 first, then `zone`'s text overwrites `zone_str`. Sorted keys
        // would give `zone_str="north",zone_str_=5` instead.
        assert!(lines[0].contains("zone_str=\"north\""), "{}", lines[0]);
        assert!(
            !lines[0].contains("zone_str_") && !lines[0].contains("icon"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with(" 1796591204845887\n"), "{}", lines[0]);
        assert_eq!(lines[1], lines[0], "backfilled");
        assert_eq!(lines[2], lines[0], "filtered by the sink");
    }

    #[test]
    fn slices_are_day_aligned_and_cover_the_window() {
        let since = DAY_US / 2;
        let until = 2 * DAY_US + 5;
        assert_eq!(
            slices(since, until),
            vec![(since, DAY_US), (DAY_US, 2 * DAY_US), (2 * DAY_US, until)]
        );
        assert!(slices(10, 10).is_empty());
    }
}

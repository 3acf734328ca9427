//! Reading HA's recorder history into the store: the gap fill after every (re)connect and at
//! start ([`gap_fill`]), and the import of everything HA still holds ([`import`]). Both read
//! through [`read_history`], so a row from history is built one way: the live row's
//! microseconds ([`ha_client::time::micros_from_seconds`]), HA's attribute order, time order
//! across entities.

pub mod gap_fill;
pub mod import;

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

fn iso(us: i64) -> String {
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
    use super::*;

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

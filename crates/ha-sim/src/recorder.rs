//! An in-memory recorder: every state the world took, so that history queries return exactly what
//! was emitted, with HA's selection rules (start-time state clamped to the start, significant
//! changes, minimal responses).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::world::State;

/// Domains whose attribute-only changes are significant (HA's `SIGNIFICANT_DOMAINS`).
const SIGNIFICANT_DOMAINS: &[&str] = &[
    "climate",
    "device_tracker",
    "humidifier",
    "thermostat",
    "water_heater",
];
/// Domains that always get full rows in minimal responses (HA's `NEED_ATTRIBUTE_DOMAINS`).
const NEED_ATTRIBUTE_DOMAINS: &[&str] = &[
    "climate",
    "humidifier",
    "input_datetime",
    "thermostat",
    "water_heater",
];

/// The recorded states per entity, oldest first.
pub struct Recorder {
    rows: HashMap<Arc<str>, VecDeque<Arc<State>>>,
    cap: usize,
}

/// A history query (the WS and REST arguments, already parsed).
#[derive(Clone, Debug)]
pub struct HistoryQuery {
    /// µs.
    pub start: i64,
    /// µs.
    pub end: i64,
    /// Entities, in answer order.
    pub entity_ids: Vec<String>,
    /// Include the state at `start` (clamped to `start`).
    pub include_start_time_state: bool,
    /// Drop attribute-only changes (except for significant domains).
    pub significant_changes_only: bool,
    /// First row full, the rest only state changes as `{state, time}`.
    pub minimal_response: bool,
}

/// One history row.
#[derive(Clone, Debug)]
pub enum Row {
    /// A full row; `lu`/`lc` may be clamped to the start.
    Full {
        /// The recorded state.
        state: Arc<State>,
        /// last_updated shown.
        lu: i64,
        /// last_changed shown.
        lc: i64,
    },
    /// `{"s","lu"}` / `{"state","last_changed"}`.
    Minimal {
        /// The recorded state.
        state: Arc<State>,
    },
}

impl Recorder {
    /// A recorder keeping at most `cap` rows per entity.
    pub fn new(cap: usize) -> Recorder {
        Recorder {
            rows: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Records a state.
    pub fn record(&mut self, st: Arc<State>) {
        let q = self.rows.entry(st.entity_id.clone()).or_default();
        if q.len() >= self.cap {
            q.pop_front();
        }
        q.push_back(st);
    }

    /// Number of rows recorded for an entity.
    pub fn len(&self, entity_id: &str) -> usize {
        self.rows.get(entity_id).map_or(0, VecDeque::len)
    }

    /// `true` when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.rows.values().all(VecDeque::is_empty)
    }

    /// Runs a query: one `(entity_id, rows)` per entity with rows, in the order asked.
    pub fn query(&self, q: &HistoryQuery) -> Vec<(String, Vec<Row>)> {
        let mut out = Vec::new();
        for eid in &q.entity_ids {
            if out.iter().any(|(e, _): &(String, Vec<Row>)| e == eid) {
                continue;
            }
            let Some(rows) = self.rows.get(eid.as_str()) else {
                continue;
            };
            let domain = eid.split('.').next().unwrap_or("");
            let mut res = Vec::new();
            let first_in = rows.partition_point(|s| s.last_updated <= q.start);
            if q.include_start_time_state {
                let before = rows.partition_point(|s| s.last_updated < q.start);
                if before > 0 {
                    let st = rows[before - 1].clone();
                    res.push(Row::Full {
                        state: st,
                        lu: q.start,
                        lc: q.start,
                    });
                }
            }
            let significant = q.significant_changes_only && !SIGNIFICANT_DOMAINS.contains(&domain);
            let minimal = q.minimal_response && !NEED_ATTRIBUTE_DOMAINS.contains(&domain);
            let mut prev: Option<String> = res.first().map(|r| match r {
                Row::Full { state, .. } | Row::Minimal { state } => state.state.clone(),
            });
            for st in rows.range(first_in..) {
                if st.last_updated >= q.end {
                    break;
                }
                if significant && st.last_changed != st.last_updated {
                    continue;
                }
                if minimal && !res.is_empty() {
                    if prev.as_deref() == Some(st.state.as_str()) {
                        continue;
                    }
                    prev = Some(st.state.clone());
                    res.push(Row::Minimal { state: st.clone() });
                } else {
                    prev = Some(st.state.clone());
                    res.push(Row::Full {
                        state: st.clone(),
                        lu: st.last_updated,
                        lc: st.last_changed,
                    });
                }
            }
            if !res.is_empty() {
                out.push((eid.clone(), res));
            }
        }
        out
    }
}

/// The WS `history/history_during_period` result: `{entity_id: [{"s","a","lu"[,"lc"]}|{"s","lu"}]}`.
pub fn write_compressed(out: &mut String, result: &[(String, Vec<Row>)], no_attributes: bool) {
    use crate::time::epoch_f64;
    use crate::world::{push_f64, push_json_str};
    out.push('{');
    for (i, (eid, rows)) in result.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, eid);
        out.push_str(":[");
        for (j, r) in rows.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            match r {
                Row::Full { state, lu, lc } => {
                    out.push_str("{\"s\":");
                    push_json_str(out, &state.state);
                    if !no_attributes {
                        out.push_str(",\"a\":");
                        out.push_str(&state.attrs.json);
                    }
                    // A time clamped to the query's start is that datetime's `timestamp()`, exact;
                    // a recorded one is the float HA recorded.
                    let shown = |us: i64, recorded: i64| match us == recorded {
                        true => epoch_f64(us),
                        false => us as f64 / 1e6,
                    };
                    out.push_str(",\"lu\":");
                    push_f64(out, shown(*lu, state.last_updated));
                    if lc != lu {
                        out.push_str(",\"lc\":");
                        push_f64(out, shown(*lc, state.last_changed));
                    }
                    out.push('}');
                }
                Row::Minimal { state } => {
                    out.push_str("{\"s\":");
                    push_json_str(out, &state.state);
                    out.push_str(",\"lu\":");
                    push_f64(out, epoch_f64(state.last_updated));
                    out.push('}');
                }
            }
        }
        out.push(']');
    }
    out.push('}');
}

/// The REST `/api/history/period` result: one array per entity of full state objects
/// (2024.3.3 includes `context`) or `{"state","last_changed"}` rows.
pub fn write_full(out: &mut String, result: &[(String, Vec<Row>)], no_attributes: bool) {
    use crate::time::write_iso;
    use crate::world::push_json_str;
    out.push('[');
    for (i, (_, rows)) in result.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        for (j, r) in rows.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            match r {
                Row::Full { state, lu, lc } => {
                    out.push_str("{\"entity_id\":");
                    push_json_str(out, &state.entity_id);
                    out.push_str(",\"state\":");
                    push_json_str(out, &state.state);
                    out.push_str(",\"attributes\":");
                    out.push_str(if no_attributes {
                        "{}"
                    } else {
                        &state.attrs.json
                    });
                    out.push_str(",\"last_changed\":\"");
                    write_iso(out, *lc);
                    out.push_str("\",\"last_updated\":\"");
                    write_iso(out, *lu);
                    out.push_str("\",\"context\":");
                    state.context.write_json(out);
                    out.push('}');
                }
                Row::Minimal { state } => {
                    out.push_str("{\"state\":");
                    push_json_str(out, &state.state);
                    out.push_str(",\"last_changed\":\"");
                    write_iso(out, state.last_updated);
                    out.push_str("\"}");
                }
            }
        }
        out.push(']');
    }
    out.push(']');
}

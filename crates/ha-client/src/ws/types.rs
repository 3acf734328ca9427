//! Typed answers of the WebSocket commands.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::time::Seconds;

/// A state object as HA sends it (`get_states`, `state_changed`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// `domain.object_id`.
    pub entity_id: String,
    /// The state string.
    pub state: String,
    /// Attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// ISO 8601 time of the last state change.
    pub last_changed: String,
    /// ISO 8601 time of the last state or attribute change.
    pub last_updated: String,
    /// ISO 8601 time of the last report (HA 2024.3+; absent on older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported: Option<String>,
    /// The context that caused the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
}

/// HA's context of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// ULID.
    pub id: String,
    /// The parent context.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// The user who caused it.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// An event from `subscribe_events`, kept as the raw JSON HA sent. Parse it with
/// [`Event::parse`] into [`HaEvent`] or a type of your own (borrowing from [`Event::raw`] avoids copies).
///
/// It shares the WebSocket frame it came in (a reference count) rather than copying its JSON: HA
/// batches many events per frame, and the copy was a measurable part of the hot path.
#[derive(Clone)]
pub struct Event {
    /// The frame; the event is `frame[start..end]`.
    frame: Utf8Bytes,
    start: usize,
    end: usize,
}

impl Event {
    /// The event at `span` of `frame` (a range of its text that starts and ends on characters).
    pub(crate) fn in_span(frame: &Utf8Bytes, span: std::ops::Range<usize>) -> Self {
        Event {
            frame: frame.clone(),
            start: span.start,
            end: span.end,
        }
    }

    /// The event object's JSON text, as HA sent it. The client finds where it is in the frame but
    /// does not parse it: a malformed body shows when you parse it.
    pub fn raw(&self) -> &str {
        self.frame.as_str().get(self.start..self.end).unwrap_or("")
    }

    /// Parses the event as `T`: [`StateChangedRef`](super::StateChangedRef) (borrowed, the fast
    /// path), [`StateChangedEvent`](super::StateChangedEvent) (owned), [`HaEvent`] (any event
    /// type) or a type of your own.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.raw())
    }

    /// Parses a `state_changed` event, borrowing from this event's JSON (the fast path).
    pub fn state_changed(&self) -> Result<super::StateChangedRef<'_>, serde_json::Error> {
        self.parse()
    }
}

/// Where `part` lies in `text`, if it is a slice of that very memory (not just equal text).
pub(crate) fn span_in(text: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let end = start.wrapping_add(part.len());
    (start <= end
        && end <= text.len()
        && text.is_char_boundary(start)
        && text.is_char_boundary(end))
    .then_some(start..end)
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Event").field(&self.raw()).finish()
    }
}

/// The generic shape of an HA event.
#[derive(Clone, Debug, Deserialize)]
pub struct HaEvent {
    /// `state_changed`, `call_service`, ...
    pub event_type: String,
    /// Event data.
    #[serde(default)]
    pub data: Value,
    /// `LOCAL` or `REMOTE`.
    #[serde(default)]
    pub origin: Option<String>,
    /// ISO 8601.
    #[serde(default)]
    pub time_fired: Option<String>,
    /// The context.
    #[serde(default)]
    pub context: Option<Context>,
}

/// The data of a `state_changed` event, from [`HaEvent::data`]. Parsing the event as
/// [`StateChangedEvent`](super::StateChangedEvent) (owned) or
/// [`StateChangedRef`](super::StateChangedRef) (borrowed) does it in one pass, without
/// `serde_json::Value`.
#[derive(Clone, Debug, Deserialize)]
pub struct StateChangedData {
    /// The entity.
    pub entity_id: String,
    /// The state before (`None` for a new entity).
    pub old_state: Option<State>,
    /// The state after (`None` when the entity was removed).
    pub new_state: Option<State>,
}

/// `get_config`, the fields the client relies on; the rest is in `other`.
#[derive(Clone, Debug, Deserialize)]
pub struct HaConfig {
    /// `NOT_RUNNING`, `STARTING`, `RUNNING`, `STOPPING`, `FINAL_WRITE`, `STOPPED`.
    #[serde(default)]
    pub state: Option<String>,
    /// HA's version.
    #[serde(default)]
    pub version: Option<String>,
    /// Time zone.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `auth/current_user`.
#[derive(Clone, Debug, Deserialize)]
pub struct CurrentUser {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Owner?
    #[serde(default)]
    pub is_owner: bool,
    /// Admin?
    #[serde(default)]
    pub is_admin: bool,
    /// Everything else (credentials, mfa_modules).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `recorder/info`.
#[derive(Clone, Debug, Deserialize)]
pub struct RecorderInfo {
    /// Events waiting to be written; `Some(0)` means history is up to date.
    #[serde(default)]
    pub backlog: Option<u64>,
    /// Whether the recorder is recording.
    #[serde(default)]
    pub recording: Option<bool>,
    /// Whether its thread runs.
    #[serde(default)]
    pub thread_running: Option<bool>,
    /// Whether a migration is in progress.
    #[serde(default)]
    pub migration_in_progress: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Arguments of `history/history_during_period`.
///
/// The defaults are the ones a gap backfill needs: no fake first entry clamped to the start time
/// (`include_start_time_state: false`), attribute-only changes included
/// (`significant_changes_only: false`), full attributes.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryQuery {
    /// ISO 8601 start (inclusive).
    pub start_time: String,
    /// ISO 8601 end; HA defaults to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Entities; HA requires at least one.
    pub entity_ids: Vec<String>,
    /// Include the state at `start_time` as a first entry (clamped to the start).
    pub include_start_time_state: bool,
    /// Only state changes, not attribute-only ones.
    pub significant_changes_only: bool,
    /// Full first entry, then only state and last_changed.
    pub minimal_response: bool,
    /// Leave attributes out.
    pub no_attributes: bool,
}

impl HistoryQuery {
    /// A backfill query for `entity_ids` from `start_time`.
    pub fn new(start_time: impl Into<String>, entity_ids: Vec<String>) -> Self {
        HistoryQuery {
            start_time: start_time.into(),
            end_time: None,
            entity_ids,
            include_start_time_state: false,
            significant_changes_only: false,
            minimal_response: false,
            no_attributes: false,
        }
    }

    /// Sets the end time.
    pub fn end_time(mut self, end: impl Into<String>) -> Self {
        self.end_time = Some(end.into());
        self
    }
}

/// One entry of a history answer, decoded from HA's compressed keys (`s`, `a`, `lu`, `lc`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryState {
    /// The state string.
    pub state: String,
    /// Attributes (empty with `no_attributes` or `minimal_response`).
    pub attributes: Map<String, Value>,
    /// Epoch seconds of the last state change (HA omits `lc` when it equals `lu`).
    pub last_changed: f64,
    /// Epoch seconds of the last update.
    pub last_updated: f64,
}

impl HistoryState {
    /// `last_changed` in microseconds, as in the live event's ISO string
    /// ([`crate::time::micros_from_seconds`]).
    pub fn last_changed_us(&self) -> i64 {
        crate::time::micros_from_seconds(self.last_changed)
    }

    /// `last_updated` in microseconds, as in the live event's ISO string
    /// ([`crate::time::micros_from_seconds`]).
    pub fn last_updated_us(&self) -> i64 {
        crate::time::micros_from_seconds(self.last_updated)
    }
}

#[derive(Deserialize)]
struct CompressedHistoryState {
    s: String,
    #[serde(default)]
    a: Option<Map<String, Value>>,
    #[serde(default)]
    lu: Option<Seconds>,
    #[serde(default)]
    lc: Option<Seconds>,
}

/// Decodes `history/history_during_period`'s result.
pub(crate) fn decode_history(
    raw: &RawValue,
) -> Result<BTreeMap<String, Vec<HistoryState>>, serde_json::Error> {
    let compressed: BTreeMap<String, Vec<CompressedHistoryState>> =
        serde_json::from_str(raw.get())?;
    Ok(compressed
        .into_iter()
        .map(|(entity, states)| {
            let decoded = states
                .into_iter()
                .map(|c| {
                    // minimal_response entries carry `lc` only; full ones `lu` and maybe `lc`.
                    let lu = c.lu.or(c.lc).map_or(0.0, |s| s.0);
                    HistoryState {
                        state: c.s,
                        attributes: c.a.unwrap_or_default(),
                        last_changed: c.lc.map_or(lu, |s| s.0),
                        last_updated: lu,
                    }
                })
                .collect();
            (entity, decoded)
        })
        .collect())
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn an_event_is_a_span_of_its_frame() {
        let frame = Utf8Bytes::from(r#"[{"id":1,"type":"event","event":{"a":"é"}}]"#.to_string());
        #[derive(Deserialize)]
        struct M<'a> {
            #[serde(borrow)]
            event: &'a RawValue,
        }
        let items: Vec<M<'_>> = serde_json::from_str(frame.as_str()).unwrap();
        let span = span_in(frame.as_str(), items[0].event.get()).unwrap();
        assert_eq!(span, 32..42);
        let e = Event::in_span(&frame, span);
        assert_eq!(e.raw(), r#"{"a":"é"}"#);
        // Equal text elsewhere is not a span of the frame.
        assert_eq!(span_in(frame.as_str(), r#"{"a":"é"}"#), None);
        // A span that is not on characters gives no text rather than a panic.
        assert_eq!(Event::in_span(&frame, 32..39).raw(), "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_decoding_fills_lc_from_lu() {
        let raw = RawValue::from_string(
            r#"{"sensor.a":[{"s":"43","a":{"unit":"W"},"lu":1795346986.787867},{"s":"43","a":{"extra":1},"lu":1795346986.7889647,"lc":1795346986.787867}],"sensor.b":[{"s":"1","lc":5.5}]}"#
                .to_string(),
        )
        .unwrap();
        let h = decode_history(&raw).unwrap();
        let a = &h["sensor.a"];
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].last_changed, a[0].last_updated);
        assert_eq!(a[1].last_changed, 1795346986.787867);
        assert_eq!(a[1].last_updated, 1795346986.7889647);
        assert_eq!(a[1].attributes["extra"], 1);
        assert_eq!(h["sensor.b"][0].last_updated, 5.5);
    }

    #[test]
    fn history_query_defaults_are_for_backfill() {
        let q = serde_json::to_value(HistoryQuery::new(
            "2026-01-01T00:00:00Z",
            vec!["a.b".into()],
        ))
        .unwrap();
        assert_eq!(q["include_start_time_state"], false);
        assert_eq!(q["significant_changes_only"], false);
        assert_eq!(q["no_attributes"], false);
        assert!(q.get("end_time").is_none());
    }
}

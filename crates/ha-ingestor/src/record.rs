//! From an HA event to a row: the hot path. Parsing borrows from the frame; only what is stored is
//! copied.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A `state_changed` event, borrowed from the frame's JSON.
#[derive(Deserialize)]
pub struct StateChangedEvent<'a> {
    /// Always `state_changed` here.
    #[serde(borrow)]
    pub event_type: &'a str,
    /// The payload.
    #[serde(borrow)]
    pub data: StateChangedData<'a>,
    /// When HA fired the event.
    #[serde(borrow, default)]
    pub time_fired: Option<&'a str>,
    /// `LOCAL` or `REMOTE`.
    #[serde(borrow, default)]
    pub origin: Option<&'a str>,
}

/// `data` of a `state_changed` event.
#[derive(Deserialize)]
pub struct StateChangedData<'a> {
    /// The entity.
    #[serde(borrow)]
    pub entity_id: &'a str,
    /// The new state; `None` when the entity was removed.
    #[serde(borrow, default)]
    pub new_state: Option<StateObject<'a>>,
}

/// A state object, borrowed.
#[derive(Deserialize)]
pub struct StateObject<'a> {
    /// The state string (may hold escapes, hence `Cow`).
    #[serde(borrow)]
    pub state: std::borrow::Cow<'a, str>,
    /// Attributes, unparsed.
    #[serde(borrow, default)]
    pub attributes: Option<&'a RawValue>,
    /// ISO 8601.
    #[serde(borrow)]
    pub last_changed: &'a str,
    /// ISO 8601.
    #[serde(borrow)]
    pub last_updated: &'a str,
    /// The context.
    #[serde(borrow, default)]
    pub context: Option<ContextRef<'a>>,
}

/// A context, borrowed.
#[derive(Deserialize, Default)]
pub struct ContextRef<'a> {
    /// ULID.
    #[serde(borrow, default)]
    pub id: Option<&'a str>,
    /// Parent.
    #[serde(borrow, default)]
    pub parent_id: Option<&'a str>,
    /// User.
    #[serde(borrow, default)]
    pub user_id: Option<&'a str>,
}

/// One state change, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct StateRow {
    /// The HA instance's configured name.
    pub instance: std::sync::Arc<str>,
    /// `domain.object_id`.
    pub entity_id: String,
    /// The state string.
    pub state: String,
    /// The numeric reading of the state, as HA's influxdb integration does it.
    pub value: Option<f64>,
    /// Attributes as JSON text (after attribute rules).
    pub attributes: String,
    /// Microseconds since the epoch.
    pub last_changed_us: i64,
    /// Microseconds since the epoch.
    pub last_updated_us: i64,
    /// Microseconds since the epoch; `None` for rows from history.
    pub time_fired_us: Option<i64>,
    /// Context ids.
    pub context_id: Option<String>,
    /// The user who caused it.
    pub context_user_id: Option<String>,
    /// The parent context.
    pub context_parent_id: Option<String>,
}

/// Any other event (when subscribed to all events).
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// The HA instance's configured name.
    pub instance: std::sync::Arc<str>,
    /// The event type.
    pub event_type: String,
    /// `data` as JSON text.
    pub data: String,
    /// Microseconds since the epoch.
    pub time_fired_us: i64,
    /// The context id.
    pub context_id: Option<String>,
    /// `LOCAL` or `REMOTE`.
    pub origin: Option<String>,
}

/// What the store writes.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A state change.
    State(StateRow),
    /// Another event.
    Event(EventRow),
}

impl Record {
    /// The instance the record came from.
    pub fn instance(&self) -> &std::sync::Arc<str> {
        match self {
            Record::State(s) => &s.instance,
            Record::Event(e) => &e.instance,
        }
    }

    /// When HA fired it, if known.
    pub fn time_fired_us(&self) -> Option<i64> {
        match self {
            Record::State(s) => s.time_fired_us,
            Record::Event(e) => Some(e.time_fired_us),
        }
    }
}

/// Parses an ISO 8601 timestamp with offset (HA's format) into microseconds since the epoch.
pub fn parse_time_us(s: &str) -> Option<i64> {
    let ts: jiff::Timestamp = s.parse().ok()?;
    Some(ts.as_microsecond())
}

/// The numeric value of a state: a float if it parses as one (finite), else 1/0 for HA's on/off-like
/// states (the `state_as_number` map HA's influxdb integration uses), else none.
pub fn numeric_value(state: &str) -> Option<f64> {
    let t = state.trim();
    if let Ok(v) = t.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    match t {
        "on" | "locked" | "above_horizon" | "open" | "home" => Some(1.0),
        "off" | "unlocked" | "below_horizon" | "closed" | "not_home" => Some(0.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(numeric_value("21.5"), Some(21.5));
        assert_eq!(numeric_value(" 7 "), Some(7.0));
        assert_eq!(numeric_value("on"), Some(1.0));
        assert_eq!(numeric_value("not_home"), Some(0.0));
        assert_eq!(numeric_value("heat"), None);
        assert_eq!(numeric_value("unknown"), None);
        assert_eq!(numeric_value("nan"), None);
        assert_eq!(numeric_value(""), None);
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time_us("1970-01-01T00:00:01.000002+00:00"),
            Some(1_000_002)
        );
        assert_eq!(
            parse_time_us("2026-11-22T11:05:59.395949+00:00"),
            Some(1_795_345_559_395_949)
        );
        assert_eq!(
            parse_time_us("2026-11-22T12:05:59.395949+01:00"),
            Some(1_795_345_559_395_949)
        );
        assert_eq!(parse_time_us("yesterday"), None);
    }

    #[test]
    fn borrowed_parse_of_a_real_event() {
        let raw = r#"{"event_type":"state_changed","data":{"entity_id":"sensor.p","old_state":null,"new_state":{"entity_id":"sensor.p","state":"42","attributes":{"unit_of_measurement":"W"},"last_changed":"2026-11-22T11:05:59.395949+00:00","last_updated":"2026-11-22T11:05:59.395949+00:00","context":{"id":"01M","parent_id":null,"user_id":"c3"}}},"origin":"LOCAL","time_fired":"2026-11-22T11:05:59.395949+00:00","context":{"id":"01M","parent_id":null,"user_id":"c3"}}"#;
        let e: StateChangedEvent<'_> = serde_json::from_str(raw).unwrap();
        let s = e.data.new_state.unwrap();
        assert_eq!(s.state, "42");
        assert_eq!(
            s.attributes.unwrap().get(),
            r#"{"unit_of_measurement":"W"}"#
        );
        assert_eq!(s.context.unwrap().user_id, Some("c3"));
        assert!(matches!(s.state, std::borrow::Cow::Borrowed(_)));
    }
}

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

/// The kinds of records the journal carries, each in a table of its own with its own id sequence.
/// Sinks say which kinds they take and keep a cursor per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// State changes (`states`).
    State,
    /// Other events (`events`, with `subscribe = "all"`).
    Event,
}

impl RecordKind {
    /// The name used in the database (`sink_cursors.kind`, `dead_letters.kind`) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::State => "state",
            RecordKind::Event => "event",
        }
    }

    /// The table holding records of this kind.
    pub fn table(self) -> &'static str {
        match self {
            RecordKind::State => "states",
            RecordKind::Event => "events",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::State(_) => RecordKind::State,
            Record::Event(_) => RecordKind::Event,
        }
    }

    /// The instance the record came from.
    pub fn instance(&self) -> &std::sync::Arc<str> {
        match self {
            Record::State(s) => &s.instance,
            Record::Event(e) => &e.instance,
        }
    }

    /// The order HA saw it in: its time (a state's `last_updated`, an event's `time_fired`), then
    /// the entity id or event type for records of the same microsecond.
    pub fn time_order(&self) -> (i64, &str) {
        match self {
            Record::State(s) => (s.last_updated_us, &s.entity_id),
            Record::Event(e) => (e.time_fired_us, &e.event_type),
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
    if let Some(us) = parse_utc_fast(s) {
        return Some(us);
    }
    let ts: jiff::Timestamp = s.parse().ok()?;
    Some(ts.as_microsecond())
}

/// The shape HA always sends, Python's `isoformat()` in UTC (`YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`),
/// without the general parser (three timestamps per event: this is on the hot path). `None` for
/// anything else, which the general parser then decides.
fn parse_utc_fast(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if !(b.len() == 25 || (b.len() == 32 && b[19] == b'.'))
        || !s.ends_with("+00:00")
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |v, c| {
            c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let frac = if b.len() == 32 { num(20, 26)? } else { 0 };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    // Years at the ends of the general parser's range are left to it.
    if !(1..=9998).contains(&y) || d < 1 || d > month_days || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000 + frac)
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
    fn fast_time_path_agrees_with_the_general_parser() {
        let general = |s: &str| {
            s.parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_microsecond())
        };
        let mut checked = 0;
        for y in [1, 1969, 1970, 2000, 2024, 2026, 2100, 9999] {
            for mo in 0..=13 {
                for d in [0, 1, 15, 28, 29, 30, 31, 32] {
                    for (h, mi, sec) in
                        [(0, 0, 0), (23, 59, 59), (12, 5, 7), (24, 0, 0), (1, 60, 0)]
                    {
                        for frac in ["", ".000000", ".395949", ".999999"] {
                            let s = format!(
                                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}{frac}+00:00"
                            );
                            assert_eq!(parse_time_us(&s), general(&s), "{s}");
                            checked += usize::from(parse_utc_fast(&s).is_some());
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "the fast path was used ({checked})");
        // Other shapes go to the general parser.
        for s in [
            "2026-11-22T11:05:59.3959+00:00",
            "2026-11-22T11:05:59Z",
            "2026-11-22 11:05:59+00:00",
            "2026-11-22T11:05:59.395949-00:00",
            "+2026-11-22T11:05:59+00:00",
        ] {
            assert_eq!(parse_utc_fast(s), None, "{s}");
            assert_eq!(parse_time_us(s), general(s), "{s}");
        }
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

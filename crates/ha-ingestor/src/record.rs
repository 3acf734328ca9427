//! From an HA event to a row: the hot path. Parsing borrows from the frame; only what is stored is
//! copied.

/// The borrowed `state_changed` types are the client library's
/// ([`ha_client::ws::StateChangedRef`]); the record types are this crate's.
pub use ha_client::ws::{ContextRef, StateChangedRef, StateRef};

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

/// A statistic's metadata as HA lists it (`recorder/list_statistic_ids`, or the recorder
/// database's `statistics_meta`).
#[derive(Clone, Debug, PartialEq)]
pub struct StatisticMeta {
    /// `sensor.x`, or `source:name` for external statistics.
    pub statistic_id: String,
    /// `recorder`, or the integration that imports it.
    pub source: String,
    /// The unit HA stores the rows in (`statistics_unit_of_measurement`).
    pub unit: Option<String>,
    /// `energy`, `power`, ...
    pub unit_class: Option<String>,
    /// 0 none, 1 arithmetic, 2 circular (HA's `StatisticMeanType`; `has_mean` before HA 2025.x
    /// means 1).
    pub mean_type: u8,
    /// Whether rows carry `state` and `sum`.
    pub has_sum: bool,
    /// The name HA keeps for it (external statistics), if any.
    pub name: Option<String>,
}

/// The two periods HA stores statistics for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatisticPeriod {
    /// Short-term statistics, compiled every 5 minutes, kept by HA as long as states.
    FiveMinute,
    /// Long-term statistics, kept by HA forever.
    Hour,
}

impl StatisticPeriod {
    /// Both, in the order they are read.
    pub const ALL: [StatisticPeriod; 2] = [StatisticPeriod::FiveMinute, StatisticPeriod::Hour];

    /// HA's name, also the store's (`statistics.period`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatisticPeriod::FiveMinute => "5minute",
            StatisticPeriod::Hour => "hour",
        }
    }

    /// The period named `s` by HA.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Its length in microseconds.
    pub fn micros(self) -> i64 {
        match self {
            StatisticPeriod::FiveMinute => 300_000_000,
            StatisticPeriod::Hour => 3_600_000_000,
        }
    }
}

/// One statistic row (HA's `statistics` or `statistics_short_term`), ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct StatisticRow {
    /// The HA instance's configured name.
    pub instance: std::sync::Arc<str>,
    /// The statistic and its metadata (shared by its rows).
    pub meta: std::sync::Arc<StatisticMeta>,
    /// 5 minutes or an hour.
    pub period: StatisticPeriod,
    /// Start of the period, microseconds since the epoch.
    pub start_us: i64,
    /// Mean over the period.
    pub mean: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
    /// For sums: the meter's reading at the period's end.
    pub state: Option<f64>,
    /// For sums: the running total since the first row.
    pub sum: Option<f64>,
    /// The meter's last reset, microseconds since the epoch.
    pub last_reset_us: Option<i64>,
}

/// The kinds of records the journal carries, each in a table of its own with its own id sequence.
/// Sinks say which kinds they take and keep a cursor per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// State changes (`states`).
    State,
    /// Other events (`events`, with `subscribe = "all"`).
    Event,
    /// HA's statistics (`statistics`).
    Statistic,
}

impl RecordKind {
    /// The name used in the database (`sink_cursors.kind`, `dead_letters.kind`) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::State => "state",
            RecordKind::Event => "event",
            RecordKind::Statistic => "statistic",
        }
    }

    /// The table holding records of this kind.
    pub fn table(self) -> &'static str {
        match self {
            RecordKind::State => "states",
            RecordKind::Event => "events",
            RecordKind::Statistic => "statistics",
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
    /// A statistic row.
    Statistic(StatisticRow),
}

impl Record {
    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::State(_) => RecordKind::State,
            Record::Event(_) => RecordKind::Event,
            Record::Statistic(_) => RecordKind::Statistic,
        }
    }

    /// The instance the record came from.
    pub fn instance(&self) -> &std::sync::Arc<str> {
        match self {
            Record::State(s) => &s.instance,
            Record::Event(e) => &e.instance,
            Record::Statistic(s) => &s.instance,
        }
    }

    /// The order HA saw it in: its time (a state's `last_updated`, an event's `time_fired`), then
    /// the entity id or event type for records of the same microsecond.
    pub fn time_order(&self) -> (i64, &str) {
        match self {
            Record::State(s) => (s.last_updated_us, &s.entity_id),
            Record::Event(e) => (e.time_fired_us, &e.event_type),
            Record::Statistic(s) => (s.start_us, &s.meta.statistic_id),
        }
    }

    /// When HA fired it, if known.
    pub fn time_fired_us(&self) -> Option<i64> {
        match self {
            Record::State(s) => s.time_fired_us,
            Record::Event(e) => Some(e.time_fired_us),
            // A statistic is compiled after its period: no lag to measure.
            Record::Statistic(_) => None,
        }
    }
}

/// Parses an ISO 8601 timestamp with offset (HA's format) into microseconds since the epoch.
pub use ha_client::time::micros_from_iso as parse_time_us;

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
}

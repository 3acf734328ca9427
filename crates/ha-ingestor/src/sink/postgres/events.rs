//! Events (`subscribe = "all"`) in `ha_events`, in both layouts: one row per event, keyed on
//! `(instance, event_type, time, context_id)` as the SQLite store is, so a replay adds nothing.

use std::borrow::Cow;
use std::time::SystemTime;

use tokio_postgres::types::ToSql;

use super::rows::{no_nul, sanitize_json, system_time};
use crate::sink::JournalEvent;

/// The table. `context_id` is `''` when HA gave none, so the key holds for every row.
pub const EVENTS_DDL: &str = "
CREATE TABLE IF NOT EXISTS ha_events (
    time       timestamptz NOT NULL,
    instance   text NOT NULL,
    event_type text NOT NULL,
    data       jsonb NOT NULL,
    context_id text NOT NULL DEFAULT '',
    origin     text,
    PRIMARY KEY (instance, event_type, time, context_id)
);
";

pub(super) const EVENTS_INSERT: &str = "
INSERT INTO ha_events (time, instance, event_type, data, context_id, origin)
SELECT t, i, e, d::jsonb, c, o
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS u(t, i, e, d, c, o)
ON CONFLICT (instance, event_type, time, context_id) DO NOTHING";

/// One event converted for PostgreSQL.
pub(super) struct PreparedEvent<'a> {
    pub(super) event: &'a JournalEvent,
    time: SystemTime,
    event_type: Cow<'a, str>,
    data: Cow<'a, str>,
    context_id: Cow<'a, str>,
    origin: Option<Cow<'a, str>>,
}

impl<'a> PreparedEvent<'a> {
    /// Converts an event; an error is the reason to reject it (a time the platform cannot hold).
    pub(super) fn new(event: &'a JournalEvent) -> Result<Self, String> {
        Ok(PreparedEvent {
            event,
            time: system_time(event.time_fired_us)
                .ok_or_else(|| format!("time_fired {} us is out of range", event.time_fired_us))?,
            event_type: no_nul(&event.event_type),
            data: sanitize_json(&event.data),
            context_id: event.context_id.as_deref().map(no_nul).unwrap_or_default(),
            origin: event.origin.as_deref().map(no_nul),
        })
    }
}

/// The events as one array per column of [`EVENTS_INSERT`].
pub(super) struct EventColumns<'a> {
    time: Vec<SystemTime>,
    instance: Vec<&'a str>,
    event_type: Vec<&'a str>,
    data: Vec<&'a str>,
    context_id: Vec<&'a str>,
    origin: Vec<Option<&'a str>>,
}

impl<'a> EventColumns<'a> {
    pub(super) fn new(events: &'a [PreparedEvent<'a>]) -> Self {
        EventColumns {
            time: events.iter().map(|e| e.time).collect(),
            instance: events.iter().map(|e| &*e.event.instance).collect(),
            event_type: events.iter().map(|e| &*e.event_type).collect(),
            data: events.iter().map(|e| &*e.data).collect(),
            context_id: events.iter().map(|e| &*e.context_id).collect(),
            origin: events.iter().map(|e| e.origin.as_deref()).collect(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.time,
            &self.instance,
            &self.event_type,
            &self.data,
            &self.context_id,
            &self.origin,
        ]
    }
}

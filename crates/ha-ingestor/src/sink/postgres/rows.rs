//! Journal rows as PostgreSQL takes them: converted one by one ([`PreparedRow`]: times as
//! `timestamptz`, NULs dropped, LTSS's location taken out of the attributes), then bound as one
//! array per column ([`NormalizedColumns`], [`LtssColumns`]) to the `INSERT ... SELECT FROM
//! unnest(...)` statements here, whose parameter order the column structs follow.
//!
//! Why arrays: a statement takes one array per column, so the 65535 bind-parameter limit never
//! applies and a 5000-row batch is a single round trip (see the module docs of `postgres`).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::types::ToSql;

use crate::sink::JournalRow;
use crate::sink::config::TimeColumn;

pub(super) const NORMALIZED_INSERT: &str = "
INSERT INTO ha_states (time, entity, state, value, attributes, last_changed, last_updated,
                       time_fired, context_id, context_user_id)
SELECT t, e, s, v, a::jsonb, lc, lu, tf, c, cu
FROM unnest($1::timestamptz[], $2::int4[], $3::text[], $4::float8[], $5::text[],
            $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[])
     AS u(t, e, s, v, a, lc, lu, tf, c, cu)
ON CONFLICT (entity, time, last_updated) DO NOTHING";

pub(super) const LTSS_INSERT: &str = "
INSERT INTO ltss (time, entity_id, state, attributes)
SELECT t, e, s, a::jsonb
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[]) AS u(t, e, s, a)
ON CONFLICT (time, entity_id) DO NOTHING";

pub(super) const LTSS_INSERT_LOCATION: &str = "
INSERT INTO ltss (time, entity_id, state, attributes, location)
SELECT t, e, s, a::jsonb,
       CASE WHEN lon IS NOT NULL AND lat IS NOT NULL
            THEN ST_SetSRID(ST_MakePoint(lon, lat), 4326) END
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[])
     AS u(t, e, s, a, lon, lat)
ON CONFLICT (time, entity_id) DO NOTHING";

/// One journal row converted for PostgreSQL.
pub(super) struct PreparedRow<'a> {
    pub(super) row: &'a JournalRow,
    /// `ha_entities.id`, filled in by `resolve_entities` (normalized layout).
    pub(super) entity: i32,
    pub(super) time: SystemTime,
    pub(super) last_changed: SystemTime,
    pub(super) last_updated: SystemTime,
    pub(super) time_fired: Option<SystemTime>,
    pub(super) state: Cow<'a, str>,
    pub(super) attributes: Cow<'a, str>,
    pub(super) context_id: Option<Cow<'a, str>>,
    pub(super) context_user_id: Option<Cow<'a, str>>,
    pub(super) entity_id: Cow<'a, str>,
    /// LTSS with PostGIS: longitude and latitude taken out of the attributes.
    pub(super) lon: Option<f64>,
    pub(super) lat: Option<f64>,
}

impl<'a> PreparedRow<'a> {
    /// Converts a row; an error is the reason to reject it (a time the platform cannot hold).
    pub(super) fn new(
        row: &'a JournalRow,
        time_column: TimeColumn,
        location: bool,
    ) -> Result<Self, String> {
        let ts = |us: i64, what: &str| {
            system_time(us).ok_or_else(|| format!("{what} {us} us is out of range"))
        };
        let time_us = time_column.micros(row);
        let mut attributes = sanitize_json(&row.attributes);
        let (mut lon, mut lat) = (None, None);
        if location && let Some((rest, lo, la)) = take_location(&attributes) {
            attributes = Cow::Owned(rest);
            (lon, lat) = (Some(lo), Some(la));
        }
        Ok(PreparedRow {
            row,
            entity: 0,
            time: ts(time_us, "time")?,
            last_changed: ts(row.last_changed_us, "last_changed")?,
            last_updated: ts(row.last_updated_us, "last_updated")?,
            time_fired: row
                .time_fired_us
                .map(|us| ts(us, "time_fired"))
                .transpose()?,
            state: no_nul(&row.state),
            attributes,
            context_id: row.context_id.as_deref().map(no_nul),
            context_user_id: row.context_user_id.as_deref().map(no_nul),
            entity_id: no_nul(&row.entity_id),
            lon,
            lat,
        })
    }
}

/// Microseconds since the epoch as a `SystemTime`, which tokio-postgres sends as `timestamptz`
/// without loss. `None` only where the platform's clock type cannot hold the instant.
pub(super) fn system_time(us: i64) -> Option<SystemTime> {
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// PostgreSQL's `text` cannot hold U+0000 (the server refuses the whole statement), so NULs are
/// dropped, as LTSS does with states.
pub(super) fn no_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', ""))
    } else {
        Cow::Borrowed(s)
    }
}

/// `jsonb` refuses the escape `\u0000` (and `text` a raw NUL), so both are dropped from the JSON
/// text: a NUL in an attribute string is device garbage, and losing it beats losing the row.
/// An escaped backslash followed by `u0000` (`\\u0000`) is text, not a NUL, and is kept.
pub(super) fn sanitize_json(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") && !json.contains('\0') {
        return Cow::Borrowed(json);
    }
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes[i + 1..].starts_with(b"u0000") => {
                out.push_str(&json[copied..i]);
                i += 6;
                copied = i;
            }
            // Any other escape: skip the escaped byte so `\\` is not read as the start of one.
            b'\\' => i += 2,
            0 => {
                out.push_str(&json[copied..i]);
                i += 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&json[copied.min(json.len())..]);
    Cow::Owned(out)
}

/// LTSS with PostGIS moves `latitude` and `longitude` out of the attributes into `location`.
/// Unlike LTSS (whose truthiness test loses 0.0 and drops a lone coordinate), this takes them only
/// when both are numbers, and leaves the attributes untouched otherwise.
pub(super) fn take_location(attributes: &str) -> Option<(String, f64, f64)> {
    if !attributes.contains("\"latitude\"") || !attributes.contains("\"longitude\"") {
        return None;
    }
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(attributes).ok()?;
    let lat = map.get("latitude")?.as_f64()?;
    let lon = map.get("longitude")?.as_f64()?;
    map.remove("latitude");
    map.remove("longitude");
    Some((serde_json::to_string(&map).ok()?, lon, lat))
}

/// The normalized insert's parameters: one array per column, borrowed from the rows.
#[derive(Debug, PartialEq)]
pub(super) struct NormalizedColumns<'b> {
    time: Vec<SystemTime>,
    entity: Vec<i32>,
    state: Vec<&'b str>,
    value: Vec<Option<f64>>,
    attributes: Vec<&'b str>,
    last_changed: Vec<SystemTime>,
    last_updated: Vec<SystemTime>,
    time_fired: Vec<Option<SystemTime>>,
    context_id: Vec<Option<&'b str>>,
    context_user_id: Vec<Option<&'b str>>,
}

impl<'b> NormalizedColumns<'b> {
    pub(super) fn new(rows: &'b [PreparedRow<'_>]) -> Self {
        NormalizedColumns {
            time: rows.iter().map(|p| p.time).collect(),
            entity: rows.iter().map(|p| p.entity).collect(),
            state: rows.iter().map(|p| &*p.state).collect(),
            value: rows.iter().map(|p| p.row.value).collect(),
            attributes: rows.iter().map(|p| &*p.attributes).collect(),
            last_changed: rows.iter().map(|p| p.last_changed).collect(),
            last_updated: rows.iter().map(|p| p.last_updated).collect(),
            time_fired: rows.iter().map(|p| p.time_fired).collect(),
            context_id: rows.iter().map(|p| p.context_id.as_deref()).collect(),
            context_user_id: rows.iter().map(|p| p.context_user_id.as_deref()).collect(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.time,
            &self.entity,
            &self.state,
            &self.value,
            &self.attributes,
            &self.last_changed,
            &self.last_updated,
            &self.time_fired,
            &self.context_id,
            &self.context_user_id,
        ]
    }
}

/// The LTSS insert's parameters (the last two only with a `location` column).
#[derive(Debug, PartialEq)]
pub(super) struct LtssColumns<'b> {
    time: Vec<SystemTime>,
    entity_id: Vec<&'b str>,
    state: Vec<&'b str>,
    attributes: Vec<&'b str>,
    lon: Vec<Option<f64>>,
    lat: Vec<Option<f64>>,
}

impl<'b> LtssColumns<'b> {
    pub(super) fn new(rows: &'b [PreparedRow<'_>]) -> Self {
        LtssColumns {
            time: rows.iter().map(|p| p.time).collect(),
            entity_id: rows.iter().map(|p| &*p.entity_id).collect(),
            state: rows.iter().map(|p| &*p.state).collect(),
            attributes: rows.iter().map(|p| &*p.attributes).collect(),
            lon: rows.iter().map(|p| p.lon).collect(),
            lat: rows.iter().map(|p| p.lat).collect(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.time,
            &self.entity_id,
            &self.state,
            &self.attributes,
            &self.lon,
            &self.lat,
        ]
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;

    /// A journal row of `sensor.temp` (the writer's tests use it too).
    pub(in crate::sink::postgres) fn row(id: i64) -> JournalRow {
        JournalRow {
            id,
            instance: Arc::from("home"),
            entity_id: "sensor.temp".into(),
            state: "21.5".into(),
            value: Some(21.5),
            attributes: r#"{"unit_of_measurement":"°C"}"#.into(),
            last_changed_us: 1_700_000_000_000_000,
            last_updated_us: 1_700_000_001_000_000,
            time_fired_us: Some(1_700_000_001_000_123),
            context_id: Some("01HCTX".into()),
            context_user_id: None,
        }
    }

    #[test]
    fn rows_become_column_arrays() {
        let mut a = row(1);
        a.state = "on\0".into();
        a.context_user_id = Some("user".into());
        let mut b = row(2);
        b.entity_id = "light.kitchen".into();
        b.value = None;
        b.time_fired_us = None;
        b.attributes = r#"{"name":"a\u0000b"}"#.into();
        let rows = [a, b];
        let mut prepared: Vec<PreparedRow> = rows
            .iter()
            .map(|r| PreparedRow::new(r, TimeColumn::TimeFired, false).unwrap())
            .collect();
        prepared[0].entity = 7;
        prepared[1].entity = 9;
        let c = NormalizedColumns::new(&prepared);
        let t = |us: i64| UNIX_EPOCH + Duration::from_micros(us as u64);
        assert_eq!(
            c,
            NormalizedColumns {
                // time_fired, else last_updated
                time: vec![t(1_700_000_001_000_123), t(1_700_000_001_000_000)],
                entity: vec![7, 9],
                state: vec!["on", "21.5"],
                value: vec![Some(21.5), None],
                attributes: vec![r#"{"unit_of_measurement":"°C"}"#, r#"{"name":"ab"}"#],
                last_changed: vec![t(1_700_000_000_000_000); 2],
                last_updated: vec![t(1_700_000_001_000_000); 2],
                time_fired: vec![Some(t(1_700_000_001_000_123)), None],
                context_id: vec![Some("01HCTX"); 2],
                context_user_id: vec![Some("user"), None],
            }
        );
        assert_eq!(c.params().len(), 10);

        let prepared: Vec<PreparedRow> = rows
            .iter()
            .map(|r| PreparedRow::new(r, TimeColumn::LastUpdated, false).unwrap())
            .collect();
        let l = LtssColumns::new(&prepared);
        assert_eq!(l.time, vec![t(1_700_000_001_000_000); 2]);
        assert_eq!(l.entity_id, vec!["sensor.temp", "light.kitchen"]);
        assert_eq!(l.lon, vec![None, None]);
    }

    #[test]
    fn negative_times_convert() {
        let t = system_time(-1_500_000).unwrap();
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_micros(1_500_000)
        );
    }

    #[test]
    fn ltss_location_comes_out_of_the_attributes() {
        let mut r = row(1);
        r.attributes = r#"{"friendly_name":"Home","latitude":52.1,"longitude":0.0}"#.into();
        let p = PreparedRow::new(&r, TimeColumn::TimeFired, true).unwrap();
        assert_eq!((p.lon, p.lat), (Some(0.0), Some(52.1)));
        assert_eq!(&*p.attributes, r#"{"friendly_name":"Home"}"#);
        // Without a location column, or with a coordinate missing, the attributes stay whole.
        let p = PreparedRow::new(&r, TimeColumn::TimeFired, false).unwrap();
        assert_eq!(p.lon, None);
        assert_eq!(&*p.attributes, r.attributes);
        r.attributes = r#"{"latitude":52.1,"longitude":"x"}"#.into();
        let p = PreparedRow::new(&r, TimeColumn::TimeFired, true).unwrap();
        assert_eq!((p.lon, &*p.attributes), (None, r.attributes.as_str()));
    }

    #[test]
    fn json_nul_escapes_are_dropped_and_nothing_else() {
        assert!(matches!(sanitize_json(r#"{"a":"b"}"#), Cow::Borrowed(_)));
        assert_eq!(sanitize_json(r#"{"a":"x\u0000y"}"#), r#"{"a":"xy"}"#);
        assert_eq!(sanitize_json(r#"{"\u0000":"\u0000"}"#), r#"{"":""}"#);
        // `\\u0000` is a backslash followed by the text u0000.
        assert_eq!(sanitize_json(r#"{"a":"\\u0000"}"#), r#"{"a":"\\u0000"}"#);
        assert_eq!(sanitize_json(r#"{"a":"\\\u0000"}"#), r#"{"a":"\\"}"#);
        assert_eq!(sanitize_json("{\"a\":\"x\0\"}"), r#"{"a":"x"}"#);
        assert_eq!(no_nul("a\0b"), "ab");
    }
}

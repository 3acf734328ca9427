//! HA's statistics in the store: metadata upserts, rows written idempotently, the newest stored
//! start per statistic (where the live mirror and the gap read resume), and the journal of the
//! `statistic` record kind.
//!
//! The key is (instance, statistic, period, start). Reading a window again adds nothing. When HA
//! holds *different* values for a stored row (an admin re-imported an hour, HA recompiled it), the
//! store takes HA's current values, and the row is written anew under a new id (`statistics.id`
//! is `AUTOINCREMENT`, so the new id is past every sink's cursor): every sink receives the
//! correction and overwrites its copy (PostgreSQL upserts by key; InfluxDB's point of the same
//! series and time is replaced). Metadata follows HA too: a changed unit or name updates the
//! statistic's row in `statistics_meta`; each row keeps the unit it was written with, so after a
//! unit change the store holds both (old rows in the old unit, new ones in the new).
//!
//! Callers: the writer task (records of kind `statistic`), and anything that imports statistics in
//! bulk: [`crate::store::SqliteStore::write_statistics`] (one transaction per call), or
//! [`write_rows`] inside a transaction of its own (e.g. from HA's recorder database). Rows take
//! HA's values as they are: times in µs since the epoch (`start_ts` × 10⁶, exact for HA's period
//! starts), `mean_type` 0/1/2 (`has_mean` true is 1).
//!
//! ```
//! use std::sync::Arc;
//! use ha_ingestor::record::{StatisticMeta, StatisticPeriod, StatisticRow};
//! use ha_ingestor::store::SqliteStore;
//!
//! let mut store = SqliteStore::in_memory()?;
//! let meta = Arc::new(StatisticMeta {
//!     statistic_id: "sensor.energy_meter".into(),
//!     source: "recorder".into(),
//!     unit: Some("kWh".into()),
//!     unit_class: Some("energy".into()),
//!     mean_type: 0,
//!     has_sum: true,
//!     name: None,
//! });
//! let row = StatisticRow {
//!     instance: Arc::from("home"),
//!     meta,
//!     period: StatisticPeriod::Hour,
//!     start_us: 1_796_565_600_000_000,
//!     mean: None, min: None, max: None,
//!     state: Some(1234.5),
//!     sum: Some(17.25),
//!     last_reset_us: None,
//! };
//! assert_eq!(store.write_statistics(&[row.clone()])?.inserted, 1);
//! assert_eq!(store.write_statistics(&[row])?.unchanged, 1);
//! # Ok::<(), ha_ingestor::store::StoreError>(())
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::record::{StatisticMeta, StatisticPeriod, StatisticRow};

/// What writing rows did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatisticsWritten {
    /// Rows that were not stored before.
    pub inserted: u64,
    /// Stored rows whose values HA changed: replaced, under a new id.
    pub corrected: u64,
    /// Rows stored already with the same values.
    pub unchanged: u64,
}

/// What one row did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowWritten {
    /// New.
    Inserted,
    /// Replaced a row with other values.
    Corrected,
    /// Already there, same values.
    Unchanged,
}

/// `statistics_meta.id` per (instance, statistic), with the metadata last written, so that rows of
/// a known statistic cost no metadata query. Clear it when a transaction rolls back.
#[derive(Default)]
pub struct MetaIds(HashMap<(Arc<str>, String), (i64, Arc<StatisticMeta>)>);

impl MetaIds {
    /// Forgets every id (after a rollback: they may not exist).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Inserts or updates a statistic's metadata; returns its `statistics_meta.id`.
pub fn upsert_meta(
    conn: &Connection,
    instance: &str,
    meta: &StatisticMeta,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO statistics_meta (instance, statistic_id, source, unit, unit_class, mean_type, has_sum, name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (instance, statistic_id) DO UPDATE SET
             source = excluded.source, unit = excluded.unit, unit_class = excluded.unit_class,
             mean_type = excluded.mean_type, has_sum = excluded.has_sum, name = excluded.name
         WHERE (source, unit, unit_class, mean_type, has_sum, name)
               IS NOT (excluded.source, excluded.unit, excluded.unit_class, excluded.mean_type,
                       excluded.has_sum, excluded.name)",
    )?
    .execute(params![
        instance,
        meta.statistic_id,
        meta.source,
        meta.unit,
        meta.unit_class,
        meta.mean_type,
        meta.has_sum,
        meta.name
    ])?;
    conn.prepare_cached("SELECT id FROM statistics_meta WHERE instance = ?1 AND statistic_id = ?2")?
        .query_row(params![instance, meta.statistic_id], |r| r.get(0))
}

/// The row's statistic id, from the cache when its metadata is unchanged.
fn meta_id(conn: &Connection, ids: &mut MetaIds, row: &StatisticRow) -> rusqlite::Result<i64> {
    let key = (row.instance.clone(), row.meta.statistic_id.clone());
    if let Some((id, meta)) = ids.0.get(&key)
        && (Arc::ptr_eq(meta, &row.meta) || **meta == *row.meta)
    {
        return Ok(*id);
    }
    let id = upsert_meta(conn, &row.instance, &row.meta)?;
    ids.0.insert(key, (id, row.meta.clone()));
    Ok(id)
}

type Values = (
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
);

/// Writes one row (see the module's notes on corrections). Call inside a transaction.
pub fn write_row(
    conn: &Connection,
    ids: &mut MetaIds,
    row: &StatisticRow,
) -> rusqlite::Result<RowWritten> {
    let meta = meta_id(conn, ids, row)?;
    let period = row.period.as_str();
    let values: Values = (
        row.mean,
        row.min,
        row.max,
        row.state,
        row.sum,
        row.last_reset_us,
    );
    let stored: Option<(i64, Values)> = conn
        .prepare_cached(
            "SELECT id, mean, min, max, state, sum, last_reset_us FROM statistics
             WHERE meta = ?1 AND period = ?2 AND start_us = ?3",
        )?
        .query_row(params![meta, period, row.start_us], |r| {
            Ok((
                r.get(0)?,
                (
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ),
            ))
        })
        .optional()?;
    let outcome = match stored {
        Some((_, v)) if v == values => return Ok(RowWritten::Unchanged),
        Some((id, _)) => {
            conn.prepare_cached("DELETE FROM statistics WHERE id = ?1")?
                .execute([id])?;
            RowWritten::Corrected
        }
        None => RowWritten::Inserted,
    };
    conn.prepare_cached(
        "INSERT INTO statistics (meta, period, start_us, mean, min, max, state, sum, last_reset_us, unit)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        meta,
        period,
        row.start_us,
        row.mean,
        row.min,
        row.max,
        row.state,
        row.sum,
        row.last_reset_us,
        row.meta.unit
    ])?;
    Ok(outcome)
}

/// Writes `rows` (any statistics, any instances) in the caller's transaction.
pub fn write_rows(
    conn: &Connection,
    ids: &mut MetaIds,
    rows: &[StatisticRow],
) -> rusqlite::Result<StatisticsWritten> {
    let mut written = StatisticsWritten::default();
    for row in rows {
        match write_row(conn, ids, row)? {
            RowWritten::Inserted => written.inserted += 1,
            RowWritten::Corrected => written.corrected += 1,
            RowWritten::Unchanged => written.unchanged += 1,
        }
    }
    Ok(written)
}

/// The newest stored start of each statistic of `instance` for `period`: where reading resumes.
pub fn newest_starts(
    conn: &Connection,
    instance: &str,
    period: StatisticPeriod,
) -> rusqlite::Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.statistic_id, max(s.start_us) FROM statistics s JOIN statistics_meta m ON m.id = s.meta
         WHERE m.instance = ?1 AND s.period = ?2 GROUP BY m.statistic_id",
    )?;
    let rows = stmt.query_map(params![instance, period.as_str()], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}

/// One stored statistic row, as remote sinks see it.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalStatistic {
    /// `statistics.id`: the journal sequence of statistics.
    pub id: i64,
    /// The HA instance's configured name.
    pub instance: Arc<str>,
    /// The statistic.
    pub statistic_id: String,
    /// Its unit, if any.
    pub unit: Option<String>,
    /// 5 minutes or an hour.
    pub period: StatisticPeriod,
    /// Start of the period, µs since the epoch.
    pub start_us: i64,
    /// Mean.
    pub mean: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
    /// The meter's reading.
    pub state: Option<f64>,
    /// The running total.
    pub sum: Option<f64>,
    /// The meter's last reset, µs since the epoch.
    pub last_reset_us: Option<i64>,
}

/// Up to `limit` statistic rows after `after`, in id order.
pub fn read_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<JournalStatistic>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, m.instance, m.statistic_id, s.unit, s.period, s.start_us, s.mean, s.min, s.max,
                s.state, s.sum, s.last_reset_us
         FROM statistics s JOIN statistics_meta m ON m.id = s.meta
         WHERE s.id > ?1 ORDER BY s.id LIMIT ?2",
    )?;
    let mut instances: Vec<Arc<str>> = Vec::new();
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        let name: String = r.get(1)?;
        let instance = match instances.iter().find(|n| ***n == *name) {
            Some(n) => n.clone(),
            None => {
                let n: Arc<str> = Arc::from(name);
                instances.push(n.clone());
                n
            }
        };
        let period: String = r.get(4)?;
        Ok(JournalStatistic {
            id: r.get(0)?,
            instance,
            statistic_id: r.get(2)?,
            unit: r.get(3)?,
            // The schema holds only HA's two periods.
            period: StatisticPeriod::parse(&period).unwrap_or(StatisticPeriod::Hour),
            start_us: r.get(5)?,
            mean: r.get(6)?,
            min: r.get(7)?,
            max: r.get(8)?,
            state: r.get(9)?,
            sum: r.get(10)?,
            last_reset_us: r.get(11)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn energy() -> Arc<StatisticMeta> {
        Arc::new(StatisticMeta {
            statistic_id: "probe:energy".into(),
            source: "probe".into(),
            unit: Some("kWh".into()),
            unit_class: Some("energy".into()),
            mean_type: 0,
            has_sum: true,
            name: Some("Probe energy".into()),
        })
    }

    pub(crate) fn hour(meta: &Arc<StatisticMeta>, h: i64, sum: f64) -> StatisticRow {
        StatisticRow {
            instance: Arc::from("home"),
            meta: meta.clone(),
            period: StatisticPeriod::Hour,
            start_us: h * 3_600_000_000,
            mean: None,
            min: None,
            max: None,
            state: Some(sum + 10.0),
            sum: Some(sum),
            last_reset_us: None,
        }
    }

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c).unwrap();
        c
    }

    #[test]
    fn rows_are_stored_once_and_a_changed_row_moves_to_a_new_id() {
        let c = conn();
        let mut ids = MetaIds::default();
        let m = energy();
        let rows: Vec<_> = (0..3).map(|h| hour(&m, h, h as f64)).collect();
        let w = write_rows(&c, &mut ids, &rows).unwrap();
        assert_eq!((w.inserted, w.unchanged, w.corrected), (3, 0, 0));
        let w = write_rows(&c, &mut ids, &rows).unwrap();
        assert_eq!((w.inserted, w.unchanged, w.corrected), (0, 3, 0));
        // HA now holds another sum for hour 2 (the newest row: its new id must still be new).
        let w = write_rows(&c, &mut ids, &[hour(&m, 2, 7.5)]).unwrap();
        assert_eq!(w.corrected, 1);
        let journal = read_after(&c, 0, 100).unwrap();
        let seen: Vec<(i64, i64, Option<f64>)> = journal
            .iter()
            .map(|r| (r.id, r.start_us / 3_600_000_000, r.sum))
            .collect();
        assert_eq!(
            seen,
            vec![(1, 0, Some(0.0)), (2, 1, Some(1.0)), (4, 2, Some(7.5))]
        );
        assert_eq!(journal[0].unit.as_deref(), Some("kWh"));
        let newest = newest_starts(&c, "home", StatisticPeriod::Hour).unwrap();
        assert_eq!(newest["probe:energy"], 2 * 3_600_000_000);
        assert!(
            newest_starts(&c, "home", StatisticPeriod::FiveMinute)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn changed_metadata_updates_the_statistic_in_place() {
        let c = conn();
        let mut ids = MetaIds::default();
        let m = energy();
        write_rows(&c, &mut ids, &[hour(&m, 0, 0.0)]).unwrap();
        let mut wh = (*m).clone();
        wh.unit = Some("Wh".into());
        let wh = Arc::new(wh);
        write_rows(&c, &mut ids, &[hour(&wh, 1, 1000.0)]).unwrap();
        let (n, unit): (i64, String) = c
            .query_row("SELECT count(*), max(unit) FROM statistics_meta", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((n, unit.as_str()), (1, "Wh"));
        // Both units kept: each row in the unit it was written with, in the view and the journal.
        let mut stmt = c
            .prepare("SELECT unit, sum FROM statistics_view ORDER BY start")
            .unwrap();
        let rows: Vec<(String, f64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            vec![("kWh".to_string(), 0.0), ("Wh".to_string(), 1000.0)]
        );
        let journal: Vec<Option<String>> = read_after(&c, 0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.unit)
            .collect();
        assert_eq!(journal, vec![Some("kWh".into()), Some("Wh".into())]);
    }
}

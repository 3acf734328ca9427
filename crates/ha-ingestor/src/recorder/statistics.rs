//! Reading the recorder's statistics (`statistics` hourly, `statistics_short_term` 5-minute, and
//! `statistics_meta`) into plain structs, in the store's terms (microseconds, HA's mean type).
//! The import ([`super::import`]) writes them as the live statistics mirror's records.

use ha_client::time::micros_from_seconds;
use rusqlite::params;

use super::RecorderError;
use super::read::{IdWindow, RecorderDb};

/// A statistics table of the recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatisticsPeriod {
    /// `statistics_short_term`.
    FiveMinute,
    /// `statistics`.
    Hour,
}

impl StatisticsPeriod {
    /// The store's name of the period (`statistics.period`), as HA's API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            StatisticsPeriod::FiveMinute => "5minute",
            StatisticsPeriod::Hour => "hour",
        }
    }

    fn table(self) -> &'static str {
        match self {
            StatisticsPeriod::FiveMinute => "statistics_short_term",
            StatisticsPeriod::Hour => "statistics",
        }
    }
}

/// One `statistics_meta` row.
#[derive(Clone, Debug, PartialEq)]
pub struct StatisticMeta {
    /// The recorder's id (`metadata_id` of the statistics rows).
    pub id: i64,
    /// `sensor.x`, or `source:name` for external statistics.
    pub statistic_id: String,
    /// `recorder` or the integration that imports it.
    pub source: String,
    /// `unit_of_measurement`.
    pub unit: Option<String>,
    /// `unit_class` (schema 52 on; `None` before).
    pub unit_class: Option<String>,
    /// HA's `StatisticMeanType`: 0 none, 1 arithmetic, 2 circular. Before schema 49, `has_mean`
    /// gives 1 or 0.
    pub mean_type: i64,
    /// Whether it has `state` and `sum`.
    pub has_sum: bool,
    /// The name, for external statistics.
    pub name: Option<String>,
}

/// One row of a statistics table.
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    /// The recorder's row id (resuming goes by it).
    pub id: i64,
    /// The [`StatisticMeta::id`].
    pub metadata_id: i64,
    /// The period's start, microseconds since the epoch.
    pub start_us: i64,
    /// Mean over the period.
    pub mean: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
    /// For sums: the meter's reading at the period's end.
    pub state: Option<f64>,
    /// For sums: the running total.
    pub sum: Option<f64>,
    /// When the meter was last reset, microseconds.
    pub last_reset_us: Option<i64>,
}

impl RecorderDb {
    /// Every `statistics_meta` row.
    pub fn statistics_meta(&self) -> Result<Vec<StatisticMeta>, RecorderError> {
        let conn = self.connection();
        let has = |column: &str| -> Result<bool, RecorderError> {
            Ok(conn.query_row(
                "SELECT count(*) FROM pragma_table_info('statistics_meta') WHERE name = ?1",
                [column],
                |r| r.get::<_, i64>(0),
            )? > 0)
        };
        let unit_class = if has("unit_class")? {
            "unit_class"
        } else {
            "NULL"
        };
        let mean_type = if has("mean_type")? {
            "mean_type"
        } else {
            "CASE WHEN has_mean THEN 1 ELSE 0 END"
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT id, statistic_id, source, unit_of_measurement, {unit_class}, {mean_type}, has_sum, name \
             FROM statistics_meta ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StatisticMeta {
                    id: r.get(0)?,
                    statistic_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    source: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    unit: r.get(3)?,
                    unit_class: r.get(4)?,
                    mean_type: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    has_sum: r.get::<_, Option<bool>>(6)?.unwrap_or(false),
                    name: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// How many rows of a statistics table `w` holds.
    pub fn count_statistics(
        &self,
        period: StatisticsPeriod,
        w: IdWindow,
    ) -> Result<u64, RecorderError> {
        let n: i64 = self.connection().query_row(
            &format!(
                "SELECT count(*) FROM {} WHERE id > ?1 AND id <= ?2 AND +start_ts >= ?3 \
                 AND +start_ts < ?4 AND metadata_id IS NOT NULL",
                period.table()
            ),
            params![w.after, w.up_to, w.since_s, w.until_s],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// The newest row id of a statistics table (0 for none).
    pub fn newest_statistic_id(&self, period: StatisticsPeriod) -> Result<i64, RecorderError> {
        Ok(self.connection().query_row(
            &format!("SELECT coalesce(max(id), 0) FROM {}", period.table()),
            [],
            |r| r.get(0),
        )?)
    }

    /// Up to `limit` rows of a statistics table in `window` (ids, and `start` in the time
    /// window), in id order, appended to `out`; the last id read, or `None` when no more.
    pub fn read_statistics(
        &self,
        period: StatisticsPeriod,
        w: IdWindow,
        limit: usize,
        out: &mut Vec<Statistic>,
    ) -> Result<Option<i64>, RecorderError> {
        let mut stmt = self.connection().prepare_cached(&format!(
            "SELECT id, metadata_id, start_ts, mean, min, max, state, sum, last_reset_ts FROM {} \
             WHERE id > ?1 AND id <= ?2 AND +start_ts >= ?3 AND +start_ts < ?4 AND metadata_id IS NOT NULL \
             ORDER BY id LIMIT ?5",
            period.table()
        ))?;
        let mut rows = stmt.query(params![
            w.after,
            w.up_to,
            w.since_s,
            w.until_s,
            limit as i64
        ])?;
        let mut last = None;
        while let Some(r) = rows.next()? {
            let row = Statistic {
                id: r.get(0)?,
                metadata_id: r.get(1)?,
                start_us: micros_from_seconds(r.get(2)?),
                mean: r.get(3)?,
                min: r.get(4)?,
                max: r.get(5)?,
                state: r.get(6)?,
                sum: r.get(7)?,
                last_reset_us: r.get::<_, Option<f64>>(8)?.map(last_reset_micros),
            };
            last = Some(row.id);
            out.push(row);
        }
        Ok(last)
    }
}

/// A `last_reset_ts` (float seconds) as HA's `statistics_during_period` answers it: whole
/// milliseconds, truncated (`int(last_reset * 1000)`), in µs. The live mirror reads HA's answer,
/// so the import must store the same value, or a row both paths wrote would look corrected.
fn last_reset_micros(seconds: f64) -> i64 {
    (seconds * 1000.0).trunc() as i64 * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_copy(name: &str, dir: &std::path::Path) -> std::path::PathBuf {
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap();
        to
    }

    /// Rows as HA 2026.2 (schema 53: `mean_type`, `unit_class`) and HA 2024.3 (schema 42:
    /// `has_mean` only) write them.
    #[test]
    fn statistics_and_their_metadata_read_on_both_schemas() {
        let dir = tempfile::tempdir().unwrap();
        for (name, newer) in [
            ("recorder-2026.2.3.db", true),
            ("recorder-2024.3.3.db", false),
        ] {
            let path = fixture_copy(name, dir.path());
            let conn = rusqlite::Connection::open(&path).unwrap();
            if newer {
                conn.execute_batch(
                    "INSERT INTO statistics_meta (id, statistic_id, source, unit_of_measurement, unit_class, has_mean, has_sum, name, mean_type)
                       VALUES (1, 'sensor.energy', 'recorder', 'kWh', 'energy', NULL, 1, NULL, 0),
                              (2, 'sensor.wind_direction', 'recorder', '°', NULL, NULL, 0, NULL, 2);",
                )
                .unwrap();
            } else {
                conn.execute_batch(
                    "INSERT INTO statistics_meta (id, statistic_id, source, unit_of_measurement, has_mean, has_sum, name)
                       VALUES (1, 'sensor.energy', 'recorder', 'kWh', 0, 1, NULL),
                              (2, 'sensor.wind_direction', 'recorder', '°', 1, 0, NULL);",
                )
                .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO statistics (metadata_id, created_ts, start_ts, mean, min, max, last_reset_ts, state, sum)
                   VALUES (1, 1796601600.5, 1796598000.0, NULL, NULL, NULL, 1796500000.1237, 12.5, 3.25),
                          (2, 1796601600.5, 1796598000.0, 181.5, 10.0, 350.0, NULL, NULL, NULL);
                 INSERT INTO statistics_short_term (metadata_id, created_ts, start_ts, mean, min, max, state, sum)
                   VALUES (2, 1796601600.5, 1796601300.0, 90.0, 80.0, 100.0, NULL, NULL);",
            )
            .unwrap();
            drop(conn);
            let db = RecorderDb::open(path.to_str().unwrap()).unwrap();
            let meta = db.statistics_meta().unwrap();
            assert_eq!(meta.len(), 2, "{name}");
            assert_eq!(
                meta[0],
                StatisticMeta {
                    id: 1,
                    statistic_id: "sensor.energy".into(),
                    source: "recorder".into(),
                    unit: Some("kWh".into()),
                    unit_class: newer.then(|| "energy".into()),
                    mean_type: 0,
                    has_sum: true,
                    name: None,
                },
                "{name}"
            );
            // Circular on 2026.2; before schema 49 only "has a mean", read as arithmetic.
            assert_eq!(meta[1].mean_type, if newer { 2 } else { 1 }, "{name}");
            let all = IdWindow::new(
                0,
                db.newest_statistic_id(StatisticsPeriod::Hour).unwrap(),
                0,
                i64::MAX,
            );
            let mut rows = Vec::new();
            let last = db
                .read_statistics(StatisticsPeriod::Hour, all, 10, &mut rows)
                .unwrap();
            assert_eq!(last, Some(2));
            assert_eq!(
                rows[0],
                Statistic {
                    id: 1,
                    metadata_id: 1,
                    start_us: 1_796_598_000_000_000,
                    mean: None,
                    min: None,
                    max: None,
                    state: Some(12.5),
                    sum: Some(3.25),
                    // HA answers whole milliseconds (the mirror's value), not 1_796_500_000_123_700.
                    last_reset_us: Some(1_796_500_000_123_000),
                }
            );
            assert_eq!(
                (rows[1].mean, rows[1].min, rows[1].max),
                (Some(181.5), Some(10.0), Some(350.0))
            );
            let mut short = Vec::new();
            let up_to = db
                .newest_statistic_id(StatisticsPeriod::FiveMinute)
                .unwrap();
            db.read_statistics(
                StatisticsPeriod::FiveMinute,
                IdWindow::new(0, up_to, 0, i64::MAX),
                10,
                &mut short,
            )
            .unwrap();
            assert_eq!(short.len(), 1);
            assert_eq!(short[0].start_us, 1_796_601_300_000_000);
            // The window keeps to `start` (give or take the millisecond `IdWindow` adds).
            let mut none = Vec::new();
            let before = IdWindow::new(0, 2, 0, 1_796_597_000_000_000);
            assert_eq!(
                db.read_statistics(StatisticsPeriod::Hour, before, 10, &mut none)
                    .unwrap(),
                None
            );
        }
    }
}

//! HA's statistics in `ha_statistics`, in both layouts: one row per (instance, statistic, period,
//! start), as in the SQLite store. A row HA corrected comes again from the journal and overwrites
//! the stored one (`ON CONFLICT ... DO UPDATE`).

use std::time::SystemTime;

use tokio_postgres::types::ToSql;

use super::rows::{no_nul, system_time};
use crate::sink::JournalStatistic;

/// The table. `time` is the start of the period (the hypertable's partitioning column).
pub const STATISTICS_DDL: &str = "
CREATE TABLE IF NOT EXISTS ha_statistics (
    time         timestamptz NOT NULL,
    instance     text NOT NULL,
    statistic_id text NOT NULL,
    period       text NOT NULL,
    unit         text,
    mean         double precision,
    min          double precision,
    max          double precision,
    state        double precision,
    sum          double precision,
    last_reset   timestamptz,
    PRIMARY KEY (instance, statistic_id, period, time)
);
";

pub(super) const STATISTICS_INSERT: &str = "
INSERT INTO ha_statistics (time, instance, statistic_id, period, unit, mean, min, max, state, sum, last_reset)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
                     $11::timestamptz[])
ON CONFLICT (instance, statistic_id, period, time) DO UPDATE SET
    unit = excluded.unit, mean = excluded.mean, min = excluded.min, max = excluded.max,
    state = excluded.state, sum = excluded.sum, last_reset = excluded.last_reset";

/// One statistic row converted for PostgreSQL.
pub(super) struct PreparedStatistic<'a> {
    pub(super) row: &'a JournalStatistic,
    time: SystemTime,
    last_reset: Option<SystemTime>,
}

impl<'a> PreparedStatistic<'a> {
    /// Converts a row; an error is the reason to reject it (a time the platform cannot hold).
    pub(super) fn new(row: &'a JournalStatistic) -> Result<Self, String> {
        let time = |us: i64| system_time(us).ok_or_else(|| format!("time {us} us is out of range"));
        Ok(PreparedStatistic {
            row,
            time: time(row.start_us)?,
            last_reset: row.last_reset_us.map(time).transpose()?,
        })
    }
}

/// The rows as one array per column of [`STATISTICS_INSERT`].
pub(super) struct StatisticColumns<'a> {
    time: Vec<SystemTime>,
    instance: Vec<&'a str>,
    statistic_id: Vec<std::borrow::Cow<'a, str>>,
    period: Vec<&'static str>,
    unit: Vec<Option<std::borrow::Cow<'a, str>>>,
    mean: Vec<Option<f64>>,
    min: Vec<Option<f64>>,
    max: Vec<Option<f64>>,
    state: Vec<Option<f64>>,
    sum: Vec<Option<f64>>,
    last_reset: Vec<Option<SystemTime>>,
}

impl<'a> StatisticColumns<'a> {
    pub(super) fn new(rows: &'a [PreparedStatistic<'a>]) -> Self {
        StatisticColumns {
            time: rows.iter().map(|r| r.time).collect(),
            instance: rows.iter().map(|r| &*r.row.instance).collect(),
            statistic_id: rows.iter().map(|r| no_nul(&r.row.statistic_id)).collect(),
            period: rows.iter().map(|r| r.row.period.as_str()).collect(),
            unit: rows
                .iter()
                .map(|r| r.row.unit.as_deref().map(no_nul))
                .collect(),
            mean: rows.iter().map(|r| r.row.mean).collect(),
            min: rows.iter().map(|r| r.row.min).collect(),
            max: rows.iter().map(|r| r.row.max).collect(),
            state: rows.iter().map(|r| r.row.state).collect(),
            sum: rows.iter().map(|r| r.row.sum).collect(),
            last_reset: rows.iter().map(|r| r.last_reset).collect(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.time,
            &self.instance,
            &self.statistic_id,
            &self.period,
            &self.unit,
            &self.mean,
            &self.min,
            &self.max,
            &self.state,
            &self.sum,
            &self.last_reset,
        ]
    }
}

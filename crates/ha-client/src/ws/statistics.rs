//! HA's long-term and short-term statistics: `recorder/list_statistic_ids`,
//! `recorder/get_statistics_metadata` and `recorder/statistics_during_period` (readable by a
//! non-admin user), and `recorder/import_statistics` (admin only).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// One statistic's metadata, as `list_statistic_ids` and `get_statistics_metadata` list it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct StatisticMetadata {
    /// `sensor.x`, or `source:name` for external statistics.
    pub statistic_id: String,
    /// `recorder`, or the integration that imports it.
    #[serde(default)]
    pub source: String,
    /// The friendly name HA keeps for it (external statistics), if any.
    #[serde(default)]
    pub name: Option<String>,
    /// The unit the rows are stored in by HA.
    #[serde(default)]
    pub statistics_unit_of_measurement: Option<String>,
    /// The unit HA shows (the entity's current unit).
    #[serde(default)]
    pub display_unit_of_measurement: Option<String>,
    /// `energy`, `power`, ... (absent before HA 2022.10 and for units without a converter).
    #[serde(default)]
    pub unit_class: Option<String>,
    /// Before HA 2025.x: whether rows carry mean/min/max.
    #[serde(default)]
    pub has_mean: Option<bool>,
    /// From HA 2025.x: 0 none, 1 arithmetic, 2 circular.
    #[serde(default)]
    pub mean_type: Option<u8>,
    /// Whether rows carry state/sum.
    #[serde(default)]
    pub has_sum: bool,
}

impl StatisticMetadata {
    /// HA's `mean_type`, derived from `has_mean` on versions that predate it (arithmetic).
    pub fn mean_type(&self) -> u8 {
        self.mean_type
            .unwrap_or(u8::from(self.has_mean.unwrap_or(false)))
    }
}

/// A period of `statistics_during_period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatisticsPeriod {
    /// Short-term statistics: HA compiles them every 5 minutes and keeps them as long as states.
    #[serde(rename = "5minute")]
    FiveMinute,
    /// Long-term statistics, kept forever.
    Hour,
    /// Aggregated by HA from hours.
    Day,
    /// Aggregated by HA from hours.
    Week,
    /// Aggregated by HA from hours.
    Month,
}

impl StatisticsPeriod {
    /// HA's name.
    pub fn as_str(self) -> &'static str {
        match self {
            StatisticsPeriod::FiveMinute => "5minute",
            StatisticsPeriod::Hour => "hour",
            StatisticsPeriod::Day => "day",
            StatisticsPeriod::Week => "week",
            StatisticsPeriod::Month => "month",
        }
    }

    /// The period's length in microseconds, for the two HA stores (`None` for calendar periods).
    pub fn micros(self) -> Option<i64> {
        match self {
            StatisticsPeriod::FiveMinute => Some(300_000_000),
            StatisticsPeriod::Hour => Some(3_600_000_000),
            _ => None,
        }
    }
}

/// Arguments of `recorder/statistics_during_period`.
#[derive(Clone, Debug, Serialize)]
pub struct StatisticsQuery {
    /// ISO 8601 start (inclusive: rows whose `start` is at or after it).
    pub start_time: String,
    /// ISO 8601 end (exclusive); HA defaults to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The statistics; HA requires at least one.
    pub statistic_ids: Vec<String>,
    /// The period.
    pub period: StatisticsPeriod,
    /// Unit per unit class to convert to. Without it HA converts to each entity's display unit:
    /// pass the statistics unit to get the values HA stored.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, String>,
}

impl StatisticsQuery {
    /// Rows of `period` for `statistic_ids` from `start_time` to now.
    pub fn new(
        start_time: impl Into<String>,
        statistic_ids: Vec<String>,
        period: StatisticsPeriod,
    ) -> Self {
        StatisticsQuery {
            start_time: start_time.into(),
            end_time: None,
            statistic_ids,
            period,
            units: BTreeMap::new(),
        }
    }

    /// Sets the (exclusive) end time.
    pub fn end_time(mut self, end: impl Into<String>) -> Self {
        self.end_time = Some(end.into());
        self
    }

    /// Asks for `unit` for the statistics of `unit_class`.
    pub fn unit(mut self, unit_class: impl Into<String>, unit: impl Into<String>) -> Self {
        self.units.insert(unit_class.into(), unit.into());
        self
    }
}

/// One row of `statistics_during_period`. Times are HA's epoch milliseconds, read as microseconds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct StatisticRow {
    /// Start of the period, µs since the epoch.
    #[serde(deserialize_with = "millis_as_micros")]
    pub start: i64,
    /// End of the period (exclusive), µs since the epoch.
    #[serde(default, deserialize_with = "opt_millis_as_micros")]
    pub end: Option<i64>,
    /// Mean over the period.
    #[serde(default)]
    pub mean: Option<f64>,
    /// Minimum.
    #[serde(default)]
    pub min: Option<f64>,
    /// Maximum.
    #[serde(default)]
    pub max: Option<f64>,
    /// For sums: the meter's reading at the period's end.
    #[serde(default)]
    pub state: Option<f64>,
    /// For sums: the running total.
    #[serde(default)]
    pub sum: Option<f64>,
    /// The meter's last reset, µs since the epoch.
    #[serde(default, deserialize_with = "opt_millis_as_micros")]
    pub last_reset: Option<i64>,
    /// `sum` minus the previous row's (only when asked for).
    #[serde(default)]
    pub change: Option<f64>,
}

fn millis_to_micros(ms: f64) -> i64 {
    (ms * 1000.0).round() as i64
}

fn millis_as_micros<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    f64::deserialize(d).map(millis_to_micros)
}

fn opt_millis_as_micros<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.map(millis_to_micros))
}

/// `statistics_during_period`'s answer: rows per statistic, oldest first. Statistics without rows
/// in the window are absent.
pub type StatisticsAnswer = BTreeMap<String, Vec<StatisticRow>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_ms_as_micros_and_nulls_as_none() {
        let a: StatisticsAnswer = serde_json::from_str(
            r#"{"probe:energy":[{"start":1796565600000,"end":1796569200000,"mean":null,"max":null,"min":null,"state":10.0,"sum":0.0,"last_reset":null,"change":0.0}],
                "probe:temp":[{"start":1796565600000.0,"end":1796569200000,"mean":20.0,"max":21.0,"min":19.0,"last_reset":1796565600000}]}"#,
        )
        .unwrap();
        let e = &a["probe:energy"][0];
        assert_eq!(e.start, 1_796_565_600_000_000);
        assert_eq!(e.end, Some(1_796_569_200_000_000));
        assert_eq!((e.state, e.sum, e.mean), (Some(10.0), Some(0.0), None));
        let t = &a["probe:temp"][0];
        assert_eq!(
            (t.mean, t.min, t.max, t.sum),
            (Some(20.0), Some(19.0), Some(21.0), None)
        );
        assert_eq!(t.last_reset, Some(1_796_565_600_000_000));
    }

    #[test]
    fn metadata_of_older_ha_derives_mean_type_from_has_mean() {
        let old: StatisticMetadata = serde_json::from_str(
            r#"{"statistic_id":"sensor.t","display_unit_of_measurement":"°C","has_mean":true,"has_sum":false,"name":null,"source":"recorder","statistics_unit_of_measurement":"°C","unit_class":"temperature"}"#,
        )
        .unwrap();
        assert_eq!(old.mean_type(), 1);
        let new: StatisticMetadata = serde_json::from_str(
            r#"{"statistic_id":"probe:energy","display_unit_of_measurement":"kWh","has_mean":false,"mean_type":0,"has_sum":true,"name":"Probe energy","source":"probe","statistics_unit_of_measurement":"kWh","unit_class":"energy"}"#,
        )
        .unwrap();
        assert_eq!(new.mean_type(), 0);
        assert!(new.has_sum);
    }

    #[test]
    fn the_query_names_the_period_as_ha_does_and_leaves_out_what_is_unset() {
        let q = serde_json::to_value(
            StatisticsQuery::new(
                "2026-01-01T00:00:00Z",
                vec!["a:b".into()],
                StatisticsPeriod::FiveMinute,
            )
            .unit("energy", "kWh"),
        )
        .unwrap();
        assert_eq!(q["period"], "5minute");
        assert_eq!(q["units"]["energy"], "kWh");
        assert!(q.get("end_time").is_none());
    }
}

//! The InfluxDB sink: journal rows as line protocol over HTTP, gzip, batching; the v1 and v2 write
//! APIs (which also cover InfluxDB 3 and VictoriaMetrics).
//!
//! Two schemas turn a row into a line: [`ha_schema`] writes exactly the points HA's own `influxdb`
//! integration writes (so existing dashboards keep working), [`clean_schema`] this project's
//! typed, lossless layout for new installs. Both lean on `python` (HA's points are Python's
//! renderings of the values) and `escape` (influxdb-python's escaping). Timestamps are
//! microseconds. `api` holds what differs between the v1 and v2 APIs, `writer` the HTTP side and
//! the [`crate::sink::Sink`] impl ([`InfluxSink`]), `config` the `[sink.influxdb]` keys.
//!
//! Errors: a 400 (a field type conflict, an unparsable line) is isolated by splitting the batch
//! until the bad point stands alone ([`crate::sink::split`]); only that point is dead-lettered and
//! the rest is written, unless every point of the batch is refused (then the write fails, cursor
//! held).
//! 5xx, 429 and network errors are `Unavailable` (the runner retries, the cursor held);
//! 401/403 are `Unauthorized`.

mod api;
pub mod clean_schema;
mod config;
mod escape;
pub mod ha_schema;
pub(crate) mod python;
#[cfg(test)]
mod testing;
mod writer;

pub use api::secret_source;
pub use clean_schema::CleanEncoder;
pub use config::{
    CleanSchemaOptions, ComponentConfig, FieldType, HaSchemaOptions, InfluxApi, InfluxConfig,
    InfluxSchema, MeasurementAttr, MetadataTag,
};
pub use ha_schema::HaEncoder;
pub use writer::InfluxSink;

/// What an encoder did with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// One line (with its trailing `\n`) was appended.
    Written,
    /// Nothing was appended: HA-compatible mode skips `unknown`, `unavailable` and empty states,
    /// as HA's integration does.
    Skipped,
}

//! The InfluxDB sink: line protocol over HTTP, gzip, batching; the v1 and v2 write APIs (which
//! also cover InfluxDB 3 and VictoriaMetrics).
//!
//! Errors: a 400 (a field type conflict, an unparsable line) is isolated by splitting the batch
//! until the bad point stands alone; only that point is dead-lettered and the rest is written.
//! 5xx, 429 and network errors are `Unavailable` (the runner retries, the cursor held);
//! 401/403 are `Unauthorized`.

mod config;
pub mod line;
mod writer;

pub use config::{
    CleanSchemaOptions, ComponentConfig, FieldType, HaSchemaOptions, InfluxApi, InfluxConfig,
    InfluxSchema, MeasurementAttr,
};
pub use writer::InfluxSink;

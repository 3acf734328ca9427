//! The InfluxDB sink: line protocol over HTTP (v1 and v2 write APIs). (In progress.)

pub mod line;

//! The `clean` schema ([`CleanEncoder`]): this project's own, for new installs.
//!
//! Measurement `states` (dots replaced: InfluxDB 3 breaks on them), tags `domain`, full
//! `entity_id` and `instance`, fields `state` (string, always) and `value` (float, when the state
//! is numeric or on/off-like), and only the allowlisted attributes, each field with one type
//! forever (a value that does not fit goes to `<field>_str`), so `field type conflict` cannot
//! happen. Unlike HA it keeps `unknown`/`unavailable`/empty states (field `state` only, no
//! `value`): they are real history (outages), and clean mode is lossless.
//!
//! Events (`subscribe = "all"`) go to measurement `events` (`clean.events_measurement`): tags
//! `event_type` and `instance`, fields `data` (the event's JSON), `context_id` and `origin`, at
//! `time_fired`.
//!
//! HA's statistics go to measurement `statistics`: tags `statistic_id`, `period` (`5minute`,
//! `hour`), `unit` and `instance`, float fields `mean`, `min`, `max`, `state` and `sum` (those
//! HA gave), at the start of the period. A row HA corrected is written again and replaces the
//! point.

use std::fmt::{self, Write as _};

use super::Encoded;
use super::config::{CleanSchemaOptions, FieldType, MetadataTag};
use super::escape::{Escaper, write_quoted};
use super::python::{Py, parse_attributes, py_float, write_py_float};
use crate::sink::config::TimeColumn;
use crate::sink::{JournalEvent, JournalRow, JournalStatistic};
use crate::store::registry::EntityMetadata;

/// Encodes rows in the clean schema (see the module docs).
pub struct CleanEncoder {
    /// Already escaped.
    measurement: String,
    /// Already escaped.
    events_measurement: String,
    attributes: Vec<CleanAttr>,
    /// Registry fields written as tags (`metadata_tags`).
    metadata_tags: Vec<MetadataTag>,
}

struct CleanAttr {
    /// The attribute's name in HA.
    name: String,
    /// The field name (escaped); `state`, `value` and `time` become `<name>_attr`.
    field: String,
    pin: Option<FieldType>,
}

impl CleanEncoder {
    /// Checks the options; errors name the option (a pinned field that is not allowlisted, two
    /// attributes that would write the same field, an empty name).
    pub fn new(opts: &CleanSchemaOptions) -> Result<Self, String> {
        let measurement = opts.measurement.as_deref().unwrap_or("states");
        if measurement.is_empty() {
            return Err("clean.measurement: empty; leave it out for the default 'states'".into());
        }
        let mut escaped = String::new();
        let _ = Escaper::tag(&mut escaped).write_str(&measurement.replace('.', "_"));
        let events = opts.events_measurement.as_deref().unwrap_or("events");
        if events.is_empty() {
            return Err(
                "clean.events_measurement: empty; leave it out for the default 'events'".into(),
            );
        }
        let mut events_measurement = String::new();
        let _ = Escaper::tag(&mut events_measurement).write_str(&events.replace('.', "_"));
        for name in opts.field_types.keys() {
            if !opts.attributes.contains(name) {
                return Err(format!(
                    "clean.field_types: '{name}' is not in clean.attributes; add it there (field_types pins attribute fields)"
                ));
            }
        }
        let mut attributes: Vec<CleanAttr> = Vec::new();
        // Every field name a row can get, to refuse two attributes writing the same field.
        let mut names: Vec<String> = vec!["state".into(), "value".into()];
        for name in &opts.attributes {
            if name.is_empty() {
                return Err("clean.attributes: an attribute name is empty".into());
            }
            if attributes.iter().any(|a| a.name == *name) {
                return Err(format!("clean.attributes: '{name}' is listed twice"));
            }
            let field = match name.as_str() {
                "state" | "value" | "time" => format!("{name}_attr"),
                _ => name.clone(),
            };
            for candidate in [field.clone(), format!("{field}_str")] {
                if names.contains(&candidate) {
                    return Err(format!(
                        "clean.attributes: '{name}' would write field '{candidate}', which another field already uses"
                    ));
                }
                names.push(candidate);
            }
            let mut escaped_field = String::new();
            let _ = Escaper::tag(&mut escaped_field).write_str(&field);
            attributes.push(CleanAttr {
                name: name.clone(),
                field: escaped_field,
                pin: opts.field_types.get(name).copied(),
            });
        }
        Ok(CleanEncoder {
            measurement: escaped,
            events_measurement,
            attributes,
            metadata_tags: Vec::new(),
        })
    }

    /// Writes these registry fields as tags of each state point (an entity not in the registry,
    /// or without the field, gets no such tag: InfluxDB has no empty tags).
    pub fn with_metadata_tags(mut self, tags: &[MetadataTag]) -> Self {
        self.metadata_tags = tags.to_vec();
        self
    }

    /// Whether state points carry registry tags.
    pub fn has_metadata_tags(&self) -> bool {
        !self.metadata_tags.is_empty()
    }

    /// Appends the line for `row` (timestamp in microseconds). Always [`Encoded::Written`].
    pub fn encode(&self, row: &JournalRow, time: TimeColumn, out: &mut String) -> Encoded {
        self.encode_with(row, None, time, out)
    }

    /// Like [`CleanEncoder::encode`], with the entity's registry metadata for `metadata_tags`.
    pub fn encode_with(
        &self,
        row: &JournalRow,
        metadata: Option<&EntityMetadata>,
        time: TimeColumn,
        out: &mut String,
    ) -> Encoded {
        out.push_str(&self.measurement);
        write_tags(
            out,
            [
                ("domain", row.domain()),
                ("entity_id", row.entity_id.as_str()),
                ("instance", &*row.instance),
            ],
        );
        if let Some(m) = metadata {
            for tag in &self.metadata_tags {
                let labels;
                let value = match tag {
                    MetadataTag::Name => m.name.as_deref(),
                    MetadataTag::Area => m.area.as_deref(),
                    MetadataTag::Floor => m.floor.as_deref(),
                    MetadataTag::Device => m.device.as_deref(),
                    MetadataTag::Labels => {
                        labels = m.labels.join(",");
                        Some(labels.as_str())
                    }
                };
                write_tags(out, [(tag.key(), value.unwrap_or(""))]);
            }
        }
        out.push_str(" state=");
        write_quoted(out, &row.state);
        if let Some(v) = row.value.filter(|v| v.is_finite()) {
            out.push_str(",value=");
            let _ = write_py_float(out, v);
        }
        if !self.attributes.is_empty() {
            let attrs = parse_attributes(&row.attributes);
            for (i, (key, value)) in attrs.iter().enumerate() {
                if let Some(a) = self.attributes.iter().find(|a| a.name == *key) {
                    // A key given twice (never by HA, whose attributes are a dict) is read as
                    // `json.loads` reads it: the last value, so the line has each field once.
                    if attrs[i + 1..].iter().any(|(k, _)| k == key) {
                        continue;
                    }
                    a.write(value, out);
                }
            }
        }
        let _ = writeln!(out, " {}", time.micros(row));
        Encoded::Written
    }
}

impl CleanEncoder {
    /// Appends the line for an event (timestamp in microseconds: `time_fired`).
    pub fn encode_event(&self, event: &JournalEvent, out: &mut String) {
        out.push_str(&self.events_measurement);
        write_tags(
            out,
            [
                ("event_type", event.event_type.as_str()),
                ("instance", &*event.instance),
            ],
        );
        out.push_str(" data=");
        write_quoted(out, &event.data);
        for (k, v) in [
            ("context_id", event.context_id.as_deref()),
            ("origin", event.origin.as_deref()),
        ] {
            if let Some(v) = v {
                out.push(',');
                out.push_str(k);
                out.push('=');
                write_quoted(out, v);
            }
        }
        let _ = writeln!(out, " {}", event.time_fired_us);
    }
}

/// Writes a statistic row as one line of measurement `statistics` (see the module docs);
/// `Skipped` when HA gave no value at all (a line needs a field).
pub fn encode_statistic(row: &JournalStatistic, out: &mut String) -> Encoded {
    let fields = [
        ("mean", row.mean),
        ("min", row.min),
        ("max", row.max),
        ("state", row.state),
        ("sum", row.sum),
    ];
    if fields.iter().all(|(_, v)| v.is_none_or(|v| !v.is_finite())) {
        return Encoded::Skipped;
    }
    out.push_str("statistics");
    write_tags(
        out,
        [
            ("statistic_id", row.statistic_id.as_str()),
            ("period", row.period.as_str()),
            ("unit", row.unit.as_deref().unwrap_or("")),
            ("instance", &*row.instance),
        ],
    );
    let mut first = true;
    for (k, v) in fields {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            continue;
        };
        out.push(if first { ' ' } else { ',' });
        first = false;
        out.push_str(k);
        out.push('=');
        let _ = write_py_float(out, v);
    }
    let _ = writeln!(out, " {}", row.start_us);
    Encoded::Written
}

/// `,key=value` for each tag with a value (an empty tag value is not valid line protocol).
fn write_tags<'a>(out: &mut String, tags: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (k, v) in tags {
        if !v.is_empty() {
            out.push(',');
            out.push_str(k);
            out.push('=');
            let _ = Escaper::tag(out).write_str(v);
        }
    }
}

impl CleanAttr {
    /// `,<field>=<typed value>`, or `,<field>_str="..."` when the value does not fit the field's
    /// type. Null writes nothing (the attribute is absent).
    fn write(&self, value: &Py<'_>, out: &mut String) {
        enum Typed<'v> {
            Float(f64),
            Int(i64),
            Bool(bool),
            Text(&'v Py<'v>),
        }
        let typed = match (self.pin, value) {
            (_, Py::None) => return,
            (Some(FieldType::String), v) => Some(Typed::Text(v)),
            (Some(FieldType::Int), v) => v.integer().map(Typed::Int),
            (Some(FieldType::Bool), Py::Bool(b)) => Some(Typed::Bool(*b)),
            (Some(FieldType::Bool), _) => None,
            (Some(FieldType::Float), Py::Str(s)) => {
                py_float(s).filter(|f| f.is_finite()).map(Typed::Float)
            }
            (None | Some(FieldType::Float), v) => v.number().map(Typed::Float),
        };
        let Some(typed) = typed else {
            return self.write_str_field(value, out);
        };
        out.push(',');
        out.push_str(&self.field);
        out.push('=');
        match typed {
            Typed::Float(f) => {
                let _ = write_py_float(out, f);
            }
            Typed::Int(i) => {
                let _ = write!(out, "{i}i");
            }
            Typed::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Typed::Text(v) => write_json_text(out, v),
        }
    }

    fn write_str_field(&self, value: &Py<'_>, out: &mut String) {
        out.push(',');
        out.push_str(&self.field);
        out.push_str("_str=");
        write_json_text(out, value);
    }
}

/// A quoted string field: strings as they are, anything else as compact JSON.
fn write_json_text(out: &mut String, value: &Py<'_>) {
    match value {
        Py::Str(s) => write_quoted(out, s),
        v => {
            out.push('"');
            let _ = write_json(&mut Escaper::string(out), v);
            out.push('"');
        }
    }
}

fn write_json(w: &mut impl fmt::Write, v: &Py<'_>) -> fmt::Result {
    match v {
        Py::None => w.write_str("null"),
        Py::Bool(b) => w.write_str(if *b { "true" } else { "false" }),
        Py::Int(i) => write!(w, "{i}"),
        Py::UInt(u) => write!(w, "{u}"),
        Py::Float(f) => write_py_float(w, *f),
        Py::Str(s) => w.write_str(&serde_json::to_string(s.as_ref()).unwrap_or_default()),
        Py::List(items) => {
            w.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write_json(w, item)?;
            }
            w.write_char(']')
        }
        Py::Dict(entries) => {
            w.write_char('{')?;
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                w.write_str(&serde_json::to_string(k.as_ref()).unwrap_or_default())?;
                w.write_char(':')?;
                write_json(w, item)?;
            }
            w.write_char('}')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::influx::testing::{FIRED, clean, encode_clean, row};
    use std::sync::Arc;

    #[test]
    fn a_statistic_is_one_point_of_measurement_statistics_with_the_values_ha_gave() {
        use crate::record::StatisticPeriod;
        let row = JournalStatistic {
            id: 1,
            instance: std::sync::Arc::from("home"),
            statistic_id: "sensor.energy meter".into(),
            unit: Some("kWh".into()),
            period: StatisticPeriod::Hour,
            start_us: 1_796_565_600_000_000,
            mean: None,
            min: None,
            max: None,
            state: Some(10.5),
            sum: Some(2.0),
            last_reset_us: None,
        };
        let mut out = String::new();
        assert!(matches!(encode_statistic(&row, &mut out), Encoded::Written));
        assert_eq!(
            out,
            "statistics,statistic_id=sensor.energy\\ meter,period=hour,unit=kWh,instance=home state=10.5,sum=2.0 1796565600000000\n"
        );
        let empty = JournalStatistic {
            state: None,
            sum: None,
            ..row
        };
        let mut out = String::new();
        assert!(matches!(
            encode_statistic(&empty, &mut out),
            Encoded::Skipped
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn metadata_tags_follow_the_fixed_tags_and_absent_values_write_none() {
        use crate::sink::influx::config::MetadataTag;
        let c = clean("").with_metadata_tags(&[
            MetadataTag::Area,
            MetadataTag::Floor,
            MetadataTag::Labels,
            MetadataTag::Name,
        ]);
        let meta = EntityMetadata {
            instance: "home".into(),
            entity_id: "sensor.t".into(),
            name: Some("Stove, left".into()),
            area_id: Some("kitchen".into()),
            area: Some("Kitchen".into()),
            floor: None,
            device: Some("never asked for".into()),
            labels: vec!["Heating".into(), "A=B".into()],
        };
        let encode = |m: Option<&EntityMetadata>| {
            let mut out = String::new();
            c.encode_with(
                &row("sensor.t", "21", "{}"),
                m,
                TimeColumn::TimeFired,
                &mut out,
            );
            out
        };
        assert_eq!(
            encode(Some(&meta)),
            format!(
                "states,domain=sensor,entity_id=sensor.t,instance=home,area=Kitchen,\
                 labels=Heating\\,A\\=B,name=Stove\\,\\ left state=\"21\",value=21.0 {FIRED}\n"
            )
        );
        // Not in the registry: the clean schema's own line.
        assert_eq!(encode(None), encode_clean(&c, &row("sensor.t", "21", "{}")));
    }

    #[test]
    fn clean_defaults() {
        let c = clean("");
        let lines: Vec<String> = [
            row(
                "sensor.living_room_temperature",
                "21.5",
                r#"{"unit_of_measurement":"°C"}"#,
            ),
            row("light.kitchen", "on", r#"{"brightness":255}"#),
            row("climate.hall", "heat", "{}"),
            // Kept, unlike HA mode: an outage is history too.
            row("sensor.t", "unavailable", "{}"),
            row("sensor.t", "unknown", "{}"),
            row("sensor.t", "", "{}"),
            row("sensor.t", "nan", "{}"),
        ]
        .iter()
        .map(|r| encode_clean(&c, r))
        .collect();
        assert_eq!(
            lines,
            [
                "states,domain=sensor,entity_id=sensor.living_room_temperature,instance=home state=\"21.5\",value=21.5 1700000000123456\n",
                "states,domain=light,entity_id=light.kitchen,instance=home state=\"on\",value=1.0 1700000000123456\n",
                "states,domain=climate,entity_id=climate.hall,instance=home state=\"heat\" 1700000000123456\n",
                "states,domain=sensor,entity_id=sensor.t,instance=home state=\"unavailable\" 1700000000123456\n",
                "states,domain=sensor,entity_id=sensor.t,instance=home state=\"unknown\" 1700000000123456\n",
                "states,domain=sensor,entity_id=sensor.t,instance=home state=\"\" 1700000000123456\n",
                "states,domain=sensor,entity_id=sensor.t,instance=home state=\"nan\" 1700000000123456\n",
            ]
        );
    }

    #[test]
    fn clean_measurement_and_instance_are_escaped() {
        let c = clean("measurement = \"ha.states v2\"");
        let mut r = row("sensor.t", "say \"hi\"\\", "{}");
        r.instance = Arc::from("main house,1");
        assert_eq!(
            encode_clean(&c, &r),
            "ha_states\\ v2,domain=sensor,entity_id=sensor.t,instance=main\\ house\\,1 state=\"say \\\"hi\\\"\\\\\" 1700000000123456\n"
        );
        r.instance = Arc::from("");
        assert!(
            encode_clean(&c, &r)
                .starts_with("ha_states\\ v2,domain=sensor,entity_id=sensor.t state=")
        );
    }

    #[test]
    fn clean_writes_a_duplicate_attribute_once_with_its_last_value() {
        // Found by the `influx_line` fuzz target: the field was written once per occurrence.
        let c = clean(r#"attributes = ["temperature"]"#);
        let r = row(
            "sensor.t",
            "20.5",
            r#"{"temperature":"warm","unit":"C","temperature":21.5}"#,
        );
        assert_eq!(
            encode_clean(&c, &r),
            "states,domain=sensor,entity_id=sensor.t,instance=home state=\"20.5\",value=20.5,temperature=21.5 1700000000123456\n"
        );
    }

    #[test]
    fn clean_attribute_allowlist_in_json_order() {
        let c = clean(
            r#"attributes = ["friendly_name", "brightness", "rgb_color", "on", "missing", "gone"]"#,
        );
        let r = row(
            "light.kitchen",
            "on",
            r#"{"rgb_color":[255,200,100],"icon":"mdi:x","brightness":255,"friendly_name":"Kit \"chen\"","on":true,"gone":null,"supported_features":40}"#,
        );
        assert_eq!(
            encode_clean(&c, &r),
            "states,domain=light,entity_id=light.kitchen,instance=home state=\"on\",value=1.0,\
             rgb_color_str=\"[255,200,100]\",brightness=255.0,friendly_name_str=\"Kit \\\"chen\\\"\",on=1.0 1700000000123456\n"
        );
    }

    #[test]
    fn clean_type_pinning_keeps_each_field_one_type() {
        let c = clean(
            r#"attributes = ["f", "i", "b", "s"]
               [field_types]
               f = "float"
               i = "int"
               b = "bool"
               s = "string""#,
        );
        let line = |attrs: &str| {
            let out = encode_clean(&c, &row("sensor.x", "x", attrs));
            let fields = out.split(' ').nth(1).unwrap().to_string();
            fields.strip_prefix("state=\"x\"").unwrap().to_string()
        };
        // Values that fit.
        assert_eq!(
            line(r#"{"f":1,"i":2,"b":true,"s":"t"}"#),
            r#",f=1.0,i=2i,b=true,s="t""#
        );
        assert_eq!(
            line(r#"{"f":" 2.5 ","i":3.0,"b":false,"s":4}"#),
            r#",f=2.5,i=3i,b=false,s="4""#
        );
        assert_eq!(
            line(r#"{"f":true,"i":"-7","s":[1,"a"]}"#),
            r#",f=1.0,i=-7i,s="[1,\"a\"]""#
        );
        // Values that do not: to `<field>_str`, never into the typed field.
        assert_eq!(
            line(r#"{"f":"warm","i":2.5,"b":"on","s":null}"#),
            r#",f_str="warm",i_str="2.5",b_str="on""#
        );
        assert_eq!(
            line(r#"{"f":"nan","i":9223372036854775808,"b":1}"#),
            r#",f_str="nan",i_str="9223372036854775808",b_str="1""#
        );
        assert_eq!(
            line(r#"{"i":true,"f":{"a":1}}"#),
            r#",i_str="true",f_str="{\"a\":1}""#
        );
        // Unpinned: numbers and bools are floats, everything else text.
        let c = clean(r#"attributes = ["a"]"#);
        let field = |attrs: &str| {
            let out = encode_clean(&c, &row("sensor.x", "x", attrs));
            out.split(' ')
                .nth(1)
                .unwrap()
                .trim_start_matches("state=\"x\"")
                .to_string()
        };
        assert_eq!(field(r#"{"a":3}"#), ",a=3.0");
        assert_eq!(field(r#"{"a":1e-7}"#), ",a=1e-07");
        assert_eq!(field(r#"{"a":false}"#), ",a=0.0");
        assert_eq!(field(r#"{"a":"3"}"#), r#",a_str="3""#);
        assert_eq!(field(r#"{"a":"line\nbreak"}"#), r#",a_str="line\nbreak""#);
        assert_eq!(field(r#"{"a":null}"#), "");
    }

    #[test]
    fn clean_reserved_names_and_option_errors() {
        let c = clean(r#"attributes = ["value", "state", "time"]"#);
        let out = encode_clean(
            &c,
            &row("sensor.x", "5", r#"{"value":1,"state":"s","time":2}"#),
        );
        assert_eq!(
            out,
            "states,domain=sensor,entity_id=sensor.x,instance=home state=\"5\",value=5.0,value_attr=1.0,state_attr_str=\"s\",time_attr=2.0 1700000000123456\n"
        );
        let err = |toml: &str| {
            CleanEncoder::new(&toml::from_str(toml).unwrap())
                .err()
                .unwrap()
        };
        assert!(err(r#"attributes = ["x", "x_str"]"#).starts_with("clean.attributes: 'x_str'"));
        assert!(err(r#"attributes = ["a", "a"]"#).contains("listed twice"));
        assert!(err(r#"attributes = [""]"#).starts_with("clean.attributes"));
        assert!(err("[field_types]\nx = \"int\"").starts_with("clean.field_types: 'x'"));
        assert!(err(r#"measurement = """#).starts_with("clean.measurement"));
    }
}

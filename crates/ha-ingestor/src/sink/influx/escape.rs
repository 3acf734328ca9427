//! Line protocol escaping, influxdb-python's in both schemas: in the measurement, tag keys, tag
//! values and field keys `\`, space, `,`, `=` get a backslash and a newline becomes `\n`; in
//! string field values `\` and `"` get a backslash and a newline becomes `\n`.
//!
//! Why influxdb-python's rules: they are what HA's integration sends, so the `ha` schema must
//! match them, and InfluxDB reads them back as the values meant (the tests read lines back).

use std::fmt::{self, Write as _};

/// Appends to a String, escaping on the way (influxdb-python's rules, see the module docs), so
/// that values can be rendered straight into the output.
pub(super) struct Escaper<'o> {
    out: &'o mut String,
    /// Tag-style (measurement, tag keys and values, field keys) or string-field-style.
    tag: bool,
}

impl<'o> Escaper<'o> {
    pub(super) fn tag(out: &'o mut String) -> Self {
        Escaper { out, tag: true }
    }

    pub(super) fn string(out: &'o mut String) -> Self {
        Escaper { out, tag: false }
    }
}

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let tag = self.tag;
        let special = |b: u8| match b {
            b'\\' | b'\n' => true,
            b' ' | b',' | b'=' => tag,
            b'"' => !tag,
            _ => false,
        };
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            if special(b) {
                self.out.push_str(&s[start..i]);
                self.out.push_str(if b == b'\n' { "\\n" } else { "\\" });
                if b != b'\n' {
                    self.out.push(b as char);
                }
                start = i + 1;
            }
        }
        self.out.push_str(&s[start..]);
        Ok(())
    }
}

/// A string field value: `"..."` with `\`, `"` and newlines escaped.
pub(super) fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    let _ = Escaper::string(out).write_str(s);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use crate::sink::config::TimeColumn;
    use crate::sink::influx::HaSchemaOptions;
    use crate::sink::influx::ha_schema::HaEncoder;
    use crate::sink::influx::testing::{FIRED, clean, encode_clean, row};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A small line protocol reader (InfluxDB's unescaping rules as influxdb-python expects them:
    /// `\` before any char yields that char, `\n` yields a newline), to check that what we write
    /// reads back as the values we meant.
    type Pairs = Vec<(String, String)>;

    fn read_line(line: &str) -> (String, Pairs, Pairs, i64) {
        let mut chars = line.strip_suffix('\n').unwrap().chars().peekable();
        let mut token = |stops: &[char], quoted: bool| -> (String, Option<char>) {
            let mut s = String::new();
            let mut in_quotes = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some(c) => s.push(c),
                        None => break,
                    },
                    '"' if quoted => in_quotes = !in_quotes,
                    c if !in_quotes && stops.contains(&c) => return (s, Some(c)),
                    c => s.push(c),
                }
            }
            (s, None)
        };
        let (measurement, mut stop) = token(&[',', ' '], false);
        let mut tags = Vec::new();
        while stop == Some(',') {
            let (k, _) = token(&['='], false);
            let (v, s) = token(&[',', ' '], false);
            tags.push((k, v));
            stop = s;
        }
        let mut fields = Vec::new();
        loop {
            let (k, _) = token(&['='], false);
            let (v, s) = token(&[',', ' '], true);
            fields.push((k, v));
            if s != Some(',') {
                break;
            }
        }
        let (time, _) = token(&[], false);
        (measurement, tags, fields, time.parse().unwrap())
    }

    #[test]
    fn lines_read_back_as_written() {
        let nasty = "a \"b\", c=d\\e\nf";
        let attrs = format!(
            r#"{{"unit_of_measurement":{u},"friendly_name":{u},"{k}":{u}}}"#,
            u = serde_json::to_string(nasty).unwrap(),
            k = "k ,=\\\\"
        );
        let enc = HaEncoder::new(&HaSchemaOptions {
            tags_attributes: vec!["friendly_name".into()],
            tags: BTreeMap::from([("site".into(), nasty.into())]),
            ..Default::default()
        })
        .unwrap();
        let mut out = String::new();
        enc.encode(
            &row("sensor.t", nasty, &attrs),
            TimeColumn::TimeFired,
            &mut out,
        );
        let (measurement, tags, fields, time) = read_line(&out);
        assert_eq!(measurement, nasty);
        let tag = |k: &str| tags.iter().find(|t| t.0 == k).map(|t| t.1.as_str());
        assert_eq!(tag("friendly_name"), Some(nasty));
        assert_eq!(tag("site"), Some(nasty));
        assert_eq!(tag("entity_id"), Some("t"));
        assert_eq!(
            fields,
            [
                ("k ,=\\_str".to_string(), nasty.to_string()),
                ("state".into(), nasty.into())
            ]
        );
        assert_eq!(time, FIRED);

        let c = clean(r#"attributes = ["friendly_name"]"#);
        let mut r = row("sensor.t", nasty, &attrs);
        r.instance = Arc::from(nasty);
        let (measurement, tags, fields, _) = read_line(&encode_clean(&c, &r));
        assert_eq!(measurement, "states");
        assert_eq!(tags[2], ("instance".into(), nasty.into()));
        assert_eq!(
            fields,
            [
                ("state".to_string(), nasty.to_string()),
                ("friendly_name_str".into(), nasty.into())
            ]
        );
    }
}

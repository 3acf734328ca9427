//! The `ha` schema ([`HaEncoder`]): the points Home Assistant's own `influxdb` integration
//! writes, byte for byte, so that existing dashboards and queries keep working.
//!
//! The reference is HA's `event_to_json` (2024.3, unchanged through 2026.2) fed to influxdb-python
//! 5.3.1's `make_lines`, which is what HA uses for the v1 API. The rules (reference:
//! `ingestor-anchors.md` §2.3, `influx-schema-observed.md`):
//! - `unknown`, `unavailable` and `""` states are skipped.
//! - The state goes through Python's `float()`: a number gives field `value` only; a state in HA's
//!   `state_as_number` map (`on` → 1, `off` → 0, ...) gives `state` and `value`; anything else gives
//!   `state` only.
//! - Measurement: `component_config*` override, global override, then `measurement_attr`
//!   (unit / `domain__device_class` / entity_id), then `default_measurement` or the entity_id.
//! - Tags `domain` and `entity_id` (the object id only), `tags_attributes`, then the static `tags`.
//! - Each attribute, in the JSON's order (collisions depend on it): `float(value)` as field `key`,
//!   else `key_str` = Python `str(value)` plus a numeric companion `key` when the text has two
//!   adjacent digits and at most one dot; a name already taken gets one `_`; NaN/±inf attribute
//!   fields are dropped (the state's `value` is not checked, as in HA).
//! - Every number is a float rendered like Python's `repr` (`21.0`, `1e-07`); tags and fields are
//!   sorted by key, as influxdb-python does.
//!
//! Python's side of this (`float()`, `str()`, `repr()`) is in `python`.
//!
//! Known differences. From what we receive (HA renders in-process Python objects, we get its
//! JSON): a datetime attribute is an ISO string with `T` (HA's `str()` has a space; the numeric
//! companion is the same), and a NaN/inf float attribute arrives as `null`, so it gives
//! `key_str="None"` where HA drops it. From our config types: an empty `ignore_attributes` cannot
//! clear an earlier level's list (`component_config_glob` keeps file order, as in HA). Our `repr`
//! prints unassigned code points inside lists and dicts where Python escapes them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use super::Encoded;
use super::config::{ComponentConfig, HaSchemaOptions, MeasurementAttr, MetadataTag};
use super::escape::{Escaper, write_quoted};
use super::python::{
    Py, digits_value, has_digit_tail, parse_attributes, py_float, py_float_of, py_str,
    write_py_float, write_py_str,
};
use crate::glob::Glob;
use crate::sink::JournalRow;
use crate::sink::config::TimeColumn;
use crate::store::registry::EntityMetadata;

/// Encodes rows exactly as HA's `influxdb` integration would (see the module docs). Built once from
/// the options (globs compiled, lists sorted); `encode` allocates only small per-row vectors.
pub struct HaEncoder {
    measurement_attr: MeasurementAttr,
    default_measurement: Option<String>,
    override_measurement: Option<String>,
    /// Static tags, applied last (they may replace `domain`/`entity_id`).
    tags: Vec<(String, String)>,
    /// Sorted, for binary search.
    tags_attributes: Vec<String>,
    /// Sorted, for binary search.
    ignore_attributes: Vec<String>,
    exact: HashMap<String, ComponentConfig>,
    domains: HashMap<String, ComponentConfig>,
    globs: Vec<(Glob, ComponentConfig)>,
    /// An `instance` tag with the row's instance: not HA's, added when several instances feed
    /// the sink (see [`HaEncoder::with_instance_tag`]).
    instance_tag: bool,
    /// Registry fields as tags: not HA's, only when the user asks (`metadata_tags`).
    metadata_tags: Vec<MetadataTag>,
}

/// The `component_config*` entries that apply to one entity, merged as HA's `EntityValues` does:
/// domain, then each matching glob in order, then the exact entity, each key replacing the last.
#[derive(Default)]
struct EntityOptions<'e> {
    override_measurement: Option<&'e str>,
    ignore_attributes: &'e [String],
}

impl<'e> EntityOptions<'e> {
    /// Python's `dict.update`. Our config cannot tell "unset" from "empty list", so an empty
    /// `ignore_attributes` does not replace an earlier one.
    fn apply(&mut self, c: &'e ComponentConfig) {
        if let Some(m) = &c.override_measurement {
            self.override_measurement = Some(m);
        }
        if !c.ignore_attributes.is_empty() {
            self.ignore_attributes = &c.ignore_attributes;
        }
    }
}

/// Where the measurement name comes from (rendered straight into the output).
enum Measurement<'b> {
    Text(&'b str),
    /// `str()` of the unit attribute: HA accepts any type (`5` gives measurement `5`).
    Value(&'b Py<'b>),
    /// `f"{domain}__{device_class}"`.
    DomainClass(&'b str, &'b Py<'b>),
}

impl HaEncoder {
    /// Compiles the options. Errors name the option: an exact `component_config` key that is not an
    /// entity id, an empty glob, an empty tag name.
    pub fn new(opts: &HaSchemaOptions) -> Result<Self, String> {
        let mut exact = HashMap::new();
        for (id, c) in &opts.component_config {
            // HA validates these with `cv.entity_id`, which lowercases.
            let id = id.to_lowercase();
            match id.split_once('.') {
                Some((d, o)) if !d.is_empty() && !o.is_empty() => {}
                _ => {
                    return Err(format!(
                        "ha.component_config: '{id}' is not an entity id (domain.object_id); use component_config_glob for patterns"
                    ));
                }
            }
            exact.insert(id, c.clone());
        }
        let mut globs = Vec::new();
        for (pattern, c) in &opts.component_config_glob {
            if pattern.is_empty() {
                return Err("ha.component_config_glob: a pattern is empty".into());
            }
            globs.push((Glob::new(pattern), c.clone()));
        }
        let mut tags = Vec::new();
        for (k, v) in &opts.tags {
            if k.is_empty() {
                return Err(format!("ha.tags: a tag with value '{v}' has an empty name"));
            }
            tags.push((k.clone(), v.clone()));
        }
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        // HA tests these for truthiness: an empty string means "not set".
        let set = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Ok(HaEncoder {
            measurement_attr: opts.measurement_attr,
            default_measurement: set(&opts.default_measurement),
            override_measurement: set(&opts.override_measurement),
            tags,
            tags_attributes: sorted(&opts.tags_attributes),
            ignore_attributes: sorted(&opts.ignore_attributes),
            exact,
            domains: opts
                .component_config_domain
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            globs,
            instance_tag: false,
            metadata_tags: Vec::new(),
        })
    }

    /// Adds HA's registry fields as tags, after HA's own and before the static `tags` (which win
    /// on the same key). None by default: the points stay exactly HA's.
    pub fn with_metadata_tags(mut self, tags: &[MetadataTag]) -> Self {
        self.metadata_tags = tags.to_vec();
        self
    }

    /// Whether it writes registry fields.
    pub fn has_metadata_tags(&self) -> bool {
        !self.metadata_tags.is_empty()
    }

    /// Tags every point with `instance` (the row's instance name), so that two homes' points of
    /// the same entity stay apart. Off by default: one home's points stay exactly HA's.
    pub fn with_instance_tag(mut self, on: bool) -> Self {
        self.instance_tag = on;
        self
    }

    fn entity_options(&self, entity_id: &str, domain: &str) -> EntityOptions<'_> {
        let mut merged = EntityOptions::default();
        if let Some(c) = self.domains.get(domain) {
            merged.apply(c);
        }
        for (glob, c) in &self.globs {
            if glob.matches(entity_id) {
                merged.apply(c);
            }
        }
        if let Some(c) = self.exact.get(entity_id) {
            merged.apply(c);
        }
        merged
    }

    /// HA's measurement choice. Returns it with `include_uom` and `include_dc`.
    fn measurement<'b>(
        &'b self,
        row: &'b JournalRow,
        attrs: &'b [(Cow<'b, str>, Py<'b>)],
        entity: &EntityOptions<'b>,
    ) -> (Measurement<'b>, bool, bool) {
        if let Some(m) = entity.override_measurement.filter(|m| !m.is_empty()) {
            return (Measurement::Text(m), true, true);
        }
        if let Some(m) = &self.override_measurement {
            return (Measurement::Text(m), true, true);
        }
        let mut include_dc = true;
        let chosen = match self.measurement_attr {
            MeasurementAttr::EntityId => Some(Measurement::Text(&row.entity_id)),
            MeasurementAttr::DomainDeviceClass => match attr(attrs, "device_class") {
                None | Some(Py::None) => Some(Measurement::Text(row.domain())),
                Some(dc) => {
                    include_dc = false;
                    Some(Measurement::DomainClass(row.domain(), dc))
                }
            },
            MeasurementAttr::UnitOfMeasurement => match attr(attrs, "unit_of_measurement") {
                None | Some(Py::None) => None,
                Some(Py::Str(s)) if s.is_empty() => None,
                Some(unit) => Some(Measurement::Value(unit)),
            },
        };
        match chosen {
            Some(Measurement::Text("")) | None => {
                let m = self
                    .default_measurement
                    .as_deref()
                    .unwrap_or(&row.entity_id);
                (Measurement::Text(m), true, include_dc)
            }
            Some(m) => {
                let include_uom = self.measurement_attr != MeasurementAttr::UnitOfMeasurement;
                (m, include_uom, include_dc)
            }
        }
    }

    /// Appends the line for `row` (timestamp in microseconds), or nothing for a state HA skips.
    pub fn encode(&self, row: &JournalRow, time: TimeColumn, out: &mut String) -> Encoded {
        self.encode_with(row, None, time, out)
    }

    /// Like [`HaEncoder::encode`], with the entity's registry metadata for `metadata_tags`.
    pub fn encode_with(
        &self,
        row: &JournalRow,
        metadata: Option<&EntityMetadata>,
        time: TimeColumn,
        out: &mut String,
    ) -> Encoded {
        let state = row.state.as_str();
        if matches!(state, "" | "unknown" | "unavailable") {
            return Encoded::Skipped;
        }
        let attrs = parse_attributes(&row.attributes);
        let domain = row.domain();
        let entity = self.entity_options(&row.entity_id, domain);

        let mut fields = Fields(Vec::with_capacity(attrs.len() + 2));
        match py_float(state) {
            Some(v) => fields.set(Key::new("value"), Val::Num(v)),
            None => {
                fields.set(Key::new("state"), Val::Text(Cow::Borrowed(state)));
                if let Some(v) = state_as_number(state) {
                    fields.set(Key::new("value"), Val::Num(v));
                }
            }
        }
        let (measurement, include_uom, include_dc) = self.measurement(row, &attrs, &entity);

        let mut tags: Vec<(&str, Tag)> = Vec::with_capacity(2 + self.tags.len());
        tags.push(("domain", Tag::Text(domain)));
        tags.push(("entity_id", Tag::Text(row.object_id())));
        for (key, value) in &attrs {
            let key = key.as_ref();
            if self
                .tags_attributes
                .binary_search_by(|t| t.as_str().cmp(key))
                .is_ok()
            {
                set_tag(&mut tags, key, Tag::Value(value));
                continue;
            }
            if (key == "unit_of_measurement" && !include_uom)
                || (key == "device_class" && !include_dc)
                || entity.ignore_attributes.iter().any(|i| i == key)
                || self
                    .ignore_attributes
                    .binary_search_by(|t| t.as_str().cmp(key))
                    .is_ok()
            {
                continue;
            }
            let mut k = Key::new(key);
            if fields.find(k).is_some() {
                k.underscore = true; // once, with no second check, as HA
            }
            match py_float_of(value) {
                Some(v) => fields.set(k, Val::Num(v)),
                None => {
                    let text = py_str(value);
                    let companion = has_digit_tail(&text).then(|| digits_value(&text));
                    fields.set(
                        Key {
                            str_suffix: true,
                            ..k
                        },
                        Val::Text(text),
                    );
                    if let Some(v) = companion {
                        fields.set(k, Val::Num(v));
                    }
                }
            }
            fields.drop_non_finite(k);
        }
        if self.instance_tag {
            set_tag(&mut tags, "instance", Tag::Text(&row.instance));
        }
        let labels;
        if let Some(m) = metadata {
            labels = m.labels.join(",");
            for tag in &self.metadata_tags {
                let value = match tag {
                    MetadataTag::Name => m.name.as_deref(),
                    MetadataTag::Area => m.area.as_deref(),
                    MetadataTag::Floor => m.floor.as_deref(),
                    MetadataTag::Device => m.device.as_deref(),
                    MetadataTag::Labels => Some(labels.as_str()),
                };
                if let Some(v) = value {
                    set_tag(&mut tags, tag.key(), Tag::Text(v));
                }
            }
        }
        for (k, v) in &self.tags {
            set_tag(&mut tags, k, Tag::Text(v));
        }

        let mut esc = Escaper::tag(out);
        let _ = match measurement {
            Measurement::Text(m) => esc.write_str(m),
            Measurement::Value(v) => write_py_str(&mut esc, v),
            Measurement::DomainClass(d, dc) => esc
                .write_str(d)
                .and_then(|()| esc.write_str("__"))
                .and_then(|()| write_py_str(&mut esc, dc)),
        };
        tags.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in &tags {
            // influxdb-python drops tags whose key or value is empty (None is empty too).
            if k.is_empty() || v.is_empty() {
                continue;
            }
            out.push(',');
            let _ = Escaper::tag(out).write_str(k);
            out.push('=');
            let mut esc = Escaper::tag(out);
            let _ = match v {
                Tag::Text(t) => esc.write_str(t),
                Tag::Value(v) => write_py_str(&mut esc, v),
            };
        }
        fields.write(out);
        let _ = writeln!(out, " {}", time.micros(row));
        Encoded::Written
    }
}

/// A tag value: text, or an attribute that influxdb-python renders with `str()`.
enum Tag<'b> {
    Text(&'b str),
    Value(&'b Py<'b>),
}

impl Tag<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Tag::Text(t) => t.is_empty(),
            Tag::Value(Py::Str(s)) => s.is_empty(),
            Tag::Value(Py::None) => true,
            Tag::Value(_) => false,
        }
    }
}

/// Dict assignment: replaces an existing key.
fn set_tag<'b>(tags: &mut Vec<(&'b str, Tag<'b>)>, key: &'b str, value: Tag<'b>) {
    match tags.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => tags.push((key, value)),
    }
}

/// A field name: `base`, then `_` when renamed after a collision, then `_str` for text. Kept in
/// parts so that no name is allocated; compared as the bytes of the whole name.
#[derive(Clone, Copy)]
struct Key<'b> {
    base: &'b str,
    underscore: bool,
    str_suffix: bool,
}

impl<'b> Key<'b> {
    fn new(base: &'b str) -> Self {
        Key {
            base,
            underscore: false,
            str_suffix: false,
        }
    }

    fn len(self) -> usize {
        self.base.len() + usize::from(self.underscore) + 4 * usize::from(self.str_suffix)
    }

    fn bytes(self) -> impl Iterator<Item = u8> + 'b {
        let under: &[u8] = if self.underscore { b"_" } else { b"" };
        let suffix: &[u8] = if self.str_suffix { b"_str" } else { b"" };
        self.base
            .bytes()
            .chain(under.iter().copied())
            .chain(suffix.iter().copied())
    }

    /// Byte order of the whole names (Python sorts by code point: the same order).
    fn order(self, other: Key<'_>) -> std::cmp::Ordering {
        if !(self.underscore || self.str_suffix || other.underscore || other.str_suffix) {
            return self.base.cmp(other.base);
        }
        self.bytes().cmp(other.bytes())
    }

    fn same(self, other: Key<'_>) -> bool {
        if self.len() != other.len() {
            return false;
        }
        if (self.underscore, self.str_suffix) == (other.underscore, other.str_suffix) {
            return self.base == other.base; // the common case, without the byte chain
        }
        self.bytes().eq(other.bytes())
    }
}

enum Val<'b> {
    Num(f64),
    Text(Cow<'b, str>),
}

/// HA's fields dict: set replaces, order does not matter (the output is sorted).
struct Fields<'b>(Vec<(Key<'b>, Val<'b>)>);

impl<'b> Fields<'b> {
    fn find(&self, key: Key<'_>) -> Option<usize> {
        self.0.iter().position(|(k, _)| k.same(key))
    }

    fn set(&mut self, key: Key<'b>, val: Val<'b>) {
        match self.find(key) {
            Some(i) => self.0[i] = (key, val),
            None => self.0.push((key, val)),
        }
    }

    /// HA's `if not math.isfinite(fields[key]): del fields[key]` (text fields are left alone).
    fn drop_non_finite(&mut self, key: Key<'_>) {
        if let Some(i) = self.find(key)
            && matches!(self.0[i].1, Val::Num(v) if !v.is_finite())
        {
            self.0.swap_remove(i);
        }
    }

    /// ` k=v,k=v` sorted by key, as influxdb-python writes them; empty keys are dropped.
    fn write(mut self, out: &mut String) {
        self.0.sort_unstable_by(|(a, _), (b, _)| a.order(*b));
        let mut first = true;
        for (k, v) in &self.0 {
            if k.len() == 0 {
                continue;
            }
            out.push(if first { ' ' } else { ',' });
            first = false;
            let _ = Escaper::tag(out).write_str(k.base);
            if k.underscore {
                out.push('_');
            }
            if k.str_suffix {
                out.push_str("_str");
            }
            out.push('=');
            match v {
                Val::Num(n) => {
                    let _ = write_py_float(out, *n);
                }
                Val::Text(t) => write_quoted(out, t),
            }
        }
    }
}

/// HA's `state_helper.state_as_number` for a state `float()` refused (`unknown` never gets here).
fn state_as_number(state: &str) -> Option<f64> {
    match state {
        "on" | "locked" | "above_horizon" | "open" | "home" => Some(1.0),
        "off" | "unlocked" | "below_horizon" | "closed" | "not_home" => Some(0.0),
        _ => None,
    }
}

fn attr<'b>(attrs: &'b [(Cow<'b, str>, Py<'b>)], name: &str) -> Option<&'b Py<'b>> {
    attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    //! Golden lines come from a reference run: HA 2024.3.3's own `event_to_json` fed to
    //! influxdb-python 5.3.1's `make_lines(precision="u")`, on the same entity, state and
    //! attribute JSON. They agree with `influx-schema-observed.md` (captured from a real HA) on
    //! every point it lists but one, see `ha_null_unit_falls_back_to_the_entity_id`.

    use super::*;
    use crate::sink::influx::testing::{clean, ha, row};

    /// `(entity_id, state, attributes, expected line without '\n')`; an empty expectation means
    /// skipped. Each line must be appended after what the buffer already holds.
    fn check_ha(options: &str, cases: &[(&str, &str, &str, &str)]) {
        check_ha_with(&toml::from_str(options).unwrap(), cases);
    }

    fn check_ha_with(options: &HaSchemaOptions, cases: &[(&str, &str, &str, &str)]) {
        let enc = HaEncoder::new(options).unwrap();
        for (entity_id, state, attributes, expected) in cases {
            let mut out = String::from("before\n");
            let got = enc.encode(
                &row(entity_id, state, attributes),
                TimeColumn::TimeFired,
                &mut out,
            );
            let what = format!("{entity_id} = {state:?} {attributes}");
            if expected.is_empty() {
                assert_eq!(got, Encoded::Skipped, "{what}");
                assert_eq!(out, "before\n", "{what}");
            } else {
                assert_eq!(got, Encoded::Written, "{what}");
                assert_eq!(out, format!("before\n{expected}\n"), "{what}");
            }
        }
    }

    #[test]
    fn ha_defaults_common_entities() {
        check_ha(
            "",
            &[
                (
                    "sensor.living_room_temperature",
                    "21.5",
                    r#"{"state_class": "measurement", "unit_of_measurement": "°C", "device_class": "temperature", "friendly_name": "Living Room Temperature"}"#,
                    r#"°C,domain=sensor,entity_id=living_room_temperature device_class_str="temperature",friendly_name_str="Living Room Temperature",state_class_str="measurement",value=21.5 1700000000123456"#,
                ),
                (
                    "light.kitchen",
                    "on",
                    r#"{"brightness": 255, "color_mode": "brightness", "supported_color_modes": ["brightness"], "friendly_name": "Kitchen", "supported_features": 40}"#,
                    r#"light.kitchen,domain=light,entity_id=kitchen brightness=255.0,color_mode_str="brightness",friendly_name_str="Kitchen",state="on",supported_color_modes_str="['brightness']",supported_features=40.0,value=1.0 1700000000123456"#,
                ),
                (
                    "light.desk",
                    "on",
                    r#"{"min_color_temp_kelvin": 2000, "effect_list": ["colorloop", "random"], "supported_color_modes": ["color_temp", "xy"], "color_mode": "xy", "brightness": 180, "hs_color": [30.0, 60.5], "rgb_color": [255, 200, 100], "xy_color": [0.5, 0.4], "color_temp_kelvin": null, "effect": null, "friendly_name": "Desk"}"#,
                    r#"light.desk,domain=light,entity_id=desk brightness=180.0,color_mode_str="xy",color_temp_kelvin_str="None",effect_list_str="['colorloop', 'random']",effect_str="None",friendly_name_str="Desk",hs_color_str="[30.0, 60.5]",min_color_temp_kelvin=2000.0,rgb_color=255200100.0,rgb_color_str="[255, 200, 100]",state="on",supported_color_modes_str="['color_temp', 'xy']",value=1.0,xy_color_str="[0.5, 0.4]" 1700000000123456"#,
                ),
                (
                    "climate.hall",
                    "heat",
                    r#"{"hvac_modes": ["off", "heat"], "min_temp": 7, "max_temp": 35, "current_temperature": 20.5, "temperature": 21, "hvac_action": "heating", "preset_mode": null, "friendly_name": "Hall", "supported_features": 401}"#,
                    r#"climate.hall,domain=climate,entity_id=hall current_temperature=20.5,friendly_name_str="Hall",hvac_action_str="heating",hvac_modes_str="['off', 'heat']",max_temp=35.0,min_temp=7.0,preset_mode_str="None",state="heat",supported_features=401.0,temperature=21.0 1700000000123456"#,
                ),
                (
                    "binary_sensor.front_door",
                    "off",
                    r#"{"device_class": "door", "friendly_name": "Front Door"}"#,
                    r#"binary_sensor.front_door,domain=binary_sensor,entity_id=front_door device_class_str="door",friendly_name_str="Front Door",state="off",value=0.0 1700000000123456"#,
                ),
                (
                    "binary_sensor.motion",
                    "on",
                    r#"{"device_class": "motion", "friendly_name": "Motion"}"#,
                    r#"binary_sensor.motion,domain=binary_sensor,entity_id=motion device_class_str="motion",friendly_name_str="Motion",state="on",value=1.0 1700000000123456"#,
                ),
                (
                    "media_player.living_room",
                    "playing",
                    r#"{"volume_level": 0.45, "is_volume_muted": false, "media_content_type": "music", "media_duration": 245, "media_position": 12.5, "media_position_updated_at": "2024-01-01T12:00:00.123456+00:00", "media_title": "Song, with \"quotes\"", "source_list": ["TV", "Radio 1", "it's"], "extra": {"nested": {"b": [1, 2.5, null, true], "a": "x'y"}, "empty": {}}, "sound_mode_list": [], "entity_picture": "/api/media_player_proxy/media_player.living_room?token=abc&cache=1", "friendly_name": "Living Room"}"#,
                    r#"media_player.living_room,domain=media_player,entity_id=living_room entity_picture_str="/api/media_player_proxy/media_player.living_room?token=abc&cache=1",extra=12.5,extra_str="{'nested': {'b': [1, 2.5, None, True], 'a': \"x'y\"}, 'empty': {}}",friendly_name_str="Living Room",is_volume_muted=0.0,media_content_type_str="music",media_duration=245.0,media_position=12.5,media_position_updated_at=20240101120000.125,media_position_updated_at_str="2024-01-01T12:00:00.123456+00:00",media_title_str="Song, with \"quotes\"",sound_mode_list_str="[]",source_list_str="['TV', 'Radio 1', \"it's\"]",state="playing",volume_level=0.45 1700000000123456"#,
                ),
                (
                    "person.anna",
                    "home",
                    r#"{"editable": true, "id": "anna", "latitude": 52.52, "longitude": 13.405, "gps_accuracy": 12, "source": "device_tracker.phone", "user_id": "0123abcd", "device_trackers": ["device_tracker.phone"], "friendly_name": "Anna"}"#,
                    r#"person.anna,domain=person,entity_id=anna device_trackers_str="['device_tracker.phone']",editable=1.0,friendly_name_str="Anna",gps_accuracy=12.0,id_str="anna",latitude=52.52,longitude=13.405,source_str="device_tracker.phone",state="home",user_id=123.0,user_id_str="0123abcd",value=1.0 1700000000123456"#,
                ),
                (
                    "sun.sun",
                    "below_horizon",
                    r#"{"next_dawn": "2024-01-01T06:00:00.123456+00:00", "elevation": -12.3, "azimuth": 300.1, "rising": false, "friendly_name": "Sun"}"#,
                    r#"sun.sun,domain=sun,entity_id=sun azimuth=300.1,elevation=-12.3,friendly_name_str="Sun",next_dawn=20240101060000.125,next_dawn_str="2024-01-01T06:00:00.123456+00:00",rising=0.0,state="below_horizon",value=0.0 1700000000123456"#,
                ),
                (
                    "lock.front",
                    "locked",
                    r#"{"friendly_name": "Front"}"#,
                    r#"lock.front,domain=lock,entity_id=front friendly_name_str="Front",state="locked",value=1.0 1700000000123456"#,
                ),
                (
                    "cover.garage",
                    "closed",
                    r#"{"current_position": 0, "device_class": "garage", "friendly_name": "Garage"}"#,
                    r#"cover.garage,domain=cover,entity_id=garage current_position=0.0,device_class_str="garage",friendly_name_str="Garage",state="closed",value=0.0 1700000000123456"#,
                ),
                (
                    "device_tracker.phone",
                    "not_home",
                    r#"{"source_type": "gps", "battery_level": 87, "friendly_name": "Phone"}"#,
                    r#"device_tracker.phone,domain=device_tracker,entity_id=phone battery_level=87.0,friendly_name_str="Phone",source_type_str="gps",state="not_home",value=0.0 1700000000123456"#,
                ),
                (
                    "switch.ON_case",
                    "ON",
                    r#"{"friendly_name": "Upper"}"#,
                    r#"switch.ON_case,domain=switch,entity_id=ON_case friendly_name_str="Upper",state="ON" 1700000000123456"#,
                ),
                (
                    "sensor.energy",
                    "1234.567",
                    r#"{"state_class": "total_increasing", "unit_of_measurement": "kWh", "device_class": "energy", "last_reset": null, "friendly_name": "Energy"}"#,
                    r#"kWh,domain=sensor,entity_id=energy device_class_str="energy",friendly_name_str="Energy",last_reset_str="None",state_class_str="total_increasing",value=1234.567 1700000000123456"#,
                ),
                (
                    "sensor.pm25",
                    "3",
                    r#"{"unit_of_measurement": "µg/m³", "device_class": "pm25", "friendly_name": "PM2.5"}"#,
                    r#"µg/m³,domain=sensor,entity_id=pm25 device_class=25.0,device_class_str="pm25",friendly_name=2.5,friendly_name_str="PM2.5",value=3.0 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn ha_states_follow_python_float() {
        check_ha(
            "",
            &[
                (
                    "sensor.s",
                    "  42 ",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=42.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "1_000",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=1000.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "+7",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=7.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "-0",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=-0.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "١٢٣",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=123.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "１２",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=12.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "1e3",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=1000.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "1E-7",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=1e-07 1700000000123456",
                ),
                (
                    "sensor.s",
                    "nan",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=nan 1700000000123456",
                ),
                (
                    "sensor.s",
                    "inf",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=inf 1700000000123456",
                ),
                (
                    "sensor.s",
                    "-Infinity",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=-inf 1700000000123456",
                ),
                (
                    "sensor.s",
                    "1e400",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=inf 1700000000123456",
                ),
                (
                    "sensor.s",
                    "1__0",
                    "{}",
                    r#"sensor.s,domain=sensor,entity_id=s state="1__0" 1700000000123456"#,
                ),
                (
                    "sensor.s",
                    "12 km",
                    "{}",
                    r#"sensor.s,domain=sensor,entity_id=s state="12 km" 1700000000123456"#,
                ),
                (
                    "sensor.s",
                    "5 min",
                    "{}",
                    r#"sensor.s,domain=sensor,entity_id=s state="5 min" 1700000000123456"#,
                ),
                (
                    "sensor.s",
                    "0x10",
                    "{}",
                    r#"sensor.s,domain=sensor,entity_id=s state="0x10" 1700000000123456"#,
                ),
                (
                    "sensor.s",
                    "9007199254740993",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=9007199254740992.0 1700000000123456",
                ),
                (
                    "sensor.s",
                    "0.1",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=0.1 1700000000123456",
                ),
                (
                    "sensor.s",
                    "100000000000000000",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=1e+17 1700000000123456",
                ),
                (
                    "sensor.s",
                    "0.00001",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=1e-05 1700000000123456",
                ),
                (
                    "sensor.s",
                    "\u{a0}5\u{3000}",
                    "{}",
                    "sensor.s,domain=sensor,entity_id=s value=5.0 1700000000123456",
                ),
            ],
        );
    }

    #[test]
    fn ha_skips_unknown_unavailable_empty() {
        check_ha(
            "",
            &[
                ("sensor.s", "unknown", "{}", ""),
                ("sensor.s", "unavailable", "{}", ""),
                ("sensor.s", "", "{}", ""),
            ],
        );
    }

    #[test]
    fn ha_attribute_values() {
        check_ha(
            "",
            &[
                (
                    "sensor.a",
                    "x",
                    r#"{"num_str": "42.5", "exp_str": "1e3", "tiny": 1e-09, "big": 1e+20, "neg_zero": -0.0, "max_safe": 9007199254740992, "above_safe": 9007199254740993, "flag": true, "off": false, "none": null, "lst": [1e-09, 1e+20, -0.0], "dct": {"x": 1}}"#,
                    r#"sensor.a,domain=sensor,entity_id=a above_safe=9007199254740992.0,big=1e+20,dct_str="{'x': 1}",exp_str=1000.0,flag=1.0,lst=1091200.0,lst_str="[1e-09, 1e+20, -0.0]",max_safe=9007199254740992.0,neg_zero=-0.0,none_str="None",num_str=42.5,off=0.0,state="x",tiny=1e-09 1700000000123456"#,
                ),
                (
                    "sensor.b",
                    "x",
                    r#"{"nan_str": "nan", "inf_str": "inf", "ninf": "-Infinity", "huge": "1e400", "ok": "7"}"#,
                    r#"sensor.b,domain=sensor,entity_id=b ok=7.0,state="x" 1700000000123456"#,
                ),
                (
                    "sensor.c",
                    "x",
                    r#"{"km": "12 km", "eta": "5 min", "date": "2024-01-01", "version": "v1.20", "neg": "-5 °C", "dc": "pm25", "name": "PM2.5", "dots": "1.2.3", "dotleft": "a1.b22", "arabic": "١٢ كم", "iso": "2024-01-01T00:00:00+00:00", "many": "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999", "rgb": [255, 200, 100], "ip": "192.168.1.1"}"#,
                    r#"sensor.c,domain=sensor,entity_id=c arabic=12.0,arabic_str="١٢ كم",date=20240101.0,date_str="2024-01-01",dc=25.0,dc_str="pm25",dotleft_str="a1.b22",dots_str="1.2.3",eta_str="5 min",ip_str="192.168.1.1",iso=2.0240101e+17,iso_str="2024-01-01T00:00:00+00:00",km=12.0,km_str="12 km",name=2.5,name_str="PM2.5",neg_str="-5 °C",rgb=255200100.0,rgb_str="[255, 200, 100]",state="x",version=1.2,version_str="v1.20" 1700000000123456"#,
                ),
                (
                    "sensor.d",
                    "x",
                    r#"{"text": ["a\u00a0b", "é", "\u200b", "😀", "tab\there", "del\u007f", "nl\nx", "back\\slash", "both'\""], "nested": [[], {}], "unicode_key": {"ключ": "значение"}}"#,
                    r#"sensor.d,domain=sensor,entity_id=d nested_str="[[], {}]",state="x",text=2007.0,text_str="['a\\xa0b', 'é', '\\u200b', '😀', 'tab\\there', 'del\\x7f', 'nl\\nx', 'back\\\\slash', 'both\\'\"']",unicode_key_str="{'ключ': 'значение'}" 1700000000123456"#,
                ),
                (
                    "sensor.e",
                    "x",
                    r#"{"empty_str": "", "space": " ", "quote": "\"", "zero": 0, "neg": -3, "u64": 18446744073709551615}"#,
                    r#"sensor.e,domain=sensor,entity_id=e empty_str_str="",neg=-3.0,quote_str="\"",space_str=" ",state="x",u64=1.8446744073709552e+19,zero=0.0 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn ha_name_collisions_follow_attribute_order() {
        check_ha(
            "",
            &[
                (
                    "sensor.c1",
                    "on",
                    r#"{"value": 7, "value_": 8, "state": "abc", "foo": "bar", "foo_str": "baz"}"#,
                    r#"sensor.c1,domain=sensor,entity_id=c1 foo_str="bar",foo_str__str="baz",state="on",state__str="abc",value=1.0,value_=7.0,value__=8.0 1700000000123456"#,
                ),
                (
                    "sensor.c2",
                    "heat",
                    r#"{"value": 99}"#,
                    r#"sensor.c2,domain=sensor,entity_id=c2 state="heat",value=99.0 1700000000123456"#,
                ),
                (
                    "sensor.c3",
                    "on",
                    r#"{"value_": 1, "value": 2}"#,
                    r#"sensor.c3,domain=sensor,entity_id=c3 state="on",value=1.0,value_=2.0 1700000000123456"#,
                ),
                (
                    "sensor.c4",
                    "x",
                    r#"{"x_str": 7, "x": "abc"}"#,
                    r#"sensor.c4,domain=sensor,entity_id=c4 state="x",x_str="abc" 1700000000123456"#,
                ),
                (
                    "sensor.c5",
                    "21",
                    r#"{"domain": 7, "entity_id": "other", "time": 5, "state": "s"}"#,
                    r#"sensor.c5,domain=sensor,entity_id=c5 domain=7.0,entity_id_str="other",state_str="s",time=5.0,value=21.0 1700000000123456"#,
                ),
                (
                    "sensor.c6",
                    "heat",
                    r#"{"value": "nan", "state": "nan"}"#,
                    r#"sensor.c6,domain=sensor,entity_id=c6 state="heat" 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn ha_unit_measurement_edge_cases() {
        check_ha(
            "",
            &[
                (
                    "sensor.u1",
                    "1",
                    r#"{"unit_of_measurement": ""}"#,
                    r#"sensor.u1,domain=sensor,entity_id=u1 unit_of_measurement_str="",value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.u2",
                    "1",
                    r#"{"unit_of_measurement": null}"#,
                    r#"sensor.u2,domain=sensor,entity_id=u2 unit_of_measurement_str="None",value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.u3",
                    "1",
                    r#"{"unit_of_measurement": 5}"#,
                    "5,domain=sensor,entity_id=u3 value=1.0 1700000000123456",
                ),
                (
                    "sensor.u4",
                    "1",
                    r#"{"unit_of_measurement": 2.5}"#,
                    "2.5,domain=sensor,entity_id=u4 value=1.0 1700000000123456",
                ),
                (
                    "sensor.u5",
                    "1",
                    r#"{"unit_of_measurement": ["a", "b"]}"#,
                    r#"['a'\,\ 'b'],domain=sensor,entity_id=u5 value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.u6",
                    "1",
                    r#"{"unit_of_measurement": "m s,x=y\\z\nw"}"#,
                    r#"m\ s\,x\=y\\z\nw,domain=sensor,entity_id=u6 value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.u7",
                    "heat",
                    r#"{"friendly_name": "Back\\slash \"quoted\"\nnew line, comma=eq", "icon": "mdi:x"}"#,
                    r#"sensor.u7,domain=sensor,entity_id=u7 friendly_name_str="Back\\slash \"quoted\"\nnew line, comma=eq",icon_str="mdi:x",state="heat" 1700000000123456"#,
                ),
                (
                    "sensor.with space",
                    "1",
                    r#"{"my key": 1, "k,=": "v"}"#,
                    r#"sensor.with\ space,domain=sensor,entity_id=with\ space k\,\=_str="v",my\ key=1.0,value=1.0 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn ha_measurement_attr_domain_device_class() {
        // Built in code: config.rs spells this variant `domain_device_class` in TOML (its
        // `rename_all = "snake_case"`), not HA's `domain__device_class`.
        check_ha_with(
            &HaSchemaOptions {
                measurement_attr: MeasurementAttr::DomainDeviceClass,
                ..Default::default()
            },
            &[
                (
                    "sensor.t",
                    "21.5",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature", "friendly_name": "T"}"#,
                    r#"sensor__temperature,domain=sensor,entity_id=t friendly_name_str="T",unit_of_measurement_str="°C",value=21.5 1700000000123456"#,
                ),
                (
                    "binary_sensor.b",
                    "on",
                    r#"{"friendly_name": "B"}"#,
                    r#"binary_sensor,domain=binary_sensor,entity_id=b friendly_name_str="B",state="on",value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.n",
                    "1",
                    r#"{"device_class": null, "unit_of_measurement": "W"}"#,
                    r#"sensor,domain=sensor,entity_id=n device_class_str="None",unit_of_measurement_str="W",value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.e",
                    "1",
                    r#"{"device_class": ""}"#,
                    "sensor__,domain=sensor,entity_id=e value=1.0 1700000000123456",
                ),
                (
                    "sensor.i",
                    "1",
                    r#"{"device_class": 3}"#,
                    "sensor__3,domain=sensor,entity_id=i value=1.0 1700000000123456",
                ),
            ],
        );
    }

    #[test]
    fn ha_measurement_attr_entity_id() {
        check_ha(
            r#"measurement_attr = "entity_id""#,
            &[
                (
                    "sensor.t",
                    "21.5",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature"}"#,
                    r#"sensor.t,domain=sensor,entity_id=t device_class_str="temperature",unit_of_measurement_str="°C",value=21.5 1700000000123456"#,
                ),
                (
                    "binary_sensor.b",
                    "on",
                    "{}",
                    r#"binary_sensor.b,domain=binary_sensor,entity_id=b state="on",value=1.0 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn ha_default_measurement() {
        check_ha(
            r#"default_measurement = "state""#,
            &[
                (
                    "sensor.t",
                    "21.5",
                    r#"{"unit_of_measurement": "°C"}"#,
                    "°C,domain=sensor,entity_id=t value=21.5 1700000000123456",
                ),
                (
                    "light.kitchen",
                    "on",
                    r#"{"brightness": 255}"#,
                    r#"state,domain=light,entity_id=kitchen brightness=255.0,state="on",value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.e",
                    "1",
                    r#"{"unit_of_measurement": ""}"#,
                    r#"state,domain=sensor,entity_id=e unit_of_measurement_str="",value=1.0 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn ha_override_and_component_config_precedence() {
        check_ha(
            r#"
override_measurement = "everything"
ignore_attributes = ["friendly_name"]
[component_config."sensor.kitchen_temp"]
override_measurement = "exact"
ignore_attributes = ["icon"]
[component_config."sensor.kitchen_empty"]
override_measurement = ""
[component_config_domain.sensor]
override_measurement = "dom"
ignore_attributes = ["device_class"]
[component_config_domain.light]
ignore_attributes = ["brightness"]
[component_config_glob."sensor.kitchen_*"]
override_measurement = "glob1"
[component_config_glob."sensor.kitchen_h*"]
override_measurement = "glob2"
ignore_attributes = ["state_class"]
[component_config_glob."light.[!k]*"]
override_measurement = "notk""#,
            &[
                (
                    "sensor.kitchen_temp",
                    "20",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement", "icon": "mdi:t", "friendly_name": "F"}"#,
                    r#"exact,domain=sensor,entity_id=kitchen_temp device_class_str="temperature",state_class_str="measurement",unit_of_measurement_str="°C",value=20.0 1700000000123456"#,
                ),
                (
                    "sensor.kitchen_humidity",
                    "50",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement", "icon": "mdi:t", "friendly_name": "F"}"#,
                    r#"glob2,domain=sensor,entity_id=kitchen_humidity device_class_str="temperature",icon_str="mdi:t",unit_of_measurement_str="°C",value=50.0 1700000000123456"#,
                ),
                (
                    "sensor.kitchen_other",
                    "1",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement", "icon": "mdi:t", "friendly_name": "F"}"#,
                    r#"glob1,domain=sensor,entity_id=kitchen_other icon_str="mdi:t",state_class_str="measurement",unit_of_measurement_str="°C",value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.kitchen_empty",
                    "1",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement", "icon": "mdi:t", "friendly_name": "F"}"#,
                    r#"everything,domain=sensor,entity_id=kitchen_empty icon_str="mdi:t",state_class_str="measurement",unit_of_measurement_str="°C",value=1.0 1700000000123456"#,
                ),
                (
                    "sensor.hall",
                    "1",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement", "icon": "mdi:t", "friendly_name": "F"}"#,
                    r#"dom,domain=sensor,entity_id=hall icon_str="mdi:t",state_class_str="measurement",unit_of_measurement_str="°C",value=1.0 1700000000123456"#,
                ),
                (
                    "light.kitchen",
                    "on",
                    r#"{"brightness": 1, "friendly_name": "K"}"#,
                    r#"everything,domain=light,entity_id=kitchen state="on",value=1.0 1700000000123456"#,
                ),
                (
                    "light.desk",
                    "on",
                    r#"{"brightness": 1, "friendly_name": "D"}"#,
                    r#"notk,domain=light,entity_id=desk state="on",value=1.0 1700000000123456"#,
                ),
                (
                    "switch.x",
                    "on",
                    r#"{"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement", "icon": "mdi:t", "friendly_name": "F"}"#,
                    r#"everything,domain=switch,entity_id=x device_class_str="temperature",icon_str="mdi:t",state="on",state_class_str="measurement",unit_of_measurement_str="°C",value=1.0 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn ha_tags_and_tags_attributes() {
        check_ha(
            r#"
tags_attributes = ["friendly_name", "floor", "gone", "area", "entity_id"]
[tags]
instance = "main house"
domain = "overridden"
empty = """#,
            &[
                (
                    "sensor.t",
                    "21.5",
                    r#"{"unit_of_measurement": "°C", "friendly_name": "Living Room, North=1", "floor": 2, "gone": null, "area": ["a", "b"]}"#,
                    r#"°C,area=['a'\,\ 'b'],domain=overridden,entity_id=t,floor=2,friendly_name=Living\ Room\,\ North\=1,instance=main\ house value=21.5 1700000000123456"#,
                ),
                (
                    "sensor.u",
                    "1",
                    r#"{"entity_id": "from_attr", "area": ""}"#,
                    r#"sensor.u,domain=overridden,entity_id=from_attr,instance=main\ house value=1.0 1700000000123456"#,
                ),
            ],
        );
    }

    #[test]
    fn metadata_tags_only_when_asked_and_the_static_tags_win() {
        let meta = EntityMetadata {
            instance: "home".into(),
            entity_id: "sensor.power".into(),
            name: Some("Power".into()),
            area_id: Some("living".into()),
            area: Some("Living Room".into()),
            floor: None,
            device: None,
            labels: vec!["Energy".into(), "Solar".into()],
        };
        let row = row("sensor.power", "5", r#"{"unit_of_measurement": "W"}"#);
        let plain = HaEncoder::new(&HaSchemaOptions::default()).unwrap();
        let mut out = String::new();
        plain.encode_with(&row, Some(&meta), TimeColumn::TimeFired, &mut out);
        assert_eq!(
            out, "W,domain=sensor,entity_id=power value=5.0 1700000000123456\n",
            "without metadata_tags the line is HA's even with metadata at hand"
        );
        let options: HaSchemaOptions = toml::from_str("[tags]\nname = \"fixed\"").unwrap();
        let tagged = HaEncoder::new(&options).unwrap().with_metadata_tags(&[
            MetadataTag::Name,
            MetadataTag::Area,
            MetadataTag::Floor,
            MetadataTag::Labels,
        ]);
        let mut out = String::new();
        tagged.encode_with(&row, Some(&meta), TimeColumn::TimeFired, &mut out);
        tagged.encode_with(&row, None, TimeColumn::TimeFired, &mut out);
        assert_eq!(
            out,
            "W,area=Living\\ Room,domain=sensor,entity_id=power,labels=Energy\\,Solar,name=fixed value=5.0 1700000000123456\n\
             W,domain=sensor,entity_id=power,name=fixed value=5.0 1700000000123456\n"
        );
    }

    #[test]
    fn the_instance_tag_is_added_only_when_asked_and_sorted_with_the_others() {
        let enc = HaEncoder::new(&HaSchemaOptions::default()).unwrap();
        let row = |instance: &str| JournalRow {
            instance: std::sync::Arc::from(instance),
            ..row("sensor.power", "5", r#"{"unit_of_measurement": "W"}"#)
        };
        let mut plain = String::new();
        enc.encode(&row("north"), TimeColumn::TimeFired, &mut plain);
        let tagged = enc.with_instance_tag(true);
        let mut out = String::new();
        for home in ["north", "south house"] {
            tagged.encode(&row(home), TimeColumn::TimeFired, &mut out);
        }
        assert_eq!(
            plain,
            "W,domain=sensor,entity_id=power value=5.0 1700000000123456\n"
        );
        assert_eq!(
            out,
            "W,domain=sensor,entity_id=power,instance=north value=5.0 1700000000123456\n\
             W,domain=sensor,entity_id=power,instance=south\\ house value=5.0 1700000000123456\n"
        );
    }

    #[test]
    fn ha_null_unit_falls_back_to_the_entity_id() {
        // `influx-schema-observed.md` says a null unit gave measurement `None`; HA's code
        // (`measurement in (None, "")` → entity_id) and the reference run both give the entity_id,
        // with the unit kept as the text field `unit_of_measurement_str="None"`. We follow the code.
        check_ha(
            "",
            &[(
                "sensor.u2",
                "1",
                r#"{"unit_of_measurement": null}"#,
                r#"sensor.u2,domain=sensor,entity_id=u2 unit_of_measurement_str="None",value=1.0 1700000000123456"#,
            )],
        );
    }

    #[test]
    fn ha_unparsable_attributes_count_as_none() {
        check_ha(
            "",
            &[(
                "sensor.t",
                "on",
                "{not json",
                r#"sensor.t,domain=sensor,entity_id=t state="on",value=1.0 1700000000123456"#,
            )],
        );
    }

    #[test]
    fn ha_options_errors_name_the_option() {
        let err = |toml: &str| {
            HaEncoder::new(&toml::from_str(toml).unwrap())
                .err()
                .unwrap()
        };
        assert!(
            err("[component_config.kitchen]\noverride_measurement = \"x\"")
                .starts_with("ha.component_config: 'kitchen'")
        );
        assert!(
            err("[component_config_glob.\"\"]\noverride_measurement = \"x\"")
                .starts_with("ha.component_config_glob")
        );
        assert!(err("[tags]\n\"\" = \"x\"").starts_with("ha.tags"));
        // Exact keys are lowercased, as HA's `cv.entity_id` does.
        check_ha(
            "[component_config.\"Sensor.T\"]\noverride_measurement = \"m\"",
            &[(
                "sensor.t",
                "1",
                "{}",
                "m,domain=sensor,entity_id=t value=1.0 1700000000123456",
            )],
        );
    }

    #[test]
    fn time_column_choice() {
        let enc = ha("");
        let mut r = row("sensor.t", "1", "{}");
        let mut out = String::new();
        enc.encode(&r, TimeColumn::TimeFired, &mut out);
        enc.encode(&r, TimeColumn::LastUpdated, &mut out);
        // A row imported from history has no time_fired: last_updated stands in.
        r.time_fired_us = None;
        enc.encode(&r, TimeColumn::TimeFired, &mut out);
        assert_eq!(
            out,
            "sensor.t,domain=sensor,entity_id=t value=1.0 1700000000123456\n\
             sensor.t,domain=sensor,entity_id=t value=1.0 1700000000000001\n\
             sensor.t,domain=sensor,entity_id=t value=1.0 1700000000000001\n"
        );
        let c = clean("");
        let mut out = String::new();
        c.encode(
            &row("sensor.t", "1", "{}"),
            TimeColumn::LastUpdated,
            &mut out,
        );
        assert!(out.ends_with(" 1700000000000001\n"), "{out}");
    }
}

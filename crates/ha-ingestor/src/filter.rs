//! Which entities and attributes are kept.
//!
//! [`EntityFilter`] reproduces Home Assistant's `include`/`exclude` entity filter
//! (`homeassistant/helpers/entityfilter.py`, shared by influxdb, recorder, LTSS, ...): the same six
//! cases, the same quirks, and Python `fnmatch` globs ([`crate::glob`]). [`AttributeRules`] adds
//! what HA lacks: attribute include/exclude lists, globally and per entity or glob.
//!
//! Configs HA would accept but that can never match anything are rejected instead: entity ids and
//! domains that are not valid HA slugs, and globs with a literal character no entity id contains
//! (an uppercase letter, `-`, an unclosed `[`). HA lowercases listed entity ids; so do we.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde::de::Deserializer as _;
use serde_json::{Map, Value};

use crate::glob::Glob;

/// A configuration error in `[filter]` or `[attributes]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A glob that can never match an entity id.
    #[error("invalid entity glob `{pattern}`: {reason}")]
    InvalidGlob {
        /// The glob as written.
        pattern: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Not `domain.object_id` made of lowercase letters, digits and single inner underscores.
    #[error(
        "invalid entity id `{0}`: expected `domain.object_id` (lowercase letters, digits, single `_` inside)"
    )]
    InvalidEntityId(String),
    /// Not a lowercase slug.
    #[error("invalid domain `{0}`: expected lowercase letters, digits, single `_` inside")]
    InvalidDomain(String),
    /// Two `[[attributes.entity]]` blocks with the same exact entity id.
    #[error("`[[attributes.entity]]` has `match = \"{0}\"` more than once")]
    DuplicateMatch(String),
}

/// `[filter]`: HA's `include` and `exclude` blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// `[filter.include]`.
    pub include: FilterSet,
    /// `[filter.exclude]`.
    pub exclude: FilterSet,
}

/// One side of a [`FilterConfig`], with HA's key names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSet {
    /// Whole domains, e.g. `sensor`.
    pub domains: Vec<String>,
    /// Entity ids, e.g. `sensor.kitchen_temp` (lowercased, as HA does).
    pub entities: Vec<String>,
    /// `fnmatch` globs over the whole entity id: `*`, `?`, `[seq]`, `[!seq]`; case-sensitive, and
    /// `*` crosses the `.`.
    pub entity_globs: Vec<String>,
}

/// A compiled [`FilterConfig`]. [`EntityFilter::allows`] gives HA's answer for every entity id.
#[derive(Debug, Clone)]
pub struct EntityFilter {
    case: Case,
    include: Matchers,
    exclude: Matchers,
    /// A second filter an entity must also pass: an instance's own filter on top of the global one.
    also: Option<Box<EntityFilter>>,
}

/// HA's six cases, picked once from which lists are non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// 1: no lists: everything passes.
    All,
    /// 2: includes only: listed entity, matching glob or domain passes; nothing else.
    IncludesOnly,
    /// 3: excludes only: listed entity, matching glob or domain is dropped; everything else passes.
    ExcludesOnly,
    /// 4: domain or glob includes (excludes may exist): entity include > entity exclude > glob
    /// include > glob exclude > domain include > drop. Exclude *domains* are ignored entirely.
    DomainOrGlobIncludes,
    /// 5: domain or glob excludes, no domain or glob includes: see [`EntityFilter::allows`].
    DomainOrGlobExcludes,
    /// 6: entity lists only, both sides: passes iff in the entity include list.
    EntityIncludes,
}

#[derive(Debug, Clone, Default)]
struct Matchers {
    entities: HashSet<String>,
    domains: HashSet<String>,
    globs: Vec<Glob>,
}

impl Matchers {
    fn new(set: &FilterSet) -> Result<Self, FilterError> {
        let domain = |d: &String| {
            let ok = valid_slug(d);
            ok.then(|| d.clone())
                .ok_or_else(|| FilterError::InvalidDomain(d.clone()))
        };
        Ok(Self {
            entities: set
                .entities
                .iter()
                .map(|e| entity_id(e))
                .collect::<Result<_, _>>()?,
            domains: set.domains.iter().map(domain).collect::<Result<_, _>>()?,
            globs: set
                .entity_globs
                .iter()
                .map(|g| entity_glob(g))
                .collect::<Result<_, _>>()?,
        })
    }
    fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.domains.is_empty() && self.globs.is_empty()
    }
    fn entity(&self, id: &str) -> bool {
        self.entities.contains(id)
    }
    /// The domain is what precedes the first `.`; an id without one has none.
    fn domain(&self, id: &str) -> bool {
        id.split_once('.')
            .is_some_and(|(d, _)| self.domains.contains(d))
    }
    fn glob(&self, id: &str) -> bool {
        self.globs.iter().any(|g| g.matches(id))
    }
}

impl EntityFilter {
    /// Validates and compiles the lists. Errors name the offending entry.
    pub fn new(config: &FilterConfig) -> Result<Self, FilterError> {
        let (include, exclude) = (
            Matchers::new(&config.include)?,
            Matchers::new(&config.exclude)?,
        );
        let case = match (include.is_empty(), exclude.is_empty()) {
            (true, true) => Case::All,
            (false, true) => Case::IncludesOnly,
            (true, false) => Case::ExcludesOnly,
            _ if !include.domains.is_empty() || !include.globs.is_empty() => {
                Case::DomainOrGlobIncludes
            }
            _ if !exclude.domains.is_empty() || !exclude.globs.is_empty() => {
                Case::DomainOrGlobExcludes
            }
            _ => Case::EntityIncludes,
        };
        Ok(Self {
            case,
            include,
            exclude,
            also: None,
        })
    }

    /// This filter, then `other`: an entity is kept only when both keep it (an instance's
    /// `[instance.filter]` on top of the global `[filter]`).
    pub fn and(mut self, other: EntityFilter) -> EntityFilter {
        self.also = Some(Box::new(match self.also.take() {
            None => other,
            Some(inner) => inner.and(other),
        }));
        self
    }

    /// Whether HA would record `entity_id`. Allocation-free.
    ///
    /// Case 5 has a quirk kept on purpose: an entity in *both* entity lists is dropped, unless its
    /// domain or a glob is also excluded, in which case it is kept.
    pub fn allows(&self, entity_id: &str) -> bool {
        self.allows_here(entity_id) && self.also.as_ref().is_none_or(|f| f.allows(entity_id))
    }

    fn allows_here(&self, entity_id: &str) -> bool {
        let (inc, exc, id) = (&self.include, &self.exclude, entity_id);
        match self.case {
            Case::All => true,
            Case::IncludesOnly => inc.entity(id) || inc.domain(id) || inc.glob(id),
            Case::ExcludesOnly => !(exc.entity(id) || exc.domain(id) || exc.glob(id)),
            Case::DomainOrGlobIncludes => {
                inc.entity(id)
                    || (!exc.entity(id) && (inc.glob(id) || (inc.domain(id) && !exc.glob(id))))
            }
            Case::DomainOrGlobExcludes if exc.domain(id) || exc.glob(id) => inc.entity(id),
            Case::DomainOrGlobExcludes => !exc.entity(id),
            Case::EntityIncludes => inc.entity(id),
        }
    }
}

/// HA's slug rule for domains and object ids: `[0-9a-z_]+`, no leading, trailing or double `_`.
fn valid_slug(s: &str) -> bool {
    let chars_ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    chars_ok && !s.is_empty() && !s.starts_with('_') && !s.ends_with('_') && !s.contains("__")
}

/// Lowercases and validates an entity id, as HA's `cv.entity_id` does.
fn entity_id(raw: &str) -> Result<String, FilterError> {
    let id = raw.to_lowercase();
    match id.split_once('.') {
        Some((d, o)) if valid_slug(d) && valid_slug(o) => Ok(id),
        _ => Err(FilterError::InvalidEntityId(raw.to_string())),
    }
}

/// Compiles an entity glob ([`Glob`], HA's reading) and rejects patterns that cannot match an
/// entity id (HA accepts them silently).
fn entity_glob(pattern: &str) -> Result<Glob, FilterError> {
    let err = |reason: String| FilterError::InvalidGlob {
        pattern: pattern.to_string(),
        reason,
    };
    if pattern.is_empty() {
        return Err(err("empty pattern".into()));
    }
    let glob = Glob::new(pattern);
    for c in glob.literals() {
        match c {
            // A closed `[` starts a class; a literal one is unclosed.
            '[' => return Err(err("unclosed `[`".into())),
            c if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.') => {
                return Err(err(format!(
                    "entity ids never contain `{c}` (only a-z, 0-9, `_`, `.`)"
                )));
            }
            _ => {}
        }
    }
    Ok(glob)
}

/// `[attributes]`: which state attributes to store.
///
/// For an entity, the applicable overrides are every glob override that matches it, in list order,
/// then its exact-id override. Key by key, the last applicable override that sets a key wins:
/// - `include`: the winner's list *replaces* the global one; with none, the global one applies.
///   Absent means keep every attribute; `include = []` keeps none.
/// - `exclude`: the winner's list is *unioned* with the global `exclude` (an override cannot
///   bring back a globally excluded attribute).
///
/// An attribute is kept iff it is in the effective include list (if any) and in no exclude list.
/// This mirrors HA influxdb's `component_config*` merging (exact > later glob > earlier glob).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributesConfig {
    /// Keep only these attribute names.
    pub include: Option<Vec<String>>,
    /// Drop these attribute names, for every entity.
    pub exclude: Vec<String>,
    /// `[[attributes.entity]]` overrides.
    pub entity: Vec<AttributeOverride>,
}

/// One `[[attributes.entity]]` block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeOverride {
    /// `match`: an entity id, or a glob if it contains `*`, `?` or `[`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replaces the global include list for matching entities.
    pub include: Option<Vec<String>>,
    /// Added to the global exclude list for matching entities.
    pub exclude: Option<Vec<String>>,
}

/// A compiled [`AttributesConfig`].
#[derive(Debug, Clone, Default)]
pub struct AttributeRules {
    include: Option<HashSet<String>>,
    exclude: HashSet<String>,
    exact: HashMap<String, Rule>,
    globs: Vec<(Glob, Rule)>,
    /// An instance's own rules on top of these (see [`AttributeRules::layered`]); never layered
    /// itself.
    also: Option<Box<AttributeRules>>,
}

#[derive(Debug, Clone)]
struct Rule {
    include: Option<HashSet<String>>,
    exclude: Option<HashSet<String>>,
}

fn set(names: &[String]) -> HashSet<String> {
    names.iter().cloned().collect()
}

impl AttributeRules {
    /// Validates and compiles the rules.
    pub fn new(config: &AttributesConfig) -> Result<Self, FilterError> {
        let mut rules = Self {
            include: config.include.as_deref().map(set),
            exclude: set(&config.exclude),
            ..Self::default()
        };
        for o in &config.entity {
            let rule = Rule {
                include: o.include.as_deref().map(set),
                exclude: o.exclude.as_deref().map(set),
            };
            if o.pattern.contains(['*', '?', '[']) {
                rules.globs.push((entity_glob(&o.pattern)?, rule));
            } else if rules.exact.insert(entity_id(&o.pattern)?, rule).is_some() {
                return Err(FilterError::DuplicateMatch(o.pattern.clone()));
            }
        }
        Ok(rules)
    }

    /// The global rules, then an instance's own on top: an attribute is kept only when both keep
    /// it (so an instance can drop more, never bring back what the global rules drop).
    pub fn layered(
        global: &AttributesConfig,
        own: Option<&AttributesConfig>,
    ) -> Result<Self, FilterError> {
        let mut rules = Self::new(global)?;
        if let Some(own) = own {
            rules.also = Some(Box::new(Self::new(own)?));
        }
        Ok(rules)
    }

    /// The policy for one entity: one hash lookup plus glob matches per layer, borrowing the rules.
    pub fn for_entity(&self, entity_id: &str) -> AttributePolicy<'_> {
        AttributePolicy {
            first: self.layer_for(entity_id),
            second: self.also.as_ref().map(|a| a.layer_for(entity_id)),
        }
    }

    fn layer_for(&self, entity_id: &str) -> Layer<'_> {
        let globs = self
            .globs
            .iter()
            .rev()
            .filter(|(g, _)| g.matches(entity_id))
            .map(|(_, r)| r);
        let (mut include, mut extra_exclude) = (None, None);
        for rule in self.exact.get(entity_id).into_iter().chain(globs) {
            include = include.or(rule.include.as_ref());
            extra_exclude = extra_exclude.or(rule.exclude.as_ref());
            if include.is_some() && extra_exclude.is_some() {
                break;
            }
        }
        Layer {
            include: include.or(self.include.as_ref()),
            exclude: &self.exclude,
            extra_exclude,
        }
    }
}

/// Which attributes of one entity are kept; see [`AttributesConfig`] for the rules.
#[derive(Debug, Clone, Copy)]
pub struct AttributePolicy<'a> {
    first: Layer<'a>,
    /// The instance's own layer, if it has rules.
    second: Option<Layer<'a>>,
}

/// One layer's verdict for one entity.
#[derive(Debug, Clone, Copy)]
struct Layer<'a> {
    include: Option<&'a HashSet<String>>,
    exclude: &'a HashSet<String>,
    extra_exclude: Option<&'a HashSet<String>>,
}

impl Layer<'_> {
    fn keeps_all(&self) -> bool {
        self.include.is_none()
            && self.exclude.is_empty()
            && self.extra_exclude.is_none_or(HashSet::is_empty)
    }

    fn keeps(&self, name: &str) -> bool {
        self.include.is_none_or(|s| s.contains(name))
            && !self.exclude.contains(name)
            && !self.extra_exclude.is_some_and(|s| s.contains(name))
    }
}

impl AttributePolicy<'_> {
    /// True when every attribute is kept, so callers can skip filtering.
    pub fn keeps_all(&self) -> bool {
        self.first.keeps_all() && self.second.is_none_or(|l| l.keeps_all())
    }

    /// Whether the attribute `name` is kept.
    pub fn keeps(&self, name: &str) -> bool {
        self.first.keeps(name) && self.second.is_none_or(|l| l.keeps(name))
    }

    /// Drops the attributes that are not kept, in place.
    pub fn retain(&self, attributes: &mut Map<String, Value>) {
        if !self.keeps_all() {
            attributes.retain(|k, _| self.keeps(k));
        }
    }

    /// The JSON object `object` with only the kept attributes, in their original order and with
    /// their values' text untouched (HA's attribute order is part of what HA-compatible points
    /// look like). Borrowed when every attribute is kept.
    pub fn retain_json<'j>(&self, object: &'j str) -> Result<Cow<'j, str>, serde_json::Error> {
        if self.keeps_all() {
            return Ok(Cow::Borrowed(object));
        }
        let pairs = serde_json::Deserializer::from_str(object).deserialize_map(Pairs)?;
        let mut out = String::with_capacity(object.len());
        out.push('{');
        for (k, v) in pairs.iter().filter(|(k, _)| self.keeps(k)) {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k)?);
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        Ok(Cow::Owned(out))
    }

    /// The kept attributes, borrowed, in map order.
    pub fn filter<'m>(
        &self,
        attributes: &'m Map<String, Value>,
    ) -> impl Iterator<Item = (&'m String, &'m Value)> {
        let policy = *self;
        attributes.iter().filter(move |(k, _)| policy.keeps(k))
    }
}

/// A JSON object's entries in their order, values unparsed.
struct Pairs;

impl<'de> serde::de::Visitor<'de> for Pairs {
    type Value = Vec<(Cow<'de, str>, &'de serde_json::value::RawValue)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<BorrowedKey<'de>, _>()? {
            out.push((k.0, v));
        }
        Ok(out)
    }
}

/// A key, borrowed unless it holds escapes.
struct BorrowedKey<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct K<'a>(#[serde(borrow)] Cow<'a, str>);
        K::deserialize(d).map(|k| BorrowedKey(k.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_json_keeps_order_and_value_text() {
        let rules = rules("exclude = [\"drop\"]").unwrap();
        let policy = rules.for_entity("sensor.x");
        let json =
            r#"{"z":1.50,"friendly_name":"K\"x","a":[1,{"b":null}],"drop":true,"k\u00e9":2}"#;
        assert_eq!(
            policy.retain_json(json).unwrap(),
            r#"{"z":1.50,"friendly_name":"K\"x","a":[1,{"b":null}],"ké":2}"#
        );
        assert!(policy.retain_json("not json").is_err());
        let all = AttributeRules::default();
        assert!(matches!(
            all.for_entity("sensor.x").retain_json(json),
            Ok(Cow::Borrowed(_))
        ));
    }

    /// An unpaired surrogate escape is JSON syntax but no Unicode (HA's encoder never writes one):
    /// kept as sent when every attribute is kept, refused when a rule must read the keys.
    #[test]
    fn unpaired_surrogate_key_passes_only_untouched() {
        let json = r#"{"a\ud800b":1,"drop":2}"#;
        let all = AttributeRules::default();
        assert_eq!(all.for_entity("sensor.x").retain_json(json).unwrap(), json);
        let rules = rules("exclude = [\"drop\"]").unwrap();
        assert!(rules.for_entity("sensor.x").retain_json(json).is_err());
    }

    /// `"domains | entities | globs"`, each space-separated.
    fn spec(s: &str) -> FilterSet {
        let mut parts = s
            .split('|')
            .map(|p| p.split_whitespace().map(String::from).collect());
        let mut next = || parts.next().unwrap_or_default();
        FilterSet {
            domains: next(),
            entities: next(),
            entity_globs: next(),
        }
    }

    fn filter(include: &str, exclude: &str) -> Result<EntityFilter, FilterError> {
        EntityFilter::new(&FilterConfig {
            include: spec(include),
            exclude: spec(exclude),
        })
    }

    /// Expectations computed with HA's own `generate_filter` on the same lists (the code was also
    /// checked against it on 5,000 random configs).
    #[test]
    fn six_cases_match_home_assistant() {
        use Case::*;
        // (include, exclude, case, kept, dropped)
        let table = [
            ("", "", All, "sensor.a light.b", ""),
            (
                "light sensor | binary_sensor.working | cover.*_window",
                "",
                IncludesOnly,
                "light.test sensor.test binary_sensor.working cover.bedroom_window",
                "binary_sensor.another cover.garage_door sun.sun",
            ),
            (
                "",
                "light sensor | binary_sensor.working | cover.*_window",
                ExcludesOnly,
                "binary_sensor.another cover.garage_door sun.sun",
                "light.test sensor.test binary_sensor.working cover.bedroom_window",
            ),
            (
                // Entity include beats domain exclude; exclude domains are otherwise moot.
                "light sensor | binary_sensor.working",
                "binary_sensor switch | light.ignoreme sensor.notworking",
                DomainOrGlobIncludes,
                "sensor.test light.test binary_sensor.working",
                "sensor.notworking light.ignoreme binary_sensor.another switch.x sun.sun",
            ),
            (
                // Glob include beats glob and domain excludes; glob exclude trims domain includes;
                // entity exclude beats glob include.
                "light | | *working switch.*",
                "switch sensor | switch.ignoreme | *notworking light.*_ignored",
                DomainOrGlobIncludes,
                "sensor.working sensor.notworking light.test light.notworking switch.on \
                 binary_sensor.not_working",
                "sensor.other light.x_ignored switch.ignoreme sun.sun",
            ),
            (
                // Entity include beats domain and glob excludes. In both entity lists: dropped,
                // unless the domain or a glob is excluded too.
                "| switch.keep sensor.power_raw light.both switch.both",
                "switch | sensor.bad light.both switch.both | sensor.*_raw",
                DomainOrGlobExcludes,
                "switch.keep sensor.power_raw sensor.good switch.both light.x",
                "switch.other sensor.temp_raw sensor.bad light.both",
            ),
            (
                "| light.a",
                "| light.b",
                EntityIncludes,
                "light.a",
                "light.b light.c sensor.a",
            ),
        ];
        for (include, exclude, case, kept, dropped) in table {
            let f = filter(include, exclude).unwrap();
            assert_eq!(f.case, case);
            let rows = kept.split_whitespace().map(|id| (id, true));
            for (id, want) in rows.chain(dropped.split_whitespace().map(|id| (id, false))) {
                assert_eq!(f.allows(id), want, "{case:?}: {id}");
            }
        }
    }

    #[test]
    fn entity_ids_and_domains_are_validated() {
        assert!(
            filter("| Light.Kitchen", "")
                .unwrap()
                .allows("light.kitchen")
        );
        for bad in [
            "light",
            "light.",
            "light.a__b",
            "_light.a",
            "light.a-b",
            "a.b.c",
        ] {
            let err = filter("", &format!("| {bad}")).unwrap_err();
            assert_eq!(err, FilterError::InvalidEntityId(bad.into()));
        }
        let err = filter("Sensor", "").unwrap_err();
        assert_eq!(err, FilterError::InvalidDomain("Sensor".into()));
    }

    #[test]
    fn bad_globs_name_the_pattern() {
        for (pattern, reason) in [
            ("", "empty pattern"),
            ("sensor.[abc", "unclosed `[`"),
            ("Sensor.*", "entity ids never contain `S`"),
            ("sensor.living-room*", "entity ids never contain `-`"),
        ] {
            let glob = FilterSet {
                entity_globs: vec![pattern.into()],
                ..Default::default()
            };
            let cfg = FilterConfig {
                include: glob,
                ..Default::default()
            };
            let msg = EntityFilter::new(&cfg).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("invalid entity glob `{pattern}`: {reason}")),
                "{msg}"
            );
        }
        assert!(
            entity_glob("sensor.[A-Z-]*").is_ok(),
            "class members are not literals"
        );
    }

    fn rules(toml: &str) -> Result<AttributeRules, FilterError> {
        AttributeRules::new(&toml::from_str::<AttributesConfig>(toml).unwrap())
    }

    fn kept<'a>(rules: &AttributeRules, id: &str, names: &[&'a str]) -> Vec<&'a str> {
        let policy = rules.for_entity(id);
        names.iter().copied().filter(|n| policy.keeps(n)).collect()
    }

    #[test]
    fn attribute_precedence() {
        let r = rules(
            r#"
            exclude = ["friendly_name", "icon"]
            [[entity]]
            match = "sensor.power_*"
            include = ["unit_of_measurement", "device_class", "icon"]
            [[entity]]
            match = "sensor.power_main"
            exclude = ["device_class"]
            [[entity]]
            match = "sensor.power_m*"
            include = ["unit_of_measurement", "friendly_name"]
            [[entity]]
            match = "light.*"
            include = []
            "#,
        )
        .unwrap();
        let all = [
            "unit_of_measurement",
            "device_class",
            "friendly_name",
            "icon",
            "brightness",
        ];
        // Global only.
        let global = ["unit_of_measurement", "device_class", "brightness"];
        assert_eq!(kept(&r, "sensor.temp", &all), global);
        // A glob's include replaces the (absent) global one; the global exclude still applies.
        let power = ["unit_of_measurement", "device_class"];
        assert_eq!(kept(&r, "sensor.power_aux", &all), power);
        // The later glob's include wins; the exact override adds an exclude.
        assert_eq!(kept(&r, "sensor.power_main", &all), ["unit_of_measurement"]);
        assert!(
            kept(&r, "light.kitchen", &all).is_empty(),
            "include = [] keeps nothing"
        );
        assert!(!r.for_entity("sensor.temp").keeps_all());
        assert!(
            AttributeRules::default()
                .for_entity("sensor.temp")
                .keeps_all()
        );
    }

    #[test]
    fn an_instance_filter_narrows_the_global_one() {
        // Global: everything but `switch`; the instance: only `sensor` and `light.porch`.
        let global = filter("", "switch | |").unwrap();
        let own = filter("sensor | light.porch |", "").unwrap();
        let both = global.clone().and(own);
        let verdicts: Vec<bool> = ["sensor.a", "light.porch", "light.hall", "switch.x"]
            .iter()
            .map(|id| both.allows(id))
            .collect();
        assert_eq!(verdicts, [true, true, false, false]);
        // The global one alone is unchanged by being layered.
        assert!(global.allows("light.hall"));
        // An instance cannot bring back what the global filter drops.
        let wide = filter("switch | |", "").unwrap();
        assert!(!global.and(wide).allows("switch.x"));
    }

    #[test]
    fn instance_attribute_rules_drop_more_never_less() {
        let global: AttributesConfig = toml::from_str("exclude = [\"icon\"]").unwrap();
        let own: AttributesConfig = toml::from_str(
            "exclude = [\"entity_picture\"]\n[[entity]]\nmatch = \"sensor.*\"\ninclude = [\"unit_of_measurement\", \"icon\"]",
        )
        .unwrap();
        let rules = AttributeRules::layered(&global, Some(&own)).unwrap();
        let names = [
            "icon",
            "entity_picture",
            "unit_of_measurement",
            "friendly_name",
        ];
        assert_eq!(
            kept(&rules, "light.x", &names),
            ["unit_of_measurement", "friendly_name"]
        );
        // The instance's include does not bring back the globally excluded `icon`.
        assert_eq!(kept(&rules, "sensor.x", &names), ["unit_of_measurement"]);
        assert!(!rules.for_entity("light.x").keeps_all());
        let plain = AttributeRules::layered(&AttributesConfig::default(), None).unwrap();
        assert!(plain.for_entity("light.x").keeps_all());
        let no_own = AttributeRules::layered(&global, Some(&AttributesConfig::default())).unwrap();
        assert_eq!(
            kept(&no_own, "light.x", &names),
            ["entity_picture", "unit_of_measurement", "friendly_name"]
        );
    }

    #[test]
    fn attribute_map_helpers() {
        let r =
            rules("include = [\"a\", \"b\"]\n[[entity]]\nmatch = \"sensor.x\"\nexclude = [\"b\"]");
        let attrs: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "b": 2, "c": 3}"#).unwrap();
        let r = r.unwrap();
        let kept: Vec<_> = r
            .for_entity("sensor.x")
            .filter(&attrs)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(kept, ["a"]);
        let mut m = attrs.clone();
        r.for_entity("sensor.y").retain(&mut m);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn attribute_config_errors() {
        let dup = rules("[[entity]]\nmatch = \"sensor.a\"\n[[entity]]\nmatch = \"Sensor.A\"");
        assert_eq!(
            dup.unwrap_err(),
            FilterError::DuplicateMatch("Sensor.A".into())
        );
        let bad = rules("[[entity]]\nmatch = \"sensor.a-b\"");
        assert_eq!(
            bad.unwrap_err(),
            FilterError::InvalidEntityId("sensor.a-b".into())
        );
        let glob = rules("[[entity]]\nmatch = \"sensor.[x\"");
        assert!(matches!(glob, Err(FilterError::InvalidGlob { .. })));
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        filter: FilterConfig,
        #[serde(default)]
        attributes: AttributesConfig,
    }

    #[test]
    fn config_parses_from_toml() {
        let file: File = toml::from_str(
            r#"
            [filter.include]
            domains = ["sensor"]
            entity_globs = ["binary_sensor.*_motion"]
            [filter.exclude]
            entities = ["sensor.noisy"]
            [attributes]
            exclude = ["friendly_name", "icon"]
            [[attributes.entity]]
            match = "sensor.power_*"
            include = ["unit_of_measurement", "device_class"]
            "#,
        )
        .unwrap();
        let f = EntityFilter::new(&file.filter).unwrap();
        assert_eq!(f.case, Case::DomainOrGlobIncludes);
        assert!(f.allows("sensor.temp") && f.allows("binary_sensor.hall_motion"));
        assert!(!f.allows("sensor.noisy") && !f.allows("binary_sensor.door"));
        let r = AttributeRules::new(&file.attributes).unwrap();
        assert_eq!(
            kept(&r, "sensor.power_a", &["device_class", "icon", "x"]),
            ["device_class"]
        );

        for (bad, why) in [
            ("[filter.include]\ndomain = []", "unknown field `domain`"),
            (
                "[filter]\ninclude_domains = []",
                "unknown field `include_domains`",
            ),
            ("[attributes]\nincludes = []", "unknown field `includes`"),
            (
                "[[attributes.entity]]\nmatch = \"a.b\"\nexlude = []",
                "unknown field `exlude`",
            ),
            (
                "[[attributes.entity]]\ninclude = []",
                "missing field `match`",
            ),
        ] {
            let err = toml::from_str::<File>(bad).err().map(|e| e.to_string());
            assert!(
                err.as_ref().is_some_and(|e| e.contains(why)),
                "{bad}: {err:?}"
            );
        }
    }
}

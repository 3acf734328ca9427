//! The entity states, their JSON forms (full, compressed, diff) and the state machine that applies a
//! change, records it and returns what to tell subscribers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::config::EntitySeed;
use crate::recorder::Recorder;
use crate::time::{epoch_f64, now_us, write_iso};

/// Appends `s` as a JSON string literal (escaping like serde_json).
pub fn push_json_str(out: &mut String, s: &str) {
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// Appends a float the way Python's `repr`/JSON writes it (`1.0`, `1795345559.428451`).
pub fn push_f64(out: &mut String, f: f64) {
    if f.is_finite() {
        let _ = write!(out, "{f:?}");
    } else {
        out.push_str("null");
    }
}

/// Attributes of a state with their serialized form, shared between states that did not change them.
#[derive(Debug)]
pub struct Attrs {
    /// The attributes.
    pub map: Map<String, Value>,
    /// `map` serialized.
    pub json: String,
}

impl Attrs {
    /// Wraps a JSON value (non-objects become empty attributes).
    pub fn new(v: Value) -> Arc<Attrs> {
        let map = match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let json = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
        Arc::new(Attrs { map, json })
    }
}

/// HA's `Context` of a state or event.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// ULID.
    pub id: String,
    /// Parent context id.
    pub parent_id: Option<String>,
    /// The user that caused it.
    pub user_id: Option<Arc<str>>,
}

impl Context {
    /// Appends `{"id":..,"parent_id":..,"user_id":..}`.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"id\":");
        push_json_str(out, &self.id);
        out.push_str(",\"parent_id\":");
        match &self.parent_id {
            Some(p) => push_json_str(out, p),
            None => out.push_str("null"),
        }
        out.push_str(",\"user_id\":");
        match &self.user_id {
            Some(u) => push_json_str(out, u),
            None => out.push_str("null"),
        }
        out.push('}');
    }

    /// The context as a JSON value.
    pub fn to_value(&self) -> Value {
        let mut s = String::new();
        self.write_json(&mut s);
        serde_json::from_str(&s).unwrap_or(Value::Null)
    }
}

/// One immutable state of an entity (HA 2024.3.3: no `last_reported`).
#[derive(Debug)]
pub struct State {
    /// Entity id.
    pub entity_id: Arc<str>,
    /// State string.
    pub state: String,
    /// Attributes.
    pub attrs: Arc<Attrs>,
    /// µs since the epoch.
    pub last_changed: i64,
    /// µs since the epoch.
    pub last_updated: i64,
    /// Context of the change.
    pub context: Arc<Context>,
    json: OnceLock<String>,
}

impl State {
    /// A new state.
    pub fn new(
        entity_id: Arc<str>,
        state: String,
        attrs: Arc<Attrs>,
        last_changed: i64,
        last_updated: i64,
        context: Arc<Context>,
    ) -> State {
        State {
            entity_id,
            state,
            attrs,
            last_changed,
            last_updated,
            context,
            json: OnceLock::new(),
        }
    }

    /// The entity's domain.
    pub fn domain(&self) -> &str {
        self.entity_id.split('.').next().unwrap_or("")
    }

    /// The full state object as HA 2024.3.3 serializes it (cached).
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let mut s = String::with_capacity(160 + self.attrs.json.len());
            s.push_str("{\"entity_id\":");
            push_json_str(&mut s, &self.entity_id);
            s.push_str(",\"state\":");
            push_json_str(&mut s, &self.state);
            s.push_str(",\"attributes\":");
            s.push_str(&self.attrs.json);
            s.push_str(",\"last_changed\":\"");
            write_iso(&mut s, self.last_changed);
            s.push_str("\",\"last_updated\":\"");
            write_iso(&mut s, self.last_updated);
            s.push_str("\",\"context\":");
            self.context.write_json(&mut s);
            s.push('}');
            s
        })
    }

    /// The full state object as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.json()).unwrap_or(Value::Null)
    }

    fn write_compressed_context(&self, out: &mut String) {
        if self.context.parent_id.is_none() && self.context.user_id.is_none() {
            push_json_str(out, &self.context.id);
        } else {
            self.context.write_json(out);
        }
    }

    /// `as_compressed_state`: `{"s","a","c","lc"[,"lu"]}`.
    pub fn write_compressed(&self, out: &mut String) {
        out.push_str("{\"s\":");
        push_json_str(out, &self.state);
        out.push_str(",\"a\":");
        out.push_str(&self.attrs.json);
        out.push_str(",\"c\":");
        self.write_compressed_context(out);
        out.push_str(",\"lc\":");
        push_f64(out, epoch_f64(self.last_changed));
        if self.last_changed != self.last_updated {
            out.push_str(",\"lu\":");
            push_f64(out, epoch_f64(self.last_updated));
        }
        out.push('}');
    }
}

/// HA's `_state_diff` for `subscribe_entities`: `{"+":{..}[,"-":{"a":[..]}]}`.
pub fn write_state_diff(out: &mut String, old: &State, new: &State) {
    let mut add = Map::new();
    if old.state != new.state {
        add.insert("s".into(), Value::String(new.state.clone()));
    }
    if old.last_changed != new.last_changed {
        add.insert("lc".into(), epoch_f64(new.last_changed).into());
    } else if old.last_updated != new.last_updated {
        add.insert("lu".into(), epoch_f64(new.last_updated).into());
    }
    let (oc, nc) = (&old.context, &new.context);
    let mut ctx: Option<Value> = None;
    if oc.parent_id != nc.parent_id {
        ctx = Some(serde_json::json!({"parent_id": nc.parent_id}));
    }
    if oc.user_id != nc.user_id {
        let u = Value::from(nc.user_id.as_deref());
        match ctx.as_mut().and_then(Value::as_object_mut) {
            Some(m) => {
                m.insert("user_id".into(), u);
            }
            None => ctx = Some(serde_json::json!({ "user_id": u })),
        }
    }
    if oc.id != nc.id {
        match ctx.as_mut().and_then(Value::as_object_mut) {
            Some(m) => {
                m.insert("id".into(), nc.id.clone().into());
            }
            None => ctx = Some(nc.id.clone().into()),
        }
    }
    if let Some(c) = ctx {
        add.insert("c".into(), c);
    }
    let mut removed = Vec::new();
    if !Arc::ptr_eq(&old.attrs, &new.attrs) && old.attrs.map != new.attrs.map {
        let mut changed = Map::new();
        for (k, v) in &new.attrs.map {
            if old.attrs.map.get(k) != Some(v) {
                changed.insert(k.clone(), v.clone());
            }
        }
        if !changed.is_empty() {
            add.insert("a".into(), Value::Object(changed));
        }
        removed = old
            .attrs
            .map
            .keys()
            .filter(|k| !new.attrs.map.contains_key(*k))
            .cloned()
            .collect();
    }
    out.push_str("{\"+\":");
    out.push_str(&serde_json::to_string(&add).unwrap_or_default());
    if !removed.is_empty() {
        out.push_str(",\"-\":{\"a\":");
        out.push_str(&serde_json::to_string(&removed).unwrap_or_default());
        out.push('}');
    }
    out.push('}');
}

/// Builds the body of an event (`{"event_type",...}`), the part after `"event":`.
pub fn event_body(
    event_type: &str,
    data_json: &str,
    origin: &str,
    time_fired: i64,
    ctx: &Context,
) -> String {
    let mut s = String::with_capacity(128 + data_json.len());
    s.push_str("{\"event_type\":");
    push_json_str(&mut s, event_type);
    s.push_str(",\"data\":");
    s.push_str(data_json);
    s.push_str(",\"origin\":\"");
    s.push_str(origin);
    s.push_str("\",\"time_fired\":\"");
    write_iso(&mut s, time_fired);
    s.push_str("\",\"context\":");
    ctx.write_json(&mut s);
    s.push('}');
    s
}

/// The `state_changed` event body for a change.
pub fn state_changed_body(
    entity_id: &str,
    old: Option<&State>,
    new: Option<&State>,
    fired: i64,
    ctx: &Context,
) -> String {
    let mut data = String::with_capacity(
        64 + old.map_or(0, |s| s.json().len()) + new.map_or(0, |s| s.json().len()),
    );
    data.push_str("{\"entity_id\":");
    push_json_str(&mut data, entity_id);
    data.push_str(",\"old_state\":");
    data.push_str(old.map_or("null", State::json));
    data.push_str(",\"new_state\":");
    data.push_str(new.map_or("null", State::json));
    data.push('}');
    event_body("state_changed", &data, "LOCAL", fired, ctx)
}

/// A change the world made, to be dispatched to subscribers.
pub struct Change {
    /// The entity.
    pub entity_id: Arc<str>,
    /// Previous state.
    pub old: Option<Arc<State>>,
    /// New state (`None` when removed).
    pub new: Option<Arc<State>>,
}

/// Fast deterministic PRNG (splitmix64) for ids and the generator.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID for `time_us` with random bits from `rng`.
pub fn ulid(time_us: i64, rng: &mut Rng) -> String {
    let ms = (time_us / 1000) as u128 & ((1u128 << 48) - 1);
    let rand =
        ((rng.next_u64() as u128) << 16 | (rng.next_u64() as u128 & 0xffff)) & ((1u128 << 80) - 1);
    let v = ms << 80 | rand;
    let mut s = String::with_capacity(26);
    for i in (0..26).rev() {
        s.push(CROCKFORD[((v >> (i * 5)) & 31) as usize] as char);
    }
    s
}

/// The state machine plus the recorder.
pub struct World {
    /// Current states by entity id.
    pub states: BTreeMap<Arc<str>, Arc<State>>,
    /// Every recorded state.
    pub recorder: Recorder,
    /// PRNG for context ids.
    pub rng: Rng,
}

/// `true` for `domain.object_id` with HA's allowed characters.
pub fn valid_entity_id(id: &str) -> bool {
    let Some((d, o)) = id.split_once('.') else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    ok(d)
        && ok(o)
        && !d.starts_with('_')
        && !d.ends_with('_')
        && !o.starts_with('_')
        && !o.ends_with('_')
}

impl World {
    /// A world with the seeded entities (recorded as their first history rows), set now.
    pub fn new(seeds: &[EntitySeed], seed: u64, recorder_cap: usize) -> World {
        World::new_at(seeds, seed, recorder_cap, now_us())
    }

    /// [`World::new`] with the seeded entities set at `now` (a synthetic clock, as the firehose
    /// templates' own, must start after it: each entity's times only increase).
    pub fn new_at(seeds: &[EntitySeed], seed: u64, recorder_cap: usize, now: i64) -> World {
        let mut w = World {
            states: BTreeMap::new(),
            recorder: Recorder::new(recorder_cap),
            rng: Rng(seed ^ 0x5EED),
        };
        for s in seeds {
            let ctx = w.new_context(now, None);
            w.set(
                &s.entity_id,
                s.state.clone(),
                Attrs::new(s.attributes.clone()),
                false,
                ctx,
                now,
            );
        }
        w
    }

    /// A fresh context.
    pub fn new_context(&mut self, now: i64, user_id: Option<Arc<str>>) -> Arc<Context> {
        Arc::new(Context {
            id: ulid(now, &mut self.rng),
            parent_id: None,
            user_id,
        })
    }

    /// HA's `async_set`: a no-op when neither state nor attributes change (unless `force`),
    /// `last_changed` moves only when the state string changes, or when `force` is set (HA treats a
    /// forced update as a change of state: `same_state = old == new and not force_update`).
    pub fn set(
        &mut self,
        entity_id: &str,
        state: String,
        attrs: Arc<Attrs>,
        force: bool,
        ctx: Arc<Context>,
        now: i64,
    ) -> Option<Change> {
        let old = self.states.get(entity_id).cloned();
        // Each entity's times strictly increase: a fast generator can set one entity twice within
        // a microsecond, which HA's clock (sub-microsecond `time.time()`) practically never shows.
        let now = old.as_ref().map_or(now, |o| now.max(o.last_updated + 1));
        let (key, last_changed) = match &old {
            Some(o) => {
                let same_state = o.state == state;
                let same_attrs = Arc::ptr_eq(&o.attrs, &attrs) || o.attrs.map == attrs.map;
                if same_state && same_attrs && !force {
                    return None;
                }
                (
                    o.entity_id.clone(),
                    if same_state && !force {
                        o.last_changed
                    } else {
                        now
                    },
                )
            }
            None => (Arc::<str>::from(entity_id), now),
        };
        let attrs = match &old {
            Some(o) if !Arc::ptr_eq(&o.attrs, &attrs) && o.attrs.map == attrs.map => {
                o.attrs.clone()
            }
            _ => attrs,
        };
        let new = Arc::new(State::new(
            key.clone(),
            state,
            attrs,
            last_changed,
            now,
            ctx,
        ));
        self.states.insert(key.clone(), new.clone());
        self.recorder.record(new.clone());
        Some(Change {
            entity_id: key,
            old,
            new: Some(new),
        })
    }

    /// Removes an entity.
    pub fn remove(&mut self, entity_id: &str) -> Option<Change> {
        let old = self.states.remove(entity_id)?;
        Some(Change {
            entity_id: old.entity_id.clone(),
            old: Some(old),
            new: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_and_compressed() {
        let ctx = Arc::new(Context {
            id: "01ABC".into(),
            parent_id: None,
            user_id: None,
        });
        let st = State::new(
            "sensor.x".into(),
            "42".into(),
            Attrs::new(serde_json::json!({"unit_of_measurement":"W"})),
            1_795_345_559_428_451,
            1_795_345_559_428_451,
            ctx.clone(),
        );
        assert_eq!(
            st.json(),
            r#"{"entity_id":"sensor.x","state":"42","attributes":{"unit_of_measurement":"W"},"last_changed":"2026-11-22T11:05:59.428451+00:00","last_updated":"2026-11-22T11:05:59.428451+00:00","context":{"id":"01ABC","parent_id":null,"user_id":null}}"#
        );
        let mut c = String::new();
        st.write_compressed(&mut c);
        // `lc` is a float with HA's sub-microsecond digits that shows as the ISO time's microsecond.
        let lc = epoch_f64(1_795_345_559_428_451);
        assert_eq!(
            c,
            format!(r#"{{"s":"42","a":{{"unit_of_measurement":"W"}},"c":"01ABC","lc":{lc}}}"#)
        );
        let ctx2 = Arc::new(Context {
            id: "01DEF".into(),
            parent_id: None,
            user_id: Some("u1".into()),
        });
        let st2 = State::new(
            "sensor.x".into(),
            "43".into(),
            st.attrs.clone(),
            1_795_345_560_000_000,
            1_795_345_560_000_000,
            ctx2,
        );
        let mut d = String::new();
        write_state_diff(&mut d, &st, &st2);
        // HA's `_state_diff` inserts `s`, then `lc`/`lu`, then `c` (parent, user, then id).
        let lc = epoch_f64(1_795_345_560_000_000);
        assert_eq!(
            d,
            format!(r#"{{"+":{{"s":"43","lc":{lc},"c":{{"user_id":"u1","id":"01DEF"}}}}}}"#)
        );
    }

    #[test]
    fn an_entity_set_twice_in_one_microsecond_gets_increasing_times() {
        let mut w = World::new(&[], 1, 100);
        let attrs = Attrs::new(serde_json::json!({}));
        let ctx = w.new_context(1, None);
        let mut times = Vec::new();
        for state in ["1", "2", "3"] {
            let change = w
                .set(
                    "sensor.fast",
                    state.into(),
                    attrs.clone(),
                    false,
                    ctx.clone(),
                    500,
                )
                .unwrap();
            let now = &w.states["sensor.fast"];
            times.push((now.last_changed, now.last_updated));
            drop(change);
        }
        assert_eq!(times, vec![(500, 500), (501, 501), (502, 502)]);
    }

    #[test]
    fn last_changed_follows_ha() {
        let mut w = World::new(&[], 1, 100);
        let attrs = Attrs::new(serde_json::json!({"unit_of_measurement": "W"}));
        let ctx = w.new_context(1, None);
        let first = w.set(
            "sensor.p",
            "1".into(),
            attrs.clone(),
            false,
            ctx.clone(),
            10,
        );
        assert!(first.is_some());
        // Same state and attributes: no event.
        assert!(
            w.set(
                "sensor.p",
                "1".into(),
                attrs.clone(),
                false,
                ctx.clone(),
                20
            )
            .is_none()
        );
        // An attribute change keeps last_changed.
        let other = Attrs::new(serde_json::json!({"unit_of_measurement": "kW"}));
        let c = w
            .set(
                "sensor.p",
                "1".into(),
                other.clone(),
                false,
                ctx.clone(),
                30,
            )
            .unwrap();
        assert_eq!(c.new.unwrap().last_changed, 10);
        // A forced update moves it, as HA's `same_state = ... and not force_update` does.
        let c = w.set("sensor.p", "1".into(), other, true, ctx, 40).unwrap();
        assert_eq!(c.new.unwrap().last_changed, 40);
    }

    #[test]
    fn ulid_shape() {
        let mut r = Rng(1);
        let u = ulid(1_795_345_559_428_451, &mut r);
        assert_eq!(u.len(), 26);
        assert!(u.starts_with("01"));
    }
}

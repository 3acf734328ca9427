//! `subscribe_entities`: HA's compressed entity diffs, decoded into full states.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::time::Seconds;

use super::Subscription;

/// An entity's full state, rebuilt from the compressed diffs.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityState {
    /// `domain.object_id`.
    pub entity_id: String,
    /// The state string.
    pub state: String,
    /// All attributes.
    pub attributes: Map<String, Value>,
    /// The context id of the last change.
    pub context_id: Option<String>,
    /// Epoch seconds of the last state change.
    pub last_changed: f64,
    /// Epoch seconds of the last update.
    pub last_updated: f64,
}

impl EntityState {
    /// `last_changed` in microseconds, as in HA's ISO strings ([`crate::time::micros_from_seconds`]).
    pub fn last_changed_us(&self) -> i64 {
        crate::time::micros_from_seconds(self.last_changed)
    }

    /// `last_updated` in microseconds, as in HA's ISO strings ([`crate::time::micros_from_seconds`]).
    pub fn last_updated_us(&self) -> i64 {
        crate::time::micros_from_seconds(self.last_updated)
    }
}

/// What one `subscribe_entities` message changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntitiesUpdate {
    /// New or changed entities, in full.
    pub changed: Vec<EntityState>,
    /// Removed entity ids.
    pub removed: Vec<String>,
}

#[derive(Deserialize)]
struct Compressed {
    #[serde(default)]
    a: HashMap<String, CompressedState>,
    #[serde(default)]
    c: HashMap<String, Diff>,
    #[serde(default)]
    r: Vec<String>,
}

#[derive(Deserialize, Default)]
struct CompressedState {
    #[serde(default)]
    s: Option<String>,
    #[serde(default)]
    a: Option<Map<String, Value>>,
    #[serde(default)]
    c: Option<Value>,
    #[serde(default)]
    lc: Option<Seconds>,
    #[serde(default)]
    lu: Option<Seconds>,
}

#[derive(Deserialize)]
struct Diff {
    #[serde(default, rename = "+")]
    plus: Option<CompressedState>,
    #[serde(default, rename = "-")]
    minus: Option<Removed>,
}

#[derive(Deserialize)]
struct Removed {
    #[serde(default)]
    a: Vec<String>,
}

fn context_id(c: &Value) -> Option<String> {
    match c {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Applies one compressed message to `entities`. Unknown entities in a `c` diff are skipped
/// (HA always sends `a` first).
pub(crate) fn apply(
    entities: &mut HashMap<String, EntityState>,
    raw: &str,
) -> Result<EntitiesUpdate, serde_json::Error> {
    let msg: Compressed = serde_json::from_str(raw)?;
    let mut update = EntitiesUpdate::default();
    for (entity_id, s) in msg.a {
        let lc = s.lc.map_or(0.0, |s| s.0);
        let state = EntityState {
            entity_id: entity_id.clone(),
            state: s.s.unwrap_or_default(),
            attributes: s.a.unwrap_or_default(),
            context_id: s.c.as_ref().and_then(context_id),
            last_changed: lc,
            last_updated: s.lu.map_or(lc, |s| s.0),
        };
        entities.insert(entity_id, state.clone());
        update.changed.push(state);
    }
    for (entity_id, diff) in msg.c {
        let Some(state) = entities.get_mut(&entity_id) else {
            continue;
        };
        if let Some(plus) = diff.plus {
            if let Some(s) = plus.s {
                state.state = s;
            }
            if let Some(a) = plus.a {
                state.attributes.extend(a);
            }
            if let Some(c) = plus.c.as_ref().and_then(context_id) {
                state.context_id = Some(c);
            }
            if let Some(Seconds(lc)) = plus.lc {
                state.last_changed = lc;
                state.last_updated = lc;
            }
            if let Some(Seconds(lu)) = plus.lu {
                state.last_updated = lu;
            }
        }
        if let Some(minus) = diff.minus {
            // `retain` keeps the others in order, with serde_json's `preserve_order` or without.
            state.attributes.retain(|k, _| !minus.a.contains(k));
        }
        update.changed.push(state.clone());
    }
    for entity_id in msg.r {
        if entities.remove(&entity_id).is_some() {
            update.removed.push(entity_id);
        }
    }
    Ok(update)
}

/// A stream of [`EntitiesUpdate`]s with the full entity map kept up to date
/// ([`EntitiesSubscription::entities`]). After a reconnect HA sends every entity again as `a`.
pub struct EntitiesSubscription {
    inner: Subscription,
    entities: HashMap<String, EntityState>,
}

impl EntitiesSubscription {
    pub(crate) fn new(inner: Subscription) -> Self {
        EntitiesSubscription {
            inner,
            entities: HashMap::new(),
        }
    }

    /// All entities as currently known.
    pub fn entities(&self) -> &HashMap<String, EntityState> {
        &self.entities
    }
}

impl Stream for EntitiesSubscription {
    type Item = EntitiesUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(event)) => match apply(&mut this.entities, event.raw()) {
                    Ok(update) => return Poll::Ready(Some(update)),
                    Err(e) => {
                        tracing::warn!(%e, "skipping an undecodable subscribe_entities message");
                    }
                },
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_add_change_remove() {
        let mut m = HashMap::new();
        let u = apply(
            &mut m,
            r#"{"a":{"input_number.t":{"s":"0.0","a":{"min":0,"friendly_name":"T"},"c":"01CTX","lc":100.5}}}"#,
        )
        .unwrap();
        assert_eq!(u.changed.len(), 1);
        let s = &m["input_number.t"];
        assert_eq!((s.last_changed, s.last_updated), (100.5, 100.5));
        assert_eq!(s.context_id.as_deref(), Some("01CTX"));

        let u = apply(
            &mut m,
            r#"{"c":{"input_number.t":{"+":{"s":"7.0","lc":200.0,"c":{"id":"02CTX","user_id":"u"},"a":{"max":9}},"-":{"a":["min"]}}}}"#,
        )
        .unwrap();
        let s = &u.changed[0];
        assert_eq!(s.state, "7.0");
        assert_eq!(s.last_changed, 200.0);
        assert_eq!(s.context_id.as_deref(), Some("02CTX"));
        assert!(s.attributes.get("min").is_none());
        assert_eq!(s.attributes["max"], 9);
        assert_eq!(s.attributes["friendly_name"], "T");

        // Attribute-only change: lu moves, lc stays.
        apply(
            &mut m,
            r#"{"c":{"input_number.t":{"+":{"lu":250.0,"a":{"x":1}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                m["input_number.t"].last_changed,
                m["input_number.t"].last_updated
            ),
            (200.0, 250.0)
        );

        let u = apply(&mut m, r#"{"r":["input_number.t","nope.x"]}"#).unwrap();
        assert_eq!(u.removed, vec!["input_number.t".to_string()]);
        assert!(m.is_empty());
    }
}

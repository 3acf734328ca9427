//! Typed `state_changed` events, parsed straight from the event's JSON (never through
//! `serde_json::Value`): borrowed views for the fast path, an owned type for convenience.
//!
//! The borrowed types point into the WebSocket frame: no allocation for ids, times or a state
//! without escapes, and the attributes stay unparsed JSON until asked for. The owned type copies
//! everything and parses the attributes into a map, as [`State`] does.

use std::borrow::Cow;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::types::{Context, State};
use crate::time::micros_from_iso;

/// A `state_changed` event borrowed from its JSON: the fast path. Parse it with
/// [`Event::state_changed`](super::Event::state_changed) or `event.parse::<StateChangedRef>()`.
/// Any other event type is an error (use [`HaEvent`](super::HaEvent) for those).
#[derive(Clone, Debug)]
pub struct StateChangedRef<'a> {
    /// The entity.
    pub entity_id: &'a str,
    /// The state before (`None` for a new entity).
    pub old_state: Option<StateRef<'a>>,
    /// The state after (`None` when the entity was removed).
    pub new_state: Option<StateRef<'a>>,
    /// `LOCAL` or `REMOTE`.
    pub origin: Option<&'a str>,
    /// When HA fired the event (ISO 8601); see [`StateChangedRef::time_fired_us`].
    pub time_fired: Option<&'a str>,
    /// The event's context.
    pub context: Option<ContextRef<'a>>,
}

impl StateChangedRef<'_> {
    /// `time_fired` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn time_fired_us(&self) -> Option<i64> {
        self.time_fired.and_then(micros_from_iso)
    }
}

/// A state object borrowed from its JSON.
#[derive(Clone, Debug, Deserialize)]
pub struct StateRef<'a> {
    /// `domain.object_id`.
    #[serde(borrow)]
    pub entity_id: &'a str,
    /// The state string (borrowed unless it holds JSON escapes).
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    /// The attributes' JSON text, unparsed; see [`StateRef::parse_attributes`].
    #[serde(borrow, default)]
    pub attributes: Option<&'a RawValue>,
    /// ISO 8601 time of the last state change; see [`StateRef::last_changed_us`].
    #[serde(borrow)]
    pub last_changed: &'a str,
    /// ISO 8601 time of the last state or attribute change; see [`StateRef::last_updated_us`].
    #[serde(borrow)]
    pub last_updated: &'a str,
    /// ISO 8601 time of the last report (HA 2024.3+; absent on older versions).
    #[serde(borrow, default)]
    pub last_reported: Option<&'a str>,
    /// The context that caused the change.
    #[serde(borrow, default)]
    pub context: Option<ContextRef<'a>>,
}

impl<'a> StateRef<'a> {
    /// Parses the attributes as `T`: a map (`serde_json::Map`, or `HashMap<&str, &RawValue>` to
    /// look at a few without parsing the rest) or a struct of your own. Absent attributes parse
    /// as `{}`.
    pub fn parse_attributes<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.attributes.map_or("{}", RawValue::get))
    }

    /// `last_changed` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn last_changed_us(&self) -> Option<i64> {
        micros_from_iso(self.last_changed)
    }

    /// `last_updated` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn last_updated_us(&self) -> Option<i64> {
        micros_from_iso(self.last_updated)
    }

    /// `last_reported` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn last_reported_us(&self) -> Option<i64> {
        self.last_reported.and_then(micros_from_iso)
    }
}

/// HA's context of a change, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ContextRef<'a> {
    /// ULID.
    #[serde(borrow)]
    pub id: &'a str,
    /// The parent context.
    #[serde(borrow, default)]
    pub parent_id: Option<&'a str>,
    /// The user who caused it.
    #[serde(borrow, default)]
    pub user_id: Option<&'a str>,
}

/// A `state_changed` event, owned, parsed straight from the event's JSON (not through
/// [`HaEvent`](super::HaEvent)`.data`). Any other event type is an error.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChangedEvent {
    /// The entity.
    pub entity_id: String,
    /// The state before (`None` for a new entity).
    pub old_state: Option<State>,
    /// The state after (`None` when the entity was removed).
    pub new_state: Option<State>,
    /// `LOCAL` or `REMOTE`.
    pub origin: Option<String>,
    /// When HA fired the event (ISO 8601); see [`StateChangedEvent::time_fired_us`].
    pub time_fired: Option<String>,
    /// The event's context.
    pub context: Option<Context>,
}

impl StateChangedEvent {
    /// `time_fired` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn time_fired_us(&self) -> Option<i64> {
        self.time_fired.as_deref().and_then(micros_from_iso)
    }
}

/// HA's shape of an event: `{"event_type", "data": {...}, "origin", "time_fired", "context"}`.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>, D: Deserialize<'de>, C: Deserialize<'de>"))]
struct Wire<T, D, C> {
    event_type: T,
    data: D,
    #[serde(default)]
    origin: Option<T>,
    #[serde(default)]
    time_fired: Option<T>,
    #[serde(default)]
    context: Option<C>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>, S: Deserialize<'de>"))]
struct Data<T, S> {
    // Optional here so that another event type gets the clearer "not a state_changed event".
    #[serde(default)]
    entity_id: Option<T>,
    #[serde(default)]
    old_state: Option<S>,
    #[serde(default)]
    new_state: Option<S>,
}

fn check_type<E: serde::de::Error>(event_type: &str) -> Result<(), E> {
    if event_type == "state_changed" {
        Ok(())
    } else {
        Err(E::custom(format!(
            "not a state_changed event (event_type '{event_type}'); parse it as HaEvent"
        )))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StateChangedRef<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::<&'a str, Data<&'a str, StateRef<'a>>, ContextRef<'a>>::deserialize(d)?;
        check_type(w.event_type)?;
        Ok(StateChangedRef {
            entity_id: w
                .data
                .entity_id
                .ok_or_else(|| D::Error::missing_field("entity_id"))?,
            old_state: w.data.old_state,
            new_state: w.data.new_state,
            origin: w.origin,
            time_fired: w.time_fired,
            context: w.context,
        })
    }
}

impl<'de> Deserialize<'de> for StateChangedEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::<String, Data<String, State>, Context>::deserialize(d)?;
        check_type(&w.event_type)?;
        Ok(StateChangedEvent {
            entity_id: w
                .data
                .entity_id
                .ok_or_else(|| D::Error::missing_field("entity_id"))?,
            old_state: w.data.old_state,
            new_state: w.data.new_state,
            origin: w.origin,
            time_fired: w.time_fired,
            context: w.context,
        })
    }
}

impl State {
    /// `last_changed` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn last_changed_us(&self) -> Option<i64> {
        micros_from_iso(&self.last_changed)
    }

    /// `last_updated` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn last_updated_us(&self) -> Option<i64> {
        micros_from_iso(&self.last_updated)
    }

    /// `last_reported` in microseconds since the epoch ([`micros_from_iso`]).
    pub fn last_reported_us(&self) -> Option<i64> {
        self.last_reported.as_deref().and_then(micros_from_iso)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// Frames a real HA sent while states were set, changed, removed and a service was called
    /// (`tests/fixtures/state_changed_frames_*.jsonl`, one frame a line, coalesced ones included).
    const FRAMES: [(&str, &str); 2] = [
        (
            "2024.3.3",
            include_str!("../../tests/fixtures/state_changed_frames_2024.3.3.jsonl"),
        ),
        (
            "2026.2.3",
            include_str!("../../tests/fixtures/state_changed_frames_2026.2.3.jsonl"),
        ),
    ];

    /// The `event` objects of a capture, as raw text.
    fn events(frames: &str) -> Vec<&str> {
        #[derive(Deserialize)]
        struct Message<'a> {
            #[serde(borrow, default)]
            event: Option<&'a RawValue>,
        }
        let mut out = Vec::new();
        for line in frames.lines() {
            let messages: Vec<Message<'_>> = if line.starts_with('[') {
                serde_json::from_str(line).unwrap()
            } else {
                vec![serde_json::from_str(line).unwrap()]
            };
            out.extend(messages.iter().filter_map(|m| m.event.map(RawValue::get)));
        }
        out
    }

    #[test]
    fn real_events_parse_borrowed_and_owned_alike() {
        for (version, frames) in FRAMES {
            let events = events(frames);
            assert!(events.len() >= 7, "{version}: {} events", events.len());
            for raw in events {
                let b: StateChangedRef<'_> = serde_json::from_str(raw).unwrap();
                let o: StateChangedEvent = serde_json::from_str(raw).unwrap();
                let v: Value = serde_json::from_str(raw).unwrap();
                assert_eq!(b.entity_id, o.entity_id);
                assert_eq!(b.entity_id, v["data"]["entity_id"]);
                assert_eq!(b.time_fired, o.time_fired.as_deref());
                assert_eq!(b.time_fired_us(), o.time_fired_us());
                assert!(b.time_fired_us().is_some(), "{raw}");
                assert_eq!(b.origin, Some("LOCAL"));
                assert_eq!(b.context.map(|c| c.id), o.context.as_ref().map(|c| &*c.id));
                for (which, bs, os) in [
                    ("old_state", &b.old_state, &o.old_state),
                    ("new_state", &b.new_state, &o.new_state),
                ] {
                    assert_eq!(bs.is_some(), os.is_some(), "{which}: {raw}");
                    assert_eq!(bs.is_some(), !v["data"][which].is_null(), "{which}: {raw}");
                    let (Some(bs), Some(os)) = (bs, os) else {
                        continue;
                    };
                    assert_eq!(bs.entity_id, os.entity_id);
                    assert_eq!(bs.state, os.state);
                    assert_eq!(v["data"][which]["state"], *bs.state);
                    assert_eq!(
                        bs.parse_attributes::<Map<String, Value>>().unwrap(),
                        os.attributes
                    );
                    assert_eq!(bs.last_changed_us(), os.last_changed_us());
                    assert_eq!(bs.last_updated_us(), os.last_updated_us());
                    assert_eq!(bs.last_reported_us(), os.last_reported_us());
                    assert!(bs.last_updated_us() >= bs.last_changed_us());
                    // HA 2024.3 has no last_reported; 2026.2 has it on every state.
                    assert_eq!(bs.last_reported.is_some(), version != "2024.3.3", "{raw}");
                    assert_eq!(
                        bs.context.map(|c| c.id),
                        os.context.as_ref().map(|c| &*c.id)
                    );
                }
            }
        }
    }

    #[test]
    fn borrowed_fields_point_into_the_frame_unless_escaped() {
        for (_, frames) in FRAMES {
            let events = events(frames);
            let text_event = events
                .iter()
                .find(|e| e.contains(r#""entity_id":"sensor.fixture_text","old_state":null"#))
                .unwrap();
            let e: StateChangedRef<'_> = serde_json::from_str(text_event).unwrap();
            let s = e.new_state.unwrap();
            // JSON escapes are decoded into an owned string; HA writes non-ASCII as is.
            assert_eq!(s.state, "He said \"hi\" \\ 21 °C ✓\n");
            assert!(matches!(s.state, Cow::Owned(_)));
            let attrs: Map<String, Value> = s.parse_attributes().unwrap();
            assert_eq!(attrs["friendly_name"], "Fixture «text»");

            let power = events
                .iter()
                .find(|e| e.contains(r#""entity_id":"sensor.fixture_power","old_state":null"#))
                .unwrap();
            let e: StateChangedRef<'_> = serde_json::from_str(power).unwrap();
            let s = e.new_state.as_ref().unwrap();
            assert!(matches!(s.state, Cow::Borrowed("42.5")));
            assert_eq!(
                s.attributes.unwrap().get(),
                r#"{"unit_of_measurement":"W","device_class":"power","friendly_name":"Fixture power"}"#
            );
            assert!(power.contains(s.entity_id) && power.contains(s.last_updated));
            // The first change of a new entity: no old state; HA's user in the context.
            assert!(e.old_state.is_none());
            assert!(s.context.unwrap().user_id.is_some());
            assert_eq!(s.last_changed, s.last_updated);
            assert_eq!(s.last_updated_us(), micros_from_iso(s.last_updated));
        }
    }

    #[test]
    fn removal_and_service_call_events() {
        for (version, frames) in FRAMES {
            let events = events(frames);
            let parsed: Vec<StateChangedEvent> = events
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            let removed = parsed
                .iter()
                .find(|e| e.entity_id == "sensor.fixture_text" && e.new_state.is_none())
                .unwrap_or_else(|| panic!("{version}: no removal"));
            assert_eq!(
                removed.old_state.as_ref().unwrap().state,
                "He said \"hi\" \\ 21 °C ✓\n"
            );
            let set = parsed
                .iter()
                .find(|e| e.entity_id == "input_number.test_level")
                .unwrap_or_else(|| panic!("{version}: no service call"));
            assert_eq!(set.new_state.as_ref().unwrap().state, "7.0");
            let nested = parsed
                .iter()
                .filter_map(|e| e.new_state.as_ref())
                .find(|s| s.attributes.contains_key("nested"))
                .unwrap();
            assert_eq!(nested.attributes["nested"]["list"][1], 2.5);
        }
    }

    #[test]
    fn other_event_types_are_refused_with_a_pointer_to_ha_event() {
        let raw = r#"{"event_type":"call_service","data":{"domain":"light","service":"turn_on"},"origin":"LOCAL","time_fired":"2026-11-22T11:05:59.395949+00:00","context":{"id":"01M","parent_id":null,"user_id":null}}"#;
        let err = serde_json::from_str::<StateChangedRef<'_>>(raw).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a state_changed event (event_type 'call_service')"),
            "{err}"
        );
        assert!(err.to_string().contains("HaEvent"), "{err}");
        assert!(serde_json::from_str::<StateChangedEvent>(raw).is_err());
        // Truncated JSON is an error, not a panic.
        assert!(serde_json::from_str::<StateChangedRef<'_>>(&raw[..40]).is_err());
    }
}

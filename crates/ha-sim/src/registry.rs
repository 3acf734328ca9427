//! HA's registries (areas, floors, labels, devices, entities) as `config/*_registry/list` lists
//! them, kept small and changed by tests through [`crate::Sim`]. Each change fires the
//! `*_registry_updated` event HA fires, with the old values in `changes`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The registries. Entries are HA's list items, in insertion order per registry.
#[derive(Default)]
pub struct Registries {
    areas: BTreeMap<String, Value>,
    floors: BTreeMap<String, Value>,
    labels: BTreeMap<String, Value>,
    devices: BTreeMap<String, Value>,
    entities: BTreeMap<String, Value>,
    /// Like an HA older than floors and labels: no such registries (`unknown_command`).
    pub without_floors_and_labels: bool,
}

/// Which registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `config/area_registry`.
    Area,
    /// `config/floor_registry`.
    Floor,
    /// `config/label_registry`.
    Label,
    /// `config/device_registry`.
    Device,
    /// `config/entity_registry`.
    Entity,
}

impl Kind {
    /// The kind a `config/<x>_registry/list` command lists.
    pub fn of_list_command(command: &str) -> Option<Kind> {
        Some(match command {
            "config/area_registry/list" => Kind::Area,
            "config/floor_registry/list" => Kind::Floor,
            "config/label_registry/list" => Kind::Label,
            "config/device_registry/list" => Kind::Device,
            "config/entity_registry/list" => Kind::Entity,
            _ => return None,
        })
    }

    /// The event HA fires on a change.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::Area => "area_registry_updated",
            Kind::Floor => "floor_registry_updated",
            Kind::Label => "label_registry_updated",
            Kind::Device => "device_registry_updated",
            Kind::Entity => "entity_registry_updated",
        }
    }

    /// The key naming the entry in the event's data.
    fn id_key(self) -> &'static str {
        match self {
            Kind::Area => "area_id",
            Kind::Floor => "floor_id",
            Kind::Label => "label_id",
            Kind::Device => "device_id",
            Kind::Entity => "entity_id",
        }
    }
}

impl Registries {
    fn map(&mut self, kind: Kind) -> &mut BTreeMap<String, Value> {
        match kind {
            Kind::Area => &mut self.areas,
            Kind::Floor => &mut self.floors,
            Kind::Label => &mut self.labels,
            Kind::Device => &mut self.devices,
            Kind::Entity => &mut self.entities,
        }
    }

    /// The list `kind`'s list command answers, or `None` where HA has no such command.
    pub fn list(&mut self, kind: Kind) -> Option<Value> {
        if self.without_floors_and_labels && matches!(kind, Kind::Floor | Kind::Label) {
            return None;
        }
        Some(Value::Array(self.map(kind).values().cloned().collect()))
    }

    /// Creates the entry `id` of `kind` with `fields` (over HA's defaults) or updates the given
    /// fields of an existing one. Returns the event data HA fires (`None` when nothing changed).
    pub fn upsert(&mut self, kind: Kind, id: &str, fields: Value) -> Option<Value> {
        let Value::Object(fields) = fields else {
            return None;
        };
        let without = self.without_floors_and_labels;
        let map = self.map(kind);
        let id_key = kind.id_key();
        match map.get_mut(id) {
            Some(entry) => {
                let mut changes = serde_json::Map::new();
                for (k, v) in fields {
                    let old = entry.get(&k).cloned().unwrap_or(Value::Null);
                    if old != v {
                        changes.insert(k.clone(), old);
                        entry[&k] = v;
                    }
                }
                if changes.is_empty() {
                    return None;
                }
                Some(json!({"action": "update", id_key: id, "changes": changes}))
            }
            None => {
                let mut entry = default_entry(kind, id, without);
                for (k, v) in fields {
                    entry[&k] = v;
                }
                map.insert(id.to_string(), entry);
                Some(json!({"action": "create", id_key: id}))
            }
        }
    }

    /// Removes an entry; the event data, or `None` if there was none.
    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Value> {
        self.map(kind).remove(id)?;
        Some(json!({"action": "remove", kind.id_key(): id}))
    }
}

/// HA's fields of a new entry (2026.2 shapes; without floors and labels, as on older HA).
fn default_entry(kind: Kind, id: &str, without_floors_and_labels: bool) -> Value {
    let mut entry = match kind {
        Kind::Area => json!({
            "aliases": [], "area_id": id, "floor_id": null, "humidity_entity_id": null,
            "icon": null, "labels": [], "name": id, "picture": null,
            "temperature_entity_id": null, "created_at": 0.0, "modified_at": 0.0,
        }),
        Kind::Floor => json!({
            "aliases": [], "floor_id": id, "icon": null, "level": null, "name": id,
            "created_at": 0.0, "modified_at": 0.0,
        }),
        Kind::Label => json!({
            "color": null, "description": null, "icon": null, "label_id": id, "name": id,
            "created_at": 0.0, "modified_at": 0.0,
        }),
        Kind::Device => json!({
            "area_id": null, "configuration_url": null, "config_entries": [],
            "connections": [], "disabled_by": null, "entry_type": null, "hw_version": null,
            "id": id, "identifiers": [], "labels": [], "manufacturer": null, "model": null,
            "model_id": null, "name_by_user": null, "name": id, "serial_number": null,
            "sw_version": null, "via_device_id": null, "created_at": 0.0, "modified_at": 0.0,
        }),
        Kind::Entity => json!({
            "area_id": null, "categories": {}, "config_entry_id": null, "device_id": null,
            "disabled_by": null, "entity_category": null, "entity_id": id,
            "has_entity_name": false, "hidden_by": null, "icon": null, "id": id,
            "labels": [], "name": null, "options": {}, "original_name": null,
            "platform": id.split('.').next().unwrap_or(""), "translation_key": null,
            "unique_id": id, "created_at": 0.0, "modified_at": 0.0,
        }),
    };
    if without_floors_and_labels && let Value::Object(m) = &mut entry {
        m.remove("floor_id");
        m.remove("labels");
    }
    entry
}

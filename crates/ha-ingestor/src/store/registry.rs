//! HA's registries in the store: one table per registry, per instance, replaced whole on every
//! read (registries are small; a re-read is simpler than applying change events and cannot
//! drift), and the `entity_metadata` view over them (see [`super::schema`]).

use ha_client::ws::{AreaEntry, DeviceEntry, EntityEntry, FloorEntry, LabelEntry};
use std::collections::HashMap;

use rusqlite::{Connection, params};

/// One registry as HA listed it.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryList {
    /// `config/area_registry/list`.
    Areas(Vec<AreaEntry>),
    /// `config/floor_registry/list` (empty on an HA without them).
    Floors(Vec<FloorEntry>),
    /// `config/label_registry/list` (empty on an HA without them).
    Labels(Vec<LabelEntry>),
    /// `config/device_registry/list`.
    Devices(Vec<DeviceEntry>),
    /// `config/entity_registry/list`.
    Entities(Vec<EntityEntry>),
}

impl RegistryList {
    /// The table holding it.
    pub fn table(&self) -> &'static str {
        match self {
            RegistryList::Areas(_) => "registry_areas",
            RegistryList::Floors(_) => "registry_floors",
            RegistryList::Labels(_) => "registry_labels",
            RegistryList::Devices(_) => "registry_devices",
            RegistryList::Entities(_) => "registry_entities",
        }
    }

    /// How many entries it has.
    pub fn len(&self) -> usize {
        match self {
            RegistryList::Areas(l) => l.len(),
            RegistryList::Floors(l) => l.len(),
            RegistryList::Labels(l) => l.len(),
            RegistryList::Devices(l) => l.len(),
            RegistryList::Entities(l) => l.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn labels_json(labels: &[String]) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

/// Replaces `instance`'s rows of each list with the list, in one transaction: a reader sees the
/// registries before or after, never half of them.
pub fn replace(
    conn: &mut Connection,
    instance: &str,
    lists: &[RegistryList],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for list in lists {
        tx.execute(
            &format!("DELETE FROM {} WHERE instance = ?1", list.table()),
            [instance],
        )?;
        match list {
            RegistryList::Areas(areas) => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO registry_areas (instance, area_id, name, floor_id, labels)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for a in areas {
                    stmt.execute(params![
                        instance,
                        a.area_id,
                        a.name,
                        a.floor_id,
                        labels_json(&a.labels)
                    ])?;
                }
            }
            RegistryList::Floors(floors) => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO registry_floors (instance, floor_id, name, level)
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for f in floors {
                    stmt.execute(params![instance, f.floor_id, f.name, f.level])?;
                }
            }
            RegistryList::Labels(labels) => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO registry_labels (instance, label_id, name)
                     VALUES (?1, ?2, ?3)",
                )?;
                for l in labels {
                    stmt.execute(params![instance, l.label_id, l.name])?;
                }
            }
            RegistryList::Devices(devices) => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO registry_devices (instance, device_id, name, area_id,
                         manufacturer, model, labels, disabled_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for d in devices {
                    stmt.execute(params![
                        instance,
                        d.id,
                        d.display_name(),
                        d.area_id,
                        d.manufacturer,
                        d.model,
                        labels_json(&d.labels),
                        d.disabled_by
                    ])?;
                }
            }
            RegistryList::Entities(entities) => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO registry_entities (instance, entity_id, name,
                         original_name, platform, device_id, area_id, labels, disabled_by, hidden_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for e in entities {
                    stmt.execute(params![
                        instance,
                        e.entity_id,
                        e.name,
                        e.original_name,
                        e.platform,
                        e.device_id,
                        e.area_id,
                        labels_json(&e.labels),
                        e.disabled_by,
                        e.hidden_by
                    ])?;
                }
            }
        }
    }
    tx.commit()
}

/// One row of `entity_metadata`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityMetadata {
    /// The instance.
    pub instance: String,
    /// The entity.
    pub entity_id: String,
    /// The user's name, else the integration's.
    pub name: Option<String>,
    /// Its own area, else its device's.
    pub area_id: Option<String>,
    /// That area's name.
    pub area: Option<String>,
    /// The area's floor's name.
    pub floor: Option<String>,
    /// Its device's name.
    pub device: Option<String>,
    /// Its labels' names, in HA's order.
    pub labels: Vec<String>,
}

/// Every row of `entity_metadata`, by instance and entity.
pub fn entity_metadata(conn: &Connection) -> rusqlite::Result<Vec<EntityMetadata>> {
    let mut stmt = conn.prepare(
        "SELECT instance, entity_id, name, area_id, area, floor, device, labels
         FROM entity_metadata ORDER BY instance, entity_id",
    )?;
    stmt.query_map([], metadata_row)?.collect()
}

/// The `entity_metadata` rows of `keys` (instance, entity id), by key; entities not in the
/// registry are left out. One primary-key lookup per key: a sink asks this per batch, so a
/// rename in HA reaches the next batch.
pub fn metadata_of<'k>(
    conn: &Connection,
    keys: impl IntoIterator<Item = (&'k str, &'k str)>,
) -> rusqlite::Result<MetadataMap> {
    let mut stmt = conn.prepare_cached(
        "SELECT instance, entity_id, name, area_id, area, floor, device, labels
         FROM entity_metadata WHERE instance = ?1 AND entity_id = ?2",
    )?;
    let mut found = MetadataMap::default();
    let mut asked = std::collections::HashSet::new();
    for key in keys {
        if !asked.insert(key) {
            continue;
        }
        let mut rows = stmt.query_map([key.0, key.1], metadata_row)?;
        if let Some(row) = rows.next().transpose()? {
            found
                .0
                .entry(row.instance.clone())
                .or_default()
                .insert(row.entity_id.clone(), row);
        }
    }
    Ok(found)
}

/// Metadata by instance and entity id, looked up without allocating.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataMap(HashMap<String, HashMap<String, EntityMetadata>>);

impl MetadataMap {
    /// The metadata of `entity_id` of `instance`, if it is in the registry.
    pub fn get(&self, instance: &str, entity_id: &str) -> Option<&EntityMetadata> {
        self.0.get(instance)?.get(entity_id)
    }

    /// How many entities it holds.
    pub fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn metadata_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntityMetadata> {
    let labels: Option<String> = r.get(7)?;
    Ok(EntityMetadata {
        instance: r.get(0)?,
        entity_id: r.get(1)?,
        name: r.get(2)?,
        area_id: r.get(3)?,
        area: r.get(4)?,
        floor: r.get(5)?,
        device: r.get(6)?,
        labels: labels
            .and_then(|l| serde_json::from_str(&l).ok())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Vec<T> {
        serde_json::from_value(v).unwrap()
    }

    fn lists() -> Vec<RegistryList> {
        vec![
            RegistryList::Floors(parse(
                json!([{"floor_id": "ground", "name": "Ground", "level": 0}]),
            )),
            RegistryList::Labels(parse(json!([
                {"label_id": "heat", "name": "Heating"},
                {"label_id": "crit", "name": "Critical"}
            ]))),
            RegistryList::Areas(parse(json!([
                {"area_id": "kitchen", "name": "Kitchen", "floor_id": "ground", "labels": []},
                {"area_id": "attic", "name": "Attic", "labels": []}
            ]))),
            RegistryList::Devices(parse(json!([
                {"id": "d1", "name": "Thermo", "name_by_user": "Kitchen thermometer",
                 "area_id": "kitchen", "manufacturer": "Acme", "model": "T1", "labels": []}
            ]))),
            RegistryList::Entities(parse(json!([
                // Area through its device.
                {"entity_id": "sensor.t", "name": null, "original_name": "Temperature",
                 "platform": "acme", "device_id": "d1", "area_id": null, "labels": ["crit", "heat"]},
                // Its own area overrides its device's.
                {"entity_id": "sensor.h", "name": "Humidity up there", "original_name": "Humidity",
                 "platform": "acme", "device_id": "d1", "area_id": "attic", "labels": []},
                // No device, no area; fields of an HA without labels.
                {"entity_id": "input_boolean.x", "original_name": "X", "platform": "input_boolean"}
            ]))),
        ]
    }

    fn row(
        entity_id: &str,
        name: Option<&str>,
        area: Option<(&str, &str)>,
        floor: Option<&str>,
        device: Option<&str>,
        labels: &[&str],
    ) -> EntityMetadata {
        EntityMetadata {
            instance: "home".into(),
            entity_id: entity_id.into(),
            name: name.map(Into::into),
            area_id: area.map(|a| a.0.into()),
            area: area.map(|a| a.1.into()),
            floor: floor.map(Into::into),
            device: device.map(Into::into),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn the_view_gives_each_entity_its_name_area_floor_device_and_labels() {
        let mut conn = crate::store::open::in_memory().unwrap();
        replace(&mut conn, "home", &lists()).unwrap();
        assert_eq!(
            entity_metadata(&conn).unwrap(),
            vec![
                row("input_boolean.x", Some("X"), None, None, None, &[]),
                row(
                    "sensor.h",
                    Some("Humidity up there"),
                    Some(("attic", "Attic")),
                    None,
                    Some("Kitchen thermometer"),
                    &[]
                ),
                row(
                    "sensor.t",
                    Some("Temperature"),
                    Some(("kitchen", "Kitchen")),
                    Some("Ground"),
                    Some("Kitchen thermometer"),
                    &["Critical", "Heating"]
                ),
            ]
        );
    }

    #[test]
    fn metadata_of_finds_registered_entities_only() {
        let mut conn = crate::store::open::in_memory().unwrap();
        replace(&mut conn, "home", &lists()).unwrap();
        let found = metadata_of(
            &conn,
            [
                ("home", "sensor.t"),
                ("home", "sensor.not_registered"),
                ("cabin", "sensor.t"),
                ("home", "sensor.t"),
            ],
        )
        .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found.get("home", "sensor.not_registered"), None);
        assert_eq!(found.get("cabin", "sensor.t"), None);
        let t = found.get("home", "sensor.t").unwrap();
        assert_eq!(
            (t.area.as_deref(), t.floor.as_deref(), t.labels.clone()),
            (
                Some("Kitchen"),
                Some("Ground"),
                vec!["Critical".to_string(), "Heating".to_string()]
            )
        );
    }

    #[test]
    fn a_replaced_list_leaves_the_others_and_other_instances_alone() {
        let mut conn = crate::store::open::in_memory().unwrap();
        replace(&mut conn, "home", &lists()).unwrap();
        replace(&mut conn, "cabin", &lists()).unwrap();
        // The kitchen is renamed and the attic deleted in `home` only.
        replace(
            &mut conn,
            "home",
            &[RegistryList::Areas(parse(json!([
                {"area_id": "kitchen", "name": "Cooking", "floor_id": "ground"}
            ])))],
        )
        .unwrap();
        let areas: Vec<(String, Option<String>, Option<String>)> = entity_metadata(&conn)
            .unwrap()
            .into_iter()
            .filter(|r| r.entity_id.starts_with("sensor."))
            .map(|r| (r.instance, r.area_id, r.area))
            .collect();
        assert_eq!(
            areas,
            vec![
                ("cabin".into(), Some("attic".into()), Some("Attic".into())),
                (
                    "cabin".into(),
                    Some("kitchen".into()),
                    Some("Kitchen".into())
                ),
                // The entity still names the deleted area; the view has no name for it.
                ("home".into(), Some("attic".into()), None),
                (
                    "home".into(),
                    Some("kitchen".into()),
                    Some("Cooking".into())
                ),
            ]
        );
    }
}

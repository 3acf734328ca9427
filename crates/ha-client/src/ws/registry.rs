//! HA's registries: areas, floors, labels, devices and entities (`config/*_registry/list`),
//! readable by a non-admin user. Floors and labels are younger than the rest (HA 2024.3.3 has
//! them, and so does 2026.2.3): an HA without them answers those two lists with `unknown_command`,
//! and its area, device and entity entries carry no `floor_id` or `labels` (the fields default
//! to empty here).

use serde::{Deserialize, Serialize};

/// An area (`config/area_registry/list`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct AreaEntry {
    /// Its id (`living_room`).
    pub area_id: String,
    /// Its name as the user set it.
    pub name: String,
    /// Its floor, if any (absent on older HA).
    #[serde(default)]
    pub floor_id: Option<String>,
    /// Its label ids (absent on older HA).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// A floor (`config/floor_registry/list`; absent on older HA).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct FloorEntry {
    /// Its id.
    pub floor_id: String,
    /// Its name.
    pub name: String,
    /// Its level (0 ground floor), if set.
    #[serde(default)]
    pub level: Option<i64>,
}

/// A label (`config/label_registry/list`; absent on older HA).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct LabelEntry {
    /// Its id.
    pub label_id: String,
    /// Its name.
    pub name: String,
}

/// A device (`config/device_registry/list`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct DeviceEntry {
    /// Its id (a hex string).
    pub id: String,
    /// The integration's name for it.
    #[serde(default)]
    pub name: Option<String>,
    /// The user's name for it, which HA shows instead of `name`.
    #[serde(default)]
    pub name_by_user: Option<String>,
    /// Its area, if any.
    #[serde(default)]
    pub area_id: Option<String>,
    /// Its manufacturer.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
    /// Its label ids (absent on older HA).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Why it is disabled (`user`, `integration`, ...), if it is.
    #[serde(default)]
    pub disabled_by: Option<String>,
}

impl DeviceEntry {
    /// The name HA shows: the user's, else the integration's.
    pub fn display_name(&self) -> Option<&str> {
        self.name_by_user.as_deref().or(self.name.as_deref())
    }
}

/// An entity registry entry (`config/entity_registry/list`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct EntityEntry {
    /// `light.kitchen`.
    pub entity_id: String,
    /// The user's name for it, if set.
    #[serde(default)]
    pub name: Option<String>,
    /// The integration's name for it.
    #[serde(default)]
    pub original_name: Option<String>,
    /// The integration (`hue`, `input_boolean`, ...).
    #[serde(default)]
    pub platform: String,
    /// Its device, if any.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Its own area, which overrides its device's.
    #[serde(default)]
    pub area_id: Option<String>,
    /// Its label ids (absent on older HA).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Why it is disabled, if it is.
    #[serde(default)]
    pub disabled_by: Option<String>,
    /// Why it is hidden, if it is.
    #[serde(default)]
    pub hidden_by: Option<String>,
}

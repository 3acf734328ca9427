//! Configuration of a simulated instance.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

/// A user of the simulated instance, for the login flow and for tokens.
#[derive(Clone, Debug)]
pub struct UserConfig {
    /// HA's user id (32 hex characters).
    pub id: String,
    /// Display name (`auth/current_user` → `name`).
    pub name: String,
    /// Login name for the `homeassistant` auth provider.
    pub username: String,
    /// Password for the login flow.
    pub password: String,
    /// Admin (group `system-admin`) or not (`system-users`).
    pub is_admin: bool,
    /// Owner flag shown by `auth/current_user`.
    pub is_owner: bool,
    /// Base32 TOTP secret: when set, the login flow asks for a code after the password.
    pub totp_secret: Option<String>,
}

/// An entity present when the instance starts.
#[derive(Clone, Debug)]
pub struct EntitySeed {
    /// `domain.object_id`.
    pub entity_id: String,
    /// Initial state.
    pub state: String,
    /// Initial attributes (a JSON object).
    pub attributes: Value,
}

/// How to build a [`crate::Sim`]. Every field has a default suited to tests.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen; default `127.0.0.1:0` (a free port).
    pub bind: SocketAddr,
    /// A static long-lived token accepted for the admin user.
    pub admin_token: String,
    /// A static long-lived token accepted for the non-admin user.
    pub user_token: String,
    /// The add-on's `SUPERVISOR_TOKEN` that the Supervisor's Core proxy (`/core/...`) accepts.
    pub supervisor_token: String,
    /// Lifetime of the OAuth access tokens `/auth/token` issues (HA: 1800 s).
    pub access_token_ttl: Duration,
    /// Clock leeway when checking access-token expiry. HA allows 10 s; the default here is 0 so that
    /// short test lifetimes expire when they say.
    pub access_token_leeway: Duration,
    /// Seed for the generator and for ids.
    pub seed: u64,
    /// Version reported in `auth_required`, `auth_ok` and `get_config`.
    pub ha_version: String,
    /// HA's `MAX_PENDING_MSG`: a connection whose outgoing queue exceeds this is dropped.
    pub max_pending: usize,
    /// Time a client has to send its `auth` message (HA: 10 s).
    pub auth_timeout: Duration,
    /// Protocol-level WebSocket ping interval (HA/aiohttp: 55 s); `None` disables it.
    pub heartbeat: Option<Duration>,
    /// Drop every new connection after it has been sent this many messages (the CLI's `--drop-after`).
    pub drop_every_connection_after: Option<u64>,
    /// History records kept per entity (oldest dropped first).
    pub recorder_max_per_entity: usize,
    /// The users: by default `admin`/`admin-pass` (admin, owner), `user`/`user-pass` (non-admin) and
    /// `mfa`/`mfa-pass` (admin, TOTP secret [`DEFAULT_TOTP_SECRET`]).
    pub users: Vec<UserConfig>,
    /// Entities at start; default [`default_entities`].
    pub entities: Vec<EntitySeed>,
}

/// The TOTP secret of the default `mfa` user.
pub const DEFAULT_TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: "sim-admin-token".into(),
            user_token: "sim-user-token".into(),
            supervisor_token: "sim-supervisor-token".into(),
            access_token_ttl: Duration::from_secs(1800),
            access_token_leeway: Duration::ZERO,
            seed: 1,
            ha_version: "2024.3.3".into(),
            max_pending: 4096,
            auth_timeout: Duration::from_secs(10),
            heartbeat: Some(Duration::from_secs(55)),
            drop_every_connection_after: None,
            recorder_max_per_entity: 100_000,
            users: default_users(),
            entities: default_entities(),
        }
    }
}

/// The default users (see [`SimConfig::users`]).
pub fn default_users() -> Vec<UserConfig> {
    vec![
        UserConfig {
            id: "5a1a0d3c8e4b4f0d9c7e2b1a6f3d4e01".into(),
            name: "Sim Admin".into(),
            username: "admin".into(),
            password: "admin-pass".into(),
            is_admin: true,
            is_owner: true,
            totp_secret: None,
        },
        UserConfig {
            id: "0a5295c0e5934370a1dc8d3abf4d782d".into(),
            name: "Sim User".into(),
            username: "user".into(),
            password: "user-pass".into(),
            is_admin: false,
            is_owner: false,
            totp_secret: None,
        },
        UserConfig {
            id: "7c0f9e2d4b6a48e1a3c5d7f9b1e3a5c7".into(),
            name: "Sim MFA".into(),
            username: "mfa".into(),
            password: "mfa-pass".into(),
            is_admin: true,
            is_owner: false,
            totp_secret: Some(DEFAULT_TOTP_SECRET.into()),
        },
    ]
}

fn seed(entity_id: &str, state: &str, attributes: Value) -> EntitySeed {
    EntitySeed {
        entity_id: entity_id.into(),
        state: state.into(),
        attributes,
    }
}

/// A small house: sensors with units and device classes, binary sensors, lights, a climate entity
/// and the helpers the real-HA harness configures (`input_boolean.test_switch`,
/// `input_number.test_level`, `counter.test_counter`).
pub fn default_entities() -> Vec<EntitySeed> {
    let sensor = |name: &str, unit: &str, class: &str, sc: &str| json!({"state_class": sc, "unit_of_measurement": unit, "device_class": class, "friendly_name": name});
    let light_attrs = |name: &str, on: bool| {
        let mut a = json!({
            "min_color_temp_kelvin": 2000, "max_color_temp_kelvin": 6535, "min_mireds": 153, "max_mireds": 500,
            "effect_list": ["none", "colorloop"],
            "supported_color_modes": ["color_temp", "hs"],
            "friendly_name": name, "supported_features": 44,
        });
        let on_attrs = if on {
            json!({"color_mode": "color_temp", "brightness": 180, "color_temp_kelvin": 3000, "color_temp": 333,
                   "hs_color": [27.827, 56.922], "rgb_color": [255, 177, 110], "xy_color": [0.496, 0.383], "effect": "none"})
        } else {
            json!({"color_mode": null, "brightness": null, "color_temp_kelvin": null, "color_temp": null,
                   "hs_color": null, "rgb_color": null, "xy_color": null, "effect": null})
        };
        if let (Some(m), Value::Object(o)) = (a.as_object_mut(), on_attrs) {
            m.extend(o);
        }
        a
    };
    vec![
        seed(
            "sensor.outdoor_temperature",
            "12.3",
            sensor("Outdoor temperature", "°C", "temperature", "measurement"),
        ),
        seed(
            "sensor.living_room_temperature",
            "21.4",
            sensor(
                "Living room temperature",
                "°C",
                "temperature",
                "measurement",
            ),
        ),
        seed(
            "sensor.living_room_humidity",
            "48",
            sensor("Living room humidity", "%", "humidity", "measurement"),
        ),
        seed(
            "sensor.power_consumption",
            "412.5",
            sensor("Power consumption", "W", "power", "measurement"),
        ),
        seed(
            "sensor.energy_total",
            "12345.67",
            sensor("Energy total", "kWh", "energy", "total_increasing"),
        ),
        seed(
            "sensor.pressure",
            "1013.2",
            sensor("Pressure", "hPa", "pressure", "measurement"),
        ),
        seed(
            "binary_sensor.front_door",
            "off",
            json!({"device_class": "door", "friendly_name": "Front door"}),
        ),
        seed(
            "binary_sensor.hallway_motion",
            "off",
            json!({"device_class": "motion", "friendly_name": "Hallway motion"}),
        ),
        seed("light.kitchen", "on", light_attrs("Kitchen", true)),
        seed(
            "light.living_room",
            "off",
            light_attrs("Living room", false),
        ),
        seed(
            "climate.living_room",
            "heat",
            json!({"hvac_modes": ["off", "heat", "cool", "auto"], "min_temp": 7, "max_temp": 35, "target_temp_step": 0.5,
                   "current_temperature": 20.5, "temperature": 21.0, "hvac_action": "heating",
                   "friendly_name": "Living room thermostat", "supported_features": 385}),
        ),
        seed(
            "input_boolean.test_switch",
            "off",
            json!({"editable": false, "friendly_name": "Test switch"}),
        ),
        seed(
            "input_number.test_level",
            "0.0",
            json!({"initial": null, "editable": false, "min": 0.0, "max": 1_000_000.0, "step": 1.0, "mode": "box",
                   "friendly_name": "Test level"}),
        ),
        seed(
            "counter.test_counter",
            "0",
            json!({"initial": 0, "editable": false, "step": 1, "friendly_name": "Test counter"}),
        ),
        seed(
            "zone.home",
            "0",
            json!({"latitude": 52.3731339, "longitude": 4.8903147, "radius": 100, "passive": false, "persons": [],
                   "editable": true, "icon": "mdi:home", "friendly_name": "Home"}),
        ),
    ]
}

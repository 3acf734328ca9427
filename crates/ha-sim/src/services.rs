//! The services the simulator implements (`call_service` over WS and REST).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::Inner;
use crate::auth::Principal;
use crate::world::{Attrs, Context, State};

/// An error answer of a WS command: `{"code","message"[,translation fields]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CmdError {
    /// HA's error code.
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// Extra fields (translation_key, ...), merged into the error object.
    pub extra: Option<Value>,
}

impl CmdError {
    /// An error with a code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> CmdError {
        CmdError {
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// `unauthorized` / "Unauthorized".
    pub fn unauthorized() -> CmdError {
        CmdError::new("unauthorized", "Unauthorized")
    }

    /// The error object as JSON.
    pub fn to_value(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let (Some(Value::Object(extra)), Some(m)) = (&self.extra, v.as_object_mut()) {
            for (k, x) in extra {
                m.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

fn py_float(f: f64) -> String {
    format!("{f:?}")
}

fn target_entities(data: &Map<String, Value>, target: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |v: Option<&Value>| match v {
        Some(Value::String(s)) => out.extend(
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty()),
        ),
        Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str).map(str::to_string)),
        _ => {}
    };
    add(data.get("entity_id"));
    add(target.and_then(|t| t.get("entity_id")));
    out
}

fn not_found(domain: &str, service: &str) -> CmdError {
    CmdError {
        code: "not_found",
        message: format!("Service {domain}.{service} not found."),
        extra: Some(json!({
            "translation_key": "service_not_found",
            "translation_placeholders": {"domain": domain, "service": service},
            "translation_domain": "homeassistant"
        })),
    }
}

fn num(v: Option<&Value>, key: &str) -> Result<f64, CmdError> {
    match v {
        None => Err(CmdError::new(
            "invalid_format",
            format!("required key not provided @ data['{key}']"),
        )),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
            CmdError::new(
                "invalid_format",
                format!("expected float for dictionary value @ data['{key}']"),
            )
        }),
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| {
            CmdError::new(
                "invalid_format",
                format!("expected float for dictionary value @ data['{key}']"),
            )
        }),
        Some(_) => Err(CmdError::new(
            "invalid_format",
            format!("expected float for dictionary value @ data['{key}']"),
        )),
    }
}

/// Calls a service as `principal`; returns the context and the states it changed.
pub fn call_service(
    inner: &Inner,
    principal: &Principal,
    domain: &str,
    service: &str,
    service_data: Option<&Value>,
    target: Option<&Value>,
    return_response: bool,
) -> Result<(Arc<Context>, Vec<Arc<State>>), CmdError> {
    const KNOWN: &[(&str, &[&str])] = &[
        ("input_boolean", &["turn_on", "turn_off", "toggle"]),
        ("input_number", &["set_value", "increment", "decrement"]),
        ("counter", &["increment", "decrement", "reset", "set_value"]),
        ("light", &["turn_on", "turn_off", "toggle"]),
        ("climate", &["set_temperature", "set_hvac_mode"]),
    ];
    if !KNOWN
        .iter()
        .any(|(d, s)| *d == domain && s.contains(&service))
    {
        return Err(not_found(domain, service));
    }
    if return_response {
        return Err(CmdError::new(
            "unknown_error",
            "Invalid argument return_response=True when handler does not support responses",
        ));
    }
    let empty = Map::new();
    let data = service_data.and_then(Value::as_object).unwrap_or(&empty);
    let entities = target_entities(data, target);
    let ctx = inner.new_context(Some(principal.user.id.as_str().into()));
    let mut call_data = data.clone();
    if let Some(Value::Object(t)) = target {
        for (k, v) in t {
            call_data.insert(k.clone(), v.clone());
        }
    }
    inner.fire(
        "call_service",
        &json!({"domain": domain, "service": service, "service_data": call_data}),
        "LOCAL",
        ctx.clone(),
    );
    let mut changed = Vec::new();
    for eid in entities {
        if eid.split('.').next() != Some(domain) {
            continue;
        }
        let Some(cur) = inner.get_state(&eid) else {
            continue;
        };
        let mut attrs = cur.attrs.map.clone();
        let new_state: String = match (domain, service) {
            ("input_boolean" | "light", "turn_on") => "on".into(),
            ("input_boolean" | "light", "turn_off") => "off".into(),
            ("input_boolean" | "light", "toggle") => {
                if cur.state == "on" { "off" } else { "on" }.into()
            }
            ("input_number", _) => {
                let min = attrs.get("min").and_then(Value::as_f64).unwrap_or(0.0);
                let max = attrs.get("max").and_then(Value::as_f64).unwrap_or(100.0);
                let step = attrs.get("step").and_then(Value::as_f64).unwrap_or(1.0);
                let curv: f64 = cur.state.parse().unwrap_or(min);
                let v = match service {
                    "set_value" => num(data.get("value"), "value")?,
                    "increment" => curv + step,
                    _ => curv - step,
                };
                if !(min..=max).contains(&v) {
                    if service != "set_value" {
                        continue;
                    }
                    return Err(CmdError::new(
                        "invalid_format",
                        format!(
                            "Invalid value for {eid}: {} (range {} - {})",
                            py_float(v),
                            py_float(min),
                            py_float(max)
                        ),
                    ));
                }
                py_float(v)
            }
            ("counter", _) => {
                let step = attrs.get("step").and_then(Value::as_i64).unwrap_or(1);
                let curv: i64 = cur.state.parse().unwrap_or(0);
                match service {
                    "increment" => curv + step,
                    "decrement" => curv - step,
                    "reset" => attrs.get("initial").and_then(Value::as_i64).unwrap_or(0),
                    _ => num(data.get("value"), "value")? as i64,
                }
                .to_string()
            }
            ("climate", "set_temperature") => {
                attrs.insert(
                    "temperature".into(),
                    num(data.get("temperature"), "temperature")?.into(),
                );
                cur.state.clone()
            }
            ("climate", _) => data
                .get("hvac_mode")
                .and_then(Value::as_str)
                .unwrap_or(&cur.state)
                .to_string(),
            _ => continue,
        };
        if domain == "light" {
            if new_state == "on" {
                let b = data
                    .get("brightness")
                    .and_then(Value::as_i64)
                    .or_else(|| attrs.get("brightness").and_then(Value::as_i64))
                    .unwrap_or(255);
                attrs.insert("brightness".into(), b.into());
                attrs.insert("color_mode".into(), "color_temp".into());
            } else {
                for k in [
                    "brightness",
                    "color_mode",
                    "color_temp",
                    "color_temp_kelvin",
                    "hs_color",
                    "rgb_color",
                    "xy_color",
                    "effect",
                ] {
                    if attrs.contains_key(k) {
                        attrs.insert(k.into(), Value::Null);
                    }
                }
            }
        }
        let attrs = if attrs == cur.attrs.map {
            cur.attrs.clone()
        } else {
            Attrs::new(Value::Object(attrs))
        };
        if let Some(st) = inner.apply(&eid, new_state, attrs, false, ctx.clone()) {
            changed.push(st);
        }
    }
    Ok((ctx, changed))
}

/// `get_config` / `/api/config` (HA 2024.3.3's `Config.as_dict`).
pub fn config_value(inner: &Inner) -> Value {
    let internal = inner.addr.get().map(|a| format!("http://{a}"));
    json!({
        "latitude": 52.3731339, "longitude": 4.8903147, "elevation": 0,
        "unit_system": {"length": "km", "accumulated_precipitation": "mm", "mass": "g", "pressure": "Pa",
                        "temperature": "°C", "volume": "L", "wind_speed": "m/s"},
        "location_name": "Simulated Home", "time_zone": "UTC",
        "components": ["api", "auth", "counter", "history", "homeassistant", "http", "input_boolean",
                       "input_number", "light", "climate", "binary_sensor", "sensor", "recorder", "websocket_api", "zone"],
        "config_dir": "/config", "allowlist_external_dirs": ["/config/www", "/media"], "allowlist_external_urls": [],
        "version": inner.cfg.ha_version, "config_source": "storage", "recovery_mode": false,
        "state": inner.core_state(), "external_url": null, "internal_url": internal,
        "currency": "EUR", "country": "NL", "language": "en", "safe_mode": false, "debug": false, "radius": 100
    })
}

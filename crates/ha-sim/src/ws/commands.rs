//! The command phase: id rules, dispatch and the commands.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::validate::{Field, Ty, validate};
use crate::auth::{Principal, TokenKind};
use crate::hub::{Conn, SubKind, compressed_all};
use crate::recorder::{HistoryQuery, write_compressed};
use crate::services::{CmdError, call_service, config_value};
use crate::time::{now_us, parse_iso};
use crate::world::valid_entity_id;
use crate::{Inner, lock};

/// Events a non-admin may subscribe to (HA's `SUBSCRIBE_ALLOWLIST`).
pub const SUBSCRIBE_ALLOWLIST: &[&str] = &[
    "area_registry_updated",
    "component_loaded",
    "core_config_updated",
    "device_registry_updated",
    "entity_registry_updated",
    "floor_registry_updated",
    "label_registry_updated",
    "lovelace_updated",
    "panels_updated",
    "recorder_5min_statistics_generated",
    "recorder_hourly_statistics_generated",
    "repairs_issue_registry_updated",
    "service_registered",
    "service_removed",
    "shopping_list_updated",
    "state_changed",
    "themes_updated",
];

/// Per-connection command state.
#[derive(Default)]
pub(super) struct Session {
    last_id: i64,
}

/// The client broke the protocol (invalid JSON): HA disconnects.
pub(super) struct Disconnect;

fn result(id: i64, result_json: &str) -> String {
    format!(r#"{{"id":{id},"type":"result","success":true,"result":{result_json}}}"#)
}

fn error_msg(id_json: &str, e: &CmdError) -> String {
    format!(
        r#"{{"id":{id_json},"type":"result","success":false,"error":{}}}"#,
        e.to_value()
    )
}

/// Handles one text frame: a command or an array of commands.
pub(super) fn handle_text(
    inner: &Inner,
    conn: &Conn,
    s: &mut Session,
    text: &str,
) -> Result<(), Disconnect> {
    let msg: Value = serde_json::from_str(text).map_err(|_| Disconnect)?;
    match msg {
        Value::Array(items) => items
            .into_iter()
            .for_each(|m| handle_one(inner, conn, s, m)),
        m => handle_one(inner, conn, s, m),
    }
    Ok(())
}

fn handle_one(inner: &Inner, conn: &Conn, s: &mut Session, msg: Value) {
    inner.stats.inc(&inner.stats.commands_received);
    let id = msg
        .get("id")
        .and_then(|v| if v.is_i64() { v.as_i64() } else { None })
        .filter(|i| *i != 0);
    let ty = msg
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let (Some(id), Some(ty)) = (id, ty) else {
        let id_json = match &msg {
            Value::Object(m) => m.get("id").map_or("null".to_string(), Value::to_string),
            _ => "0".into(),
        };
        conn.send_msg(error_msg(
            &id_json,
            &CmdError::new("invalid_format", "Message incorrectly formatted."),
        ));
        return;
    };
    if id <= s.last_id {
        conn.send_msg(error_msg(
            &id.to_string(),
            &CmdError::new("id_reuse", "Identifier values have to increase."),
        ));
        return;
    }
    s.last_id = id;
    let Some(p) = conn.principal.get() else {
        return;
    };
    match run(inner, conn, p, id, ty, &msg) {
        Ok(Some(r)) => conn.send_msg(result(id, &r)),
        Ok(None) => {}
        Err(e) => conn.send_msg(error_msg(&id.to_string(), &e)),
    }
}

fn check(msg: &Value, ty: &'static str, fields: &[Field]) -> Result<(), CmdError> {
    let mut all: Vec<Field> = vec![("id", true, Ty::Int), ("type", true, Ty::Const(ty))];
    all.extend_from_slice(fields);
    validate(msg, &all).map_err(|e| CmdError::new("invalid_format", e))
}

fn require_admin(p: &Principal) -> Result<(), CmdError> {
    if p.user.is_admin {
        Ok(())
    } else {
        Err(CmdError::unauthorized())
    }
}

fn str_of<'a>(msg: &'a Value, k: &str) -> Option<&'a str> {
    msg.get(k).and_then(Value::as_str)
}

fn bool_of(msg: &Value, k: &str, default: bool) -> bool {
    msg.get(k).and_then(Value::as_bool).unwrap_or(default)
}

fn entity_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(
            s.split(',')
                .map(|x| x.trim().to_lowercase())
                .filter(|x| !x.is_empty())
                .collect(),
        ),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .collect(),
        ),
        _ => None,
    }
}

/// Runs a command; `Ok(Some(json))` is sent as the result, `Ok(None)` means it answered itself.
fn run(
    inner: &Inner,
    conn: &Conn,
    p: &Principal,
    id: i64,
    ty: &str,
    msg: &Value,
) -> Result<Option<String>, CmdError> {
    match ty {
        "ping" => {
            check(msg, "ping", &[])?;
            conn.send_msg(format!(r#"{{"id":{id},"type":"pong"}}"#));
            Ok(None)
        }
        "supported_features" => {
            check(msg, "supported_features", &[("features", true, Ty::Dict)])?;
            let on = msg
                .get("features")
                .and_then(Value::as_object)
                .is_some_and(|f| f.contains_key("coalesce_messages"));
            conn.coalesce.store(on, Ordering::Release);
            Ok(Some("null".into()))
        }
        "subscribe_events" => {
            check(msg, "subscribe_events", &[("event_type", false, Ty::Str)])?;
            let et = str_of(msg, "event_type")
                .filter(|t| *t != "*")
                .map(str::to_string);
            if !p.user.is_admin
                && !et
                    .as_deref()
                    .is_some_and(|t| SUBSCRIBE_ALLOWLIST.contains(&t))
            {
                return Err(CmdError::unauthorized());
            }
            let _w = lock(&inner.world);
            lock(&conn.subs).push((id as u64, SubKind::Events(et)));
            conn.send_msg(result(id, "null"));
            Ok(None)
        }
        "unsubscribe_events" => {
            check(
                msg,
                "unsubscribe_events",
                &[("subscription", true, Ty::PosInt)],
            )?;
            let sub = msg
                .get("subscription")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .unwrap_or(0);
            let mut subs = lock(&conn.subs);
            let before = subs.len();
            subs.retain(|(i, _)| *i != sub);
            if subs.len() == before {
                return Err(CmdError::new("not_found", "Subscription not found."));
            }
            Ok(Some("null".into()))
        }
        "subscribe_entities" => {
            check(
                msg,
                "subscribe_entities",
                &[("entity_ids", false, Ty::EntityIds)],
            )?;
            let filter: Option<HashSet<String>> =
                entity_list(msg.get("entity_ids")).map(|v| v.into_iter().collect());
            let w = lock(&inner.world);
            lock(&conn.subs).push((id as u64, SubKind::Entities(filter.clone())));
            conn.send_msg(result(id, "null"));
            let initial = compressed_all(
                w.states
                    .values()
                    .filter(|s| filter.as_ref().is_none_or(|f| f.contains(&*s.entity_id))),
            );
            conn.send(crate::hub::Out::Event {
                sub: id as u64,
                body: initial.into(),
            });
            Ok(None)
        }
        "subscribe_trigger" => {
            check(
                msg,
                "subscribe_trigger",
                &[("trigger", true, Ty::Any), ("variables", false, Ty::Dict)],
            )?;
            require_admin(p)?;
            let trig = match msg.get("trigger") {
                Some(Value::Array(a)) => a.first().cloned().unwrap_or(Value::Null),
                Some(t) => t.clone(),
                None => Value::Null,
            };
            let platform = str_of(&trig, "platform").or_else(|| str_of(&trig, "trigger"));
            if platform != Some("state") {
                return Err(CmdError::new(
                    "invalid_format",
                    "Only state triggers are simulated",
                ));
            }
            let kind = SubKind::Trigger {
                entity_ids: entity_list(trig.get("entity_id")).unwrap_or_default(),
                to: str_of(&trig, "to").map(str::to_string),
                from: str_of(&trig, "from").map(str::to_string),
            };
            let _w = lock(&inner.world);
            lock(&conn.subs).push((id as u64, kind));
            conn.send_msg(result(id, "null"));
            Ok(None)
        }
        "get_states" => {
            check(msg, "get_states", &[])?;
            let w = lock(&inner.world);
            let mut s = String::from("[");
            for (i, st) in w.states.values().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(st.json());
            }
            s.push(']');
            Ok(Some(s))
        }
        "get_config" => {
            check(msg, "get_config", &[])?;
            Ok(Some(config_value(inner).to_string()))
        }
        "get_services" => {
            check(msg, "get_services", &[])?;
            let svc = |names: &[&str]| {
                Value::Object(
                    names
                        .iter()
                        .map(|n| {
                            (
                                n.to_string(),
                                json!({"name": "", "description": "", "fields": {}}),
                            )
                        })
                        .collect(),
                )
            };
            Ok(Some(
                json!({
                    "input_boolean": svc(&["turn_on", "turn_off", "toggle"]),
                    "input_number": svc(&["set_value", "increment", "decrement"]),
                    "counter": svc(&["increment", "decrement", "reset", "set_value"]),
                    "light": svc(&["turn_on", "turn_off", "toggle"]),
                    "climate": svc(&["set_temperature", "set_hvac_mode"]),
                })
                .to_string(),
            ))
        }
        "call_service" => {
            check(
                msg,
                "call_service",
                &[
                    ("domain", true, Ty::Str),
                    ("service", true, Ty::Str),
                    ("target", false, Ty::Dict),
                    ("service_data", false, Ty::Dict),
                    ("return_response", false, Ty::Bool),
                ],
            )?;
            let (ctx, _) = call_service(
                inner,
                p,
                str_of(msg, "domain").unwrap_or(""),
                str_of(msg, "service").unwrap_or(""),
                msg.get("service_data"),
                msg.get("target"),
                bool_of(msg, "return_response", false),
            )?;
            let mut c = String::new();
            ctx.write_json(&mut c);
            Ok(Some(format!(r#"{{"context":{c}}}"#)))
        }
        "fire_event" => {
            check(
                msg,
                "fire_event",
                &[
                    ("event_type", true, Ty::Str),
                    ("event_data", false, Ty::Dict),
                ],
            )?;
            require_admin(p)?;
            let ctx = inner.new_context(Some(p.user.id.as_str().into()));
            let data = msg.get("event_data").cloned().unwrap_or_else(|| json!({}));
            inner.fire(
                str_of(msg, "event_type").unwrap_or(""),
                &data,
                "REMOTE",
                ctx.clone(),
            );
            let mut c = String::new();
            ctx.write_json(&mut c);
            Ok(Some(format!(r#"{{"context":{c}}}"#)))
        }
        "auth/current_user" => {
            check(msg, "auth/current_user", &[])?;
            let u = &p.user;
            Ok(Some(
                json!({
                    "id": u.id, "name": u.name, "is_owner": u.is_owner, "is_admin": u.is_admin,
                    "credentials": [{"auth_provider_type": "homeassistant", "auth_provider_id": null}],
                    "mfa_modules": [{"id": "totp", "name": "Authenticator app", "enabled": u.totp_secret.is_some()}]
                })
                .to_string(),
            ))
        }
        "auth/long_lived_access_token" => {
            check(
                msg,
                "auth/long_lived_access_token",
                &[
                    ("lifespan", true, Ty::Int),
                    ("client_name", true, Ty::Str),
                    ("client_icon", false, Ty::Str),
                ],
            )?;
            let lifespan = msg.get("lifespan").and_then(Value::as_i64).unwrap_or(0);
            let name = str_of(msg, "client_name").unwrap_or("");
            match lock(&inner.auth).create_llat(p.user.clone(), name, lifespan) {
                Ok(tok) => Ok(Some(Value::from(tok).to_string())),
                Err(_) => Err(CmdError::new("unknown_error", "Unknown error")),
            }
        }
        "auth/refresh_tokens" => {
            check(msg, "auth/refresh_tokens", &[])?;
            let list: Vec<Value> = lock(&inner.auth)
                .tokens_of(&p.user.id)
                .into_iter()
                .map(|(tid, client_id, name, kind)| {
                    json!({
                        "id": tid, "client_id": client_id, "client_name": name, "client_icon": null,
                        "type": if kind == TokenKind::LongLived { "long_lived_access_token" } else { "normal" },
                        "is_current": tid == p.refresh_id, "last_used_ip": "127.0.0.1", "auth_provider_type": "homeassistant",
                    })
                })
                .collect();
            Ok(Some(Value::Array(list).to_string()))
        }
        "auth/delete_refresh_token" => {
            check(
                msg,
                "auth/delete_refresh_token",
                &[("refresh_token_id", true, Ty::Str)],
            )?;
            let rid = str_of(msg, "refresh_token_id").unwrap_or("");
            let owned = lock(&inner.auth)
                .tokens_of(&p.user.id)
                .iter()
                .any(|t| t.0 == rid);
            if !owned || !lock(&inner.auth).delete_refresh_id(rid) {
                return Err(CmdError::new("invalid_token_id", "Received invalid token"));
            }
            conn.send_msg(result(id, "{}"));
            inner.close_connections_of(rid);
            Ok(None)
        }
        "auth/sign_path" => {
            check(
                msg,
                "auth/sign_path",
                &[("path", true, Ty::Str), ("expires", false, Ty::PosInt)],
            )?;
            let secs = msg
                .get("expires")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .unwrap_or(30);
            let path = lock(&inner.auth).sign_path(
                &p.refresh_id,
                str_of(msg, "path").unwrap_or(""),
                Duration::from_secs(secs),
            );
            Ok(Some(json!({ "path": path }).to_string()))
        }
        "history/history_during_period" => history(inner, msg).map(Some),
        "recorder/list_statistic_ids" => {
            check(
                msg,
                "recorder/list_statistic_ids",
                &[("statistic_type", false, Ty::Str)],
            )?;
            let t = str_of(msg, "statistic_type");
            if t.is_some_and(|t| t != "sum" && t != "mean") {
                return Err(CmdError::new(
                    "invalid_format",
                    "value must be one of ['mean', 'sum'] for dictionary value @ data['statistic_type']",
                ));
            }
            Ok(Some(lock(&inner.statistics).list(t).to_string()))
        }
        "recorder/get_statistics_metadata" => {
            check(
                msg,
                "recorder/get_statistics_metadata",
                &[("statistic_ids", false, Ty::StrList)],
            )?;
            let ids = entity_list(msg.get("statistic_ids"));
            Ok(Some(
                lock(&inner.statistics).metadata(ids.as_deref()).to_string(),
            ))
        }
        "recorder/statistics_during_period" => statistics_during_period(inner, msg).map(Some),
        "recorder/import_statistics" => {
            check(
                msg,
                "recorder/import_statistics",
                &[("metadata", true, Ty::Dict), ("stats", true, Ty::Any)],
            )?;
            require_admin(p)?;
            let metadata = msg.get("metadata").cloned().unwrap_or_default();
            let stats = msg.get("stats").cloned().unwrap_or_default();
            lock(&inner.statistics).import(&metadata, "hour", &stats)?;
            Ok(Some("null".into()))
        }
        "recorder/info" => {
            check(msg, "recorder/info", &[])?;
            Ok(Some(
                r#"{"backlog":0,"max_backlog":65000,"migration_in_progress":false,"migration_is_live":false,"recording":true,"thread_running":true}"#
                    .into(),
            ))
        }
        // `config/*_registry/list`, readable by any user.
        other => match crate::registry::Kind::of_list_command(other) {
            Some(kind) => match lock(&inner.registries).list(kind) {
                Some(items) => Ok(Some(items.to_string())),
                None => Err(CmdError::new("unknown_command", "Unknown command.")),
            },
            None => Err(CmdError::new("unknown_command", "Unknown command.")),
        },
    }
}

fn history(inner: &Inner, msg: &Value) -> Result<String, CmdError> {
    check(
        msg,
        "history/history_during_period",
        &[
            ("start_time", true, Ty::Str),
            ("end_time", false, Ty::Str),
            ("entity_ids", true, Ty::StrList),
            ("include_start_time_state", false, Ty::Bool),
            ("significant_changes_only", false, Ty::Bool),
            ("minimal_response", false, Ty::Bool),
            ("no_attributes", false, Ty::Bool),
        ],
    )?;
    if inner.faults.take_history_failure() {
        // What HA answers when a command handler raises (the recorder's database is gone, say).
        return Err(CmdError::new("unknown_error", "Unknown error"));
    }
    let start = parse_iso(str_of(msg, "start_time").unwrap_or(""))
        .ok_or_else(|| CmdError::new("invalid_start_time", "Invalid start_time"))?;
    let end = match str_of(msg, "end_time").filter(|s| !s.is_empty()) {
        Some(e) => {
            parse_iso(e).ok_or_else(|| CmdError::new("invalid_end_time", "Invalid end_time"))?
        }
        None => i64::MAX,
    };
    if start > now_us() {
        return Ok("{}".into());
    }
    let entity_ids = entity_list(msg.get("entity_ids")).unwrap_or_default();
    let w = lock(&inner.world);
    if entity_ids
        .iter()
        .any(|e| !w.states.contains_key(e.as_str()) && !valid_entity_id(e))
    {
        return Err(CmdError::new("invalid_entity_ids", "Invalid entity_ids"));
    }
    let q = HistoryQuery {
        start,
        end,
        entity_ids,
        include_start_time_state: bool_of(msg, "include_start_time_state", true),
        significant_changes_only: bool_of(msg, "significant_changes_only", true),
        minimal_response: bool_of(msg, "minimal_response", false),
    };
    let rows = w.recorder.query(&q);
    drop(w);
    let mut out = String::new();
    write_compressed(&mut out, &rows, bool_of(msg, "no_attributes", false));
    Ok(out)
}

fn statistics_during_period(inner: &Inner, msg: &Value) -> Result<String, CmdError> {
    check(
        msg,
        "recorder/statistics_during_period",
        &[
            ("start_time", true, Ty::Str),
            ("end_time", false, Ty::Str),
            ("statistic_ids", true, Ty::StrList),
            ("period", true, Ty::Str),
            ("units", false, Ty::Dict),
            ("types", false, Ty::StrList),
        ],
    )?;
    let period = str_of(msg, "period").unwrap_or("");
    if !["5minute", "hour", "day", "week", "month"].contains(&period) {
        return Err(CmdError::new(
            "invalid_format",
            format!(
                "value must be one of ['5minute', 'day', 'hour', 'month', 'week'] for dictionary value @ data['period']. Got '{period}'"
            ),
        ));
    }
    let ids: Vec<String> = msg
        .get("statistic_ids")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Err(CmdError::new(
            "invalid_format",
            "length of value must be at least 1 for dictionary value @ data['statistic_ids']",
        ));
    }
    let start = parse_iso(str_of(msg, "start_time").unwrap_or(""))
        .ok_or_else(|| CmdError::new("invalid_start_time", "Invalid start_time"))?;
    let end = match str_of(msg, "end_time") {
        Some(e) => {
            parse_iso(e).ok_or_else(|| CmdError::new("invalid_end_time", "Invalid end_time"))?
        }
        None => i64::MAX,
    };
    lock(&inner.statistics)
        .during_period(start, end, &ids, period)
        .map(|v| v.to_string())
}

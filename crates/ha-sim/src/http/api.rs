//! `/api/*`: REST endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{authenticate, json, json_raw, message, text, unauthorized};
use crate::recorder::{HistoryQuery, write_full};
use crate::services::{call_service, config_value};
use crate::time::{now_us, parse_iso};
use crate::world::{Attrs, valid_entity_id};
use crate::{Inner, auth::Principal, lock};

macro_rules! auth_or_401 {
    ($inner:expr, $method:expr, $uri:expr, $headers:expr) => {
        match authenticate(&$inner, &$method, &$uri, &$headers) {
            Some(p) => p,
            None => return unauthorized(),
        }
    };
}

fn admin(p: &Principal) -> bool {
    p.user.is_admin
}

/// `GET /api/`.
pub(crate) async fn root(
    State(inner): State<Arc<Inner>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
) -> Response {
    auth_or_401!(inner, m, u, h);
    message(StatusCode::OK, "API running.")
}

/// `GET /api/states`.
pub(crate) async fn states(
    State(inner): State<Arc<Inner>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
) -> Response {
    auth_or_401!(inner, m, u, h);
    let w = lock(&inner.world);
    let body = format!(
        "[{}]",
        w.states
            .values()
            .map(|s| s.json())
            .collect::<Vec<_>>()
            .join(",")
    );
    json_raw(StatusCode::OK, body)
}

/// `GET /api/states/<entity_id>`.
pub(crate) async fn get_state(
    State(inner): State<Arc<Inner>>,
    Path(eid): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
) -> Response {
    auth_or_401!(inner, m, u, h);
    match inner.get_state(&eid) {
        Some(s) => json_raw(StatusCode::OK, s.json().to_string()),
        None => message(StatusCode::NOT_FOUND, "Entity not found."),
    }
}

/// `POST /api/states/<entity_id>` (admin): 201 when new, 200 otherwise.
pub(crate) async fn post_state(
    State(inner): State<Arc<Inner>>,
    Path(eid): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let p = auth_or_401!(inner, m, u, h);
    if !admin(&p) {
        return unauthorized();
    }
    if !valid_entity_id(&eid) {
        return message(StatusCode::BAD_REQUEST, "Invalid entity ID specified.");
    }
    let Ok(Value::Object(data)) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "Invalid JSON specified.");
    };
    let state = match data.get("state") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => return message(StatusCode::BAD_REQUEST, "No state specified."),
        Some(other) => other.to_string(),
    };
    let attrs = data.get("attributes").cloned().unwrap_or(json!({}));
    let force = data
        .get("force_update")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let existed = inner.get_state(&eid).is_some();
    let ctx = inner.new_context(Some(p.user.id.as_str().into()));
    inner.apply(&eid, state, Attrs::new(attrs), force, ctx);
    let Some(now) = inner.get_state(&eid) else {
        return message(StatusCode::NOT_FOUND, "Entity not found.");
    };
    let mut r = json_raw(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        now.json().to_string(),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/api/states/{eid}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `GET /api/config`.
pub(crate) async fn config(
    State(inner): State<Arc<Inner>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
) -> Response {
    auth_or_401!(inner, m, u, h);
    json(StatusCode::OK, config_value(&inner))
}

/// `POST /api/events/<event_type>` (admin).
pub(crate) async fn post_event(
    State(inner): State<Arc<Inner>>,
    Path(et): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let p = auth_or_401!(inner, m, u, h);
    if !admin(&p) {
        return unauthorized();
    }
    let data = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Event data should be a JSON object",
                );
            }
            Err(_) => return message(StatusCode::BAD_REQUEST, "Event data should be valid JSON."),
        }
    };
    let ctx = inner.new_context(Some(p.user.id.as_str().into()));
    inner.fire(&et, &data, "REMOTE", ctx);
    message(StatusCode::OK, &format!("Event {et} fired."))
}

/// `POST /api/services/<domain>/<service>`: the list of changed states.
pub(crate) async fn post_service(
    State(inner): State<Arc<Inner>>,
    Path((domain, service)): Path<(String, String)>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let p = auth_or_401!(inner, m, u, h);
    let data = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return message(StatusCode::BAD_REQUEST, "Data should be valid JSON."),
        }
    };
    match call_service(&inner, &p, &domain, &service, Some(&data), None, false) {
        Ok((_, changed)) => json_raw(
            StatusCode::OK,
            format!(
                "[{}]",
                changed
                    .iter()
                    .map(|s| s.json())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        Err(_) => text(StatusCode::BAD_REQUEST, "400: Bad Request"),
    }
}

/// `GET /api/history/period` (start = now − 1 day).
pub(crate) async fn history_default(
    State(inner): State<Arc<Inner>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
) -> Response {
    auth_or_401!(inner, m, u, h);
    history_at(&inner, now_us() - 86_400_000_000, &u)
}

/// `GET /api/history/period/<start>`.
pub(crate) async fn history(
    State(inner): State<Arc<Inner>>,
    Path(start): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
) -> Response {
    auth_or_401!(inner, m, u, h);
    let Some(start) = parse_iso(&start) else {
        return message(StatusCode::BAD_REQUEST, "Invalid datetime");
    };
    history_at(&inner, start, &u)
}

fn history_at(inner: &Inner, start: i64, u: &Uri) -> Response {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(u.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(filter) = get("filter_entity_id") else {
        return message(StatusCode::BAD_REQUEST, "filter_entity_id is missing");
    };
    let entity_ids: Vec<String> = filter
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if entity_ids.iter().any(|e| !valid_entity_id(e)) {
        return message(StatusCode::BAD_REQUEST, "Invalid filter_entity_id");
    }
    let end = match get("end_time") {
        Some(e) => match parse_iso(e) {
            Some(t) => t,
            None => return message(StatusCode::BAD_REQUEST, "Invalid end_time"),
        },
        None => start + 86_400_000_000,
    };
    if start > now_us() {
        return json_raw(StatusCode::OK, "[]".into());
    }
    let q = HistoryQuery {
        start,
        end,
        entity_ids,
        include_start_time_state: get("skip_initial_state").is_none(),
        significant_changes_only: get("significant_changes_only").unwrap_or("1") != "0",
        minimal_response: get("minimal_response").is_some(),
    };
    let rows = lock(&inner.world).recorder.query(&q);
    let mut out = String::new();
    write_full(&mut out, &rows, get("no_attributes").is_some());
    json_raw(StatusCode::OK, out)
}

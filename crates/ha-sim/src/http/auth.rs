//! `/auth/*`: token grants, revoke, providers and the login flow (with an optional TOTP step).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{internal_error, json, message};
use crate::auth::{Flow, FlowStep, random_hex, totp_ok, verify_client_id, verify_redirect_uri};
use crate::config::UserConfig;
use crate::{Inner, lock};

/// A form body (urlencoded only); anything else reads as an empty form, as HA's
/// `request.post()` does for a JSON body.
fn form(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return HashMap::new();
    }
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn empty_ok() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::OK;
    r
}

fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    match description {
        Some(d) => json(status, json!({"error": error, "error_description": d})),
        None => json(status, json!({ "error": error })),
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn revoke_token(inner: &Inner, token: Option<&String>) {
    let Some(t) = token else { return };
    let id = lock(&inner.auth).revoke(t);
    if let Some(id) = id {
        inner.close_connections_of(&id);
    }
}

/// `POST /auth/token`.
pub(crate) async fn token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.stats.inc(&inner.stats.token_requests);
    if inner.faults.take_token_failure() {
        return internal_error();
    }
    let f = form(&headers, &body);
    if f.get("action").map(String::as_str) == Some("revoke") {
        revoke_token(&inner, f.get("token"));
        return empty_ok();
    }
    let bad = StatusCode::BAD_REQUEST;
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(client_id) = f.get("client_id").filter(|c| verify_client_id(c)) else {
                return oauth_error(bad, "invalid_request", Some("Invalid client id"));
            };
            let mut auth = lock(&inner.auth);
            let Some(user) = f
                .get("code")
                .and_then(|code| auth.take_code(client_id, code))
            else {
                return oauth_error(bad, "invalid_request", Some("Invalid code"));
            };
            let (refresh, rid) = auth.create_refresh(user, Some(client_id.clone()));
            let access = auth.create_access(&rid, None);
            let body = format!(
                r#"{{"access_token":{},"token_type":"Bearer","refresh_token":{},"expires_in":{},"ha_auth_provider":"homeassistant"}}"#,
                Value::from(access),
                Value::from(refresh),
                auth.ttl().as_secs()
            );
            no_store(super::json_raw(StatusCode::OK, body))
        }
        Some("refresh_token") => {
            let client_id = f.get("client_id");
            if client_id.is_some_and(|c| !verify_client_id(c)) {
                return oauth_error(bad, "invalid_request", Some("Invalid client id"));
            }
            let Some(rt) = f.get("refresh_token") else {
                return oauth_error(bad, "invalid_request", None);
            };
            let mut auth = lock(&inner.auth);
            let Some((rid, issued_to)) = auth.find_refresh(rt) else {
                return oauth_error(bad, "invalid_grant", None);
            };
            if issued_to.as_ref() != client_id {
                return oauth_error(bad, "invalid_request", None);
            }
            let access = auth.create_access(&rid, None);
            let body = format!(
                r#"{{"access_token":{},"token_type":"Bearer","expires_in":{}}}"#,
                Value::from(access),
                auth.ttl().as_secs()
            );
            no_store(super::json_raw(StatusCode::OK, body))
        }
        _ => oauth_error(bad, "unsupported_grant_type", None),
    }
}

/// `POST /auth/revoke`: always 200 with an empty body.
pub(crate) async fn revoke(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&headers, &body);
    revoke_token(&inner, f.get("token"));
    empty_ok()
}

/// `GET /auth/providers`.
pub(crate) async fn providers() -> Response {
    json(
        StatusCode::OK,
        json!({"providers": [{"name": "Home Assistant Local", "id": null, "type": "homeassistant"}], "preselect_remember_me": true}),
    )
}

/// `GET /.well-known/oauth-authorization-server`.
pub(crate) async fn well_known() -> Response {
    json(
        StatusCode::OK,
        json!({"authorization_endpoint": "/auth/authorize", "token_endpoint": "/auth/token", "revocation_endpoint": "/auth/revoke",
               "response_types_supported": ["code"], "service_documentation": "https://developers.home-assistant.io/docs/auth_api"}),
    )
}

const HANDLER: &str = r#"["homeassistant",null]"#;

fn form_step(flow_id: &str, step_id: &str, errors: Value) -> Response {
    let (schema, placeholders) = if step_id == "mfa" {
        (
            json!([{"type": "string", "name": "code", "required": true}]),
            json!({"mfa_module_name": "Authenticator app", "mfa_module_id": "totp"}),
        )
    } else {
        (
            json!([{"type": "string", "name": "username", "required": true}, {"type": "string", "name": "password", "required": true}]),
            Value::Null,
        )
    };
    let body = format!(
        r#"{{"type":"form","flow_id":{},"handler":{HANDLER},"data_schema":{schema},"errors":{errors},"description_placeholders":{placeholders},"last_step":null,"preview":null,"step_id":{}}}"#,
        Value::from(flow_id),
        Value::from(step_id)
    );
    super::json_raw(StatusCode::OK, body)
}

fn abort(flow_id: &str, reason: &str) -> Response {
    let body = format!(
        r#"{{"type":"abort","flow_id":{},"handler":{HANDLER},"reason":{},"description_placeholders":null}}"#,
        Value::from(flow_id),
        Value::from(reason)
    );
    super::json_raw(StatusCode::OK, body)
}

/// A 400 `{"message": ...}` answer not yet built.
struct BadRequest(String);

impl BadRequest {
    fn response(self) -> Response {
        message(StatusCode::BAD_REQUEST, &self.0)
    }
}

fn parse_json(body: &[u8]) -> Result<serde_json::Map<String, Value>, BadRequest> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BadRequest(
            "Message format incorrect: expected a dictionary".into(),
        )),
        Err(_) => Err(BadRequest("Invalid JSON.".into())),
    }
}

fn required_str<'a>(m: &'a serde_json::Map<String, Value>, k: &str) -> Result<&'a str, BadRequest> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(BadRequest(format!(
            "Message format incorrect: expected str for dictionary value @ data['{k}']. Got {}",
            crate::ws::validate::py_repr(other)
        ))),
        None => Err(BadRequest(format!(
            "Message format incorrect: required key not provided @ data['{k}']"
        ))),
    }
}

/// `POST /auth/login_flow`.
pub(crate) async fn login_flow_start(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let m = match parse_json(&body) {
        Ok(m) => m,
        Err(r) => return r.response(),
    };
    let (client_id, redirect_uri) = match (
        required_str(&m, "client_id"),
        required_str(&m, "redirect_uri"),
    ) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return e.response(),
    };
    let handler_ok = match m.get("handler") {
        Some(Value::Array(a)) => {
            a.first().and_then(Value::as_str) == Some("homeassistant")
                && a.get(1).is_none_or(Value::is_null)
        }
        Some(Value::String(s)) => s == "homeassistant",
        Some(_) => false,
        None => {
            return message(
                StatusCode::BAD_REQUEST,
                "Message format incorrect: required key not provided @ data['handler']",
            );
        }
    };
    if !verify_client_id(client_id) {
        return message(StatusCode::BAD_REQUEST, "Invalid client id");
    }
    if !handler_ok {
        return internal_error();
    }
    let flow_id = random_hex(16);
    lock(&inner.auth).flows.insert(
        flow_id.clone(),
        Flow {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            step: FlowStep::Init,
        },
    );
    form_step(&flow_id, "init", json!({}))
}

fn finish(
    inner: &Inner,
    flow_id: &str,
    flow: &Flow,
    client_id: &str,
    user: Arc<UserConfig>,
) -> Response {
    let mut auth = lock(&inner.auth);
    auth.flows.remove(flow_id);
    if !verify_redirect_uri(&flow.client_id, &flow.redirect_uri) {
        return message(StatusCode::FORBIDDEN, "Invalid redirect URI");
    }
    let code = auth.create_code(client_id, user);
    let body = format!(
        r#"{{"type":"create_entry","flow_id":{},"handler":{HANDLER},"description":null,"description_placeholders":null,"result":{},"version":1,"minor_version":1}}"#,
        Value::from(flow_id),
        Value::from(code)
    );
    super::json_raw(StatusCode::OK, body)
}

/// `POST /auth/login_flow/<flow_id>`.
pub(crate) async fn login_flow_step(
    State(inner): State<Arc<Inner>>,
    Path(flow_id): Path<String>,
    body: Bytes,
) -> Response {
    let m = match parse_json(&body) {
        Ok(m) => m,
        Err(r) => return r.response(),
    };
    let client_id = match required_str(&m, "client_id") {
        Ok(c) => c,
        Err(e) => return e.response(),
    };
    if !verify_client_id(client_id) {
        return message(StatusCode::BAD_REQUEST, "Invalid client id");
    }
    let Some(flow) = lock(&inner.auth).flows.get(&flow_id).cloned() else {
        return message(StatusCode::NOT_FOUND, "Invalid flow specified");
    };
    let malformed = || message(StatusCode::BAD_REQUEST, "User input malformed");
    match flow.step.clone() {
        FlowStep::Init => {
            let (Some(Value::String(username)), Some(Value::String(password))) =
                (m.get("username"), m.get("password"))
            else {
                return malformed();
            };
            let user = lock(&inner.auth)
                .user_by_name(username)
                .filter(|u| &u.password == password);
            match user {
                None => form_step(&flow_id, "init", json!({"base": "invalid_auth"})),
                Some(u) if u.totp_secret.is_some() => {
                    if let Some(f) = lock(&inner.auth).flows.get_mut(&flow_id) {
                        f.step = FlowStep::Mfa {
                            user: u,
                            tries: 0,
                            until: Instant::now() + Duration::from_secs(300),
                        };
                    }
                    form_step(&flow_id, "mfa", json!({}))
                }
                Some(u) => finish(&inner, &flow_id, &flow, client_id, u),
            }
        }
        FlowStep::Mfa { user, tries, until } => {
            let Some(Value::String(code)) = m.get("code") else {
                return malformed();
            };
            if Instant::now() > until {
                lock(&inner.auth).flows.remove(&flow_id);
                return abort(&flow_id, "login_expired");
            }
            if totp_ok(user.totp_secret.as_deref().unwrap_or(""), code.trim()) {
                return finish(&inner, &flow_id, &flow, client_id, user);
            }
            let mut auth = lock(&inner.auth);
            if tries + 1 >= 5 {
                auth.flows.remove(&flow_id);
                return abort(&flow_id, "too_many_retry");
            }
            if let Some(f) = auth.flows.get_mut(&flow_id) {
                f.step = FlowStep::Mfa {
                    user,
                    tries: tries + 1,
                    until,
                };
            }
            form_step(&flow_id, "mfa", json!({"base": "invalid_code"}))
        }
    }
}

/// `DELETE /auth/login_flow/<flow_id>`.
pub(crate) async fn login_flow_delete(
    State(inner): State<Arc<Inner>>,
    Path(flow_id): Path<String>,
) -> Response {
    if lock(&inner.auth).flows.remove(&flow_id).is_none() {
        return message(StatusCode::NOT_FOUND, "Invalid flow specified");
    }
    message(StatusCode::OK, "Flow aborted")
}

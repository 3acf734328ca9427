//! The HTTP side: routes, common answers and request authentication (Bearer and signed paths).

mod api;
mod auth;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::Inner;
use crate::auth::Principal;
use crate::lock;

/// Builds the router: HA's own paths, and the Supervisor's Core proxy in front of them.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let api = api_router(inner.clone());
    crate::supervisor::router(inner, api.clone()).merge(api)
}

fn api_router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/websocket", get(crate::ws::upgrade))
        .route("/auth/token", post(auth::token))
        .route("/auth/revoke", post(auth::revoke))
        .route("/auth/providers", get(auth::providers))
        .route("/auth/login_flow", post(auth::login_flow_start))
        .route(
            "/auth/login_flow/{flow_id}",
            post(auth::login_flow_step).delete(auth::login_flow_delete),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(auth::well_known),
        )
        .route("/api/", get(api::root))
        .route("/api/states", get(api::states))
        .route(
            "/api/states/{entity_id}",
            get(api::get_state).post(api::post_state),
        )
        .route("/api/config", get(api::config))
        .route("/api/events/{event_type}", post(api::post_event))
        .route("/api/services/{domain}/{service}", post(api::post_service))
        .route("/api/history/period", get(api::history_default))
        .route("/api/history/period/{start}", get(api::history))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "404: Not Found") })
        .layer(middleware::from_fn_with_state(
            inner.clone(),
            count_requests,
        ))
        .with_state(inner)
}

async fn count_requests(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    if req.uri().path() != "/api/websocket" {
        inner.stats.inc(&inner.stats.http_requests);
    }
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        resp = text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    resp
}

/// A `text/plain; charset=utf-8` answer.
pub(crate) fn text(status: StatusCode, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON answer from an already serialized body.
pub(crate) fn json_raw(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response {
    json_raw(status, v.to_string())
}

/// HA's `{"message": ...}` answer.
pub(crate) fn message(status: StatusCode, m: &str) -> Response {
    json(status, serde_json::json!({ "message": m }))
}

/// 401 `401: Unauthorized`.
pub(crate) fn unauthorized() -> Response {
    text(StatusCode::UNAUTHORIZED, "401: Unauthorized")
}

/// 500 as aiohttp writes it.
pub(crate) fn internal_error() -> Response {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
}

/// Authenticates a request: `Authorization: Bearer <token>` first, then (GET only) a signed path.
pub(crate) fn authenticate(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Principal> {
    let auth = lock(&inner.auth);
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        if let Some((scheme, token)) = v.split_once(' ')
            && scheme == "Bearer"
            && let Some(p) = auth.validate_access(token)
        {
            return Some(p);
        }
    }
    if method == Method::GET {
        let q = uri.query().unwrap_or("");
        if q.contains("authSig") {
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            return auth.validate_signed(uri.path(), &pairs);
        }
    }
    None
}

impl IntoResponse for crate::services::CmdError {
    fn into_response(self) -> Response {
        message(StatusCode::BAD_REQUEST, &self.message)
    }
}

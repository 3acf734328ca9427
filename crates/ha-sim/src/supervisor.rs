//! The Supervisor's Core proxy, as an add-on with `homeassistant_api: true` sees it
//! (`http://supervisor/core`): REST at `/core/api/...` with `SUPERVISOR_TOKEN` as the bearer (or
//! `X-Ha-Access`), relayed to Core as an admin; 401 for another token; 502 while Core's API is
//! down. The WebSocket at `/core/websocket` (no `/api/`), whose auth phase the proxy runs itself
//! (`ws::auth::authenticate_supervisor`). Behaviour from the Supervisor's `api/proxy.py`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tower::ServiceExt;

use crate::Inner;
use crate::http::text;

#[derive(Clone)]
struct Proxy {
    inner: Arc<Inner>,
    /// Core's own routes, which the proxy relays to.
    core: Router,
}

/// The proxy's routes, relaying to `core`.
pub(crate) fn router(inner: Arc<Inner>, core: Router) -> Router {
    Router::new()
        .route("/core/websocket", get(websocket))
        .route("/core/api/", any(rest))
        .route("/core/api/{*rest}", any(rest))
        .with_state(Proxy { inner, core })
}

fn core_down(inner: &Inner) -> bool {
    inner.faults.supervisor_core_down.load(Ordering::Acquire)
}

async fn websocket(State(p): State<Proxy>, ws: WebSocketUpgrade) -> Response {
    if core_down(&p.inner) {
        p.inner.stats.inc(&p.inner.stats.supervisor_bad_gateway);
        return text(StatusCode::BAD_GATEWAY, "502: Bad Gateway");
    }
    crate::ws::upgrade_as(p.inner, ws, crate::ws::Door::Supervisor)
}

async fn rest(State(p): State<Proxy>, mut req: Request) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = bearer.or_else(|| headers.get("x-ha-access").and_then(|v| v.to_str().ok()));
    if token != Some(p.inner.cfg.supervisor_token.as_str()) {
        return text(StatusCode::UNAUTHORIZED, "401: Unauthorized");
    }
    if core_down(&p.inner) {
        p.inner.stats.inc(&p.inner.stats.supervisor_bad_gateway);
        return text(StatusCode::BAD_GATEWAY, "502: Bad Gateway");
    }
    // Relayed as the Supervisor's own (admin) identity, to Core's path.
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let Ok(uri) = path_and_query
        .strip_prefix("/core")
        .unwrap_or(path_and_query)
        .parse::<Uri>()
    else {
        return text(StatusCode::BAD_REQUEST, "400: Bad Request");
    };
    *req.uri_mut() = uri;
    let admin = format!("Bearer {}", p.inner.cfg.admin_token);
    let headers = req.headers_mut();
    headers.remove("x-ha-access");
    match HeaderValue::from_str(&admin) {
        Ok(v) => headers.insert(header::AUTHORIZATION, v),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "500"),
    };
    match p.core.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
    .into_response()
}

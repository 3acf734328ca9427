//! Headless login through HA's `/auth/login_flow` API, with multi-factor authentication.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{OAuthClient, OAuthTokens};
use crate::{Error, Secret};

/// A username and password for HA's own (`homeassistant`) auth provider.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The username (not the display name).
    pub username: String,
    /// The password; never printed.
    pub password: Secret,
}

impl Credentials {
    /// Bundles a username and a password.
    pub fn new(username: impl Into<String>, password: Secret) -> Self {
        Credentials {
            username: username.into(),
            password,
        }
    }
}

/// Which auth provider to log in with.
#[derive(Clone, Debug)]
pub enum LoginHandler {
    /// HA's own users (`["homeassistant", null]`).
    HomeAssistant(Credentials),
    /// The `trusted_networks` provider: no password, the client's address is trusted. `user` picks the
    /// user id when HA offers several; with one on offer it may be `None`.
    TrustedNetworks {
        /// The user id to log in as.
        user: Option<String>,
    },
}

/// Supplies a multi-factor code when HA asks for one. It gets the MFA module id (`totp`).
pub type MfaCallback<'a> = &'a (dyn Fn(&str) -> Result<Secret, Error> + Send + Sync);

/// An entry of `GET /auth/providers`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AuthProvider {
    /// Display name.
    pub name: String,
    /// Provider id (`null` for the default instance).
    pub id: Option<String>,
    /// Provider type: `homeassistant`, `trusted_networks`, `command_line`, ...
    #[serde(rename = "type")]
    pub kind: String,
}

/// Older HA answers a bare list; newer HA wraps it in an object.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProvidersReply {
    List(Vec<AuthProvider>),
    Object { providers: Vec<AuthProvider> },
}

/// One step of a data-entry flow.
#[derive(Deserialize)]
struct FlowStep {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    flow_id: Option<String>,
    #[serde(default)]
    step_id: Option<String>,
    #[serde(default)]
    errors: Option<Map<String, Value>>,
    #[serde(default)]
    data_schema: Vec<Value>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    reason: Option<String>,
}

const MAX_STEPS: usize = 8;

impl OAuthClient {
    /// The auth providers HA offers (`GET /auth/providers`, both answer shapes).
    pub async fn providers(&self) -> Result<Vec<AuthProvider>, Error> {
        let path = "/auth/providers";
        let url = self.base.join(path)?;
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| Error::transport(&url, e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Error::transport(&url, e))?;
        if !status.is_success() {
            return Err(crate::http::status_error(status, &body, path));
        }
        match serde_json::from_slice::<ProvidersReply>(&body) {
            Ok(ProvidersReply::List(p)) | Ok(ProvidersReply::Object { providers: p }) => Ok(p),
            Err(e) => Err(Error::UnexpectedResponse {
                path: path.into(),
                detail: e.to_string(),
            }),
        }
    }

    /// Logs in with a username and password, answering an MFA step through `mfa` when the user
    /// has one, and exchanges the result for tokens.
    ///
    /// A wrong password is [`Error::InvalidCredentials`] and a wrong code [`Error::InvalidMfaCode`];
    /// neither is retried (HA counts each toward an IP ban).
    pub async fn login(
        &self,
        credentials: &Credentials,
        mfa: Option<MfaCallback<'_>>,
    ) -> Result<OAuthTokens, Error> {
        self.login_with(&LoginHandler::HomeAssistant(credentials.clone()), mfa)
            .await
    }

    /// Logs in with any supported handler.
    pub async fn login_with(
        &self,
        handler: &LoginHandler,
        mfa: Option<MfaCallback<'_>>,
    ) -> Result<OAuthTokens, Error> {
        let handler_name = match handler {
            LoginHandler::HomeAssistant(_) => "homeassistant",
            LoginHandler::TrustedNetworks { .. } => "trusted_networks",
        };
        // HA answers an unknown handler with a bare 500; ask first, to give a useful error.
        let providers = self.providers().await?;
        if !providers.iter().any(|p| p.kind == handler_name) {
            let offered: Vec<&str> = providers.iter().map(|p| p.kind.as_str()).collect();
            return Err(Error::Config(format!(
                "Home Assistant does not offer the '{handler_name}' auth provider to this client \
                 (it offers: {}); enable it in HA's `homeassistant: auth_providers`, or for \
                 trusted_networks connect from a trusted address",
                offered.join(", ")
            )));
        }
        let mut step = self
            .flow_post(
                "auth/login_flow",
                json!({
                    "client_id": self.client_id,
                    "handler": [handler_name, null],
                    "redirect_uri": self.redirect_uri,
                    "type": "authorize",
                }),
            )
            .await?;
        let mut submitted: Option<String> = None;
        let mut mfa_module = String::from("totp");
        for _ in 0..MAX_STEPS {
            match step.kind.as_str() {
                "create_entry" => {
                    let code = step
                        .result
                        .as_ref()
                        .and_then(Value::as_str)
                        .ok_or_else(|| Error::UnexpectedResponse {
                            path: "/auth/login_flow".into(),
                            detail: "create_entry without a result code".into(),
                        })?;
                    return self.exchange_code(code).await;
                }
                "abort" => {
                    return Err(Error::LoginAborted {
                        reason: step.reason.unwrap_or_else(|| "no reason given".into()),
                    });
                }
                "form" => {}
                other => {
                    return Err(Error::UnexpectedResponse {
                        path: "/auth/login_flow".into(),
                        detail: format!("unknown flow step type '{other}'"),
                    });
                }
            }
            let flow_id = step.flow_id.clone().unwrap_or_default();
            let step_id = step.step_id.clone().unwrap_or_default();
            if submitted.as_deref() == Some(step_id.as_str())
                && let Some(base) = step
                    .errors
                    .as_ref()
                    .and_then(|e| e.get("base"))
                    .and_then(Value::as_str)
            {
                let err = match base {
                    "invalid_auth" => Error::InvalidCredentials,
                    "invalid_code" => Error::InvalidMfaCode,
                    other => Error::LoginAborted {
                        reason: other.to_string(),
                    },
                };
                self.abort_flow(&flow_id).await;
                return Err(err);
            }
            let mut input = Map::new();
            input.insert("client_id".into(), Value::String(self.client_id.clone()));
            match (handler, step_id.as_str()) {
                (LoginHandler::HomeAssistant(c), "init") => {
                    input.insert("username".into(), Value::String(c.username.clone()));
                    input.insert(
                        "password".into(),
                        Value::String(c.password.expose().to_string()),
                    );
                }
                (LoginHandler::TrustedNetworks { user }, "init") => {
                    let user = match user {
                        Some(u) => u.clone(),
                        None => only_option(&step.data_schema, "user").ok_or_else(|| {
                            Error::Config(
                                "trusted_networks offers several users; choose one by id".into(),
                            )
                        })?,
                    };
                    input.insert("user".into(), Value::String(user));
                }
                (_, "select_mfa_module") => {
                    mfa_module = choose_mfa_module(&step.data_schema);
                    input.insert(
                        "multi_factor_auth_module".into(),
                        Value::String(mfa_module.clone()),
                    );
                }
                (_, "mfa") => {
                    let Some(callback) = mfa else {
                        self.abort_flow(&flow_id).await;
                        return Err(Error::MfaRequired { module: mfa_module });
                    };
                    let code = callback(&mfa_module)?;
                    input.insert(
                        "code".into(),
                        Value::String(code.expose().trim().to_string()),
                    );
                }
                (_, other) => {
                    self.abort_flow(&flow_id).await;
                    return Err(Error::UnexpectedResponse {
                        path: "/auth/login_flow".into(),
                        detail: format!("unknown login step '{other}'"),
                    });
                }
            }
            submitted = Some(step_id);
            step = self
                .flow_post(&format!("auth/login_flow/{flow_id}"), Value::Object(input))
                .await?;
        }
        Err(Error::UnexpectedResponse {
            path: "/auth/login_flow".into(),
            detail: format!("the login flow did not finish within {MAX_STEPS} steps"),
        })
    }

    async fn flow_post(&self, path: &str, body: Value) -> Result<FlowStep, Error> {
        let url = self.base.join(path)?;
        let resp = self
            .http
            .post(url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::transport(&url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::transport(&url, e))?;
        if !status.is_success() {
            return Err(crate::http::status_error(
                status,
                &bytes,
                "/auth/login_flow",
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::UnexpectedResponse {
            path: "/auth/login_flow".into(),
            detail: format!(
                "not a flow step ({:?} error at column {})",
                e.classify(),
                e.column()
            ),
        })
    }

    /// Deletes a flow we gave up on, so it does not linger on the server. Best effort.
    async fn abort_flow(&self, flow_id: &str) {
        if flow_id.is_empty() {
            return;
        }
        if let Ok(url) = self.base.join(&format!("auth/login_flow/{flow_id}")) {
            let _ = self.http.delete(url).send().await;
        }
    }
}

/// The value of a select field, when it offers exactly one option.
fn only_option(schema: &[Value], field: &str) -> Option<String> {
    let options = schema
        .iter()
        .find(|f| f.get("name").and_then(Value::as_str) == Some(field))?
        .get("options")?;
    let keys = option_keys(options);
    (keys.len() == 1).then(|| keys[0].clone())
}

/// `totp` if offered, else the first module.
fn choose_mfa_module(schema: &[Value]) -> String {
    let keys = schema
        .iter()
        .find(|f| f.get("name").and_then(Value::as_str) == Some("multi_factor_auth_module"))
        .and_then(|f| f.get("options"))
        .map(option_keys)
        .unwrap_or_default();
    if keys.iter().any(|k| k == "totp") || keys.is_empty() {
        "totp".into()
    } else {
        keys[0].clone()
    }
}

/// Select options come as `{"key": "label"}` or `[["key", "label"], ...]`.
fn option_keys(options: &Value) -> Vec<String> {
    match options {
        Value::Object(m) => m.keys().cloned().collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|o| match o {
                Value::Array(pair) => pair.first().and_then(Value::as_str).map(str::to_owned),
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_reply_both_shapes() {
        let old = r#"[{"name":"Home Assistant Local","id":null,"type":"homeassistant"}]"#;
        let new = r#"{"providers":[{"name":"Home Assistant Local","id":null,"type":"homeassistant"}],"preselect_remember_me":true}"#;
        for body in [old, new] {
            let (ProvidersReply::List(p) | ProvidersReply::Object { providers: p }) =
                serde_json::from_str(body).unwrap();
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].kind, "homeassistant");
            assert_eq!(p[0].id, None);
        }
    }

    #[test]
    fn select_options_in_both_shapes() {
        let dict = json!([{"name":"multi_factor_auth_module","type":"select","options":{"notify":"N","totp":"T"}}]);
        assert_eq!(choose_mfa_module(dict.as_array().unwrap()), "totp");
        let list = json!([{"name":"user","type":"select","options":[["u1","User 1"]]}]);
        assert_eq!(
            only_option(list.as_array().unwrap(), "user").as_deref(),
            Some("u1")
        );
        let two = json!([{"name":"user","options":[["u1","A"],["u2","B"]]}]);
        assert_eq!(only_option(two.as_array().unwrap(), "user"), None);
    }
}

//! Who an API request is: HTTP Basic credentials checked against the same roles as the
//! Postgres endpoint. Under `--auth trust` a request without them acts as `weir`.

use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use weir_sql::roles::BOOTSTRAP_ROLE;
use weir_sql::{Database, SqlError};

use super::api::error_response;

/// The role a request acts as; the login error (answered by `challenge`) when it has no
/// credentials that hold.
pub(crate) fn user_of(db: &Database, headers: &HeaderMap) -> Result<String, SqlError> {
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let access = db.access();
    let Some(credentials) = basic else {
        if access.passwords_required() {
            return Err(SqlError::new(
                "28000",
                "this server wants a user name and password (HTTP Basic)",
            ));
        }
        return Ok(BOOTSTRAP_ROLE.to_string());
    };
    let (user, password) = credentials
        .split_once(':')
        .unwrap_or((credentials.as_str(), ""));
    if access.passwords_required() {
        let verifier = access.login_verifier(user)?;
        if !verifier.matches_password(password) {
            return Err(weir_sql::access::password_failed(user));
        }
    }
    Ok(user.to_string())
}

/// A 401 asking for Basic credentials: browsers then prompt, and resend them on every
/// request to the console's origin.
pub(crate) fn challenge(e: &SqlError) -> Response {
    let mut response = error_response(e).into_response();
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    if let Ok(v) = "Basic realm=\"weir\", charset=\"UTF-8\"".parse() {
        response.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    response
}

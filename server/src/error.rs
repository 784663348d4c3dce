//! The API's one error type: 4xx bodies say what to fix; 5xx bodies are generic and the cause
//! goes to the log.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::bundles::IngestError;
use crate::store::StoreError;

/// An API error. Every handler returns it; it renders as `{"error": CODE, "message": TEXT}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// No, malformed, expired or unknown credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The caller may not do this (wrong role, or not its own resource).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// Conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body has the wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed but semantically refused (e.g. a bundle failing verification).
    #[error("{0}")]
    Unprocessable(String),
    /// No requested range is within the file.
    #[error("no requested range is within the {0}-byte bundle")]
    RangeNotSatisfiable(u64),
    /// The client exceeded its rate limit.
    #[error("rate limit exceeded; retry later")]
    TooManyRequests,
    /// Refused for a while (login backoff or lockout); the message says how long.
    #[error("{message}")]
    Throttled {
        /// What to tell the client.
        message: String,
        /// Seconds until a retry may succeed (`Retry-After`).
        retry_after: u64,
    },
    /// A feature is not configured on this server.
    #[error("{0}")]
    Unavailable(String),
    /// The database cannot be reached right now (answered 503 with `Retry-After`).
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    /// Anything else: logged, answered generically.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The `error` code of a status; one table for [`ApiError`] and for the error responses made
/// elsewhere (axum's rejections) that [`json_error`] rewrites.
pub fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::RANGE_NOT_SATISFIABLE => "range_not_satisfiable",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::TooManyRequests | ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = error_code(status);
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let body = serde_json::json!({ "error": code, "message": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::Throttled { retry_after, .. } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.max(1).to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::TooManyRequests | ApiError::DatabaseUnavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Invalid(m) => ApiError::Unprocessable(m),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::DatabaseUnavailable
            }
            StoreError::Backend(_) => ApiError::Internal(e.into()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(_) | IngestError::WrongRoot { .. } => {
                ApiError::Unprocessable(e.to_string())
            }
            IngestError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            IngestError::Aborted => ApiError::BadRequest(e.to_string()),
            IngestError::Io { .. } => ApiError::Internal(e.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".to_owned(),
            ),
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("the JSON body is larger than the limit".to_owned())
            }
            JsonRejection::BytesRejection(_) if caused_by_body_timeout(&r) => {
                ApiError::RequestTimeout("the request body stopped arriving".to_owned())
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

/// Whether the body timeout (tower-http's `RequestBodyTimeoutLayer`) ended this body.
fn caused_by_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Largest body of an error response [`json_error`] rewrites; axum's rejections are one line.
const REWRITTEN_BODY_MAX: usize = 4096;

/// An error response that is not JSON already (axum's path, query and body rejections,
/// anything else a layer answers) becomes `{"error", "message"}` with its status, its text as
/// the message; every other response, and the console's HTML error pages, are returned as
/// they are. Called by the router's one
/// middleware on every response.
pub async fn json_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REWRITTEN_BODY_MAX)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty() && !status.is_server_error());
    let message = text.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let body = serde_json::json!({ "error": error_code(status), "message": message });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(e.into())
    }
}

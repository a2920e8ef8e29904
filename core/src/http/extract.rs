//! Extractors that answer bad input with coded errors instead of axum's plain-text rejections.

use axum::{
    extract::{FromRequest, Request, rejection::JsonRejection},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{ApiError, ErrorCode};

/// JSON body in, JSON body out, with coded rejections: `415 unsupported_media_type` without a
/// JSON content type, `400 malformed_request` for syntax or shape errors (the message names the
/// problem in the client's own input), `413 payload_too_large` beyond the body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match rejection {
        JsonRejection::MissingJsonContentType(_) => ErrorCode::UnsupportedMediaType,
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            ErrorCode::MalformedRequest
        }
        _ if status == http::StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        _ => ErrorCode::MalformedRequest,
    };
    // The rejection text describes the client's input (line, column, field), not the server.
    ApiError::with_message(code, rejection.body_text())
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

//! Choosing the subprotocol of an upgrade (SPDY's `X-Stream-Protocol-Version`,
//! WebSocket's `Sec-WebSocket-Protocol`): shared by both transports.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Picks the first of `supported` (server preference) the client offered;
/// `Ok(None)` when it offered nothing.
pub(super) fn negotiate(
    offered: &[String],
    supported: &[&'static str],
) -> Result<Option<&'static str>, Box<Response>> {
    if offered.is_empty() {
        return Ok(None);
    }
    supported
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .map(|s| Some(*s))
        .ok_or_else(|| {
            let message = format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}\n"
            );
            Box::new((StatusCode::FORBIDDEN, message).into_response())
        })
}

/// Every value of a header that may repeat or hold a comma-separated list.
pub(super) fn header_values(headers: &axum::http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

//! HLS playlists as HTTP responses: the text of `chorus_core::hls`, with its content type,
//! caching and errors.

use chorus_core::hls;
use chorus_core::manifest::Manifest;

use crate::serve::query_param;
use crate::{ResponseBody, full, json_error};

/// The response for playlist `name` (`master`, or a rendition id) of `m`: the playlist with
/// `Cache-Control: public, max-age=10`, or a JSON 404 saying why there is none. A `token`
/// query parameter (`query`) is carried onto every URI.
#[must_use]
pub fn respond(m: &Manifest, name: &str, query: Option<&str>) -> http::Response<ResponseBody> {
    let token =
        query_param(query, "token").filter(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    let text = if name == "master" {
        hls::master(m, token.as_deref()).ok_or_else(|| "track has no HLS-playable (cmaf) rendition".to_owned())
    } else {
        match m.rendition(name) {
            Some(r) => hls::media(m, r, token.as_deref()).ok_or_else(|| {
                "rendition is raw byte chunks, which HLS cannot play; fetch its chunks directly".to_owned()
            }),
            None => Err(format!("track {} has no rendition {}", m.track_id, name.chars().take(40).collect::<String>())),
        }
    };
    match text {
        Ok(t) => {
            // For HEAD the front drops the body and keeps its length.
            let mut r = full(http::StatusCode::OK, "application/vnd.apple.mpegurl", t);
            r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=10"));
            r
        }
        Err(msg) => json_error(http::StatusCode::NOT_FOUND, msg),
    }
}

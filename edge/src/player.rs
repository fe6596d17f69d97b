//! The web player every edge serves (docs/edge.md, "The web player"): `GET /player/` and its
//! two scripts, compiled into the binary, plus `GET /player/config.json`, which gives the page
//! the origin key the edge was started with (`--origin-key`) so that it can check manifests.
//! `/` redirects to `/player/`. `--no-player` turns all of it off (404).
//!
//! The page fetches only from the edge that served it, so its Content-Security-Policy allows
//! nothing else; media plays from `blob:` URLs (Media Source Extensions).

use base64::Engine as _;
use chorus_core::keys::{self, VerifyingKey};
use chorus_http::{ResponseBody, empty, full, json_error};
use http::{HeaderValue, Method, Response, StatusCode, header};

const INDEX: &str = include_str!("player/index.html");
const PLAYER_JS: &str = include_str!("player/player.js");
const BLAKE3_JS: &str = include_str!("player/blake3.js");

const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
     media-src 'self' blob:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
);

/// The answer to `GET`/`HEAD /player/{file}` (`file` empty for the page itself).
#[must_use]
pub fn file(method: &Method, file: &str, origin_key: Option<&VerifyingKey>) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return chorus_http::serve::method_not_allowed("GET, HEAD");
    }
    let mut r = match file {
        "" | "index.html" => {
            let mut r = full(StatusCode::OK, "text/html; charset=utf-8", INDEX);
            r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, CSP);
            r
        }
        "player.js" => full(StatusCode::OK, "text/javascript; charset=utf-8", PLAYER_JS),
        "blake3.js" => full(StatusCode::OK, "text/javascript; charset=utf-8", BLAKE3_JS),
        "config.json" => {
            let config = serde_json::json!({
                "origin_key": origin_key.map(|k| base64::engine::general_purpose::STANDARD.encode(k.as_bytes())),
                "key_id": origin_key.map(keys::key_id),
            });
            full(StatusCode::OK, "application/json", config.to_string())
        }
        _ => return json_error(StatusCode::NOT_FOUND, "no such player file"),
    };
    let h = r.headers_mut();
    // Small files, changed by an upgrade: checked with the edge each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The page's URL may hold an access token: never sent on as a referrer.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// `303 See Other` to `to` (`/` and `/player` go to `/player/`, where relative URLs work).
#[must_use]
pub fn redirect(to: &'static str) -> Response<ResponseBody> {
    let mut r = empty(StatusCode::SEE_OTHER);
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_scripts_and_its_key() {
        let key = chorus_core::keys::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let page = file(&Method::GET, "", Some(&key));
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("connect-src 'self'"));
        assert_eq!(
            file(&Method::GET, "player.js", None).headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(file(&Method::GET, "nope.js", None).status(), StatusCode::NOT_FOUND);
        assert_eq!(file(&Method::POST, "", None).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(INDEX.contains(r#"src="player.js""#) && PLAYER_JS.contains(r#"from "./blake3.js""#));
        let config = file(&Method::GET, "config.json", Some(&key));
        assert_eq!(config.status(), StatusCode::OK);
        let off = file(&Method::GET, "config.json", None);
        assert_eq!(off.status(), StatusCode::OK, "the page says plainly that there is no key");
    }
}

//! `GET /`, `GET /dashboard.js`, `GET /dashboard.css`: the live dashboard,
//! a static page compiled into the binary that subscribes to every symbol
//! over `/ws` and renders a quote table in the browser; and
//! `GET /tickcast-client.js`, the JavaScript client library
//! (`clients/js/src/index.js`) the dashboard is built on, for any page.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};

use super::Body;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");
/// The one JavaScript client of the project: the `tickcast-client`
/// package in `clients/js`, served as it is.
const CLIENT_JS: &str = include_str!("../../clients/js/src/index.js");

/// Where the client library is served.
pub const CLIENT_PATH: &str = "/tickcast-client.js";

/// The asset served at `path`, with its content type, if there is one.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX_HTML, "text/html; charset=utf-8")),
        "/dashboard.js" => Some((DASHBOARD_JS, "text/javascript; charset=utf-8")),
        "/dashboard.css" => Some((DASHBOARD_CSS, "text/css; charset=utf-8")),
        CLIENT_PATH => Some((CLIENT_JS, "text/javascript; charset=utf-8")),
        _ => None,
    }
}

/// `200` with `body`. `no-cache` makes the browser revalidate, so a new
/// server binary never runs next to a stale script.
pub fn serve(body: &'static str, content_type: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, "no-cache")
        .header(X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_content_type() {
        assert!(asset("/").unwrap().1.starts_with("text/html"));
        assert!(asset("/dashboard.js")
            .unwrap()
            .1
            .starts_with("text/javascript"));
        assert!(asset("/dashboard.css").unwrap().1.starts_with("text/css"));
        assert!(asset(CLIENT_PATH).unwrap().1.starts_with("text/javascript"));
        assert!(asset("/nope").is_none());
    }

    #[test]
    fn the_page_loads_its_script_and_stylesheet() {
        assert!(INDEX_HTML.contains("type=\"module\" src=\"/dashboard.js\""));
        assert!(INDEX_HTML.contains("href=\"/dashboard.css\""));
    }

    #[test]
    fn the_dashboard_is_built_on_the_client_library() {
        assert!(DASHBOARD_JS.contains(&format!("from \"{CLIENT_PATH}\"")));
        assert!(CLIENT_JS.contains("export class TickcastClient"));
    }
}

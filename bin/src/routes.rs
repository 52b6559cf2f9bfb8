//! The routing table and the route numbers metrics are kept by.

use flashd_protocol::{Method, Router};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Route {
    Healthz = 1,
    Readyz = 2,
    Metrics = 3,
}

/// Index = route number; 0 is the reactor's own answers (framing errors,
/// timeouts), 4 is "no route matched" (404/405).
pub const ROUTE_NAMES: [&str; 5] = ["none", "healthz", "readyz", "metrics", "unmatched"];
pub const ROUTE_UNMATCHED: u16 = 4;

pub fn router() -> Router<Route> {
    Router::new()
        .route(Method::Get, "/healthz", Route::Healthz)
        .route(Method::Get, "/readyz", Route::Readyz)
        .route(Method::Get, "/metrics", Route::Metrics)
}

//! The routing table and the route numbers metrics are kept by.

use flashd_protocol::{Method, Router};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Route {
    Healthz = 1,
    Readyz = 2,
    Metrics = 3,
    CreateActivity = 5,
    GetActivity = 6,
    PlaceOrder = 7,
    GetOrder = 8,
    PayOrder = 9,
    CancelOrder = 10,
    StreamActivity = 11,
    Dashboard = 12,
    DashboardData = 13,
    BuyerPage = 14,
}

/// Index = route number; 0 is the reactor's own answers (framing errors,
/// timeouts), 4 is "no route matched" (404/405).
pub const ROUTE_NAMES: [&str; 15] = [
    "none",
    "healthz",
    "readyz",
    "metrics",
    "unmatched",
    "create_activity",
    "get_activity",
    "place_order",
    "get_order",
    "pay_order",
    "cancel_order",
    "stream_activity",
    "dashboard",
    "dashboard_data",
    "buyer_page",
];
pub const ROUTE_UNMATCHED: u16 = 4;

pub fn router() -> Router<Route> {
    Router::new()
        .route(Method::Get, "/healthz", Route::Healthz)
        .route(Method::Get, "/readyz", Route::Readyz)
        .route(Method::Get, "/metrics", Route::Metrics)
        .route(Method::Post, "/api/v1/activities", Route::CreateActivity)
        .route(Method::Get, "/api/v1/activities/{id}", Route::GetActivity)
        .route(
            Method::Post,
            "/api/v1/activities/{id}/orders",
            Route::PlaceOrder,
        )
        .route(Method::Get, "/api/v1/orders/{id}", Route::GetOrder)
        .route(Method::Post, "/api/v1/orders/{id}/pay", Route::PayOrder)
        .route(
            Method::Post,
            "/api/v1/orders/{id}/cancel",
            Route::CancelOrder,
        )
        .route(
            Method::Get,
            "/api/v1/activities/{id}/stream",
            Route::StreamActivity,
        )
        .route(Method::Get, "/dashboard", Route::Dashboard)
        .route(Method::Get, "/api/v1/dashboard", Route::DashboardData)
        .route(Method::Get, "/activities/{id}", Route::BuyerPage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_protocol::RouteMatch;

    /// Every GET route answers HEAD as the same route (the reactor drops
    /// the body), and a POST-only path says HEAD is not allowed, so a HEAD
    /// request never gets a 405 where GET would work (issue 14 point 7).
    #[test]
    fn every_get_route_serves_head() {
        let r = router();
        let gets = [
            ("/healthz", Route::Healthz),
            ("/readyz", Route::Readyz),
            ("/metrics", Route::Metrics),
            ("/api/v1/activities/7", Route::GetActivity),
            ("/api/v1/orders/7", Route::GetOrder),
            ("/api/v1/activities/7/stream", Route::StreamActivity),
            ("/dashboard", Route::Dashboard),
            ("/api/v1/dashboard", Route::DashboardData),
            ("/activities/7", Route::BuyerPage),
        ];
        for (path, route) in gets {
            match r.find(Method::Head, path) {
                RouteMatch::Found(found, _) => assert_eq!(found, route, "{path}"),
                other => panic!("HEAD {path}: {other:?}"),
            }
        }
        for path in [
            "/api/v1/activities",
            "/api/v1/activities/7/orders",
            "/api/v1/orders/7/pay",
            "/api/v1/orders/7/cancel",
        ] {
            match r.find(Method::Head, path) {
                RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, "POST", "{path}"),
                other => panic!("HEAD {path}: {other:?}"),
            }
        }
        match r.find(Method::Post, "/healthz") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, "GET, HEAD"),
            other => panic!("{other:?}"),
        }
    }
}

//! The request handler every sub-reactor runs: routes a request and answers
//! it.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flashd_protocol::{Request, RouteMatch, Router};
use flashd_reactor::{Context, Handler, ServerStats};

use crate::metrics;
use crate::routes::{self, Route, ROUTE_UNMATCHED};

pub struct App {
    router: Router<Route>,
    stats: Arc<ServerStats>,
    scratch: String,
}

impl App {
    pub fn new(stats: Arc<ServerStats>) -> Self {
        App {
            router: routes::router(),
            stats,
            scratch: String::new(),
        }
    }
}

impl Handler for App {
    type Deferred = Infallible;

    fn handle(&mut self, req: &Request<'_>, cx: &mut Context<'_>) {
        let route = match self.router.find(req.method, req.path) {
            RouteMatch::Found(r, _) => r,
            RouteMatch::MethodNotAllowed { allow } => {
                cx.set_route(ROUTE_UNMATCHED);
                return cx.respond_error(
                    405,
                    "method_not_allowed",
                    "method not allowed on this path",
                    &[("Allow", allow)],
                );
            }
            RouteMatch::NotFound => {
                cx.set_route(ROUTE_UNMATCHED);
                return cx.respond_error(404, "not_found", "no such path", &[]);
            }
        };
        cx.set_route(route as u16);
        match route {
            Route::Healthz => cx.respond_json(200, br#"{"status":"ok"}"#),
            Route::Readyz => {
                if self.stats.shutting_down.load(Ordering::Relaxed) {
                    cx.respond_error(503, "not_ready", "shutting down", &[])
                } else if !self.stats.all_running() {
                    cx.respond_error(503, "not_ready", "reactors starting", &[])
                } else {
                    cx.respond_json(200, br#"{"status":"ready"}"#)
                }
            }
            Route::Metrics => {
                self.scratch.clear();
                metrics::render(&self.stats, &mut self.scratch);
                cx.respond(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    &[],
                    self.scratch.as_bytes(),
                );
            }
        }
    }

    fn complete(&mut self, never: Infallible, _cx: &mut Context<'_>) {
        match never {}
    }
}

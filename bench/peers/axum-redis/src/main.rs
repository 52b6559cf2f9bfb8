//! The usual flash-sale design, written plainly, as the peer flashd is
//! measured against: an axum (tokio) HTTP service that checks the buyer's
//! JWT and runs one Lua script in Redis per purchase. The script is the
//! heart of that design: check the sale window, check that the user has not
//! bought, decrement the stock, record the user, atomically in Redis.
//! Persistence (a message queue behind it) is left out, which flatters it.
//!
//!   axum-redis-peer LISTEN REDIS_URL JWT_SECRET
//!
//! `GET /api/v1/activities/{id}` reads the sale's hash (HGETALL).
//!
//! A sale is set up in Redis by the bench script:
//!   HSET sale:{id} stock N start_ms T0 end_ms T1 price_cents P

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

/// KEYS[1] = sale hash, KEYS[2] = buyers set; ARGV = user, quantity, now.
/// The same file is loaded into `redis-benchmark` by bench/peers-sale.
const BUY: &str = include_str!("../buy.lua");

struct App {
    redis: redis::aio::ConnectionManager,
    script: redis::Script,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Deserialize)]
struct Buy {
    quantity: u32,
    request_id: String,
}

fn err(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": code, "message": code})),
    )
        .into_response()
}

async fn buy(
    State(app): State<Arc<App>>,
    Path(sale): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return err(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let user = match jsonwebtoken::decode::<Claims>(token, &app.key, &app.validation) {
        Ok(t) => t.claims.sub,
        Err(_) => return err(StatusCode::UNAUTHORIZED, "unauthorized"),
    };
    let Ok(req) = serde_json::from_slice::<Buy>(&body) else {
        return err(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if req.quantity == 0 || req.request_id.is_empty() {
        return err(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut conn = app.redis.clone();
    let left: Result<i64, _> = app
        .script
        .key(format!("sale:{sale}"))
        .key(format!("sale:{sale}:buyers"))
        .arg(&user)
        .arg(req.quantity)
        .arg(now)
        .invoke_async(&mut conn)
        .await;
    match left {
        Ok(n) if n >= 0 => {
            let id = app.next_id.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "order_id": id.to_string(), "activity_id": sale, "user_id": user,
                    "quantity": req.quantity, "status": "CREATED"
                })),
            )
                .into_response()
        }
        Ok(-1) => err(StatusCode::CONFLICT, "sold_out"),
        Ok(-409) => err(StatusCode::CONFLICT, "limit_reached"),
        Ok(-403) => err(StatusCode::FORBIDDEN, "not_started"),
        Ok(-410) => err(StatusCode::FORBIDDEN, "ended"),
        Ok(_) => err(StatusCode::NOT_FOUND, "not_found"),
        Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

/// `GET` of a sale: the hash as Redis holds it, as JSON.
async fn get_sale(State(app): State<Arc<App>>, Path(sale): Path<u64>) -> Response {
    let mut conn = app.redis.clone();
    let fields: Result<std::collections::HashMap<String, String>, _> =
        redis::cmd("HGETALL")
            .arg(format!("sale:{sale}"))
            .query_async(&mut conn)
            .await;
    match fields {
        Ok(f) if f.is_empty() => err(StatusCode::NOT_FOUND, "not_found"),
        Ok(f) => {
            let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            Json(serde_json::json!({
                "id": sale, "remaining": num("stock"), "start_ms": num("start_ms"),
                "end_ms": num("end_ms"), "price_cents": num("price_cents")
            }))
            .into_response()
        }
        Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: axum-redis-peer LISTEN REDIS_URL JWT_SECRET");
        std::process::exit(2);
    }
    let client = redis::Client::open(args[2].as_str()).expect("redis url");
    let redis = redis::aio::ConnectionManager::new(client)
        .await
        .expect("redis connection");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
    let app = Arc::new(App {
        redis,
        script: redis::Script::new(BUY),
        key: jsonwebtoken::DecodingKey::from_secret(args[3].as_bytes()),
        validation,
        next_id: AtomicU64::new(1),
    });
    let router = Router::new()
        .route("/api/v1/activities/{id}", get(get_sale))
        .route("/api/v1/activities/{id}/orders", post(buy))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args[1])
        .await
        .expect("listen");
    axum::serve(listener, router).await.expect("serve");
}

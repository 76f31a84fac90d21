//! The floor of the webhook receiver: axum (the receiver's own stack) answering `204` after reading
//! the body and parsing it as JSON, nothing else: no token check, no normalization, no store, no
//! metrics, no logs. What a delivery costs here is what the stack costs before the facade does any
//! work: the bar the receiver's deliveries per second are held against (BENCHMARKS.md, "Durable
//! event store"). A measuring tool, not a product; run it in the receiver's place:
//!
//! ```sh
//! cargo build --release --example webhook_floor
//! target/release/examples/webhook_floor --webhook-listen 127.0.0.1:8081
//! wrk -t2 -c64 -d10s -s benches/webhook/cdr.lua http://127.0.0.1:8081/webhooks/callbot/any-token
//! ```
//! (`benches/webhook/run.sh` runs it beside the facade's memory and disk stores, in one run.)

use axum::{Router, body::Bytes, http::StatusCode, routing::post};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The receiver's body limit (API.md §6: `413` over 64 KiB).
const MAX_BODY: usize = 64 * 1024;

async fn delivery(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8081".to_owned();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--webhook-listen" => listen = args.next().ok_or("--webhook-listen needs an address")?,
            other => return Err(format!("unknown argument {other:?} (only --webhook-listen ADDR)").into()),
        }
    }
    let app = Router::new()
        .route("/webhooks/callbot/{token}", post(delivery))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("webhook floor on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

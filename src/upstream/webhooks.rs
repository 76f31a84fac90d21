//! The tenant's webhooks (docs/upstream.md §11.1): `GET /api/webhooks/list` and
//! `POST /api/webhooks/register`, so the facade can make sure the provider posts the calls'
//! states and end-of-call records to its receiver.

use http::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    CallContext, UpstreamClient, UpstreamError,
    envelope::{Envelope, lenient_string},
    retry::Idempotency,
};

/// The list endpoint's path.
pub(super) const LIST_PATH: &str = "/api/webhooks/list";
/// The register endpoint's path.
pub(super) const REGISTER_PATH: &str = "/api/webhooks/register";

/// One registered webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Webhook {
    /// Where the provider posts.
    #[serde(default, deserialize_with = "lenient_string")]
    pub url: String,
    /// The hook type: `call` for call states and records.
    #[serde(default, rename = "type", deserialize_with = "lenient_string")]
    pub kind: String,
    /// `actived` (sic) when in force.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: String,
}

#[derive(Debug, Default)]
struct WebhookList(Vec<Webhook>);

impl<'de> Deserialize<'de> for WebhookList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Vec<Webhook>>::deserialize(d).map(|v| WebhookList(v.unwrap_or_default()))
    }
}

impl UpstreamClient {
    /// `GET /api/webhooks/list`: the tenant's webhooks.
    pub async fn list_webhooks(&self, ctx: &CallContext) -> Result<Vec<Webhook>, UpstreamError> {
        let answer =
            self.call_with_token(ctx, Idempotency::Read, Method::GET, &self.endpoints.webhook_list, |r| r).await?;
        match self.decode::<WebhookList>(&answer)? {
            Envelope::Success(WebhookList(list)) => Ok(list),
            Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() }),
        }
    }

    /// `POST /api/webhooks/register`: the `call` hook of the tenant, every event, to `url`
    /// (replacing the tenant's previous `call` hook). Repeating it with the same URL leaves the
    /// same registration, so it is retried like a read.
    pub async fn register_webhook(&self, ctx: &CallContext, url: &str) -> Result<(), UpstreamError> {
        let body = json!({"webhook": {"type": "call", "url": url, "events": null}});
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let answer = self
            .call_with_token(ctx, Idempotency::Read, Method::POST, &self.endpoints.webhook_register, |request| {
                request.header(&http::header::CONTENT_TYPE, "application/json").body(body.clone())
            })
            .await?;
        match self.decode::<serde::de::IgnoredAny>(&answer)? {
            Envelope::Success(_) => Ok(()),
            Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() }),
        }
    }
}

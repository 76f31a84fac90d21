//! The script list of each tenant, cached per upstream API key for `--script-cache-ttl` and
//! refreshed single-flight, with each name folded once for `name_contains` filtering.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    cache::SingleFlightCache,
    domain,
    upstream::{ApiKey, CallContext, Script, UpstreamClient, UpstreamError},
};

/// One tenant's scripts, in upstream order, with their folded names (same order).
#[derive(Debug)]
pub struct Catalog {
    /// Scripts as listed.
    pub scripts: Vec<Script>,
    /// `domain::fold(name)` of each script.
    pub folded_names: Vec<String>,
}

impl Catalog {
    fn new(scripts: Vec<Script>) -> Self {
        let folded_names = scripts.iter().map(|s| domain::fold(&s.name)).collect();
        Catalog { scripts, folded_names }
    }
}

/// The cache (TTL zero = every call fetches).
pub struct ScriptCatalog {
    ttl: Duration,
    cache: SingleFlightCache<ApiKey, Arc<Catalog>, UpstreamError>,
}

impl ScriptCatalog {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        ScriptCatalog { ttl, cache: SingleFlightCache::new() }
    }

    /// The scripts of the call's tenant.
    pub async fn get(&self, upstream: &UpstreamClient, ctx: &CallContext) -> Result<Arc<Catalog>, UpstreamError> {
        if self.ttl.is_zero() {
            return Ok(Arc::new(Catalog::new(upstream.list_scripts(ctx).await?)));
        }
        let ttl = self.ttl;
        self.cache
            .get_or_fetch(&ctx.api_key, || async move {
                let scripts = upstream.list_scripts(ctx).await?;
                Ok((Arc::new(Catalog::new(scripts)), Instant::now() + ttl))
            })
            .await
    }
}

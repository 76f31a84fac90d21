//! The script list of each tenant, cached per upstream API key for `--script-cache-ttl` and
//! refreshed single-flight, with each name folded once for `name_contains` filtering.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    cache::SingleFlightCache,
    domain,
    metrics::Metrics,
    upstream::{ApiKey, CallContext, Script, UpstreamClient, UpstreamError},
};

/// One tenant's scripts, in upstream order, with their folded names (same order).
#[derive(Debug)]
pub struct Catalog {
    /// Scripts as listed.
    pub scripts: Vec<Script>,
    /// `domain::fold(name)` of each script, computed on the first filtered listing: most
    /// listings are unfiltered and GetScript never filters, so folding 10,000 names per fetch
    /// (with the cache off) would be spent for nothing.
    folded_names: OnceLock<Vec<String>>,
}

impl Catalog {
    fn new(scripts: Vec<Script>) -> Self {
        Catalog { scripts, folded_names: OnceLock::new() }
    }

    /// `domain::fold(name)` of each script, in the same order as `scripts`.
    pub fn folded_names(&self) -> &[String] {
        self.folded_names.get_or_init(|| self.scripts.iter().map(|s| domain::fold(&s.name)).collect())
    }
}

/// The cache (TTL zero = every call fetches).
pub struct ScriptCatalog {
    ttl: Duration,
    cache: SingleFlightCache<ApiKey, Arc<Catalog>, UpstreamError>,
    /// Where hits and misses are counted.
    metrics: Arc<Metrics>,
}

impl ScriptCatalog {
    /// A cache whose entries live `ttl`, counting hits and misses into `metrics`.
    pub fn new(ttl: Duration, metrics: Arc<Metrics>) -> Self {
        ScriptCatalog { ttl, cache: SingleFlightCache::new(), metrics }
    }

    /// Forgets the scripts of a key a reload retired.
    pub fn forget(&self, key: &ApiKey) {
        self.cache.remove(key);
    }

    /// The scripts of the call's tenant.
    pub async fn get(&self, upstream: &UpstreamClient, ctx: &CallContext) -> Result<Arc<Catalog>, UpstreamError> {
        if self.ttl.is_zero() {
            self.metrics.script_cache(false);
            return Ok(Arc::new(Catalog::new(Box::pin(upstream.list_scripts(ctx)).await?)));
        }
        let ttl = self.ttl;
        // A miss is a lookup that ran the fetch itself; one that waited on another caller's
        // fetch (single flight) or found a fresh entry cost the upstream nothing: a hit.
        let fetched = AtomicBool::new(false);
        let result = self
            .cache
            // Boxed: a miss is rare, and its state would otherwise be part of every lookup.
            .get_or_fetch(&ctx.api_key, || {
                Box::pin(async {
                    fetched.store(true, Ordering::Relaxed);
                    let scripts = upstream.list_scripts(ctx).await?;
                    Ok((Arc::new(Catalog::new(scripts)), Instant::now() + ttl))
                })
            })
            .await;
        self.metrics.script_cache(!fetched.load(Ordering::Relaxed));
        result
    }
}

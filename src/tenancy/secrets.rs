//! The secret files of tenancy (`--api-key-file`, `--caller-tokens-file`, `--tenants-file`):
//! read once at start (a bad one stops it), then put under watch (`reload.rs`).

use std::sync::Arc;

use tokio::sync::watch;

use super::{
    CallerTokens, CallerTokensError, Callers, ConfiguredKey,
    file::{self, TenantTable},
};
use crate::{
    config::Settings,
    domain::ApiKey,
    metrics::Metrics,
    reload::{Reloader, Source, read_key},
};

/// The secret files, read once (a bad one is a start-up error), not yet watched.
pub(crate) struct SecretSources {
    api_key: Option<Source<ApiKey>>,
    caller_tokens: Option<Source<CallerTokens>>,
    tenants: Option<Source<TenantTable>>,
}

impl SecretSources {
    /// Reads the files (one line naming the file and the entry when one cannot be used).
    pub(crate) fn load(settings: &Settings) -> Result<Self, String> {
        let api_key = settings
            .upstream
            .api_key_file
            .clone()
            .map(|path| {
                Source::load("api_key_file", move |inputs| {
                    read_key(inputs, &path).map_err(|why| format!("--api-key-file: {why}"))
                })
            })
            .transpose()?;
        let caller_tokens = settings
            .security
            .caller_tokens_file
            .clone()
            .map(|path| {
                Source::load("caller_tokens_file", move |inputs| {
                    let text = inputs
                        .read(&path)
                        .map_err(|source| CallerTokensError::Read { path: path.clone(), source }.to_string())?;
                    CallerTokens::from_text(&text).map_err(|e| format!("--caller-tokens-file {}: {e}", path.display()))
                })
            })
            .transpose()?;
        let tenants = settings
            .security
            .tenants_file
            .clone()
            .map(|path| {
                Source::load("tenants_file", move |inputs| {
                    file::load(&path, inputs, &|var: &str| std::env::var(var).ok())
                })
            })
            .transpose()?;
        Ok(SecretSources { api_key, caller_tokens, tenants })
    }

    /// Puts the sources under watch. A reload that retires keys calls `forget` with each (the
    /// application drops their cached token and scripts at once; the new key gets a fresh token on
    /// its first call in any case: the caches are keyed by the key itself).
    pub(crate) fn watch(
        self,
        settings: &Settings,
        metrics: &Arc<Metrics>,
        forget: impl Fn(&ApiKey) + Clone + Send + Sync + 'static,
    ) -> (ConfiguredKey, Callers, Reloader, watch::Receiver<u64>) {
        let mut reloader = Reloader::new(settings.security.secrets_poll_interval, metrics.clone());
        // Bumped after every reload of the callers (tokens or tenants file): open streams re-check.
        let (revision, revisions) = watch::channel(0u64);
        let revision = Arc::new(revision);
        let api_key = match self.api_key {
            Some(source) => {
                let forget = forget.clone();
                let source = source.on_replace(move |old: &ApiKey, new: &ApiKey| {
                    if old != new {
                        forget(old);
                    }
                });
                let live = source.live();
                reloader.watch(Arc::new(source));
                ConfiguredKey::File(live)
            }
            None => ConfiguredKey::Fixed(settings.upstream.key()),
        };
        let callers = match (self.tenants, self.caller_tokens) {
            (Some(source), _) => {
                let revision = revision.clone();
                let source = source.on_replace(move |old: &TenantTable, new: &TenantTable| {
                    let kept: Vec<&ApiKey> = new.keys().collect();
                    old.keys().filter(|k| !kept.contains(k)).for_each(&forget);
                    revision.send_modify(|r| *r += 1);
                });
                let live = source.live();
                reloader.watch(Arc::new(source));
                Callers::Tenants(live)
            }
            (None, Some(source)) => {
                let revision = revision.clone();
                let source =
                    source.on_replace(move |_: &CallerTokens, _: &CallerTokens| revision.send_modify(|r| *r += 1));
                let live = source.live();
                reloader.watch(Arc::new(source));
                Callers::Tokens(live)
            }
            (None, None) => Callers::Open,
        };
        (api_key, callers, reloader, revisions)
    }
}

//! The secret files of assembly (`--api-key-file`, `--caller-tokens-file`, `--tenants-file`):
//! read once at start (a bad one stops it), then put under watch (`reload.rs`).

use std::sync::Arc;

use super::AppError;
use crate::{
    catalog::ScriptCatalog,
    config::Settings,
    metrics::Metrics,
    middleware::{CallerTokens, Callers},
    reload::{Reloader, Source, read_key},
    tenants::{self, ConfiguredKey, TenantTable},
    upstream::{ApiKey, UpstreamClient},
};

/// The secret files, read once (a bad one is a start-up error), not yet watched.
pub(super) struct SecretSources {
    api_key: Option<Source<ApiKey>>,
    caller_tokens: Option<Source<CallerTokens>>,
    tenants: Option<Source<TenantTable>>,
}

impl SecretSources {
    pub(super) fn load(settings: &Settings) -> Result<Self, AppError> {
        let api_key = settings
            .upstream
            .api_key_file
            .clone()
            .map(|path| {
                Source::load("api_key_file", move |inputs| {
                    read_key(inputs, &path).map_err(|why| format!("--api-key-file: {why}"))
                })
            })
            .transpose()
            .map_err(AppError::Secrets)?;
        let caller_tokens = settings
            .security
            .caller_tokens_file
            .clone()
            .map(|path| {
                Source::load("caller_tokens_file", move |inputs| {
                    let text = inputs
                        .read(&path)
                        .map_err(|e| format!("--caller-tokens-file: cannot read {}: {e}", path.display()))?;
                    CallerTokens::from_text(&text).map_err(|e| format!("--caller-tokens-file {}: {e}", path.display()))
                })
            })
            .transpose()
            .map_err(AppError::Secrets)?;
        let tenants = settings
            .security
            .tenants_file
            .clone()
            .map(|path| {
                Source::load("tenants_file", move |inputs| {
                    tenants::load(&path, inputs, &|var: &str| std::env::var(var).ok())
                })
            })
            .transpose()
            .map_err(AppError::Secrets)?;
        Ok(SecretSources { api_key, caller_tokens, tenants })
    }

    /// Puts the sources under watch. A reload that retires keys drops their cached token and
    /// scripts at once (the new key gets a fresh token on its first call in any case: the
    /// caches are keyed by the key itself).
    pub(super) fn watch(
        self,
        settings: &Settings,
        upstream: &Arc<UpstreamClient>,
        catalog: &Arc<ScriptCatalog>,
        metrics: &Arc<Metrics>,
    ) -> (ConfiguredKey, Callers, Reloader) {
        let mut reloader = Reloader::new(settings.security.secrets_poll_interval, metrics.clone());
        let forget = {
            let (upstream, catalog) = (upstream.clone(), catalog.clone());
            move |retired: &ApiKey| {
                upstream.forget_key(retired);
                catalog.forget(retired);
            }
        };
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
                let source = source.on_replace(move |old: &TenantTable, new: &TenantTable| {
                    let kept: Vec<&ApiKey> = new.keys().collect();
                    old.keys().filter(|k| !kept.contains(k)).for_each(&forget);
                });
                let live = source.live();
                reloader.watch(Arc::new(source));
                Callers::Tenants(live)
            }
            (None, Some(source)) => {
                let live = source.live();
                reloader.watch(Arc::new(source));
                Callers::Tokens(live)
            }
            (None, None) => Callers::Open,
        };
        (api_key, callers, reloader)
    }
}

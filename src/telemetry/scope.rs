//! The `rpc` span's fields on the log lines, without tracing's span machinery, where nothing
//! else needs the span: a `RUST_LOG` of targets and levels only (no span directives to match) and
//! no span export. There a real span (created, its fields formatted and
//! kept in the registry, entered and left on every poll, closed) was about 1.5 µs of a
//! `CreateSession`'s CPU, the largest single cost the facade adds over the bare stack
//! (BENCHMARKS.md, issue 20); a call's fields kept beside its future and lent to the thread while
//! it is polled cost a fraction of it, and the lines read the same (`text.rs` and `json.rs` write
//! them before the event's real spans, as the span would have been: their tests compare both).
//!
//! With span directives in `RUST_LOG` or the OTLP export, the middleware makes the real span
//! ([`enabled`] says which).

use std::{
    cell::Cell,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tracing_subscriber::fmt::format::Writer;

/// Whether calls carry their fields here rather than in a real `rpc` span (set by `init`).
static SCOPED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The fields of the call being polled on this thread, if any.
    static CURRENT: Cell<Option<Arc<CallFields>>> = const { Cell::new(None) };
}

/// Whether the middleware should lend its calls' fields ([`InCall`]) instead of making a real
/// `rpc` span.
pub(crate) fn enabled() -> bool {
    SCOPED.load(Ordering::Relaxed)
}

pub(super) fn set_enabled(on: bool) {
    SCOPED.store(on, Ordering::Relaxed);
}

/// A call's fields, as the `rpc` span has them: `request_id`, `trace_id` and `method` as their
/// `Display`, `tenant` (when the caller is named) quoted.
#[derive(Debug)]
pub(crate) struct CallFields {
    pub(crate) request_id: String,
    pub(crate) trace_id: String,
    pub(crate) method: String,
    pub(crate) tenant: Option<Arc<str>>,
}

pin_project_lite::pin_project! {
    /// A call's future with its fields lent to the thread while it is polled.
    pub(crate) struct InCall<F> {
        #[pin]
        inner: F,
        fields: Option<Arc<CallFields>>,
    }
}

impl<F> InCall<F> {
    pub(crate) fn new(inner: F, fields: CallFields) -> Self {
        InCall { inner, fields: Some(Arc::new(fields)) }
    }
}

/// Gives the fields back to their future when the poll ends (also by a panic), and the thread
/// the fields it had before.
struct Lent<'a> {
    home: &'a mut Option<Arc<CallFields>>,
    before: Option<Arc<CallFields>>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let before = self.before.take();
        *self.home = CURRENT.with(|c| c.replace(before));
    }
}

impl<F: Future> Future for InCall<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let before = CURRENT.with(|c| c.replace(this.fields.take()));
        let _lent = Lent { home: this.fields, before };
        this.inner.poll(cx)
    }
}

/// `f` of the fields of the call being polled on this thread, if any.
pub(super) fn with_current<R>(f: impl FnOnce(Option<&CallFields>) -> R) -> R {
    CURRENT.with(|c| {
        let fields = c.take();
        let result = f(fields.as_deref());
        c.set(fields);
        result
    })
}

/// Writes `rpc{...}:` for the call being polled on this thread, as the text format writes a span;
/// says whether there was one.
pub(super) fn write_current(w: &mut Writer<'_>, ansi: bool) -> Result<bool, fmt::Error> {
    with_current(|fields| match fields {
        Some(fields) => write_fields(w, ansi, fields).map(|()| true),
        None => Ok(false),
    })
}

fn write_fields(w: &mut Writer<'_>, ansi: bool, f: &CallFields) -> fmt::Result {
    if ansi {
        w.write_str("\x1b[1mrpc\x1b[0m{")?;
    } else {
        w.write_str("rpc{")?;
    }
    w.write_str("request_id=")?;
    w.write_str(&f.request_id)?;
    w.write_str(" trace_id=")?;
    w.write_str(&f.trace_id)?;
    w.write_str(" method=")?;
    w.write_str(&f.method)?;
    if let Some(tenant) = &f.tenant {
        w.write_str(" tenant=")?;
        super::text::write_quoted(w, tenant)?;
    }
    w.write_str("}:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fields_are_lent_only_while_their_call_is_polled_and_come_back_after_a_panic() {
        let seen = || CURRENT.with(|c| c.take().inspect(|f| c.set(Some(f.clone()))).map(|f| f.request_id.clone()));
        let fields =
            |id: &str| CallFields { request_id: id.into(), trace_id: "t".into(), method: "/m".into(), tenant: None };
        let outer = InCall::new(
            async move {
                assert_eq!(seen().as_deref(), Some("a"));
                tokio::task::yield_now().await;
                assert_eq!(seen().as_deref(), Some("a"), "lent again at the next poll");
                InCall::new(async move { seen() }, fields("b")).await
            },
            fields("a"),
        );
        assert_eq!(outer.await.as_deref(), Some("b"));
        assert_eq!(seen(), None, "nothing lent after the call");
        let panicking = InCall::new(async { panic!("boom") }, fields("c"));
        let caught = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(panicking)).await;
        assert!(caught.is_err());
        assert_eq!(seen(), None, "a panic gives the thread back what it had");
    }
}

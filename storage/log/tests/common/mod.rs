//! What the writer tests share: the engine seen through the log's hooks.

use std::sync::Arc;

use flashd_engine::{Engine, Event};
use flashd_log::LogHooks;

/// The engine as the log writer sees it (the service's adapter is
/// `bin/src/durable.rs`'s; the log crate itself knows only the trait).
pub struct EngineHooks(pub Arc<Engine>);

impl LogHooks for EngineHooks {
    fn durable(&self, ev: &Event) {
        self.0.durable(ev)
    }
    fn revert(&self, ev: &Event) {
        self.0.revert(ev)
    }
}

pub fn hooks(e: &Arc<Engine>) -> Arc<EngineHooks> {
    Arc::new(EngineHooks(e.clone()))
}

//! The model currently serving, shared by every worker and swapped atomically on reload.
//!
//! Workers take the current model once per batch, so a swap takes effect at the next batch and
//! a batch is never scored by two models.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::model::Model;

#[derive(Debug)]
pub struct ModelSlot {
    current: ArcSwap<Model>,
}

impl ModelSlot {
    pub fn new(model: Model) -> Self {
        Self {
            current: ArcSwap::from_pointee(model),
        }
    }

    /// The model to score the next batch with.
    pub fn current(&self) -> Arc<Model> {
        self.current.load_full()
    }

    /// Puts `model` in service; batches already started finish with the old one.
    pub fn replace(&self, model: Model) -> Arc<Model> {
        self.current.swap(Arc::new(model))
    }
}

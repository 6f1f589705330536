//! The model currently serving, shared by every worker and swapped atomically on reload. Any
//! kind a model file holds ([`LoadedModel`](super::model::LoadedModel)): Isolation Forest,
//! k-means, bisecting k-means.
//!
//! Workers take the current model once per batch, so a swap takes effect at the next batch and
//! a batch is never scored by two models: no record is dropped or scored twice by a reload. A
//! reload that fails (missing, corrupt, wrong version or feature count, or refused by the
//! caller's check, such as feature names that do not fit the configuration) changes nothing:
//! the old model keeps serving and the error is kept for `/status`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::model::{LoadedModel as Model, ModelError};

#[derive(Debug)]
pub struct ModelSlot {
    current: ArcSwap<Model>,
    history: Mutex<History>,
}

/// What `/status` says about reloads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// When the serving model was put in service (RFC 3339).
    pub loaded_at: String,
    pub reloads: u64,
    pub failed_reloads: u64,
    /// The last refused reload's error, cleared by a successful one.
    pub last_error: Option<String>,
}

impl ModelSlot {
    pub fn new(model: Model) -> Self {
        Self {
            current: ArcSwap::from_pointee(model),
            history: Mutex::new(History {
                loaded_at: now(),
                ..History::default()
            }),
        }
    }

    /// The model to score the next batch with.
    pub fn current(&self) -> Arc<Model> {
        self.current.load_full()
    }

    pub fn history(&self) -> History {
        self.lock().clone()
    }

    /// Reads and verifies `path` and, if it is a sound model with the same number of features
    /// as the one serving, puts it in service. Blocking (file I/O and a checksum): call it off
    /// the async workers, e.g. with `spawn_blocking`.
    pub fn reload(&self, path: &Path) -> Result<Arc<Model>, ModelError> {
        self.reload_if(path, |_| Ok(()))
    }

    /// As [`reload`](Self::reload), and `fits` must accept the new model too (the daemon
    /// checks it against the detector's `features`); its error is kept and returned as a refusal.
    pub fn reload_if<E: From<ModelError> + std::fmt::Display>(
        &self,
        path: &Path,
        fits: impl FnOnce(&Model) -> Result<(), E>,
    ) -> Result<Arc<Model>, E> {
        let expected = self.current().n_features();
        let result = Model::load(path)
            .and_then(|m| m.check_features(expected).map(|()| m))
            .map_err(E::from)
            .and_then(|m| fits(&m).map(|()| m));
        let mut h = self.lock();
        match result {
            Ok(model) => {
                let model = Arc::new(model);
                self.current.store(Arc::clone(&model));
                h.reloads += 1;
                h.loaded_at = now();
                h.last_error = None;
                Ok(model)
            }
            Err(e) => {
                h.failed_reloads += 1;
                h.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::forest::{ForestParams, IsolationForest};
    use crate::detect::model::{TrainingMeta, save};

    fn write_model(path: &Path, features: usize, seed: u64) {
        let rows: Vec<f64> = (0..200 * features).map(|i| (i % 97) as f64).collect();
        let params = ForestParams {
            n_estimators: 10,
            random_state: seed,
            ..ForestParams::default()
        };
        let forest = IsolationForest::fit(&rows, features, &params).unwrap();
        let names = (0..features).map(|i| format!("x{i}")).collect();
        save(path, &forest, &TrainingMeta::describe(&rows, names, "test")).unwrap();
    }

    #[test]
    fn reload_swaps_a_good_model_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.iforest");
        write_model(&path, 2, 1);
        let slot = ModelSlot::new(Model::load(&path).unwrap());
        let first = slot.current().id().to_owned();

        write_model(&path, 2, 2);
        let second = slot.reload(&path).unwrap().id().to_owned();
        assert_ne!(first, second);
        assert_eq!(slot.current().id(), second);

        std::fs::write(&path, b"garbage").unwrap();
        assert!(slot.reload(&path).is_err());
        assert_eq!(slot.current().id(), second, "the old model keeps serving");

        write_model(&path, 3, 3);
        let err = slot.reload(&path).unwrap_err().to_string();
        assert!(err.contains("m.iforest"), "{err}");
        assert_eq!(slot.current().id(), second);

        std::fs::remove_file(&path).unwrap();
        assert!(slot.reload(&path).is_err());
        let h = slot.history();
        assert_eq!((h.reloads, h.failed_reloads), (1, 3));
        assert!(h.last_error.is_some());
    }

    #[test]
    fn a_reload_the_caller_refuses_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.iforest");
        write_model(&path, 2, 1);
        let slot = ModelSlot::new(Model::load(&path).unwrap());
        let first = slot.current().id().to_owned();
        write_model(&path, 2, 2);
        let refused = slot
            .reload_if(&path, |m| {
                Err(ModelError::Header {
                    path: m.path().to_owned(),
                    reason: "renamed features".into(),
                })
            })
            .unwrap_err();
        assert!(refused.to_string().contains("renamed features"));
        assert_eq!(slot.current().id(), first, "the old model keeps serving");
        let h = slot.history();
        assert_eq!((h.reloads, h.failed_reloads), (0, 1));
        assert!(h.last_error.unwrap().contains("renamed features"));
        assert_ne!(
            slot.reload_if(&path, |_| Ok::<(), ModelError>(()))
                .unwrap()
                .id(),
            first
        );
    }
}

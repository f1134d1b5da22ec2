//! The trained variables of a candle `VarMap`, by name.

use std::collections::HashMap;
use std::sync::MutexGuard;

use candle_core::Var;
use candle_nn::VarMap;

/// The map's variables. A poisoned lock only means another thread panicked while holding it; the
/// variables themselves are intact, so they are used as they are.
pub fn lock(varmap: &VarMap) -> MutexGuard<'_, HashMap<String, Var>> {
    varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The map's variables sorted by name (the order optimisers and checkpoints use).
pub fn sorted(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = lock(varmap)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

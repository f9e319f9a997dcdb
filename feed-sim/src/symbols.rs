//! The server's symbol list as feed-sim's clients number it.

use tickcast::tick::SymbolId;

/// The server's symbols by name, numbered in the order it lists them.
pub(crate) struct SymbolIds {
    by_name: std::collections::HashMap<Box<str>, SymbolId>,
}

impl SymbolIds {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        let by_name = names
            .into_iter()
            .enumerate()
            .map(|(id, name)| (name.into_boxed_str(), id as SymbolId))
            .collect();
        SymbolIds { by_name }
    }

    pub(crate) fn id(&self, name: &str) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

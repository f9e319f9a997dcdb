//! The server's symbol list as feed-sim's clients number it.

use std::collections::HashMap;

use tickcast::tick::SymbolId;

/// The server's symbols by name, numbered in the order it lists them.
/// Looked up once per tick received, so hashed with foldhash, not the
/// standard library's DoS-resistant SipHash (the names are the server's).
pub(crate) struct SymbolIds {
    by_name: HashMap<Box<[u8]>, SymbolId, foldhash::fast::RandomState>,
}

impl SymbolIds {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        let by_name = names
            .into_iter()
            .enumerate()
            .map(|(id, name)| (name.into_bytes().into_boxed_slice(), id as SymbolId))
            .collect();
        SymbolIds { by_name }
    }

    /// The id of the name spelled by `name` as it came off the wire.
    pub(crate) fn id(&self, name: &[u8]) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

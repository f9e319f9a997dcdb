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
    /// Numbers `names` in order; a name listed twice keeps its first
    /// number (a list from another server is not trusted to be a set).
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        let mut by_name = HashMap::with_hasher(foldhash::fast::RandomState::default());
        for name in names {
            let next = by_name.len() as SymbolId;
            by_name
                .entry(name.into_bytes().into_boxed_slice())
                .or_insert(next);
        }
        SymbolIds { by_name }
    }

    /// The id of the name spelled by `name` as it came off the wire.
    pub(crate) fn id(&self, name: &[u8]) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    /// How many symbols there are: every id is below this.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_listed_twice_keeps_its_first_id_and_ids_stay_below_len() {
        let ids = SymbolIds::new(["A", "B", "A", "C"].map(String::from));
        assert_eq!(ids.len(), 3);
        assert_eq!(
            [b"A", b"B", b"C"].map(|name| ids.id(name)),
            [Some(0), Some(1), Some(2)]
        );
        assert_eq!(ids.id(b"D"), None);
    }
}

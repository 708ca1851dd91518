//! Paged scans: one key range of a keyspace read a page at a time, so no scan holds the whole
//! range in memory and each page is one short engine call.
//!
//! [`PageCursor`] is the bookkeeping every paged loop needs (where the next page starts, when the
//! range is done); [`Pages`] drives it over a [`Store`], reading each page off the async runtime.

use bytes::Bytes;

use crate::engine::{Space, StorageError};
use crate::store::Store;

/// The smallest stored key after `last`: where the page after the one ending at `last` starts.
pub fn next_page_start(last: &[u8]) -> Bytes {
    let mut from = Vec::with_capacity(last.len() + 1);
    from.extend_from_slice(last);
    from.push(0);
    Bytes::from(from)
}

/// Where a paged scan of the stored keys `[from, to)` stands: the next page's start, or done.
#[derive(Debug, Clone)]
pub struct PageCursor {
    /// Start of the next page; `None` once the range is done.
    next: Option<Bytes>,
    /// End of the range (exclusive); `None`: the end of the keyspace.
    to: Option<Bytes>,
    /// Entries per page; a shorter page is the last one.
    page_size: usize,
}

impl PageCursor {
    /// A cursor at the start of `[from, to)`, reading `page_size` entries at a time (at least 1).
    pub fn new(from: Bytes, to: Option<Bytes>, page_size: usize) -> Self {
        PageCursor { next: Some(from), to, page_size: page_size.max(1) }
    }

    /// Entries per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The bounds of the next page to read, or `None` once the range is done.
    pub fn next_bounds(&self) -> Option<(Bytes, Option<Bytes>)> {
        self.next.clone().map(|from| (from, self.to.clone()))
    }

    /// Moves past `page`, the entries just read from [`next_bounds`](Self::next_bounds): the
    /// next page starts after its last key, and a page shorter than the page size ends the range.
    pub fn advance<V>(&mut self, page: &[(Bytes, V)]) {
        self.next = match page.last() {
            Some((last, _)) if page.len() >= self.page_size => Some(next_page_start(last)),
            _ => None,
        };
    }
}

/// A paged scan over a [`Store`]: call [`next`](Self::next) until it returns `None`.
pub struct Pages<'a> {
    store: &'a Store,
    space: Space,
    cursor: PageCursor,
}

impl<'a> Pages<'a> {
    /// A scan of the entries of `space` with stored keys in `[from, to)`, `page_size` at a time.
    pub fn new(
        store: &'a Store,
        space: Space,
        from: Bytes,
        to: Option<Bytes>,
        page_size: usize,
    ) -> Self {
        Pages { store, space, cursor: PageCursor::new(from, to, page_size) }
    }

    /// The next page, in stored-key order; `None` once the range is done.
    pub async fn next(&mut self) -> Result<Option<Vec<(Bytes, Bytes)>>, StorageError> {
        let Some((from, to)) = self.cursor.next_bounds() else { return Ok(None) };
        let page = self.store.scan(self.space, from, to, self.cursor.page_size()).await?;
        self.cursor.advance(&page);
        Ok((!page.is_empty()).then_some(page))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dynakv_core::{Record, Timestamp, Version};

    use super::*;
    use crate::{MemoryStorage, StoreOptions, stored_key};

    #[tokio::test]
    async fn pages_through_every_entry_of_the_range_once() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        let record = Record::value(Version::new(Timestamp(1), 1), Bytes::from("x"));
        for token in 0..10u64 {
            store.write(token, b"k", record.clone()).await.unwrap();
        }
        // Page sizes that divide the count, do not, and exceed it.
        for page_size in [1, 2, 3, 5, 10, 11] {
            let mut pages = Pages::new(&store, Space::Records, Bytes::new(), None, page_size);
            let mut seen = Vec::new();
            while let Some(page) = pages.next().await.unwrap() {
                assert!(page.len() <= page_size);
                seen.extend(page.into_iter().map(|(key, _)| key));
            }
            let expected: Vec<_> = (0..10u64).map(|t| stored_key(t, b"k")).collect();
            assert_eq!(seen, expected, "page size {page_size}");
        }
        let (from, to) = (stored_key(3, b""), Some(stored_key(7, b"")));
        let mut pages = Pages::new(&store, Space::Records, from, to, 3);
        let mut count = 0;
        while let Some(page) = pages.next().await.unwrap() {
            count += page.len();
        }
        assert_eq!(count, 4, "tokens 3 to 6: the end is exclusive");
    }
}

//! Reading the log back: the store's rows as the envelopes clients receive.
//!
//! The log stores each envelope without its offset, which is a function of the
//! event's `seq` (see [`crate::events::with_offset`]). Every read that reaches
//! a client — a replay, a poll, another node's commits — comes through here and
//! gets it back.

use super::offset::OffsetCodec;
use crate::store::{Store, StoreResult, StoredEvent};

/// The log's reads, with offsets.
#[derive(Clone)]
pub(crate) struct LogReader {
    store: Store,
    codec: OffsetCodec,
}

impl LogReader {
    pub fn new(store: Store, codec: OffsetCodec) -> LogReader {
        LogReader { store, codec }
    }

    /// Events addressed to any of `rooms` with `after < seq <= upto`, oldest
    /// first, at most `limit`.
    pub async fn rooms(
        &self,
        rooms: &[String],
        after: i64,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let events = self.store.read_rooms(rooms, after, upto, limit).await?;
        Ok(self.stamped(events))
    }

    /// Every event with `seq > after`, oldest first, at most `limit`.
    pub async fn after(&self, after: i64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let events = self.store.read_after(after, limit).await?;
        Ok(self.stamped(events))
    }

    fn stamped(&self, mut events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        for e in &mut events {
            e.payload = self.codec.stamp(e.seq, std::mem::take(&mut e.payload));
        }
        events
    }
}

//! Offsets: the public name of a position in the event log.
//!
//! An offset is `{epoch}-{seq}` with `seq` zero-padded to 16 digits, e.g.
//! `k3x9q2ab-0000000000000042`. Within one log, offsets sort as strings in emit
//! order. The epoch is fixed when the database is created, so an offset from
//! another log (a wiped database, a staging token in production) is recognised
//! as unknown instead of silently meaning some other event.

/// Why an offset cannot be replayed from. The client must refetch its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetProblem {
    /// Not an offset at all.
    Malformed,
    /// From another log, or beyond this log's end.
    Unknown,
    /// Older than the retention window: events after it were pruned.
    Expired,
    /// More missed events than `REPLAY_LIMIT`.
    TooFarBehind,
    /// The event log is off (`EVENT_LOG=off`).
    LogDisabled,
}

impl OffsetProblem {
    /// The wire name, as sent in `replay:reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetProblem::Malformed => "malformed_offset",
            OffsetProblem::Unknown => "unknown_offset",
            OffsetProblem::Expired => "expired_offset",
            OffsetProblem::TooFarBehind => "too_far_behind",
            OffsetProblem::LogDisabled => "log_disabled",
        }
    }
}

/// Formats and parses the offsets of one log.
#[derive(Debug, Clone)]
pub struct OffsetCodec {
    epoch: String,
}

impl OffsetCodec {
    /// For the log with this epoch.
    pub fn new(epoch: impl Into<String>) -> OffsetCodec {
        OffsetCodec {
            epoch: epoch.into(),
        }
    }

    /// The offset of `seq`.
    pub fn format(&self, seq: i64) -> String {
        format!("{}-{:016}", self.epoch, seq)
    }

    /// The envelope of the event at `seq` as clients receive it, with its offset.
    pub(crate) fn stamp(&self, seq: i64, envelope: String) -> String {
        crate::events::with_offset(envelope, &self.format(seq))
    }

    /// The `seq` an offset names, checked against the log's extent:
    /// `last_seq` (newest) and `pruned_through` (retention).
    pub fn parse(
        &self,
        offset: &str,
        last_seq: i64,
        pruned_through: i64,
    ) -> Result<i64, OffsetProblem> {
        let (epoch, seq) = offset.rsplit_once('-').ok_or(OffsetProblem::Malformed)?;
        if epoch.is_empty()
            || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            || seq.is_empty()
            || seq.len() > 18
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(OffsetProblem::Malformed);
        }
        let seq: i64 = seq.parse().map_err(|_| OffsetProblem::Malformed)?;
        if epoch != self.epoch || seq > last_seq {
            return Err(OffsetProblem::Unknown);
        }
        if seq < pruned_through {
            return Err(OffsetProblem::Expired);
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_in_seq_order_and_round_trip() {
        let c = OffsetCodec::new("ep0ch");
        let mut offsets: Vec<String> = [10, 9, 100, 1, 11].iter().map(|s| c.format(*s)).collect();
        offsets.sort();
        let seqs: Vec<i64> = offsets
            .iter()
            .map(|o| c.parse(o, 100, 0).unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 9, 10, 11, 100]);
        assert_eq!(c.format(42), "ep0ch-0000000000000042");
    }

    #[test]
    fn problems_are_told_apart() {
        let c = OffsetCodec::new("ep0ch");
        assert_eq!(c.parse("", 10, 0), Err(OffsetProblem::Malformed));
        assert_eq!(c.parse("ep0ch", 10, 0), Err(OffsetProblem::Malformed));
        assert_eq!(c.parse("ep0ch-", 10, 0), Err(OffsetProblem::Malformed));
        assert_eq!(c.parse("ep0ch-12x", 10, 0), Err(OffsetProblem::Malformed));
        assert_eq!(c.parse("ep0ch--1", 10, 0), Err(OffsetProblem::Malformed));
        assert_eq!(
            c.parse("ep0ch-99999999999999999999", 10, 0),
            Err(OffsetProblem::Malformed)
        );
        assert_eq!(
            c.parse("other-0000000000000001", 10, 0),
            Err(OffsetProblem::Unknown)
        );
        assert_eq!(
            c.parse("ep0ch-0000000000000011", 10, 0),
            Err(OffsetProblem::Unknown)
        );
        assert_eq!(
            c.parse("ep0ch-0000000000000004", 10, 5),
            Err(OffsetProblem::Expired)
        );
        // The last pruned event itself is a fine place to resume from.
        assert_eq!(c.parse("ep0ch-0000000000000005", 10, 5), Ok(5));
        assert_eq!(c.parse("ep0ch-0000000000000000", 10, 0), Ok(0));
        assert_eq!(c.parse("ep0ch-0000000000000010", 10, 0), Ok(10));
    }
}

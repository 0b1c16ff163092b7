//! The ring itself: pure, no clock and no locking (the caller stamps each line's time and holds
//! the lock), so every edge — wrap-around, resuming from a line that is gone, asking for more
//! than is kept — is unit-tested.

use redtether_proto::wire::{LogItem, LogLine, LogStream};
use std::collections::VecDeque;

/// The last `capacity` lines, numbered from 1 without gaps since the agent started.
#[derive(Debug)]
pub struct Ring {
    capacity: usize,
    lines: VecDeque<LogLine>,
    /// The `seq` the next line gets.
    next: u64,
}

impl Ring {
    /// `capacity` is at least 1 (the configuration refuses 0).
    pub fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(1);
        Ring { capacity, lines: VecDeque::with_capacity(capacity.min(4096)), next: 1 }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The `seq` of the newest line (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    /// Adds a line, dropping the oldest when full; returns its `seq`.
    pub fn push(&mut self, stream: LogStream, text: String, time: String) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(LogLine { seq, time, stream, text });
        seq
    }

    /// The newest `n` lines, oldest first, and the cursor to follow on from (the newest `seq`,
    /// read in the same step so no line falls between the two).
    pub fn tail(&self, n: usize) -> (Vec<LogLine>, u64) {
        (self.last(n), self.last_seq())
    }

    /// The newest `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }

    /// Up to `max` items after line `seq`, oldest first: a `Skipped` first when lines after
    /// `seq` were already overwritten, then the lines still kept. Empty when nothing is newer.
    pub fn after(&self, seq: u64, max: usize) -> Vec<LogItem> {
        let mut items = Vec::new();
        let oldest = match self.lines.front() {
            Some(line) => line.seq,
            None => return items,
        };
        // A cursor from before this agent started (larger than any seq) reads as caught up: the
        // hub resumes from what the previous run numbered; the new run's lines start again at 1.
        let seq = if seq > self.last_seq() { 0 } else { seq };
        if seq + 1 < oldest {
            items.push(LogItem::Skipped { after: seq, count: oldest - seq - 1 });
        }
        let start = (seq + 1).max(oldest) - oldest;
        let room = max.saturating_sub(items.len()).max(1);
        items.extend(self.lines.iter().skip(start as usize).take(room).cloned().map(LogItem::Line));
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(capacity: usize, lines: u64) -> Ring {
        let mut r = Ring::new(capacity);
        for i in 1..=lines {
            r.push(LogStream::Stdout, format!("line {i}"), "t".into());
        }
        r
    }

    fn seqs(items: &[LogItem]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                LogItem::Line(l) => Some(l.seq),
                LogItem::Skipped { .. } => None,
            })
            .collect()
    }

    #[test]
    fn the_oldest_lines_go_when_full_and_seq_keeps_counting() {
        let r = ring(3, 5);
        assert_eq!(r.last_seq(), 5);
        assert_eq!(r.last(10).iter().map(|l| l.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(r.last(2).iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["line 4", "line 5"]);
        assert!(r.last(0).is_empty());
        assert!(Ring::new(4).last(4).is_empty());
    }

    #[test]
    fn after_a_cursor_comes_what_is_newer_in_batches() {
        let r = ring(10, 6);
        assert_eq!(seqs(&r.after(0, 100)), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(&r.after(4, 100)), [5, 6]);
        assert_eq!(seqs(&r.after(2, 2)), [3, 4], "at most max");
        assert!(r.after(6, 100).is_empty(), "caught up");
        assert!(Ring::new(3).after(0, 10).is_empty(), "nothing yet");
    }

    #[test]
    fn lines_gone_before_they_were_read_are_said_to_be_skipped() {
        let r = ring(3, 8); // keeps 6, 7, 8
        let items = r.after(2, 100);
        assert_eq!(items[0], LogItem::Skipped { after: 2, count: 3 });
        assert_eq!(seqs(&items), [6, 7, 8]);
        assert_eq!(r.after(5, 100).len(), 3, "no gap right before the oldest");
        let items = r.after(0, 1);
        assert_eq!(items.len(), 2, "the marker does not take the only place: progress is made");
    }

    #[test]
    fn a_cursor_from_a_previous_run_starts_again_from_the_oldest() {
        let r = ring(10, 3);
        assert_eq!(seqs(&r.after(500, 100)), [1, 2, 3]);
    }

    #[test]
    fn a_capacity_of_zero_is_taken_as_one() {
        let r = ring(0, 2);
        assert_eq!(r.capacity(), 1);
        assert_eq!(r.last(5).len(), 1);
    }
}

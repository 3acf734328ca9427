//! Finding the rows a server refuses for good, by splitting the batch that it refused.
//!
//! Why: a server refuses a whole write for one bad row (InfluxDB answers 400 for a field type
//! conflict, PostgreSQL aborts the statement on a data error), and dead-lettering the whole batch
//! would throw good rows away. So a refused part is split in halves, each tried again, until every
//! refused row stands alone: only those are dead-lettered, the rest is written, and the rows are
//! still written in journal order (left half first). Both sinks use this one implementation.
//!
//! The guard: when **every** row of a batch is refused (and there are enough of them for that to
//! mean something), the rows are not at fault, the destination is (a constraint on the table, a
//! database that refuses all points): [`SplitError::EveryRowRefused`] fails the write as a whole
//! and the cursor is held, instead of dead-lettering the journal. The splitting also stops early
//! once [`GIVE_UP_AFTER`] rows were refused and none written, so a broken destination does not
//! cost one round trip per row of a 5000-row batch.
//!
//! The splitter does no I/O: the sink asks it for the next part ([`Splitter::next_part`]), tries
//! it, and tells it the outcome ([`Splitter::written`], [`Splitter::refused`]).

use std::ops::Range;

/// Refusals of every row of a batch with at least this many rows fail the write as a whole;
/// below it a refused row is dead-lettered like any other (a batch of one bad row must not stop
/// the sink for good).
pub const EVERY_ROW_MIN: usize = 8;

/// Splitting stops, and the write fails, once this many rows were refused and none written.
pub const GIVE_UP_AFTER: usize = 64;

/// Hands out the parts of a batch to try, in journal order, and collects the outcomes.
#[derive(Debug)]
pub struct Splitter {
    /// Parts still to try, the next one last.
    todo: Vec<Range<usize>>,
    written: usize,
    refused: Vec<(usize, String)>,
}

/// What splitting found: how many rows were written, and which were refused (index into the
/// batch, the server's reason), in journal order.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    /// Rows written.
    pub written: usize,
    /// Rows refused for good.
    pub refused: Vec<(usize, String)>,
}

/// Why the split failed the whole write.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// Every row tried was refused (see the module docs).
    #[error("refused every row of the batch ({rows} rows; first reason: {first_reason})")]
    EveryRowRefused {
        /// Rows refused before giving up.
        rows: usize,
        /// The server's reason for the first of them.
        first_reason: String,
    },
}

impl Splitter {
    /// A batch of `len` rows, tried in parts of at most `chunk` rows (a statement's or a
    /// request's limit).
    pub fn new(len: usize, chunk: usize) -> Self {
        let chunk = chunk.max(1);
        let todo = (0..len)
            .step_by(chunk)
            .map(|lo| lo..(lo + chunk).min(len))
            .rev()
            .collect();
        Splitter {
            todo,
            written: 0,
            refused: Vec::new(),
        }
    }

    /// The next part to try, or `None` when every row is settled.
    pub fn next_part(&mut self) -> Option<Range<usize>> {
        self.todo.pop()
    }

    /// The server took `part`.
    pub fn written(&mut self, part: Range<usize>) {
        self.written += part.len();
    }

    /// The server refused `part` for a reason of its data: a lone row is refused for good, a
    /// longer part is split in halves to be tried again. Fails once [`GIVE_UP_AFTER`] rows were
    /// refused and none written.
    pub fn refused(&mut self, part: Range<usize>, reason: String) -> Result<(), SplitError> {
        if part.len() > 1 {
            let mid = part.start + part.len() / 2;
            // Left half last, so it is tried first: rows are written in journal order.
            self.todo.push(mid..part.end);
            self.todo.push(part.start..mid);
            return Ok(());
        }
        if part.len() == 1 {
            self.refused.push((part.start, reason));
        }
        if self.written == 0 && self.refused.len() >= GIVE_UP_AFTER {
            return Err(self.every_row_refused());
        }
        Ok(())
    }

    /// The outcome, once [`Splitter::next_part`] returned `None`.
    pub fn finish(self) -> Result<Split, SplitError> {
        if self.written == 0 && self.refused.len() >= EVERY_ROW_MIN {
            return Err(self.every_row_refused());
        }
        Ok(Split {
            written: self.written,
            refused: self.refused,
        })
    }

    fn every_row_refused(&self) -> SplitError {
        SplitError::EveryRowRefused {
            rows: self.refused.len(),
            first_reason: self.refused.first().map_or("?", |r| &r.1).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a splitter against a server that refuses the parts holding any of `bad`; returns the
    /// outcome and the parts tried, in order.
    fn run(
        len: usize,
        chunk: usize,
        bad: &[usize],
    ) -> (Result<Split, SplitError>, Vec<Range<usize>>) {
        let mut s = Splitter::new(len, chunk);
        let mut tried = Vec::new();
        while let Some(part) = s.next_part() {
            tried.push(part.clone());
            match bad.iter().find(|b| part.contains(b)) {
                None => s.written(part),
                Some(b) => {
                    if let Err(e) = s.refused(part, format!("row {b}")) {
                        return (Err(e), tried);
                    }
                }
            }
        }
        (s.finish(), tried)
    }

    #[test]
    fn a_clean_batch_is_one_write_per_chunk() {
        let (split, tried) = run(12, 5, &[]);
        assert_eq!(
            split.unwrap(),
            Split {
                written: 12,
                refused: vec![]
            }
        );
        assert_eq!(tried, [0..5, 5..10, 10..12]);
        let (split, tried) = run(0, 5, &[]);
        assert_eq!(split.unwrap(), Split::default());
        assert!(tried.is_empty());
    }

    #[test]
    fn bad_rows_are_isolated_in_journal_order() {
        let (split, tried) = run(8, 100, &[2, 7]);
        assert_eq!(
            split.unwrap(),
            Split {
                written: 6,
                refused: vec![(2, "row 2".into()), (7, "row 7".into())]
            }
        );
        // Halves, left first: the written parts come in journal order.
        assert_eq!(
            tried,
            [
                0..8,
                0..4,
                0..2,
                2..4,
                2..3,
                3..4,
                4..8,
                4..6,
                6..8,
                6..7,
                7..8
            ]
        );
    }

    #[test]
    fn a_small_batch_of_bad_rows_is_dead_lettered() {
        let bad: Vec<usize> = (0..EVERY_ROW_MIN - 1).collect();
        let (split, _) = run(bad.len(), 100, &bad);
        assert_eq!(split.unwrap().refused.len(), EVERY_ROW_MIN - 1);
    }

    #[test]
    fn every_row_refused_fails_the_write_instead() {
        let bad: Vec<usize> = (0..EVERY_ROW_MIN).collect();
        let (split, _) = run(bad.len(), 100, &bad);
        assert_eq!(
            split.unwrap_err(),
            SplitError::EveryRowRefused {
                rows: EVERY_ROW_MIN,
                first_reason: "row 0".into()
            }
        );
        // One good row among them: the rows are at fault, not the destination.
        let (split, _) = run(EVERY_ROW_MIN + 1, 100, &bad);
        assert_eq!(split.unwrap().written, 1);
    }

    #[test]
    fn a_broken_destination_is_given_up_on_early() {
        let bad: Vec<usize> = (0..5000).collect();
        let (split, tried) = run(5000, 5000, &bad);
        let SplitError::EveryRowRefused { rows, first_reason } = split.unwrap_err();
        assert_eq!((rows, first_reason.as_str()), (GIVE_UP_AFTER, "row 0"));
        assert!(tried.len() < 200, "{} parts tried", tried.len());
        // Once a row was written, refusals are the rows' own: no early stop.
        let (split, _) = run(5000, 5000, &bad[1..]);
        let split = split.unwrap();
        assert_eq!((split.written, split.refused.len()), (1, 4999));
    }
}

//! Pure: where a cursor-mode poll may resume, tracked row by row.
//!
//! A poll reads rows ordered by their cursor columns. A checkpoint in the middle of a
//! poll may persist a cursor only at the end of a *complete group* of rows with equal
//! cursors: resuming with `cursor > persisted` then reads again exactly the rows not yet
//! covered. [`CursorGroups`] remembers the last such boundary (the group's cursor, the next
//! row's, and the next row id) for the session to confirm with the server (text equality
//! is not the server's equality: `1.0` and `1.00` are equal values) before persisting it.
//!
//! Invariants: a row with a NULL cursor value never ends a group and never becomes the
//! resume point (a NULL cursor cannot be compared), it is only counted; the resume point
//! at the end of a poll is the last row whose cursor has no NULL.

/// Cursor values of a row, as text (`None`: NULL).
pub(super) type CursorText = Vec<Option<String>>;

/// Where a group of equal cursors ends: its cursor, the next row's, and the next row id.
pub(super) type Boundary = (CursorText, CursorText, i64);

/// What a poll has seen of its rows' cursors.
#[derive(Debug, Default)]
pub(super) struct CursorGroups {
    previous: Option<CursorText>,
    last_complete: Option<CursorText>,
    boundary: Option<Boundary>,
    null_cursors: u64,
}

impl CursorGroups {
    /// The next row of the result, with its row id.
    pub(super) fn observe(&mut self, cursor: CursorText, row_id: i64) {
        let complete = cursor.iter().all(Option::is_some);
        if !complete {
            self.null_cursors += 1;
        }
        if let Some(previous) = &self.previous {
            if *previous != cursor && previous.iter().all(Option::is_some) {
                self.boundary = Some((previous.clone(), cursor.clone(), row_id));
            }
        }
        if complete {
            self.last_complete = Some(cursor.clone());
        }
        self.previous = Some(cursor);
    }

    /// The last group boundary seen since the previous call, if any.
    pub(super) fn take_boundary(&mut self) -> Option<Boundary> {
        self.boundary.take()
    }

    /// How many rows had a NULL in their cursor.
    pub(super) fn null_cursors(&self) -> u64 {
        self.null_cursors
    }

    /// The cursor to resume after once the whole result was read.
    pub(super) fn into_last_complete(self) -> Option<CursorText> {
        self.last_complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(values: &[Option<&str>]) -> CursorText {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn a_boundary_is_the_end_of_a_group_of_equal_cursors() {
        let mut groups = CursorGroups::default();
        groups.observe(c(&[Some("1")]), 0);
        groups.observe(c(&[Some("1")]), 1);
        assert_eq!(groups.take_boundary(), None, "the group of 1s may go on");
        groups.observe(c(&[Some("2")]), 2);
        assert_eq!(groups.take_boundary(), Some((c(&[Some("1")]), c(&[Some("2")]), 2)));
        assert_eq!(groups.take_boundary(), None, "taken once");
        groups.observe(c(&[Some("3")]), 3);
        groups.observe(c(&[Some("4")]), 4);
        // Only the latest boundary is kept: it covers the earlier ones.
        assert_eq!(groups.take_boundary(), Some((c(&[Some("3")]), c(&[Some("4")]), 4)));
        assert_eq!(groups.into_last_complete(), Some(c(&[Some("4")])));
    }

    #[test]
    fn null_cursors_never_end_a_group_or_become_the_resume_point() {
        let mut groups = CursorGroups::default();
        groups.observe(c(&[Some("1"), None]), 0);
        groups.observe(c(&[Some("2"), Some("a")]), 1);
        assert_eq!(groups.take_boundary(), None, "a group with a NULL cursor cannot be resumed after");
        groups.observe(c(&[None, None]), 2);
        // The complete group before a NULL row does end there.
        assert_eq!(groups.take_boundary(), Some((c(&[Some("2"), Some("a")]), c(&[None, None]), 2)));
        groups.observe(c(&[None, Some("b")]), 3);
        assert_eq!(groups.take_boundary(), None);
        assert_eq!(groups.null_cursors(), 3);
        assert_eq!(groups.into_last_complete(), Some(c(&[Some("2"), Some("a")])));
    }

    #[test]
    fn an_empty_result_has_no_resume_point() {
        let mut groups = CursorGroups::default();
        assert_eq!(groups.take_boundary(), None);
        assert_eq!(groups.null_cursors(), 0);
        assert_eq!(groups.into_last_complete(), None);
    }
}

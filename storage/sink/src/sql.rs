//! Building multi-row statements: the placeholders of a `VALUES` list and
//! a list of ids, within the limits of one statement.

use crate::rows::{ActivityRow, OrderRow};

/// Rows per multi-row statement: the widest row has 13 placeholders, and
/// a statement may hold at most 65,535 (ER_PS_MANY_PARAM); 1,000 rows
/// also keeps a statement well under `max_allowed_packet`.
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;
const _: () = assert!(ROWS_PER_STATEMENT * ActivityRow::WIDTH <= 65_535);
const _: () = assert!(ROWS_PER_STATEMENT * OrderRow::WIDTH <= 65_535);

/// `{head} VALUES (?,…),(?,…){tail}`: `rows` rows of `width` placeholders.
pub(crate) fn values_sql(head: &str, width: usize, rows: usize, tail: &str) -> String {
    let row = format!("({})", vec!["?"; width].join(","));
    let mut sql = String::with_capacity(head.len() + tail.len() + 8 + rows * (row.len() + 1));
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&row);
    }
    sql.push_str(tail);
    sql
}

/// `1,2,3`: numeric ids for an `IN (…)` list (numbers only, so nothing to
/// quote).
pub(crate) fn id_list<T: Copy + Into<u64>>(ids: &[T]) -> String {
    ids.iter()
        .map(|i| (*i).into().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

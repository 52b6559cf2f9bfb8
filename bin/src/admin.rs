//! The admin API's requests beyond opening a sale: listing sales a page at
//! a time, moving or ending a sale's window, adding stock. Bodies and
//! queries are parsed here, with errors naming the field; the rules of a
//! change are the engine's (`flashd_engine::window_change`), decided with
//! the worker's clock so that "now" means the same to every command.

use serde::Deserialize;

use flashd_engine::{Activity, ActivityId, Engine, Millis, STOCK_MAX};

use crate::api::{from_json, parse_time, Invalid};

/// Sales in one page of `GET /api/v1/activities` unless `limit` says
/// fewer: enough for a dashboard's table.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// Sales in one page at most: a page is encoded on a reactor thread, so
/// one request's work stays bounded (~200 µs at ~1 µs a sale).
pub const LIST_LIMIT_MAX: usize = 200;

/// A page request: sales with ids above `after`, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after: ActivityId,
    pub limit: usize,
}

/// `after=<id>&limit=<n>`, both optional, in any order, each at most once.
pub fn parse_page(query: Option<&str>) -> Result<Page, Invalid> {
    let mut page = Page {
        after: 0,
        limit: LIST_LIMIT_DEFAULT,
    };
    let (mut seen_after, mut seen_limit) = (false, false);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" if !seen_after => {
                seen_after = true;
                page.after = v
                    .parse()
                    .map_err(|_| Invalid("after: must be a sale id (0 to 4294967295)".into()))?;
            }
            "limit" if !seen_limit => {
                seen_limit = true;
                page.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        Invalid(format!("limit: must be between 1 and {LIST_LIMIT_MAX}"))
                    })?;
            }
            "after" | "limit" => return Err(Invalid(format!("{k}: given twice"))),
            _ => {
                return Err(Invalid(format!(
                    "{}: unknown query parameter (after, limit)",
                    k.escape_debug()
                )))
            }
        }
    }
    Ok(page)
}

/// One page of sales, by id, as `{"activities":[…],"next":<id>|null}`,
/// each sale's JSON appended by `sale` (as `GET` of one writes it): `next`
/// is the `after` of the next page, `null` on the last one. Paging by id
/// is stable while sales are created: a page never repeats or skips one.
pub fn write_page(
    out: &mut Vec<u8>,
    engine: &Engine,
    page: Page,
    mut sale: impl FnMut(&mut Vec<u8>, &Activity),
) {
    out.extend_from_slice(b"{\"activities\":[");
    let mut sales = engine.activities().skip_while(|a| a.id <= page.after);
    let mut last = None;
    for a in sales.by_ref().take(page.limit) {
        if last.is_some() {
            out.push(b',');
        }
        sale(out, a);
        last = Some(a.id);
    }
    out.extend_from_slice(b"],\"next\":");
    match last {
        Some(id) if sales.next().is_some() => {
            out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes())
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    start_at: Option<String>,
    end_at: Option<String>,
}

/// A window change asked by `PATCH /api/v1/activities/{id}`: the new start
/// and/or end (absent: unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowChange {
    pub start_at: Option<Millis>,
    pub end_at: Option<Millis>,
}

/// `{"start_at": "<RFC 3339>", "end_at": "<RFC 3339>"}`, at least one.
pub fn parse_window(body: &[u8]) -> Result<WindowChange, Invalid> {
    let b: WindowBody = from_json(body)?;
    let change = WindowChange {
        start_at: b
            .start_at
            .as_deref()
            .map(|s| parse_time("start_at", s))
            .transpose()?,
        end_at: b
            .end_at
            .as_deref()
            .map(|s| parse_time("end_at", s))
            .transpose()?,
    };
    if change.start_at.is_none() && change.end_at.is_none() {
        return Err(Invalid("start_at, end_at: give at least one".into()));
    }
    Ok(change)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    add: u64,
}

/// `{"add": n}` with `n` in `1..=STOCK_MAX` (whether the sale's total
/// stays within it is the engine's to say: it depends on the sale).
pub fn parse_stock(body: &[u8]) -> Result<u64, Invalid> {
    let b: StockBody = from_json(body)?;
    if b.add == 0 || b.add > STOCK_MAX {
        return Err(Invalid(format!("add: must be between 1 and {STOCK_MAX}")));
    }
    Ok(b.add)
}

/// `POST /api/v1/activities/{id}/end` takes no fields: an empty body or
/// `{}`.
pub fn parse_end(body: &[u8]) -> Result<(), Invalid> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    from_json::<Empty>(body).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_parsed_with_bounds_and_named_errors() {
        assert_eq!(
            parse_page(None),
            Ok(Page {
                after: 0,
                limit: LIST_LIMIT_DEFAULT
            })
        );
        assert_eq!(
            parse_page(Some("limit=3&after=7")),
            Ok(Page { after: 7, limit: 3 })
        );
        for (q, field) in [
            ("limit=0", "limit:"),
            ("limit=201", "limit:"),
            ("limit=x", "limit:"),
            ("after=-1", "after:"),
            ("after=1&after=2", "after:"),
            ("sort=id", "sort:"),
        ] {
            let e = parse_page(Some(q)).unwrap_err();
            assert!(e.0.starts_with(field), "{q}: {}", e.0);
        }
    }

    #[test]
    fn bodies_are_parsed_with_named_errors() {
        let w = parse_window(br#"{"end_at":"2027-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(w.start_at, None);
        assert_eq!(w.end_at, Some(1_798_761_600_000));
        for (body, field) in [
            (&br#"{}"#[..], "start_at, end_at"),
            (br#"{"end_at":"tomorrow"}"#, "end_at"),
            (br#"{"start_at":5}"#, "start_at"),
            (br#"{"stock":5}"#, "unknown field"),
        ] {
            let e = parse_window(body).unwrap_err();
            assert!(e.0.contains(field), "{}", e.0);
        }
        assert_eq!(parse_stock(br#"{"add":5}"#), Ok(5));
        for body in [
            &br#"{"add":0}"#[..],
            br#"{"add":1000000001}"#,
            br#"{"add":-1}"#,
            br#"{"add":"5"}"#,
            br#"{}"#,
        ] {
            let e = parse_stock(body).unwrap_err();
            assert!(e.0.contains("add"), "{}", e.0);
        }
        assert_eq!(parse_end(b""), Ok(()));
        assert_eq!(parse_end(b"{}"), Ok(()));
        assert!(parse_end(br#"{"at":1}"#).is_err());
    }
}

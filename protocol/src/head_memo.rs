//! The last response head a thread wrote, up to the value of its first
//! extra header, kept so that the next head with the same key is one copy.
//!
//! In a stampede every answer a reactor writes is the same up to its
//! request id: `200` with `{"status":"ok"}`, `409 sold_out`, the same sale.
//! Writing that head piece by piece (status line, `Date`, `Content-Type`,
//! the length in decimal, `Connection`) was ~235 instructions of a
//! pipelined `/healthz`'s ~1,190, more than a fifth (callgrind, issue 17).
//!
//! The key is everything the prefix is made of: status, content type,
//! body length, `Connection`, the second of the `Date`, and the name of
//! the first extra header (every answer of flashd's starts its extras with
//! `X-Request-Id`, whose value alone differs). The content type and the
//! name are compared by address and length: a `&'static str` never
//! changes, so the same address and length is the same text (a different
//! address with the same text is only a miss).

use std::cell::RefCell;

use crate::date;
use crate::response::ConnectionHeader;

/// The longest prefix kept. The longest status line (46 bytes), `Server`
/// and `Date` (51), a `Content-Type` line with up to 64 bytes of type
/// (80), a 20-digit `Content-Length` line (40), `Connection: keep-alive`
/// (24) and a header name of up to 32 bytes with its `: ` (34) come to
/// 275; a longer prefix is written piece by piece every time (no content
/// type or header name flashd writes is that long).
pub const HEAD_MEMO_BYTES: usize = 288;

/// What a head prefix is made of.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    second: u64,
    body_len: usize,
    content_type: (*const u8, usize),
    /// The first extra header's name (null and 0: none).
    first_name: (*const u8, usize),
    status: u16,
    connection: ConnectionHeader,
}

struct Memo {
    /// `None` until a prefix is kept.
    key: Option<Key>,
    len: usize,
    bytes: [u8; HEAD_MEMO_BYTES],
}

thread_local! {
    static MEMO: RefCell<Memo> = const {
        RefCell::new(Memo { key: None, len: 0, bytes: [0; HEAD_MEMO_BYTES] })
    };
}

/// What a prefix is made of, besides the `Date`.
#[derive(Clone, Copy)]
pub struct PrefixOf {
    pub status: u16,
    pub content_type: &'static str,
    pub connection: ConnectionHeader,
    pub body_len: usize,
    /// The first extra header's name: the prefix ends with `name: `.
    pub first_name: Option<&'static str>,
}

/// Append the head prefix for this key to `out`: the kept copy when the
/// key is the last one's, else what `render` appends (which is then kept).
/// `render` must append exactly the prefix the key determines.
#[inline]
pub fn write_prefix(out: &mut Vec<u8>, of: PrefixOf, render: impl FnOnce(&mut Vec<u8>)) {
    let key = Key {
        second: date::current_second(),
        body_len: of.body_len,
        content_type: (of.content_type.as_ptr(), of.content_type.len()),
        first_name: of
            .first_name
            .map_or((std::ptr::null(), 0), |n| (n.as_ptr(), n.len())),
        status: of.status,
        connection: of.connection,
    };
    MEMO.with(|m| {
        // Reentrancy is impossible (render writes bytes, nothing more),
        // but a failed borrow must still write the head.
        let Ok(mut m) = m.try_borrow_mut() else {
            render(out);
            return;
        };
        if m.key == Some(key) {
            let n = m.len;
            out.extend_from_slice(&m.bytes[..n]);
            return;
        }
        let start = out.len();
        render(out);
        let prefix = &out[start..];
        if prefix.len() <= HEAD_MEMO_BYTES {
            m.bytes[..prefix.len()].copy_from_slice(prefix);
            m.len = prefix.len();
            m.key = Some(key);
        } else {
            m.key = None;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";

    fn of(
        status: u16,
        content_type: &'static str,
        connection: ConnectionHeader,
        body_len: usize,
    ) -> PrefixOf {
        PrefixOf {
            status,
            content_type,
            connection,
            body_len,
            first_name: None,
        }
    }

    /// Writes the prefix for `of` with a renderer that spells the key
    /// out; true when the renderer ran (a miss).
    fn write(out: &mut Vec<u8>, of: PrefixOf) -> bool {
        let mut ran = false;
        write_prefix(out, of, |o| {
            ran = true;
            let PrefixOf {
                status,
                content_type,
                connection,
                body_len,
                first_name,
            } = of;
            o.extend_from_slice(
                format!("{status} {content_type} {connection:?} {body_len} {first_name:?};")
                    .as_bytes(),
            );
        });
        ran
    }

    fn render_with(tag: &'static [u8]) -> impl FnOnce(&mut Vec<u8>) {
        move |out| out.extend_from_slice(tag)
    }

    #[test]
    fn a_kept_prefix_is_used_for_its_key_only() {
        date::refresh();
        let base = of(200, JSON, ConnectionHeader::Omit, 15);
        let mut out = Vec::new();
        write(&mut out, base);
        // Same key: the kept copy, the renderer not asked.
        assert!(!write(&mut out, base));
        assert_eq!(
            out,
            b"200 application/json Omit 15 None;200 application/json Omit 15 None;"
        );
        // Each part of the key on its own is a miss, and what is written
        // is that key's prefix.
        let named = |name| PrefixOf {
            first_name: Some(name),
            ..base
        };
        for other in [
            of(201, JSON, ConnectionHeader::Omit, 15),
            of(200, "text/plain", ConnectionHeader::Omit, 15),
            of(200, JSON, ConnectionHeader::Close, 15),
            of(200, JSON, ConnectionHeader::Omit, 16),
            named("X-Request-Id"),
            named("Allow"),
        ] {
            write(&mut out, base);
            out.clear();
            assert!(write(&mut out, other));
            let mut want = Vec::new();
            write(&mut want, other);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn a_new_second_is_a_miss() {
        date::refresh();
        let mut out = Vec::new();
        write_prefix(
            &mut out,
            of(200, JSON, ConnectionHeader::Omit, 2),
            render_with(b"a"),
        );
        let was = date::current_second();
        while date::current_second() == was {
            std::thread::sleep(std::time::Duration::from_millis(20));
            date::refresh();
        }
        write_prefix(
            &mut out,
            of(200, JSON, ConnectionHeader::Omit, 2),
            render_with(b"b"),
        );
        assert_eq!(out, b"ab");
    }

    #[test]
    fn a_prefix_too_long_to_keep_is_rendered_every_time() {
        date::refresh();
        static LONG: [u8; HEAD_MEMO_BYTES + 1] = [b'x'; HEAD_MEMO_BYTES + 1];
        let mut out = Vec::new();
        write_prefix(
            &mut out,
            of(200, JSON, ConnectionHeader::Omit, 3),
            render_with(&LONG),
        );
        write_prefix(
            &mut out,
            of(200, JSON, ConnectionHeader::Omit, 3),
            render_with(b"y"),
        );
        assert_eq!(out.len(), HEAD_MEMO_BYTES + 2);
        assert_eq!(out.last(), Some(&b'y'));
    }
}

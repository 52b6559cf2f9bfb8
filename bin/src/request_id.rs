//! The request id: taken from the client's `X-Request-Id` when it is a
//! sane one, generated otherwise, echoed in the response's `X-Request-Id`
//! and written on every log line about the request.
//!
//! All of it without a heap allocation (the hot path has none, see
//! `bin/tests/alloc.rs`): an id is at most [`REQUEST_ID_HEADER_BYTES_MAX`]
//! bytes held inline; a generated one is formatted from a per-reactor
//! counter. A deferred request's answer is encoded later, from its
//! completion: the id comes back through the reactor's ticket tag
//! ([`Tag`]); a client's id, which a tag cannot hold, waits in a small
//! ring ([`Parked`]) until then.

/// The header, as sent and echoed.
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// Longest id accepted from a client: a UUID (36) or a 32-hex-digit id
/// (nginx's `$request_id`) fits with room to spare; longer is more likely
/// a mistake or an attack on the log than an id.
pub const REQUEST_ID_HEADER_BYTES_MAX: usize = 64;

/// Client ids of deferred requests kept per reactor for their answers:
/// slot `n % PARKED_SLOTS` for the `n`th. An id is lost (its answer then
/// echoes a generated one) only if this many more deferred requests with
/// client ids arrive on the reactor before its answer: at 100,000 such
/// requests a second on one reactor, an answer 40 ms late. 4096 slots of
/// 80 bytes: 320 KiB per reactor.
pub const PARKED_SLOTS: usize = 4096;

/// An id held inline: visible ASCII only, 1 to
/// [`REQUEST_ID_HEADER_BYTES_MAX`] bytes.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; REQUEST_ID_HEADER_BYTES_MAX],
}

const _: () = assert!(REQUEST_ID_HEADER_BYTES_MAX <= u8::MAX as usize);

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            len: 0,
            bytes: [0; REQUEST_ID_HEADER_BYTES_MAX],
        }
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RequestId {
    /// A client's id, if it is one to keep: 1 to
    /// [`REQUEST_ID_HEADER_BYTES_MAX`] bytes of visible ASCII (`!` to `~`:
    /// no spaces, no controls that could forge a log line or a header).
    pub fn accept(v: &[u8]) -> Option<RequestId> {
        if v.is_empty()
            || v.len() > REQUEST_ID_HEADER_BYTES_MAX
            || !v.iter().all(|b| (b'!'..=b'~').contains(b))
        {
            return None;
        }
        let mut id = RequestId {
            len: v.len() as u8,
            ..Default::default()
        };
        id.bytes[..v.len()].copy_from_slice(v);
        Some(id)
    }

    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..self.len as usize];
        debug_assert!(b.iter().all(|c| (b'!'..=b'~').contains(c)));
        // SAFETY: only `accept` (visible ASCII checked) and `Ids::format`
        // (hex digits and '-') fill `bytes`.
        unsafe { std::str::from_utf8_unchecked(b) }
    }

    fn push(&mut self, b: &[u8]) {
        let at = self.len as usize;
        self.bytes[at..at + b.len()].copy_from_slice(b);
        self.len += b.len() as u8;
    }

    /// `v` in lowercase hex, no leading zeros: written back to front from
    /// its digit count, two digits a step from a table (a digit a step
    /// was ~25 of a pipelined `/healthz`'s instructions; a branch-free
    /// sixteen-digit conversion, ~70, loses to either for the few digits
    /// of a request number: callgrind, issue 17).
    fn push_hex(&mut self, v: u64) {
        let digits = (64 - (v | 1).leading_zeros()).div_ceil(4) as usize;
        let at = self.len as usize;
        let out = &mut self.bytes[at..at + digits];
        let mut v = v;
        let mut end = digits;
        while end >= 2 {
            out[end - 2..end].copy_from_slice(&HEX_PAIRS[(v & 0xff) as usize]);
            v >>= 8;
            end -= 2;
        }
        if end == 1 {
            out[0] = HEX_PAIRS[(v & 0xf) as usize][1];
        }
        self.len += digits as u8;
    }
}

/// The two lowercase hex digits of every byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    t
};

/// Generates ids for one reactor: `<node>-<reactor>-<start>-<n>`, all hex,
/// where `start` is the process's start (ms) and `n` counts this reactor's
/// requests. Unique per node and process with no shared counter (at most
/// 4+1+4+1+16+1+16 = 43 bytes; today's are about 20). The part before `n`
/// is formatted once: an id costs a copy and `n`'s digits.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    prefix: RequestId,
}

const _: () = assert!(4 + 1 + 4 + 1 + 16 + 1 + 16 <= REQUEST_ID_HEADER_BYTES_MAX);

/// The longest prefix `Ids` formats (`ffff-ffff-<16 digits>-`), rounded
/// up to a whole 16-byte copy.
const PREFIX_BYTES_MAX: usize = 32;
const PREFIX_LONGEST: usize = 4 + 1 + 4 + 1 + 16 + 1;
const _: () = assert!(PREFIX_LONGEST <= PREFIX_BYTES_MAX);
const _: () = assert!(PREFIX_BYTES_MAX <= REQUEST_ID_HEADER_BYTES_MAX);

impl Ids {
    pub fn new(node_id: u16, reactor: u16, start_ms: u64) -> Ids {
        let mut prefix = RequestId::default();
        prefix.push_hex(node_id.into());
        prefix.push(b"-");
        prefix.push_hex(reactor.into());
        prefix.push(b"-");
        prefix.push_hex(start_ms);
        prefix.push(b"-");
        Ids { prefix }
    }

    /// The id of this reactor's `n`th request.
    #[inline]
    pub fn format(&self, n: u64) -> RequestId {
        let mut id = RequestId::default();
        self.format_into(&mut id, n);
        id
    }

    /// Make `id` the id of this reactor's `n`th request, in place: the
    /// prefix's first [`PREFIX_BYTES_MAX`] bytes and the digits, not two
    /// copies of a whole id through a return value.
    #[inline]
    pub fn format_into(&self, id: &mut RequestId, n: u64) {
        id.bytes[..PREFIX_BYTES_MAX].copy_from_slice(&self.prefix.bytes[..PREFIX_BYTES_MAX]);
        id.len = self.prefix.len;
        id.push_hex(n);
    }
}

/// What a request's ticket tag says about its id: its number on the
/// reactor, and whether the id is a client's (parked) or generated from
/// that number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub n: u64,
    pub client: bool,
}

const CLIENT_BIT: u64 = 1 << 63;

impl Tag {
    pub fn to_u64(self) -> u64 {
        debug_assert!(self.n < CLIENT_BIT, "2^63 requests on one reactor");
        self.n | if self.client { CLIENT_BIT } else { 0 }
    }

    pub fn from_u64(t: u64) -> Tag {
        Tag {
            n: t & !CLIENT_BIT,
            client: t & CLIENT_BIT != 0,
        }
    }
}

/// Client ids of deferred requests, by request number (see
/// [`PARKED_SLOTS`]). Allocated once per reactor.
pub struct Parked {
    slots: Box<[(u64, RequestId)]>,
}

impl Default for Parked {
    fn default() -> Self {
        Parked {
            // Stamp u64::MAX: no request has that number.
            slots: vec![(u64::MAX, RequestId::default()); PARKED_SLOTS].into_boxed_slice(),
        }
    }
}

impl Parked {
    pub fn put(&mut self, n: u64, id: RequestId) {
        self.slots[(n % PARKED_SLOTS as u64) as usize] = (n, id);
    }

    /// Request `n`'s id, if its slot still holds it.
    pub fn take(&mut self, n: u64) -> Option<RequestId> {
        let slot = &mut self.slots[(n % PARKED_SLOTS as u64) as usize];
        (slot.0 == n).then(|| {
            slot.0 = u64::MAX;
            slot.1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        for ok in ["a", "3f2a-uuid-like-0000", &"x".repeat(64), "!~"] {
            assert_eq!(RequestId::accept(ok.as_bytes()).unwrap().as_str(), ok);
        }
        for bad in ["", &"x".repeat(65), "has space", "tab\t", "new\nline", "é"] {
            assert!(RequestId::accept(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(RequestId::accept(b"\x7f").is_none());
    }

    #[test]
    fn generated_ids_are_hex_and_distinct() {
        let ids = Ids::new(1023, 2, 0x18c_0000_0000);
        assert_eq!(ids.format(0).as_str(), "3ff-2-18c00000000-0");
        assert_eq!(ids.format(255).as_str(), "3ff-2-18c00000000-ff");
        assert_eq!(ids.format(256).as_str(), "3ff-2-18c00000000-100");
        assert_eq!(ids.format(0xf).as_str(), "3ff-2-18c00000000-f");
        assert_eq!(ids.format(0x10).as_str(), "3ff-2-18c00000000-10");
        let longest = Ids::new(u16::MAX, u16::MAX, u64::MAX).format(u64::MAX);
        assert_eq!(
            longest.as_str(),
            "ffff-ffff-ffffffffffffffff-ffffffffffffffff"
        );
        assert_eq!(longest.as_str().len(), 4 + 1 + 4 + 1 + 16 + 1 + 16);
        // In place, over whatever id was there (a longer client id too).
        let mut id = RequestId::accept(&[b'z'; REQUEST_ID_HEADER_BYTES_MAX]).unwrap();
        for n in [
            0,
            1,
            0xf,
            0x10,
            0xabc,
            0x1234_5678_9abc,
            u64::MAX >> 4,
            u64::MAX,
        ] {
            ids.format_into(&mut id, n);
            assert_eq!(id.as_str(), format!("3ff-2-18c00000000-{n:x}"));
            assert_eq!(ids.format(n).as_str(), id.as_str());
        }
        let mut long = RequestId::default();
        Ids::new(u16::MAX, u16::MAX, u64::MAX).format_into(&mut long, u64::MAX);
        assert_eq!(long.as_str(), longest.as_str());
        let other_reactor = Ids::new(1023, 3, 0x18c_0000_0000);
        assert_ne!(ids.format(7).as_str(), other_reactor.format(7).as_str());
    }

    #[test]
    fn tags_and_parked_ids_round_trip() {
        for t in [
            Tag {
                n: 0,
                client: false,
            },
            Tag { n: 5, client: true },
            Tag {
                n: CLIENT_BIT - 1,
                client: true,
            },
        ] {
            assert_eq!(Tag::from_u64(t.to_u64()), t);
        }
        let mut p = Parked::default();
        let id = RequestId::accept(b"abc").unwrap();
        p.put(7, id);
        assert_eq!(p.take(7).unwrap().as_str(), "abc");
        assert!(p.take(7).is_none(), "taken once");
        // Overwritten by the request PARKED_SLOTS later: lost, not mixed up.
        p.put(8, id);
        p.put(
            8 + PARKED_SLOTS as u64,
            RequestId::accept(b"later").unwrap(),
        );
        assert!(p.take(8).is_none());
        assert_eq!(p.take(8 + PARKED_SLOTS as u64).unwrap().as_str(), "later");
    }
}

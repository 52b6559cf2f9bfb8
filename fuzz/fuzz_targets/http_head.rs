//! The fast request-head reader against httparse: whatever the bytes, when
//! `head::parse` reads a head, httparse reads the same bytes as `Complete`
//! with the same method, target, version, headers and length (the fast
//! path is a strict subset of what httparse accepts, never a different
//! framing). Input: `[slot count byte][wire bytes]`.
#![no_main]

use std::mem::MaybeUninit;

use flashd_protocol::head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, wire)) = data.split_first() else {
        return;
    };
    let slots = (n % 70) as usize;
    let mut fast_slots = vec![MaybeUninit::uninit(); slots];
    let Ok(h) = head::parse(wire, &mut fast_slots) else {
        return;
    };
    let mut ref_slots = vec![MaybeUninit::uninit(); slots];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(wire, &mut ref_slots) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("fast path read a head httparse answers {other:?}"),
    };
    assert_eq!(h.len, n);
    assert_eq!(Some(h.method.as_str()), req.method);
    assert_eq!(Some(h.target), req.path);
    assert_eq!(Some(h.minor_version), req.version);
    assert_eq!(h.headers.len(), req.headers.len());
    for (a, b) in h.headers.iter().zip(req.headers.iter()) {
        assert_eq!((a.name, a.value), (b.name, b.value));
    }
});

//! Kafka record values (`flashd_kafka`), as the Kafka recovery
//! and the sink decode them from the topic: never a panic, and whatever
//! decodes re-encodes with the matching encoder to the bytes it came from
//! (one spelling per record, so a value the sink accepts is one flashd
//! could have written). The header LSN of a packed run is the writer's
//! note of its first event and is not read back, so it is not compared.
//!
//! Input: a record value as stored in the topic.
#![no_main]

use flashd_engine::Event;
use flashd_kafka::{
    decode_message, decode_records, decode_value, encode_abort, encode_events, encode_group_events,
    encode_value, TopicRecord, KIND_ABORT_RANGE, KIND_EVENTS, KIND_GROUP_EVENTS,
};
use libfuzzer_sys::fuzz_target;

/// Format, kind, LSN.
const HEADER_BYTES: usize = 10;

fn events(recs: &[(u64, TopicRecord)]) -> Vec<(u64, &Event)> {
    recs.iter()
        .map(|(lsn, r)| match r {
            TopicRecord::Event(ev) => (*lsn, ev),
            TopicRecord::Abort(_) => panic!("a packed value decoded to an abort"),
        })
        .collect()
}

/// Equal but for the header's LSN.
fn same_body(again: &[u8], data: &[u8], what: &str) {
    assert_eq!(again.len(), data.len(), "{what}: length changed");
    assert_eq!(again[..2], data[..2], "{what}: format or kind changed");
    assert_eq!(
        again[HEADER_BYTES..],
        data[HEADER_BYTES..],
        "{what}: body changed"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok((lsn, rec)) = decode_value(data) {
        let mut again = Vec::new();
        encode_value(lsn, &rec, &mut again);
        assert_eq!(
            again, data,
            "decode_value then encode_value changed the bytes"
        );
    }
    let msg = decode_message(data);
    let recs = decode_records(data);
    assert_eq!(
        msg.as_ref().map(|m| &m.1).ok(),
        recs.as_ref().ok(),
        "decode_records and decode_message disagree"
    );
    let Ok((group, recs)) = msg else {
        return;
    };
    let mut again = Vec::new();
    match data[1] {
        KIND_EVENTS => {
            encode_events(&events(&recs), &mut again);
            same_body(&again, data, "packed events");
        }
        KIND_GROUP_EVENTS => {
            let evs = events(&recs);
            assert!(
                evs.iter().all(|(l, _)| *l >= group),
                "an event below its group"
            );
            encode_group_events(group, &evs, &mut again);
            same_body(&again, data, "group events");
        }
        KIND_ABORT_RANGE => {
            assert_eq!(recs.len(), 1);
            let (lsn, TopicRecord::Abort(abort)) = &recs[0] else {
                panic!("an abort value decoded to an event");
            };
            assert!(abort.covers.start <= abort.covers.end && abort.covers.end <= *lsn);
            assert!(abort.events.iter().all(|(l, _)| abort.covers.contains(l)));
            encode_abort(*lsn, abort, &mut again);
            assert_eq!(again, data, "decode then encode_abort changed the bytes");
        }
        _ => assert_eq!(
            recs.len(),
            1,
            "a single value decoded to {} records",
            recs.len()
        ),
    }
});

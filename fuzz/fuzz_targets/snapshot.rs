//! Snapshot files as start-up reads them (`flashd_log` readers, both
//! formats): never a panic; the full reader and the verifier agree on
//! whether a file is sound and what it holds; a snapshot that reads back
//! is written again (current format) and reads back the same; loading a
//! verified snapshot into an engine succeeds or says why; no reader
//! changes the file.
//!
//! Input: `[mode][rest]`. Mode bit 0 clear: `rest` is a raw snapshot file.
//! Set: `rest` is framed items (see `flashd_fuzz::items`) after a header
//! with a valid CRC, format `1 + (mode >> 1 & 1)`, LSN `mode >> 2`, so
//! the fuzzer reaches the decoders behind the checksums.
#![no_main]

use flashd_engine::{Engine, EngineConfig};
use flashd_fuzz::{file_header, items, Item, Scratch, SNAPSHOT_MAGIC};
use flashd_log::{
    encode_record, read_snapshot, snapshot_name, verify_snapshot, write_snapshot,
};
use libfuzzer_sys::fuzz_target;

fn framed(mode: u8, rest: &[u8]) -> Vec<u8> {
    let version = 1 + u32::from(mode >> 1 & 1);
    let lsn = u64::from(mode >> 2);
    let mut out = file_header(SNAPSHOT_MAGIC, version, lsn).to_vec();
    for item in items(rest) {
        match item {
            Item::Record(kind, payload) => encode_record(&mut out, kind, payload),
            Item::Raw(bytes) => out.extend_from_slice(bytes),
            Item::NewFile(_) => {}
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        framed(mode, rest)
    };
    let dir = Scratch::new("snapshot");
    let path = dir.path().join(snapshot_name(0));
    std::fs::write(&path, &file).expect("write the snapshot");

    let read = read_snapshot(&path);
    let verified = verify_snapshot(&path);
    match (&read, &verified) {
        (Ok((lsn, snap)), Ok(v)) => {
            assert_eq!(*lsn, v.lsn, "reader and verifier disagree on the LSN");
            assert_eq!(
                snap.orders.len() as u64,
                v.orders,
                "reader and verifier disagree on orders"
            );
        }
        (Err(_), Err(_)) => {}
        (r, v) => panic!(
            "reader and verifier disagree: read {:?}, verify {:?}",
            r.as_ref().map(|x| x.0),
            v.as_ref().map(|x| x.lsn)
        ),
    }
    assert_eq!(
        std::fs::read(&path).expect("read back"),
        file,
        "a reader changed the file"
    );

    if let Ok((lsn, snap)) = &read {
        let out = Scratch::new("snapshot-again");
        let p2 = write_snapshot(out.path(), *lsn, snap, false).expect("write the snapshot again");
        let (lsn2, snap2) = read_snapshot(&p2).expect("a snapshot flashd wrote reads back");
        assert_eq!(lsn2, *lsn);
        assert_eq!(&snap2, snap, "a snapshot changed on a write and read");
    }
    if let Ok(v) = verified {
        let engine = Engine::new(EngineConfig {
            max_activities: 16,
            ..EngineConfig::default()
        });
        let _ = v.load_into(&engine);
    }
});

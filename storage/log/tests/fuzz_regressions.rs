//! Inputs the fuzz targets (fuzz/, scripts/fuzz) found that broke a storage
//! reader, rebuilt from files the real writer made and replayed against the
//! real readers; each test fails without the fix it names.

use std::path::PathBuf;

use flashd_engine::{ActivitySpec, Engine, EngineConfig, PlaceOrder};
use flashd_log::{
    decode_record, encode_record, read_snapshot, verify_snapshot, write_snapshot, Decoded,
    HEADER_BYTES,
};

/// Record kind of a snapshot's orders-per-stripe counts (format 2).
const KIND_SNAP_STRIPES: u8 = 14;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flashd-fuzzreg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A snapshot the real writer made of a sale with three orders.
fn small_snapshot(dir: &std::path::Path) -> PathBuf {
    let now = 1_767_225_600_000;
    let engine = Engine::new(EngineConfig::default());
    let mut evs = Vec::new();
    engine
        .create_activity(
            &ActivitySpec {
                sku_id: "SKU".into(),
                name: "sale".into(),
                price_cents: 100,
                stock: 10,
                start_at: now - 1000,
                end_at: now + 3_600_000,
                per_user_limit: 1,
            },
            now,
            &mut evs,
        )
        .unwrap();
    for user in 1..=3 {
        let rid = format!("r-{user}");
        engine
            .place_order(
                &PlaceOrder {
                    activity_id: 1,
                    user_id: user,
                    quantity: 1,
                    request_id: &rid,
                },
                now,
                &mut evs,
            )
            .unwrap();
    }
    write_snapshot(dir, evs.len() as u64, &engine.export(), false).unwrap()
}

/// Found by the `snapshot` target: a CRC-clean snapshot whose stripe counts
/// claim billions of orders made the loader reserve room for them all
/// (`Engine::begin_load` sizes each stripe from them) and the process
/// aborted out of memory at start-up (before the fix this test aborts the
/// same way). The counts are only a sizing hint: one that does not add up
/// to the orders the blocks hold is dropped, and the snapshot loads.
/// Fix: `read_front` in storage/src/snapshot.rs filters the hint.
#[test]
fn stripe_counts_that_disagree_with_the_orders_do_not_size_the_load() {
    let dir = tmpdir("stripes");
    let path = small_snapshot(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let mut out = bytes[..HEADER_BYTES].to_vec();
    let mut off = HEADER_BYTES;
    let mut patched = false;
    while off < bytes.len() {
        let Decoded::Record { kind, payload, len } = decode_record(&bytes[off..]) else {
            panic!("the writer's snapshot has a bad record at {off}");
        };
        if kind == KIND_SNAP_STRIPES {
            // What the fuzzer wrote: every stripe claims 2^31 orders.
            let huge: Vec<u8> = payload
                .chunks(4)
                .flat_map(|_| (1u32 << 31).to_le_bytes())
                .collect();
            encode_record(&mut out, kind, &huge);
            patched = true;
        } else {
            encode_record(&mut out, kind, payload);
        }
        off += len;
    }
    assert!(patched, "the snapshot has stripe counts");
    std::fs::write(&path, &out).unwrap();
    let (_, snap) = read_snapshot(&path).expect("the orders themselves are sound");
    let v = verify_snapshot(&path).expect("verified");
    let engine = Engine::new(EngineConfig::default());
    v.load_into(&engine).expect("loads");
    for o in &snap.orders {
        assert!(
            engine.order(o.user_id, o.id).is_some(),
            "order {} loaded",
            o.id
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Unit tests of the snapshot formats: a lean load's resident memory,
//! format 1 still loading, and damaged blocks named by their offset.

use std::path::PathBuf;

use flashd_engine::{Engine, EngineSnapshot, Order};

use super::read::read_snapshot;
use super::verify::verify;
use super::*;
use crate::codec::*;
use crate::error::LogError;
use crate::record::{encode_record, RECORD_OVERHEAD};
use crate::segment::{header, HEADER_BYTES, SNAPSHOT_MAGIC};
use flashd_engine::{ActivitySnapshot, ActivitySpec, CancelReason, OrderStatus, RequestKey};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flashd-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A format-1 snapshot as the previous release wrote it, byte by byte.
fn v1_file(lsn: u64, act: &ActivitySnapshot, orders: &[(Order, &str)]) -> Vec<u8> {
    let mut buf = header(SNAPSHOT_MAGIC, 1, lsn).to_vec();
    let mut p = Vec::new();
    encode_snap_header(
        &SnapHeader {
            lsn,
            next_activity: 2,
            last_order_id: 99,
            activities: 1,
            orders: orders.len() as u64,
        },
        &mut p,
    );
    encode_record(&mut buf, KIND_SNAP_HEADER, &p);
    p.clear();
    encode_snap_activity(act, &mut p);
    encode_record(&mut buf, KIND_SNAP_ACTIVITY, &p);
    for (o, rid) in orders {
        p.clear();
        p.extend_from_slice(&o.id.to_le_bytes());
        p.extend_from_slice(&o.activity_id.to_le_bytes());
        p.extend_from_slice(&o.user_id.to_le_bytes());
        p.extend_from_slice(&o.quantity.to_le_bytes());
        p.extend_from_slice(&o.amount_cents.to_le_bytes());
        p.push(o.status as u8);
        p.extend_from_slice(&(rid.len() as u16).to_le_bytes());
        p.extend_from_slice(rid.as_bytes());
        p.extend_from_slice(&o.created_at.to_le_bytes());
        p.extend_from_slice(&o.expires_at.to_le_bytes());
        p.extend_from_slice(&o.updated_at.to_le_bytes());
        p.push(match o.cancel_reason {
            None => 0,
            Some(CancelReason::User) => 1,
            Some(CancelReason::Timeout) => 2,
        });
        encode_record(&mut buf, KIND_SNAP_ORDER, &p);
    }
    buf
}

/// Resident file-backed memory of this process, in bytes.
fn rss_file() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = s
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_lean_load_keeps_a_block_of_the_file_resident_not_the_file() {
    let d = tmpdir("lean");
    let orders: Vec<Order> = (1..=200_000u64)
        .map(|id| Order {
            id,
            activity_id: 1,
            user_id: id * 3,
            quantity: 1,
            amount_cents: 5,
            status: OrderStatus::Created,
            request_key: RequestKey::of(&id.to_string()),
            created_at: 1,
            expires_at: 2,
            updated_at: 1,
            cancel_reason: None,
        })
        .collect();
    let e = Engine::new(flashd_engine::EngineConfig::default());
    e.load(&EngineSnapshot {
        next_activity: 1,
        last_order_id: 200_000,
        activities: vec![],
        orders,
    })
    .unwrap();
    let want = e.export();
    let p = write_engine_snapshot(&d, 9, &e, false).unwrap();
    let file = std::fs::metadata(&p).unwrap().len() as usize;
    // Populated: the whole file is resident while it is held.
    let before = rss_file();
    let full = verify(&p, false).unwrap();
    let full_rss = rss_file().saturating_sub(before);
    drop(full);
    assert!(full_rss >= file * 3 / 4, "{full_rss} of {file}");
    // Lean: verified and loaded with at most a few blocks resident.
    let before = rss_file();
    let v = verify(&p, true).unwrap();
    let lean_rss = rss_file().saturating_sub(before);
    let f = Engine::new(flashd_engine::EngineConfig::default());
    v.load_into(&f).unwrap();
    assert!(lean_rss <= file / 4, "{lean_rss} of {file}");
    assert!(f.export() == want, "a lean load differs");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_format_1_snapshot_still_loads_and_a_future_one_is_refused() {
    let d = tmpdir("v1");
    let act = ActivitySnapshot {
        id: 1,
        spec: ActivitySpec {
            sku_id: "S".into(),
            name: "N".into(),
            price_cents: 5,
            stock: 10,
            start_at: 0,
            end_at: 100,
            per_user_limit: 2,
        },
        created_at: 0,
        remaining: 8,
        sold: 1,
        reserved: 1,
        void: false,
    };
    let order = |id, user, status, reason, rid: &str| Order {
        id,
        activity_id: 1,
        user_id: user,
        quantity: 1,
        amount_cents: 5,
        status,
        request_key: RequestKey::of(rid),
        created_at: 1,
        expires_at: 50,
        updated_at: 2,
        cancel_reason: reason,
    };
    let orders = [
        (order(98, 7, OrderStatus::Paid, None, "a-1"), "a-1"),
        (order(99, 8, OrderStatus::Created, None, "b-1"), "b-1"),
        (
            order(
                97,
                8,
                OrderStatus::Cancelled,
                Some(CancelReason::User),
                "b-0",
            ),
            "b-0",
        ),
    ];
    let p = d.join(snapshot_name(42));
    std::fs::write(&p, v1_file(42, &act, &orders)).unwrap();
    let (lsn, snap) = read_snapshot(&p).unwrap();
    assert_eq!(lsn, 42);
    assert_eq!((snap.next_activity, snap.last_order_id), (2, 99));
    assert_eq!(snap.activities, vec![act.clone()]);
    let want: Vec<Order> = orders.iter().map(|(o, _)| *o).collect();
    assert_eq!(snap.orders, want);

    // Written again, it is format 2 and reads back the same.
    let p2 = write_snapshot(&d, 43, &snap, false).unwrap();
    let data = std::fs::read(&p2).unwrap();
    assert_eq!(u32::from_le_bytes(data[8..12].try_into().unwrap()), 2);
    assert_eq!(read_snapshot(&p2).unwrap().1, snap);

    // A version from the future: refused, naming both versions.
    let mut future = data.clone();
    future[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c::crc32c(&future[..20]);
    future[20..24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&p2, &future).unwrap();
    match read_snapshot(&p2) {
        Err(LogError::Version {
            found, supported, ..
        }) => assert_eq!((found, supported), (3, 2)),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn blocks_that_do_not_add_up_are_refused_with_their_offset() {
    let d = tmpdir("blocks");
    let o = Order {
        id: 1,
        activity_id: 1,
        user_id: 1,
        quantity: 1,
        amount_cents: 1,
        status: OrderStatus::Created,
        request_key: RequestKey::of("r"),
        created_at: 0,
        expires_at: 0,
        updated_at: 0,
        cancel_reason: None,
    };
    let snap = EngineSnapshot {
        next_activity: 1,
        last_order_id: 3,
        activities: vec![],
        orders: (1..=3).map(|id| Order { id, ..o }).collect(),
    };
    let p = write_snapshot(&d, 5, &snap, false).unwrap();
    let good = std::fs::read(&p).unwrap();
    // The header promises one more order than the blocks hold.
    let mut data = good[..HEADER_BYTES].to_vec();
    let mut h = Vec::new();
    encode_snap_header(
        &SnapHeader {
            lsn: 5,
            next_activity: 1,
            last_order_id: 3,
            activities: 0,
            orders: 4,
        },
        &mut h,
    );
    encode_record(&mut data, KIND_SNAP_HEADER, &h);
    let first_block = HEADER_BYTES + h.len() + RECORD_OVERHEAD;
    data.extend_from_slice(&good[first_block..]);
    std::fs::write(&p, &data).unwrap();
    match read_snapshot(&p) {
        Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset as usize, data.len()),
        other => panic!("{other:?}"),
    }
    // A block whose length is not a whole number of rows.
    let mut data = good.clone();
    let mut rows = Vec::new();
    for o in &snap.orders {
        encode_order_row(o, &mut rows);
    }
    rows.pop();
    data.truncate(first_block);
    encode_record(&mut data, KIND_SNAP_ORDERS, &rows);
    std::fs::write(&p, &data).unwrap();
    match read_snapshot(&p) {
        Err(LogError::Corrupt { offset, why, .. }) => {
            assert_eq!(offset as usize, first_block, "{why}")
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&d);
}

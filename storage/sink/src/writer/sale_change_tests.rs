//! The writer with an admin's changes of sales (`StockAdded`,
//! `ActivityWindowChanged`) against the machine's MariaDB: read whole and
//! interleaved with another node's topic, split across batches at random,
//! replayed in part and in whole, with aborted copies among them, they
//! always give the same `activities` rows, those of the changes that
//! stand.

use flashd_engine::{order_id_floor, ActivityId, Event};
use mysql_async::prelude::*;
use mysql_async::Opts;

use super::cluster_tests::{created, interleave, paid, sale, Lcg, Topic};
use super::tests::maria;
use crate::clock::now_ms;

const A: &str = "t.node1";
const B: &str = "t.node2";

/// `sale(id, _)`'s window end: the window every sale opens with here.
const END: u64 = u64::MAX / 2;

fn added(id: ActivityId, added: u64) -> Event {
    Event::StockAdded { id, added, at: 10 }
}

fn moved(id: ActivityId, from: (u64, u64), to: (u64, u64)) -> Event {
    Event::ActivityWindowChanged {
        id,
        start_at: to.0,
        end_at: to.1,
        prev_start_at: from.0,
        prev_end_at: from.1,
        at: 11,
    }
}

/// Node A takes sale 1's and sale 2's changes (a node alone takes them:
/// cluster mode refuses them), some in groups that fail; node B logs its
/// copy of sale 1's creation and an order of it.
fn topics() -> Vec<Topic> {
    let f = order_id_floor(now_ms());
    let (o1, o2) = (f | 1, f | 2);
    let (mut a, mut b) = (Topic::new(A), Topic::new(B));
    a.commit(&[sale(1, 10), sale(2, 5)]);
    b.commit(&[sale(1, 10)]);
    a.commit(&[created(o1, 1, 11, 2)]);
    a.commit(&[added(1, 5), moved(1, (0, END), (0, 50))]);
    // Aborted: neither the units nor the window stand.
    a.fail(&[added(1, 7), moved(1, (0, 50), (0, 40))]);
    a.commit(&[added(1, 3)]);
    a.commit(&[paid(o1, 1, 11, 2)]);
    b.commit(&[created(o2, 1, 12, 1)]);
    // Sale 2: its only changes aborted, it is as created.
    a.fail(&[moved(2, (0, END), (0, 30)), added(2, 4)]);
    vec![a, b]
}

/// (id, stock, remaining, reserved, sold, start_at, end_at, void).
type Sale = (u32, i64, i64, i64, i64, u64, u64, u8);

async fn sales(url: &str) -> Vec<Sale> {
    let mut c = mysql_async::Conn::new(Opts::from_url(url).unwrap())
        .await
        .unwrap();
    let r: Vec<Sale> = c
        .query("SELECT id, stock, remaining, reserved, sold, start_at, end_at, void FROM activities ORDER BY id")
        .await
        .unwrap();
    let _ = c.disconnect().await;
    r
}

#[test]
fn admin_changes_give_the_same_sale_rows_however_read_split_replayed_or_aborted() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let topics = topics();
        // Sale 1: 10 + 5 + 3 units (7 aborted), window moved to end at 50
        // (the move to 40 aborted), o1 paid (2), o2 reserved (1). Sale 2:
        // as created.
        let want: Vec<Sale> = vec![(1, 18, 15, 1, 2, 0, 50, 0), (2, 5, 5, 0, 0, 0, END, 0)];
        let mut orders: Vec<(String, Vec<_>)> = Vec::new();
        for perm in [[0, 1], [1, 0]] {
            let recs = perm.iter().flat_map(|&i| topics[i].recs.clone()).collect();
            orders.push((format!("topics {perm:?} whole"), recs));
        }
        for seed in 0..6u64 {
            orders.push((format!("seed {seed}"), interleave(&topics, &mut Lcg(seed))));
        }
        for (k, (what, recs)) in orders.iter().enumerate() {
            let urls = maria::shards("admin", 2).await;
            let mut w = maria::writer(&urls, A);
            let mut g = Lcg(k as u64 + 200);
            let mut at = 0;
            while at < recs.len() {
                let n = (1 + g.next(4) as usize).min(recs.len() - at);
                let batch = &recs[at..at + n];
                w.write(batch).await.expect("write");
                // A crash before the offsets were committed: a prefix again.
                let replay = g.next(n as u64 + 1) as usize;
                w.write(&batch[..replay]).await.expect("replay");
                assert!(
                    sales(&urls[0]).await.iter().all(|s| s.1 >= 5),
                    "{what}: a sale's stock below its creation's"
                );
                at += n;
            }
            assert_eq!(sales(&urls[0]).await, want, "{what}");
            // A restart of the sink that reads everything again, in one
            // batch and then one record at a time.
            let mut again = maria::writer(&urls, A);
            again.write(recs).await.expect("full replay");
            for r in recs {
                again.write(std::slice::from_ref(r)).await.expect("replay");
            }
            let got = sales(&urls[0]).await;
            maria::drop_all(&urls).await;
            assert_eq!(got, want, "{what}: after replays");
        }
    });
}

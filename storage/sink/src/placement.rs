//! Where a row lives: the shard of a user (a jump consistent hash, so one
//! user's orders stay on one shard and adding a shard moves only 1/n of
//! users) and the month table of an order.

use flashd_engine::{order_created_ms, OrderId, UserId};

/// Shard of a user: Lamping & Veach's jump consistent hash.
pub fn shard_of(user: UserId, shards: usize) -> usize {
    let mut key = user;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b.max(0) as usize
}

/// `orders_YYYYMM` of the month the order was created in (UTC), from its
/// snowflake id: a status change finds its table without a lookup.
pub fn order_table(id: OrderId) -> String {
    month_table(order_created_ms(id))
}

/// `orders_YYYYMM` of the month (UTC) that holds Unix millisecond `ms`.
pub(crate) fn month_table(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("orders_{:04}{:02}", t.year(), t.month() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_engine::order_id_floor;

    #[test]
    fn jump_hash_is_stable_and_moves_few_users() {
        for u in 0..1000u64 {
            assert_eq!(shard_of(u, 1), 0);
            assert!(shard_of(u, 2) < 2);
        }
        let moved = (0..100_000u64)
            .filter(|u| shard_of(*u, 4) != shard_of(*u, 5))
            .count();
        // About 1/5 of users move to the new shard, and only to it.
        assert!((15_000..25_000).contains(&moved), "{moved}");
        assert!((0..100_000u64)
            .filter(|u| shard_of(*u, 4) != shard_of(*u, 5))
            .all(|u| shard_of(u, 5) == 4));
        let on0 = (0..100_000u64).filter(|u| shard_of(*u, 2) == 0).count();
        assert!((45_000..55_000).contains(&on0), "{on0}");
    }

    #[test]
    fn order_tables_are_per_month_of_the_id() {
        // 2026-11-22T00:00:00Z
        let ms = 1_795_305_600_000u64;
        assert_eq!(order_table(order_id_floor(ms)), "orders_202611");
        assert_eq!(order_table(0), "orders_202401");
        assert_eq!(month_table(ms), "orders_202611");
    }
}

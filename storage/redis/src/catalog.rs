//! The sales every node of a cluster serves: ids handed out once for all
//! nodes, a sale's whole creation kept in Redis so a node that never saw
//! it created can serve it, finding an order by its buyer when a node's
//! own log does not hold it, and the lease on a node id.
//!
//! A sale is created on one node (an admin's `POST`) and bought from on
//! all. The creating node takes the next id from [`keys::SALE_SEQ`] and
//! writes the sale with its names (`sku`, `name`, `created`) into the
//! sale's meta hash ([`RedisClient::register_sale`]); any other node that
//! meets the id reads it back as the engine's `ActivityCreated` event
//! ([`RedisClient::sale_event`]), installs it and logs it, so its own
//! restart knows the sale without Redis.

use std::time::Duration;

use flashd_engine::{ActivityId, Event, Millis, OrderId, UserId};

use crate::client::{Pending, RedisClient, Session};
use crate::decision::Claim;
use crate::error::RedisError;
use crate::keys;
use crate::reconcile::SaleSpec;

/// Sales one [`RedisClient::find_order`] looks through at most per call:
/// a pipeline of one `HGET` each. The engine holds at most
/// `engine.max_activities` sales (4096 by default), so this is one call
/// for any real catalog.
pub const FIND_SALES_MAX: usize = 4096;

impl RedisClient {
    /// The next sale id, the same sequence for every node (`INCR`).
    pub fn next_sale_id(&self) -> Pending<ActivityId> {
        self.submit("next_sale_id", false, |s| {
            s.query("next_sale_id", redis::cmd("INCR").arg(keys::SALE_SEQ))
        })
    }

    /// The highest sale id handed out so far (0: none).
    pub fn last_sale_id(&self) -> Pending<ActivityId> {
        self.submit("last_sale_id", false, |s| {
            let v: Option<ActivityId> =
                s.query("last_sale_id", redis::cmd("GET").arg(keys::SALE_SEQ))?;
            Ok(v.unwrap_or(0))
        })
    }

    /// Create the sale an `ActivityCreated` event describes, with its
    /// names, if Redis does not hold it; the same creation again is fine,
    /// another spec under its id is [`RedisError::SaleConflict`]. Answers
    /// whether this call created it.
    ///
    /// # Panics
    /// If `ev` is not an `ActivityCreated` (a caller's bug).
    pub fn register_sale(&self, ev: &Event) -> Pending<bool> {
        let Event::ActivityCreated {
            id,
            sku_id,
            name,
            price_cents,
            stock,
            start_at,
            end_at,
            per_user_limit,
            created_at,
        } = ev
        else {
            panic!("register_sale takes ActivityCreated, got {}", ev.kind());
        };
        let spec = SaleSpec {
            stock: *stock,
            per_user_limit: *per_user_limit,
            start_at: *start_at,
            end_at: *end_at,
            price_cents: *price_cents,
        };
        let names = (sku_id.clone(), name.clone(), *created_at);
        self.create_sale_with(*id, spec, Some(names))
    }

    /// Sale `sale` as the engine's `ActivityCreated` event, read from its
    /// meta hash; `None` when Redis holds no such sale.
    pub fn sale_event(&self, sale: ActivityId) -> Pending<Option<Event>> {
        self.submit("sale_event", false, move |s| read_sale_event(s, sale))
    }

    /// The claim `order` of `user` in any of `sales`, and its sale: for a
    /// pay, cancel or read of an order this node's log does not hold (it
    /// was decided on another node). One pipelined `HGET` per sale.
    pub fn find_order(
        &self,
        user: UserId,
        order: OrderId,
        sales: Vec<ActivityId>,
    ) -> Pending<Option<(ActivityId, Claim)>> {
        self.submit("find_order", false, move |s| {
            for chunk in sales.chunks(FIND_SALES_MAX) {
                let mut p = redis::pipe();
                for sale in chunk {
                    p.cmd("HGET").arg(keys::users(*sale)).arg(user);
                }
                let records: Vec<Option<String>> = s.pipe("find_order", &p)?;
                for (sale, rec) in chunk.iter().zip(records) {
                    let Some(rec) = rec else { continue };
                    if let Some(c) = claim_in_record(user, order, &rec) {
                        return Ok(Some((*sale, c)));
                    }
                }
            }
            Ok(None)
        })
    }

    /// `stock`, `sold` and `reserved` of each of `sales` (`None` for a
    /// sale Redis does not hold): one pipelined `HMGET` each, for a node's
    /// mirror of the counters (`GET` of a sale) and its sweeper.
    pub fn counters(&self, sales: Vec<ActivityId>) -> Pending<Vec<Option<[u64; 3]>>> {
        self.submit("counters", false, move |s| {
            let mut out = Vec::with_capacity(sales.len());
            for chunk in sales.chunks(FIND_SALES_MAX) {
                let mut p = redis::pipe();
                for sale in chunk {
                    p.cmd("HMGET")
                        .arg(keys::meta(*sale))
                        .arg("stock")
                        .arg("sold")
                        .arg("reserved");
                }
                let got: Vec<Vec<Option<u64>>> = s.pipe("counters", &p)?;
                for v in got {
                    out.push(match v.as_slice() {
                        [Some(a), Some(b), Some(c)] => Some([*a, *b, *c]),
                        _ => None,
                    });
                }
            }
            Ok(out)
        })
    }

    /// The claims of `orders` (buyer, order id) in `sale`, in order
    /// (`None` where the buyer's record holds no such order): one
    /// pipelined `HGET` per order.
    pub fn claims(
        &self,
        sale: ActivityId,
        orders: Vec<(UserId, OrderId)>,
    ) -> Pending<Vec<Option<Claim>>> {
        self.submit("claims", false, move |s| {
            let mut out = Vec::with_capacity(orders.len());
            for chunk in orders.chunks(FIND_SALES_MAX) {
                let mut p = redis::pipe();
                for (user, _) in chunk {
                    p.cmd("HGET").arg(keys::users(sale)).arg(*user);
                }
                let records: Vec<Option<String>> = s.pipe("claims", &p)?;
                for ((user, order), rec) in chunk.iter().zip(records) {
                    out.push(rec.and_then(|r| claim_in_record(*user, *order, &r)));
                }
            }
            Ok(out)
        })
    }

    /// Take (or renew) the lease on node id `node` for `holder` for `ttl`:
    /// `true` if this holder has it now, `false` if another process holds
    /// it. A process that died leaves it until `ttl` passes.
    pub fn lease_node(&self, node: u16, holder: String, ttl: Duration) -> Pending<bool> {
        self.submit("lease_node", false, move |s| {
            let key = keys::node_lease(node);
            let ms = ttl.as_millis().max(1) as u64;
            // Take it if free; renew it if ours. One script: a compare
            // and a set, atomically.
            let v: i64 = s.query(
                "lease_node",
                redis::cmd("EVAL")
                    .arg(LEASE)
                    .arg(1)
                    .arg(&key)
                    .arg(&holder)
                    .arg(ms),
            )?;
            Ok(v == 1)
        })
    }

    /// Give the lease on `node` up if `holder` has it (a clean stop), so
    /// a restart need not wait for it to lapse.
    pub fn release_node(&self, node: u16, holder: String) -> Pending<()> {
        self.submit("release_node", false, move |s| {
            let _: i64 = s.query(
                "release_node",
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(keys::node_lease(node))
                    .arg(&holder),
            )?;
            Ok(())
        })
    }
}

/// `KEYS[1]` the lease, `ARGV` holder, ttl ms: 1 if the holder has it now.
const LEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// `KEYS[1]` the lease, `ARGV[1]` holder: delete it if the holder has it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

fn read_sale_event(s: &mut Session, sale: ActivityId) -> Result<Option<Event>, RedisError> {
    let fields = [
        "stock", "limit", "start", "end", "price", "sku", "name", "created",
    ];
    let v: Vec<Option<String>> = s.query(
        "sale_event",
        redis::cmd("HMGET").arg(keys::meta(sale)).arg(&fields[..]),
    )?;
    if v.iter().all(Option::is_none) {
        return Ok(None);
    }
    let bad = |f: &str| {
        RedisError::protocol(
            "sale_event",
            format!("sale {sale}: meta field {f} missing or not a number (created by a node without names?)"),
        )
    };
    let num = |i: usize| -> Result<u64, RedisError> {
        v[i].as_deref()
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| bad(fields[i]))
    };
    let text =
        |i: usize| -> Result<String, RedisError> { v[i].clone().ok_or_else(|| bad(fields[i])) };
    Ok(Some(Event::ActivityCreated {
        id: sale,
        stock: num(0)?,
        per_user_limit: u32::try_from(num(1)?).map_err(|_| bad("limit"))?,
        start_at: num(2)? as Millis,
        end_at: num(3)? as Millis,
        price_cents: num(4)?,
        sku_id: text(5)?,
        name: text(6)?,
        created_at: num(7)? as Millis,
    }))
}

/// The claim of order `order` in `user`'s record, if it holds it.
pub(crate) fn claim_in_record(user: UserId, order: OrderId, rec: &str) -> Option<Claim> {
    let needle = format!("#{order}|");
    let at = rec.find(&needle)?;
    let start = rec[..at].rfind(';')?;
    let end = rec[at..].find(';').map_or(rec.len(), |e| at + e);
    Claim::decode_segment(user, &rec[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::ClaimStatus;

    #[test]
    fn a_claim_is_found_in_its_record_and_only_by_its_own_id() {
        let a = ";r-1#1001|C|1|500|10|20|3";
        let b = ";r-2#100|P|2|1000|11|21|4";
        let rec = format!("3,2{a}{b}");
        let c = claim_in_record(9, 1001, &rec).expect("first");
        assert_eq!(
            (c.order_id, c.request_id.as_str(), c.node),
            (1001, "r-1", 3)
        );
        let c = claim_in_record(9, 100, &rec).expect("last");
        assert_eq!(
            (c.order_id, c.status, c.quantity),
            (100, ClaimStatus::Paid, 2)
        );
        // 10 is a prefix of 100 and 1001: never matched by prefix.
        assert!(claim_in_record(9, 10, &rec).is_none());
        assert!(claim_in_record(9, 1, &rec).is_none());
        assert!(claim_in_record(9, 7, "0,0").is_none());
    }
}

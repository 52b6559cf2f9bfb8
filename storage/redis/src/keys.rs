//! Where a sale lives in Redis: one function per key.
//!
//! Every key of sale `7` starts with the hash tag `{sale:7}`, so all of
//! them hash to one slot and a script may touch them together, on one
//! Redis today and on Redis Cluster later. Nothing else in this crate
//! spells a key.

use flashd_engine::ActivityId;

/// The hash tag every key of `sale` carries: `{sale:<id>}`.
pub fn tag(sale: ActivityId) -> String {
    format!("{{sale:{sale}}}")
}

/// Hash: the sale's spec and counters (`stock`, `sold`, `reserved`,
/// `limit`, `orders_max`, `start`, `end`, `price`).
pub fn meta(sale: ActivityId) -> String {
    format!("{}:meta", tag(sale))
}

/// Hash: `<user>` → that buyer's record in this sale, one string: units
/// held, orders made, and every claim with its request id
/// (`crate::script` has the format). The idempotency index, the limit's
/// count and the claims in one field, so a purchase writes one field.
pub fn users(sale: ActivityId) -> String {
    format!("{}:users", tag(sale))
}

/// List: one entry per script call that granted something,
/// `<latest deadline>|<user>,<user>,...`, in the order they were made:
/// where the expiry looks for unpaid claims.
pub fn due(sale: ActivityId) -> String {
    format!("{}:due", tag(sale))
}

/// String: the last sale id handed out (`INCR`), shared by every node so
/// two nodes never create two sales under one id. Not a sale's key, so
/// it carries no sale tag: it is touched once per sale creation, never by
/// a script.
pub const SALE_SEQ: &str = "flashd:sale_seq";

/// String: which running process holds node id `node` (a lease, renewed
/// while it runs), so two processes configured with one node id cannot
/// both make order ids.
pub fn node_lease(node: u16) -> String {
    format!("flashd:node:{node}")
}

/// Every key of `sale`.
pub fn all(sale: ActivityId) -> [String; 3] {
    [meta(sale), users(sale), due(sale)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_sale_tag() {
        for k in all(42) {
            assert!(k.starts_with("{sale:42}:"), "{k}");
        }
        assert_eq!(tag(42), "{sale:42}");
    }
}

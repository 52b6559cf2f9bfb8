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
    format!("{{sale:{sale}}}:meta")
}

/// Hash: `<user>:<request_id>` → order id (the idempotency index).
pub fn requests(sale: ActivityId) -> String {
    format!("{{sale:{sale}}}:req")
}

/// Hash: `<user>` → units held (created or paid, not cancelled).
pub fn held(sale: ActivityId) -> String {
    format!("{{sale:{sale}}}:held")
}

/// Hash: `<user>` → orders created, cancelled ones included (the churn
/// bound, `flashd_engine::sale_user_orders_max`).
pub fn made(sale: ActivityId) -> String {
    format!("{{sale:{sale}}}:made")
}

/// Hash: order id → the claim, packed in one string
/// ([`crate::Claim::encode_value`]). The sale's claims, listed without a
/// `SCAN` of the keyspace.
pub fn claims(sale: ActivityId) -> String {
    format!("{{sale:{sale}}}:claims")
}

/// Sorted set: order id of every unpaid claim, scored by its payment
/// deadline (ms since the Unix epoch).
pub fn due(sale: ActivityId) -> String {
    format!("{{sale:{sale}}}:due")
}

/// Every key of `sale`, in the order the repair deletes them.
pub fn all(sale: ActivityId) -> [String; 6] {
    [
        meta(sale),
        requests(sale),
        held(sale),
        made(sale),
        claims(sale),
        due(sale),
    ]
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

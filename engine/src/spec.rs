//! What the engine is configured with, and what an admin asks for when
//! opening a sale.

use crate::limits::{
    NAME_BYTES_MAX, PER_USER_LIMIT_MAX, PRICE_CENTS_MAX, SKU_BYTES_MAX, STOCK_MAX,
};
use crate::types::Millis;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id, stamped into every order id (0..=1023).
    pub node_id: u16,
    /// Unpaid orders are cancelled this long after creation.
    pub order_ttl_ms: u64,
    /// Sales this node can hold (slots are allocated up front).
    pub max_activities: u32,
    /// With a log attached: units of a cancelled order go back on sale only
    /// when the caller reports the cancel durable ([`crate::Engine::durable`]).
    /// Without one (tests, a log-less engine): at once.
    pub hold_released_until_durable: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_id: 0,
            order_ttl_ms: 15 * 60 * 1000,
            max_activities: 4096,
            hold_released_until_durable: false,
        }
    }
}

/// Why a sale's spec is refused: the field at fault and what it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct InvalidSpec {
    pub field: &'static str,
    pub why: &'static str,
}

/// What an admin asks for when opening a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivitySpec {
    pub sku_id: String,
    pub name: String,
    pub price_cents: u64,
    pub stock: u64,
    pub start_at: Millis,
    pub end_at: Millis,
    pub per_user_limit: u32,
}

impl ActivitySpec {
    /// `Err((field, message))` for the first field out of bounds (the
    /// bounds are in [`crate::limits`]).
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        if self.sku_id.is_empty() || self.sku_id.len() > SKU_BYTES_MAX {
            return Err(InvalidSpec {
                field: "sku_id",
                why: "must be 1 to 64 bytes",
            });
        }
        if self.name.is_empty() || self.name.len() > NAME_BYTES_MAX {
            return Err(InvalidSpec {
                field: "name",
                why: "must be 1 to 200 bytes",
            });
        }
        if self.price_cents > PRICE_CENTS_MAX {
            return Err(InvalidSpec {
                field: "price_cents",
                why: "must be at most 10^12",
            });
        }
        if self.stock == 0 || self.stock > STOCK_MAX {
            return Err(InvalidSpec {
                field: "stock",
                why: "must be between 1 and 10^9",
            });
        }
        if self.end_at <= self.start_at {
            return Err(InvalidSpec {
                field: "end_at",
                why: "must be after start_at",
            });
        }
        if self.per_user_limit == 0 || self.per_user_limit > PER_USER_LIMIT_MAX {
            return Err(InvalidSpec {
                field: "per_user_limit",
                why: "must be between 1 and 1000",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ActivitySpec {
        ActivitySpec {
            sku_id: "S".into(),
            name: "N".into(),
            price_cents: 1,
            stock: 1,
            start_at: 0,
            end_at: 1,
            per_user_limit: 1,
        }
    }

    /// The messages spell the limits out: each bound accepts its limit,
    /// refuses one past it, and the message names that limit.
    #[test]
    fn each_bound_is_the_limit_its_message_names() {
        assert_eq!(spec().validate(), Ok(()));
        let at = ActivitySpec {
            sku_id: "s".repeat(SKU_BYTES_MAX),
            name: "n".repeat(NAME_BYTES_MAX),
            price_cents: PRICE_CENTS_MAX,
            stock: STOCK_MAX,
            per_user_limit: PER_USER_LIMIT_MAX,
            ..spec()
        };
        assert_eq!(at.validate(), Ok(()));
        let past: [(ActivitySpec, &str, String); 5] = [
            (
                ActivitySpec {
                    sku_id: "s".repeat(SKU_BYTES_MAX + 1),
                    ..spec()
                },
                "sku_id",
                format!("{SKU_BYTES_MAX} bytes"),
            ),
            (
                ActivitySpec {
                    name: "n".repeat(NAME_BYTES_MAX + 1),
                    ..spec()
                },
                "name",
                format!("{NAME_BYTES_MAX} bytes"),
            ),
            (
                ActivitySpec {
                    price_cents: PRICE_CENTS_MAX + 1,
                    ..spec()
                },
                "price_cents",
                format!("10^{}", PRICE_CENTS_MAX.ilog10()),
            ),
            (
                ActivitySpec {
                    stock: STOCK_MAX + 1,
                    ..spec()
                },
                "stock",
                format!("10^{}", STOCK_MAX.ilog10()),
            ),
            (
                ActivitySpec {
                    per_user_limit: PER_USER_LIMIT_MAX + 1,
                    ..spec()
                },
                "per_user_limit",
                format!("{PER_USER_LIMIT_MAX}"),
            ),
        ];
        for (s, field, names) in past {
            let InvalidSpec { field: f, why: m } = s.validate().unwrap_err();
            assert_eq!(f, field);
            assert!(m.ends_with(&names), "{field}: {m:?} should name {names}");
        }
    }
}

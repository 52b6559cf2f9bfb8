//! One integer mixer for the engine's hash tables (per-user indexes,
//! rate-limit buckets).

/// The murmur3 finaliser: every input bit reaches every output bit.
#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

//! flashd-storage: the write-behind path (order log, snapshots, recovery,
//! the MySQL sink, the Redis stock authority).
//!
//! Filled in by the durability work that follows the engine.

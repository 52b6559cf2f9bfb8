//! Every fixed limit of the network core, with the reason for its value.

use std::time::Duration;

/// Timer wheel granularity. Timeouts are seconds-scale; 10 ms keeps the
/// error under 1% of a 1 s timeout while an idle reactor wakes at most
/// 100 times a second.
pub const TIMER_TICK: Duration = Duration::from_millis(10);

/// Timer wheel slots: 4096 × 10 ms ≈ 41 s horizon. Longer deadlines park in
/// the last slot and are re-checked, so correctness does not depend on it.
pub const TIMER_SLOTS: usize = 4096;

/// Entries each wheel slot has room for from the start (16 bytes each:
/// 4096 × 8 × 16 = 512 KiB of address space per reactor, resident only as
/// used), so scheduling a connection's deadline allocates nothing on the
/// request path; a tick with more deadlines than this grows its slot once.
pub const TIMER_SLOT_ENTRIES: usize = 8;

/// Longest an idle reactor sleeps, so the watchdog sees it turn and
/// shutdown flags are seen promptly even without a wake-up.
pub const POLL_WAIT_MAX: Duration = Duration::from_millis(100);

/// epoll events taken per `poll` call.
pub const EVENTS_PER_TURN: usize = 1024;

/// Reads per readiness event before the connection yields to others (it is
/// revisited next turn: edge-triggered readiness would not fire again).
pub const READS_PER_TURN: usize = 8;

/// First size of a read buffer. Buffers are pooled per reactor and held by a
/// connection only while it has unprocessed bytes, so idle connections cost
/// no buffer at all.
pub const READ_BUF_BYTES: usize = 16 * 1024;

/// Write buffers above this capacity are dropped rather than pooled, so one
/// huge response does not pin memory forever.
pub const POOLED_BUF_MAX_BYTES: usize = 64 * 1024;

/// Write buffers the reactor hands back to its pool are at most this big;
/// larger ones (a `/metrics` scrape, a deep pipelined burst) are freed once
/// written. 16 KiB holds a turn's answers to a client pipelining 64 requests
/// of ~200 bytes each, so the hot path keeps reusing buffers, while a pool
/// of `POOL_BUFS_MAX` of them stays at 16 MiB per reactor at worst.
pub const WRITE_BUF_KEEP_BYTES: usize = 16 * 1024;

/// After an answer that closes a connection with input still unread (an
/// error, or `Connection: close` with more pipelined behind it), closing at
/// once would make the kernel send a RST, which can destroy the answer in
/// the client's receive buffer before it reads it. So the write side is
/// shut (FIN after the answer) and input is read and dropped until the peer
/// closes, for at most this long: many round trips on any real path (the
/// client needs one to read and close), and shorter than `header_timeout`'s
/// default, so a peer that never closes holds its slot no longer than a
/// slow request would.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Input drained while lingering before the connection is closed anyway:
/// room for a refused request body the client had already queued (64 KiB by
/// default, plus what sits in socket buffers on the way); a peer still
/// sending past it is not reading our answer either.
pub const LINGER_DRAIN_BYTES_MAX: usize = 1024 * 1024;

/// Buffers kept in each reactor's free list.
pub const POOL_BUFS_MAX: usize = 1024;

/// Requests a connection may have answered-but-unwritten or in flight at
/// once; past this the reactor stops parsing that connection until
/// responses drain (pipelining backpressure).
pub const PIPELINE_DEPTH_MAX: usize = 128;

/// Unwritten response bytes above which a connection is not read further
/// until the peer takes some (a client that sends but never reads).
pub const WRITE_HIGH_WATER_BYTES: usize = 256 * 1024;

/// New sockets queued from the acceptor to one reactor.
pub const ACCEPT_RING: usize = 1024;

/// Accepted sockets handled per acceptor wake-up before waking reactors,
/// so a connect storm is handed over in batches.
pub const ACCEPTS_PER_TURN: usize = 256;

/// Stream event writes one reactor makes per turn. Each is a `write` of a
/// few microseconds (on loopback it also delivers to the peer), so a pass
/// over 10,000 subscribers in one go would hold the reactor's requests for
/// tens of milliseconds; 1,024 a turn bounds that to a few, and 10,000
/// subscribers still have an event within ten turns.
pub const STREAM_WRITES_PER_TURN: usize = 1024;

const _: () = assert!(TIMER_SLOTS.is_power_of_two());
const _: () = assert!(READ_BUF_BYTES <= POOLED_BUF_MAX_BYTES);
const _: () = assert!(WRITE_BUF_KEEP_BYTES <= POOLED_BUF_MAX_BYTES);
const _: () = assert!(PIPELINE_DEPTH_MAX <= u16::MAX as usize);

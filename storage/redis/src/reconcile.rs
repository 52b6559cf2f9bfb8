//! A sale as Redis holds it, read whole ([`SaleState`]), the same state
//! folded from engine events ([`fold_events`]), and a repair that writes
//! the folded state over Redis's. `flashd reconcile` (not built yet)
//! compares the first two; `repair` makes Redis say what the log says.
//!
//! No `SCAN` of the keyspace: a sale's claims are in one hash, a field per
//! buyer ([`crate::keys::users`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flashd_engine::{ActivityId, Event, Millis, OrderId, UserId};

use crate::client::Session;
use crate::decision::{node_of, Claim, ClaimStatus};
use crate::error::RedisError;
use crate::keys;

/// What a sale is, as created (the engine's `ActivitySpec`, less the
/// names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleSpec {
    pub stock: u64,
    pub per_user_limit: u32,
    pub start_at: Millis,
    pub end_at: Millis,
    pub price_cents: u64,
}

/// Everything Redis holds for one sale, or what the log says it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleState {
    pub spec: SaleSpec,
    pub sold: u64,
    pub reserved: u64,
    /// Every order of the sale, by id.
    pub claims: BTreeMap<OrderId, Claim>,
    /// `(user, request_id)` → order id: the idempotency index, as the
    /// buyers' records hold it.
    pub requests: BTreeMap<(UserId, String), OrderId>,
    /// Units each buyer holds (created or paid); buyers holding none are
    /// left out.
    pub held: BTreeMap<UserId, u32>,
    /// Orders each buyer created, cancelled ones included.
    pub made: BTreeMap<UserId, u32>,
    /// Unpaid orders the due list will reach: named (by their buyer) in an
    /// entry whose deadline is at or after theirs.
    pub due: BTreeSet<OrderId>,
}

impl SaleState {
    fn new(spec: SaleSpec) -> SaleState {
        SaleState {
            spec,
            sold: 0,
            reserved: 0,
            claims: BTreeMap::new(),
            requests: BTreeMap::new(),
            held: BTreeMap::new(),
            made: BTreeMap::new(),
            due: BTreeSet::new(),
        }
    }

    /// Units neither sold nor reserved.
    pub fn remaining(&self) -> u64 {
        self.spec.stock.saturating_sub(self.sold + self.reserved)
    }

    /// Every way the counters and indexes disagree with the claims (empty
    /// when they agree): `sold + reserved <= stock`, `sold` and `reserved`
    /// the sums of paid and created claims, each buyer's holding the sum of
    /// their live claims and within the limit, one request key per claim,
    /// every created claim (and only those) reachable by the due list.
    pub fn check(&self) -> Vec<String> {
        let mut bad = Vec::new();
        if self.sold + self.reserved > self.spec.stock {
            bad.push(format!(
                "oversold: sold {} + reserved {} > stock {}",
                self.sold, self.reserved, self.spec.stock
            ));
        }
        let (mut sold, mut reserved) = (0u64, 0u64);
        let mut held: BTreeMap<UserId, u32> = BTreeMap::new();
        let mut made: BTreeMap<UserId, u32> = BTreeMap::new();
        let mut due = BTreeSet::new();
        for c in self.claims.values() {
            *made.entry(c.user).or_default() += 1;
            match c.status {
                ClaimStatus::Created => {
                    reserved += u64::from(c.quantity);
                    *held.entry(c.user).or_default() += c.quantity;
                    due.insert(c.order_id);
                }
                ClaimStatus::Paid => {
                    sold += u64::from(c.quantity);
                    *held.entry(c.user).or_default() += c.quantity;
                }
                ClaimStatus::Cancelled(_) => {}
            }
            let key = (c.user, c.request_id.clone());
            if self.requests.get(&key) != Some(&c.order_id) {
                bad.push(format!("order {} has no request key {key:?}", c.order_id));
            }
        }
        if (sold, reserved) != (self.sold, self.reserved) {
            bad.push(format!(
                "counters sold {} reserved {}, claims say {sold} {reserved}",
                self.sold, self.reserved
            ));
        }
        if held != self.held {
            bad.push(format!("holdings {:?}, claims say {held:?}", self.held));
        }
        if let Some((u, h)) = held.iter().find(|(_, h)| **h > self.spec.per_user_limit) {
            bad.push(format!(
                "user {u} holds {h} > limit {}",
                self.spec.per_user_limit
            ));
        }
        if made != self.made {
            bad.push(format!("order counts {:?}, claims say {made:?}", self.made));
        }
        if due != self.due {
            bad.push(format!("due {:?}, claims say {due:?}", self.due));
        }
        if self.requests.len() != self.claims.len() {
            bad.push(format!(
                "{} request keys for {} claims",
                self.requests.len(),
                self.claims.len()
            ));
        }
        bad
    }
}

/// The state of sale `sale` that `events` (the log's, in log order; other
/// sales' events are skipped) build: what Redis must hold once every
/// decision is logged.
pub fn fold_events(sale: ActivityId, events: &[Event]) -> Result<SaleState, RedisError> {
    let err = |what: String| RedisError::Repair { sale, what };
    let mut st: Option<SaleState> = None;
    for e in events.iter().filter(|e| e.activity_id() == sale) {
        if let Event::ActivityCreated {
            stock,
            start_at,
            end_at,
            per_user_limit,
            price_cents,
            ..
        } = e
        {
            if st.is_some() {
                return Err(err("created twice".into()));
            }
            st = Some(SaleState::new(SaleSpec {
                stock: *stock,
                per_user_limit: *per_user_limit,
                start_at: *start_at,
                end_at: *end_at,
                price_cents: *price_cents,
            }));
            continue;
        }
        let s = st
            .as_mut()
            .ok_or_else(|| err(format!("{} before the sale's creation", e.kind())))?;
        match e {
            Event::ActivityCreated { .. } => unreachable!("handled above"),
            Event::OrderCreated {
                order_id,
                user_id,
                quantity,
                amount_cents,
                request_id,
                created_at,
                expires_at,
                ..
            } => {
                let c = Claim {
                    order_id: *order_id,
                    user: *user_id,
                    quantity: *quantity,
                    amount_cents: *amount_cents,
                    created_at: *created_at,
                    deadline_ms: *expires_at,
                    node: node_of(*order_id),
                    status: ClaimStatus::Created,
                    request_id: request_id.to_string(),
                };
                if s.claims.insert(*order_id, c).is_some() {
                    return Err(err(format!("order {order_id} created twice")));
                }
                s.requests
                    .insert((*user_id, request_id.to_string()), *order_id);
                s.reserved += u64::from(*quantity);
                *s.held.entry(*user_id).or_default() += quantity;
                *s.made.entry(*user_id).or_default() += 1;
                s.due.insert(*order_id);
            }
            Event::OrderPaid { order_id, .. } | Event::OrderCancelled { order_id, .. } => {
                let c = s
                    .claims
                    .get_mut(order_id)
                    .ok_or_else(|| err(format!("{} of unknown order {order_id}", e.kind())))?;
                if c.status != ClaimStatus::Created {
                    return Err(err(format!(
                        "{} of order {order_id}, which is {:?}",
                        e.kind(),
                        c.status
                    )));
                }
                let q = c.quantity;
                s.reserved -= u64::from(q);
                s.due.remove(order_id);
                if let Event::OrderCancelled { reason, .. } = e {
                    c.status = ClaimStatus::Cancelled(*reason);
                    let h = s.held.get_mut(&c.user).expect("a live claim is held");
                    *h -= q;
                    if *h == 0 {
                        s.held.remove(&c.user);
                    }
                } else {
                    c.status = ClaimStatus::Paid;
                    s.sold += u64::from(q);
                }
            }
        }
    }
    st.ok_or_else(|| err("no ActivityCreated for it".into()))
}

/// Read `sale` whole, in one `MULTI`/`EXEC` (a consistent cut: no script
/// runs in between). Redis is busy for the time it takes to copy the
/// sale's hashes out: run it on a quiet sale, or accept that pause.
pub(crate) fn read(s: &mut Session, sale: ActivityId) -> Result<Option<SaleState>, RedisError> {
    let mut p = redis::pipe();
    p.atomic();
    p.cmd("HGETALL").arg(keys::meta(sale));
    p.cmd("HGETALL").arg(keys::users(sale));
    p.cmd("LRANGE").arg(keys::due(sale)).arg(0).arg(-1);
    type Hash = HashMap<String, String>;
    let (meta, users, due): (Hash, Hash, Vec<String>) = s.pipe("read_sale", &p)?;
    if meta.is_empty() {
        return Ok(None);
    }
    let bad = |what: String| RedisError::protocol("read_sale", what);
    let num = |f: &str| -> Result<u64, RedisError> {
        meta.get(f)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("meta field {f}: {:?}", meta.get(f))))
    };
    let mut st = SaleState::new(SaleSpec {
        stock: num("stock")?,
        per_user_limit: num("limit")? as u32,
        start_at: num("start")?,
        end_at: num("end")?,
        price_cents: num("price")?,
    });
    st.sold = num("sold")?;
    st.reserved = num("reserved")?;
    // The latest due entry naming each buyer.
    let mut reach: HashMap<UserId, Millis> = HashMap::new();
    for e in &due {
        let (at, us) = e
            .split_once('|')
            .ok_or_else(|| bad(format!("due entry {e:?}")))?;
        let at: Millis = at.parse().map_err(|_| bad(format!("due entry {e:?}")))?;
        for u in us.split(',') {
            let u: UserId = u.parse().map_err(|_| bad(format!("due entry {e:?}")))?;
            let r = reach.entry(u).or_default();
            *r = (*r).max(at);
        }
    }
    for (k, rec) in &users {
        let user: UserId = k.parse().map_err(|_| bad(format!("user {k:?}")))?;
        let (head, body) = rec.split_at(rec.find(';').unwrap_or(rec.len()));
        let (held, made) = head
            .split_once(',')
            .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
            .ok_or_else(|| bad(format!("user {k}: record {rec:?}")))?;
        if held != 0 {
            st.held.insert(user, held);
        }
        st.made.insert(user, made);
        for seg in body.split(';').skip(1) {
            let c = Claim::decode_segment(user, &format!(";{seg}"))
                .ok_or_else(|| bad(format!("user {k}: claim {seg:?}")))?;
            st.requests.insert((user, c.request_id.clone()), c.order_id);
            if c.status == ClaimStatus::Created && reach.get(&user) >= Some(&c.deadline_ms) {
                st.due.insert(c.order_id);
            }
            st.claims.insert(c.order_id, c);
        }
    }
    Ok(Some(st))
}

/// Fields per `HSET` and claims per due entry of a repair.
const CHUNK: usize = 1000;

/// Replace `sale` in Redis with what `events` fold to, in one
/// `MULTI`/`EXEC`: the old keys go and the new ones appear at once for
/// every node. A `MULTI` rather than a script because a whole sale's
/// claims can be far more arguments than a script call takes.
pub(crate) fn repair(
    s: &mut Session,
    sale: ActivityId,
    events: &[Event],
) -> Result<SaleState, RedisError> {
    let st = fold_events(sale, events)?;
    let mut p = redis::pipe();
    p.atomic();
    p.cmd("DEL").arg(&keys::all(sale)[..]).ignore();
    let orders_max = flashd_engine::sale_user_orders_max(st.spec.per_user_limit);
    p.cmd("HSET")
        .arg(keys::meta(sale))
        .arg("stock")
        .arg(st.spec.stock)
        .arg("sold")
        .arg(st.sold)
        .arg("reserved")
        .arg(st.reserved)
        .arg("limit")
        .arg(st.spec.per_user_limit)
        .arg("orders_max")
        .arg(orders_max)
        .arg("start")
        .arg(st.spec.start_at)
        .arg("end")
        .arg(st.spec.end_at)
        .arg("price")
        .arg(st.spec.price_cents)
        .ignore();
    // The sale's names, as `register_sale` stores them: without them no
    // node that meets the sale later can learn it from Redis
    // (`RedisClient::sale_event`), and the `DEL` above removed them.
    if let Some(Event::ActivityCreated {
        sku_id,
        name,
        created_at,
        ..
    }) = events
        .iter()
        .find(|e| e.activity_id() == sale && matches!(e, Event::ActivityCreated { .. }))
    {
        p.cmd("HSET")
            .arg(keys::meta(sale))
            .arg("sku")
            .arg(sku_id)
            .arg("name")
            .arg(name)
            .arg("created")
            .arg(*created_at)
            .ignore();
    }
    let mut records: BTreeMap<UserId, String> = BTreeMap::new();
    for (u, made) in &st.made {
        let held = st.held.get(u).copied().unwrap_or(0);
        records.insert(*u, format!("{held},{made}"));
    }
    for c in st.claims.values() {
        let r = records.get_mut(&c.user).expect("a claim's buyer made it");
        r.push_str(&c.encode_segment());
    }
    let records: Vec<(UserId, String)> = records.into_iter().collect();
    for chunk in records.chunks(CHUNK) {
        let c = p.cmd("HSET").arg(keys::users(sale));
        for (u, r) in chunk {
            c.arg(*u).arg(r);
        }
        c.ignore();
    }
    let mut due: Vec<&Claim> = st.due.iter().map(|id| &st.claims[id]).collect();
    due.sort_by_key(|c| (c.deadline_ms, c.order_id));
    for chunk in due.chunks(CHUNK) {
        let latest = chunk.last().expect("chunks are not empty").deadline_ms;
        let users: BTreeSet<UserId> = chunk.iter().map(|c| c.user).collect();
        let users: Vec<String> = users.iter().map(u64::to_string).collect();
        p.cmd("RPUSH")
            .arg(keys::due(sale))
            .arg(format!("{latest}|{}", users.join(",")))
            .ignore();
    }
    let () = s.pipe("repair", &p)?;
    Ok(st)
}

//! Process-wide state shared by every instance of every plugin, as Envoy defines it: shared data
//! (a key-value store per VM id with compare-and-swap) and shared queues (FIFO, with the owner
//! notified on each enqueue). Many workers, one truth: values live in sharded concurrent maps,
//! and a set with a CAS number compares and swaps under the key's shard lock.
//!
//! Semantics follow proxy-wasm-cpp-host: a `get` of a missing key is `NotFound`; a `set` with
//! CAS 0 is unconditional, with another CAS it fails with `CasMismatch` unless that is the key's
//! current CAS, and a missing key is created whatever the CAS; every stored value gets a fresh,
//! non-zero CAS.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use bytes::Bytes;
use dashmap::DashMap;
use weft_abi::Status;

/// Keys are hashed with foldhash, seeded per process: a quarter of SipHash's cost on the short
/// keys filters use (a rate limit's bucket per client), still not predictable from outside.
type Hasher = foldhash::fast::RandomState;

type Entries = DashMap<Box<[u8]>, (Bytes, u32), Hasher>;

/// The shared-data store.
#[derive(Default)]
pub struct SharedData {
    vms: DashMap<Arc<str>, Arc<Entries>, Hasher>,
    next_cas: AtomicU32,
}

impl SharedData {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key` in `vm_id` and its CAS number.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Result<(Bytes, u32), Status> {
        let entries = self
            .vms
            .get(vm_id)
            .map(|e| e.value().clone())
            .ok_or(Status::NotFound)?;
        entries
            .get(key)
            .map(|e| e.value().clone())
            .ok_or(Status::NotFound)
    }

    /// Stores `value` under `key` in `vm_id`; `cas` 0 always succeeds, any other must match the
    /// key's current CAS (when the key exists).
    pub fn set(&self, vm_id: &str, key: &[u8], value: Bytes, cas: u32) -> Result<(), Status> {
        let entries = match self.vms.get(vm_id) {
            Some(entries) => entries.value().clone(),
            None => self
                .vms
                .entry(Arc::from(vm_id))
                .or_default()
                .value()
                .clone(),
        };
        if let Some(mut current) = entries.get_mut(key) {
            if cas != 0 && cas != current.1 {
                return Err(Status::CasMismatch);
            }
            *current = (value, self.fresh_cas());
            return Ok(());
        }
        // Missing: create it, unless another worker did in the meantime (then compare again).
        match entries.entry(Box::from(key)) {
            dashmap::Entry::Occupied(mut occupied) => {
                if cas != 0 && cas != occupied.get().1 {
                    return Err(Status::CasMismatch);
                }
                occupied.insert((value, self.fresh_cas()));
            }
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert((value, self.fresh_cas()));
            }
        }
        Ok(())
    }

    fn fresh_cas(&self) -> u32 {
        loop {
            let cas = self
                .next_cas
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            if cas != 0 {
                return cas;
            }
        }
    }
}

/// Called with a queue's token when an item was enqueued; the host routes it to the owning
/// context's `proxy_on_queue_ready`.
pub type QueueReady = Arc<dyn Fn(u32) + Send + Sync>;

struct Queue {
    owner: QueueReady,
    items: VecDeque<Bytes>,
}

#[derive(Default)]
struct Queues {
    tokens: HashMap<(Arc<str>, Box<str>), u32>,
    queues: HashMap<u32, Queue>,
    next_token: u32,
}

/// The shared queues.
#[derive(Default)]
pub struct SharedQueues {
    state: Mutex<Queues>,
}

impl SharedQueues {
    /// No queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or takes over) the queue `name` of `vm_id`, to be notified through `owner`;
    /// returns its token. Items already queued are kept.
    pub fn register(&self, vm_id: &str, name: &str, owner: QueueReady) -> u32 {
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        let key = (Arc::from(vm_id), Box::from(name));
        let token = match state.tokens.get(&key) {
            Some(&token) => token,
            None => {
                state.next_token += 1;
                let token = state.next_token;
                state.tokens.insert(key, token);
                token
            }
        };
        match state.queues.get_mut(&token) {
            Some(queue) => queue.owner = owner,
            None => {
                state.queues.insert(
                    token,
                    Queue {
                        owner,
                        items: VecDeque::new(),
                    },
                );
            }
        }
        token
    }

    /// The token of queue `name` of `vm_id`, if registered.
    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        let state = self.state.lock().ok()?;
        state
            .tokens
            .get(&(Arc::from(vm_id), Box::from(name)))
            .copied()
    }

    /// Appends `item` and notifies the queue's owner (outside the lock).
    pub fn enqueue(&self, token: u32, item: Bytes) -> Result<(), Status> {
        let owner = {
            let mut state = self.state.lock().map_err(|_| Status::InternalFailure)?;
            let queue = state.queues.get_mut(&token).ok_or(Status::NotFound)?;
            queue.items.push_back(item);
            queue.owner.clone()
        };
        owner(token);
        Ok(())
    }

    /// Takes the oldest item: `NotFound` for an unknown token, `Empty` when there is none.
    pub fn dequeue(&self, token: u32) -> Result<Bytes, Status> {
        let mut state = self.state.lock().map_err(|_| Status::InternalFailure)?;
        let queue = state.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }
}

#[cfg(test)]
mod tests;

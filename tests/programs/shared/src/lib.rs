//! `shared`: a process-wide request counter in shared data, and a shared queue.
//!
//! Exercises the shared-data family (`proxy_get_shared_data`, `proxy_set_shared_data` with
//! compare-and-swap) and the shared-queue family (`proxy_register_shared_queue`,
//! `proxy_enqueue_shared_queue`, `proxy_dequeue_shared_queue`, `proxy_on_queue_ready`).
//! Values are decimal ASCII.
//!
//! - `on_configure` creates the key `shared.count` (as `0`) if it is absent and registers the
//!   queue `shared.queue`.
//! - Each request headers phase first reads `shared.dequeued` into request header
//!   `x-dequeued`, then increments `shared.count` with CAS, retrying on `CasMismatch`, and sets
//!   request headers `x-count: <value after increment>` and `x-cas-retries: <retries>`. It then
//!   enqueues that count on `shared.queue`.
//! - `on_queue_ready` (root context) drains the queue and adds the number of items it took to
//!   `shared.dequeued`, so a later request's `x-dequeued` shows the queue was delivered.
//!
//! With the host's CAS right, N concurrent requests see the counts 1..=N exactly once each.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, Status};

/// Shared-data key of the request counter.
const COUNT_KEY: &str = "shared.count";
/// Shared-data key of the number of queue items `on_queue_ready` has taken.
const DEQUEUED_KEY: &str = "shared.dequeued";
/// Name of the shared queue each request's count is enqueued on.
const QUEUE_NAME: &str = "shared.queue";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_context_id| Box::new(SharedRoot { queue_id: None }));
}}

/// The root context: owns the queue registration.
struct SharedRoot {
    queue_id: Option<u32>,
}

impl Context for SharedRoot {}

impl RootContext for SharedRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if let (None, _) = self.get_shared_data(COUNT_KEY) {
            // Envoy accepts any CAS for a key that does not exist yet, so a first increment
            // racing another one could be lost; creating the key up front closes that window.
            let _ = self.set_shared_data(COUNT_KEY, Some(b"0"), None);
        }
        self.queue_id = Some(self.register_shared_queue(QUEUE_NAME));
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let mut taken = 0;
        while let Ok(Some(_item)) = self.dequeue_shared_queue(queue_id) {
            taken += 1;
        }
        if taken > 0 {
            add_to_counter(DEQUEUED_KEY, taken);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(SharedCounter {
            queue_id: self.queue_id,
        }))
    }
}

/// The per-request context.
struct SharedCounter {
    queue_id: Option<u32>,
}

impl Context for SharedCounter {}

impl HttpContext for SharedCounter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (dequeued, _) = read_counter(DEQUEUED_KEY);
        self.set_http_request_header("x-dequeued", Some(&dequeued.to_string()));

        let (count, retries) = add_to_counter(COUNT_KEY, 1);
        self.set_http_request_header("x-count", Some(&count.to_string()));
        self.set_http_request_header("x-cas-retries", Some(&retries.to_string()));

        if let Some(queue_id) = self.queue_id {
            // NOT_FOUND only if the host dropped the queue; the count header is already set.
            let _ = self.enqueue_shared_queue(queue_id, Some(count.to_string().as_bytes()));
        }
        Action::Continue
    }
}

/// The counter under `key` (0 if absent or unparsable) and its CAS.
fn read_counter(key: &str) -> (u64, Option<u32>) {
    let (value, cas) = proxy_wasm::hostcalls::get_shared_data(key).unwrap_or((None, None));
    let count = value
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    (count, cas)
}

/// Adds `delta` to the counter under `key` with compare-and-swap; returns the new value and how
/// many times a concurrent writer made it retry.
fn add_to_counter(key: &str, delta: u64) -> (u64, u32) {
    let mut retries = 0;
    loop {
        let (count, cas) = read_counter(key);
        let next = count + delta;
        match proxy_wasm::hostcalls::set_shared_data(key, Some(next.to_string().as_bytes()), cas) {
            Ok(()) => return (next, retries),
            Err(Status::CasMismatch) => retries += 1,
            Err(status) => panic!("set_shared_data({key}) failed: {status:?}"),
        }
    }
}

//! A native test harness: a filter's unit tests run in plain `cargo test`, without Wasm or a
//! proxy, against an in-process host that records what the filter did.
//!
//! The filter runs through the same SDK code as in Wasm — the exports' callbacks, the
//! configuration parsing, the host-call layer — only the host calls land here instead of in
//! the proxy. The host keeps request and response headers and bodies, properties, local
//! replies, metrics, shared data, logs and callouts, and a clock the test moves
//! ([`Harness::advance`]), which also fires the filter's timers (delays).
//!
//! ```
//! # use std::rc::Rc;
//! # use weft_sdk::{Action, Filter, Request, Result, Counter};
//! # #[derive(serde::Deserialize)] struct Config {}
//! # struct Count;
//! # impl Filter for Count {
//! #     type Config = Config;
//! #     fn new(_: &Rc<Config>) -> Self { Count }
//! #     fn on_request_headers(&mut self, _: &mut Request) -> Result<Action> {
//! #         Counter::define("requests")?.increment(1)?;
//! #         Ok(Action::Continue)
//! #     }
//! # }
//! use weft_sdk::testing::{Harness, TestRequest};
//!
//! let harness = Harness::<Count>::new("{}").expect("valid configuration");
//! harness.request(TestRequest::get("/a"));
//! harness.request(TestRequest::post("/b").body("hello"));
//! assert_eq!(harness.counter("requests"), Some(2));
//! ```
//!
//! Several harnesses made with [`Harness::sharing`] share shared data and metrics, the way the
//! instances on a proxy's worker threads do.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weft_abi::{
    Action, BufferType, LogLevel, MapType, MetricType, Status, StreamType, encode_property_i64,
};

use crate::Filter;
use crate::dispatch::{Filters, Instance, exports, swap_instance};
use crate::error::{Error, Result};
use crate::ffi::{HostCalls, Pairs};

thread_local! {
    static INSTALLED: RefCell<Option<Rc<RefCell<TestHost>>>> = const { RefCell::new(None) };
}

/// Runs `f` with the test host installed on this thread, or one that refuses every call.
pub(crate) fn with_installed<T>(f: impl FnOnce(&mut dyn HostCalls) -> T) -> T {
    match INSTALLED.with(|i| i.borrow().clone()) {
        Some(host) => f(&mut *host.borrow_mut()),
        None => f(&mut NoHost),
    }
}

/// A local reply a filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Its status.
    pub status: u16,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl LocalReply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP callout a filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCall {
    /// Its token.
    pub token: u32,
    /// The cluster it went to.
    pub cluster: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// Its timeout.
    pub timeout: Duration,
}

/// A request to run through the filter.
#[derive(Debug, Clone)]
pub struct TestRequest {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    client: String,
    principal: Option<String>,
    properties: Vec<(String, Vec<u8>)>,
}

impl TestRequest {
    /// A request with `method` and `path` (authority `example.com`, scheme `http`).
    pub fn new(method: &str, path: &str) -> Self {
        TestRequest {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
                (":authority".into(), "example.com".into()),
                (":scheme".into(), "http".into()),
            ],
            body: Vec::new(),
            client: "127.0.0.1:40000".into(),
            principal: None,
            properties: Vec::new(),
        }
    }

    /// A GET of `path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A POST to `path`.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Adds a header (a pseudo-header replaces the default).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if name.starts_with(':') {
            self.headers.retain(|(n, _)| *n != name);
        }
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body (delivered in one piece, with end of stream).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the client address (`source.address`, default `127.0.0.1:40000`).
    pub fn client(mut self, address: &str) -> Self {
        self.client = address.into();
        self
    }

    /// Sets the verified mTLS identity of the client (`weft.peer_principal`).
    pub fn principal(mut self, spiffe_id: &str) -> Self {
        self.principal = Some(spiffe_id.into());
        self
    }

    /// Sets any other property (path segments joined with `.`).
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((path.into(), value.into()));
        self
    }
}

/// A response to run through the filter's response phases.
#[derive(Debug, Clone)]
pub struct TestResponse {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl TestResponse {
    /// A response with `status`.
    pub fn new(status: u16) -> Self {
        TestResponse {
            headers: vec![(":status".into(), status.to_string())],
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// A filter's configured root, ready to run requests.
pub struct Harness<F: Filter> {
    host: Rc<RefCell<TestHost>>,
    instance: RefCell<Instance>,
    /// The filters and configuration, as a module's static holds them.
    filters: RefCell<Filters<F>>,
    root: u32,
    next_context: Cell<u32>,
}

impl<F: Filter> Harness<F> {
    /// Configures the filter with `config` (JSON, as the proxy passes it); `Err` is what the
    /// proxy would reject the configuration with.
    pub fn new(config: &str) -> Result<Self, String> {
        Self::with_host(config, TestHost::new(Shared::default()))
    }

    /// Another instance of the filter in the same proxy as `other`: they share shared data,
    /// metrics and the clock's current time.
    pub fn sharing<G: Filter>(other: &Harness<G>, config: &str) -> Result<Self, String> {
        let (shared, now) = {
            let host = other.host.borrow();
            (host.shared.clone(), host.now)
        };
        let mut host = TestHost::new(shared);
        host.now = now;
        Self::with_host(config, host)
    }

    fn with_host(config: &str, mut host: TestHost) -> Result<Self, String> {
        host.configuration = config.as_bytes().to_vec();
        let harness = Harness {
            host: Rc::new(RefCell::new(host)),
            instance: RefCell::new(Instance::default()),
            filters: RefCell::new(Filters::new()),
            root: 1,
            next_context: Cell::new(2),
        };
        let size = config.len();
        let configured = harness.call(1, |all| {
            exports::on_context_create(all, 1, 0);
            exports::on_vm_start(1, 0);
            exports::on_configure(all, 1, size)
        });
        if configured == 1 {
            Ok(harness)
        } else {
            let logs = harness.logs();
            Err(logs
                .iter()
                .rev()
                .find(|(level, _)| (*level as u32) >= LogLevel::Error as u32)
                .map(|(_, line)| line.clone())
                .unwrap_or_else(|| "configuration refused".into()))
        }
    }

    /// Runs `f` as the host calling into the module, with `effective` as effective context.
    fn call<R>(&self, effective: u32, f: impl FnOnce(&RefCell<Filters<F>>) -> R) -> R {
        self.host.borrow_mut().effective = effective;
        let previous = INSTALLED.with(|i| i.borrow_mut().replace(self.host.clone()));
        swap_instance(&mut self.instance.borrow_mut());
        let result = f(&self.filters);
        swap_instance(&mut self.instance.borrow_mut());
        INSTALLED.with(|i| *i.borrow_mut() = previous);
        result
    }

    /// Sends `request` through the request phases: headers, then the body if it has one and
    /// the headers phase went on.
    pub fn request(&self, request: TestRequest) -> Exchange<'_, F> {
        let ctx = self.next_context.get();
        self.next_context.set(ctx + 1);
        let body = request.body.clone();
        {
            let mut host = self.host.borrow_mut();
            let started = host.now;
            host.streams.insert(ctx, StreamState::new(request, started));
        }
        let eos = u32::from(body.is_empty());
        let mut action = self.call(ctx, |all| {
            exports::on_context_create(all, ctx, self.root);
            exports::on_request_headers(all, ctx, 0, eos)
        });
        if action == 0 && !body.is_empty() {
            self.with_stream(ctx, |s| s.request_body = body.clone());
            action = self.call(ctx, |all| exports::on_request_body(all, ctx, body.len(), 1));
        }
        Exchange {
            harness: self,
            ctx,
            action: Cell::new(Action::from_guest_lenient(action)),
            finished: Cell::new(false),
        }
    }

    fn with_stream<R>(&self, ctx: u32, f: impl FnOnce(&mut StreamState) -> R) -> Option<R> {
        self.host.borrow_mut().streams.get_mut(&ctx).map(f)
    }

    /// Moves the clock forward by `by`, firing the filter's timer on the way.
    pub fn advance(&self, by: Duration) {
        let target = {
            let host = self.host.borrow();
            host.now
                .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX))
        };
        loop {
            let next = self.host.borrow().next_tick;
            match next {
                Some(at) if at <= target => {
                    self.host.borrow_mut().now = at;
                    {
                        let mut host = self.host.borrow_mut();
                        host.next_tick = host.tick_period.map(|p| at + p);
                    }
                    self.call(self.root, |all| exports::on_tick(all, self.root));
                }
                _ => break,
            }
        }
        self.host.borrow_mut().now = target;
    }

    /// The callouts sent so far and not answered.
    pub fn http_calls(&self) -> Vec<SentCall> {
        self.host.borrow().calls.clone()
    }

    /// Answers callout `token` (`None`: the call failed) and runs the filter's
    /// `on_http_call_response`.
    pub fn answer_http_call(&self, token: u32, response: Option<TestResponse>) {
        let (headers, body) = match response {
            Some(r) => (r.headers, r.body),
            None => (Vec::new(), Vec::new()),
        };
        let (count, size) = (headers.len(), body.len());
        {
            let mut host = self.host.borrow_mut();
            host.calls.retain(|c| c.token != token);
            host.answer = Some((
                headers
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect(),
                body,
            ));
        }
        self.call(self.root, |all| {
            exports::on_http_call_response(all, self.root, token, count, size, 0)
        });
        self.host.borrow_mut().answer = None;
    }

    /// The value of counter `name` (the full name, labels included), if defined.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.metric(name, MetricType::Counter)
            .map(|m| m.value.max(0).unsigned_abs())
    }

    /// The value of gauge `name`, if defined.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.metric(name, MetricType::Gauge).map(|m| m.value)
    }

    /// The samples histogram `name` recorded, if defined.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.metric(name, MetricType::Histogram).map(|m| m.samples)
    }

    fn metric(&self, name: &str, kind: MetricType) -> Option<MetricValue> {
        let host = self.host.borrow();
        let metrics = host.shared.metrics.borrow();
        metrics
            .iter()
            .find(|m| m.name == name && m.kind == kind)
            .cloned()
    }

    /// Every metric name defined so far.
    pub fn metric_names(&self) -> Vec<String> {
        let host = self.host.borrow();
        let metrics = host.shared.metrics.borrow();
        metrics.iter().map(|m| m.name.clone()).collect()
    }

    /// The value at shared-data `key`.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        let host = self.host.borrow();
        let data = host.shared.data.borrow();
        data.get(key).map(|(v, _)| v.clone())
    }

    /// Every log line the filter wrote, in order.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.host.borrow().logs.clone()
    }

    /// The current tick period the filter asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.host.borrow().tick_period.map(Duration::from_nanos)
    }
}

/// One request through the filter. Dropping it ends the exchange (`on_log`, `on_delete`) if
/// [`Exchange::finish`] did not.
pub struct Exchange<'h, F: Filter> {
    harness: &'h Harness<F>,
    ctx: u32,
    action: Cell<Action>,
    finished: Cell<bool>,
}

impl<F: Filter> Exchange<'_, F> {
    /// What the last phase returned.
    pub fn action(&self) -> Action {
        self.action.get()
    }

    fn stream<R>(&self, f: impl FnOnce(&StreamState) -> R) -> Option<R> {
        self.harness.host.borrow().streams.get(&self.ctx).map(f)
    }

    /// The local reply the filter sent, if any.
    pub fn local_reply(&self) -> Option<LocalReply> {
        self.stream(|s| s.local_reply.clone()).flatten()
    }

    /// Request header `name` as the upstream would see it.
    pub fn request_header(&self, name: &str) -> Option<String> {
        self.stream(|s| find_bytes(&s.request_headers, name))
            .flatten()
    }

    /// Every request header as the upstream would see it.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        self.stream(|s| text_pairs(&s.request_headers))
            .unwrap_or_default()
    }

    /// The request body as the upstream would see it.
    pub fn request_body(&self) -> Vec<u8> {
        self.stream(|s| s.request_body.clone()).unwrap_or_default()
    }

    /// The cluster the filter chose (`weft.upstream_cluster`), if any.
    pub fn cluster(&self) -> Option<String> {
        self.property("weft.upstream_cluster")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// A property the filter set on this request (path segments joined with `.`).
    pub fn property(&self, path: &str) -> Option<Vec<u8>> {
        self.stream(|s| s.properties.get(path).cloned()).flatten()
    }

    /// Whether the filter resumed the paused request (`proxy_continue_stream`).
    pub fn resumed(&self) -> bool {
        self.stream(|s| s.resumed[0]).unwrap_or(false)
    }

    /// Runs the response phases with `response`: headers, then the body if it has one.
    pub fn respond(&self, response: TestResponse) -> Action {
        let body = response.body.clone();
        self.harness.with_stream(self.ctx, |s| {
            s.response_headers = response
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect();
        });
        let ctx = self.ctx;
        let eos = u32::from(body.is_empty());
        let mut action = self
            .harness
            .call(ctx, |all| exports::on_response_headers(all, ctx, 0, eos));
        if action == 0 && !body.is_empty() {
            self.harness
                .with_stream(ctx, |s| s.response_body = body.clone());
            action = self.harness.call(ctx, |all| {
                exports::on_response_body(all, ctx, body.len(), 1)
            });
        }
        let action = Action::from_guest_lenient(action);
        self.action.set(action);
        action
    }

    /// Response header `name` as the client would see it.
    pub fn response_header(&self, name: &str) -> Option<String> {
        self.stream(|s| find_bytes(&s.response_headers, name))
            .flatten()
    }

    /// The response body as the client would see it.
    pub fn response_body(&self) -> Vec<u8> {
        self.stream(|s| s.response_body.clone()).unwrap_or_default()
    }

    /// Ends the exchange: `on_log`, `on_done`, `on_delete`.
    pub fn finish(&self) {
        if self.finished.replace(true) {
            return;
        }
        let ctx = self.ctx;
        self.harness.call(ctx, |all| {
            exports::on_log(all, ctx);
            exports::on_done(ctx);
            exports::on_delete(all, ctx);
        });
    }
}

impl<F: Filter> Drop for Exchange<'_, F> {
    fn drop(&mut self) {
        self.finish();
        self.harness.host.borrow_mut().streams.remove(&self.ctx);
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A property path in the ABI's encoding as the test host keys it: segments joined with `.`.
fn dotted(path: &[u8]) -> String {
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    String::from_utf8_lossy(path).replace('\0', ".")
}

fn find_bytes(pairs: &Pairs, name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn text_pairs(pairs: &Pairs) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[derive(Debug, Clone)]
struct MetricValue {
    name: String,
    kind: MetricType,
    value: i64,
    samples: Vec<u64>,
}

/// Shared data: value and CAS token by key.
type SharedData = HashMap<String, (Vec<u8>, u32)>;

/// What the instances of one simulated proxy share.
#[derive(Default, Clone)]
struct Shared {
    data: Rc<RefCell<SharedData>>,
    metrics: Rc<RefCell<Vec<MetricValue>>>,
}

struct StreamState {
    request_headers: Pairs,
    request_body: Vec<u8>,
    response_headers: Pairs,
    response_body: Vec<u8>,
    properties: HashMap<String, Vec<u8>>,
    local_reply: Option<LocalReply>,
    resumed: [bool; 2],
    started: u64,
}

impl StreamState {
    fn new(request: TestRequest, started: u64) -> Self {
        let mut properties: HashMap<String, Vec<u8>> = request.properties.into_iter().collect();
        properties.insert("source.address".into(), request.client.into_bytes());
        if let Some(principal) = request.principal {
            properties.insert("weft.peer_principal".into(), principal.into_bytes());
        }
        StreamState {
            request_headers: request
                .headers
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
            request_body: Vec::new(),
            response_headers: Vec::new(),
            response_body: Vec::new(),
            properties,
            local_reply: None,
            resumed: [false; 2],
            started,
        }
    }

    fn map(&mut self, kind: MapType) -> Option<&mut Pairs> {
        match kind {
            MapType::HttpRequestHeaders => Some(&mut self.request_headers),
            MapType::HttpResponseHeaders => Some(&mut self.response_headers),
            _ => None,
        }
    }
}

/// The in-process host.
struct TestHost {
    now: u64,
    effective: u32,
    streams: HashMap<u32, StreamState>,
    configuration: Vec<u8>,
    shared: Shared,
    logs: Vec<(LogLevel, String)>,
    tick_period: Option<u64>,
    next_tick: Option<u64>,
    calls: Vec<SentCall>,
    next_token: u32,
    answer: Option<(Pairs, Vec<u8>)>,
    root_properties: HashMap<String, Vec<u8>>,
    random: u64,
}

impl TestHost {
    fn new(shared: Shared) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        TestHost {
            now,
            effective: 1,
            streams: HashMap::new(),
            configuration: Vec::new(),
            shared,
            logs: Vec::new(),
            tick_period: None,
            next_tick: None,
            calls: Vec::new(),
            next_token: 0,
            answer: None,
            root_properties: HashMap::new(),
            random: 0x853c_49e6_748f_ea9b,
        }
    }

    fn stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective)
    }

    fn map(&mut self, kind: MapType) -> Result<&mut Pairs> {
        if matches!(kind, MapType::HttpCallResponseHeaders) {
            return match &mut self.answer {
                Some((headers, _)) => Ok(headers),
                None => Err(bad("proxy_get_header_map_pairs")),
            };
        }
        self.stream()
            .and_then(|s| s.map(kind))
            .ok_or_else(|| bad("proxy_get_header_map_pairs"))
    }

    /// Properties the host derives from the stream, as Envoy encodes them.
    fn derived_property(&self, stream: &StreamState, path: &str) -> Option<Vec<u8>> {
        let request = |name: &str| find_bytes(&stream.request_headers, name);
        let path_header = request(":path").unwrap_or_default();
        let size = |n: usize| encode_property_i64(i64::try_from(n).unwrap_or(i64::MAX)).to_vec();
        Some(match path {
            "request.path" => path_header.into_bytes(),
            "request.url_path" => path_header
                .split('?')
                .next()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            "request.query" => path_header
                .split_once('?')
                .map(|(_, q)| q.as_bytes().to_vec())
                .unwrap_or_default(),
            "request.method" => request(":method")?.into_bytes(),
            "request.host" => request(":authority")?.into_bytes(),
            "request.scheme" => request(":scheme")?.into_bytes(),
            "request.id" => request("x-request-id")?.into_bytes(),
            "request.time" => {
                encode_property_i64(i64::try_from(stream.started).unwrap_or(i64::MAX)).to_vec()
            }
            "request.duration" => encode_property_i64(
                i64::try_from(self.now.saturating_sub(stream.started)).unwrap_or(i64::MAX),
            )
            .to_vec(),
            "request.size" => size(stream.request_body.len()),
            "response.size" => size(stream.response_body.len()),
            "response.code" => {
                let status = find_bytes(&stream.response_headers, ":status")
                    .or_else(|| stream.local_reply.as_ref().map(|r| r.status.to_string()))?;
                encode_property_i64(status.parse().ok()?).to_vec()
            }
            "xds.cluster_name" => stream.properties.get("weft.upstream_cluster")?.clone(),
            _ => return None,
        })
    }
}

fn bad(call: &'static str) -> Error {
    Error::Host {
        call,
        status: Status::BadArgument,
    }
}

impl HostCalls for TestHost {
    fn log(&mut self, level: LogLevel, message: &str) -> Result<()> {
        self.logs.push((level, message.to_owned()));
        Ok(())
    }

    fn current_time_nanos(&mut self) -> Result<u64> {
        Ok(self.now)
    }

    fn set_tick_period(&mut self, millis: u32) -> Result<()> {
        if millis == 0 {
            self.tick_period = None;
            self.next_tick = None;
        } else {
            let period = u64::from(millis) * 1_000_000;
            self.tick_period = Some(period);
            self.next_tick = Some(self.now + period);
        }
        Ok(())
    }

    fn get_buffer(&mut self, kind: BufferType, start: usize, max: usize) -> Result<Vec<u8>> {
        let buffer: &[u8] = match kind {
            BufferType::PluginConfiguration => &self.configuration,
            BufferType::HttpCallResponseBody => match &self.answer {
                Some((_, body)) => body,
                None => return Err(bad("proxy_get_buffer_bytes")),
            },
            BufferType::HttpRequestBody => {
                &self
                    .stream()
                    .ok_or_else(|| bad("proxy_get_buffer_bytes"))?
                    .request_body
            }
            BufferType::HttpResponseBody => {
                &self
                    .stream()
                    .ok_or_else(|| bad("proxy_get_buffer_bytes"))?
                    .response_body
            }
            _ => return Err(bad("proxy_get_buffer_bytes")),
        };
        let start = start.min(buffer.len());
        let end = start.saturating_add(max).min(buffer.len());
        Ok(buffer[start..end].to_vec())
    }

    fn set_buffer(
        &mut self,
        kind: BufferType,
        start: usize,
        size: usize,
        value: &[u8],
    ) -> Result<()> {
        let stream = self.stream().ok_or_else(|| bad("proxy_set_buffer_bytes"))?;
        let buffer = match kind {
            BufferType::HttpRequestBody => &mut stream.request_body,
            BufferType::HttpResponseBody => &mut stream.response_body,
            _ => return Err(bad("proxy_set_buffer_bytes")),
        };
        let start = start.min(buffer.len());
        let end = start.saturating_add(size).min(buffer.len());
        buffer.splice(start..end, value.iter().copied());
        Ok(())
    }

    fn get_map(&mut self, kind: MapType) -> Result<Pairs> {
        Ok(self.map(kind)?.clone())
    }

    fn get_map_value(&mut self, kind: MapType, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .map(kind)?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone()))
    }

    fn add_map_value(&mut self, kind: MapType, key: &str, value: &[u8]) -> Result<()> {
        self.map(kind)?
            .push((key.to_ascii_lowercase(), value.to_vec()));
        Ok(())
    }

    fn replace_map_value(&mut self, kind: MapType, key: &str, value: &[u8]) -> Result<()> {
        let map = self.map(kind)?;
        match map.iter().position(|(k, _)| k.eq_ignore_ascii_case(key)) {
            Some(at) => {
                map[at].1 = value.to_vec();
                let mut seen = false;
                map.retain(|(k, _)| {
                    let same = k.eq_ignore_ascii_case(key);
                    let keep = !same || !seen;
                    seen |= same;
                    keep
                });
            }
            None => map.push((key.to_ascii_lowercase(), value.to_vec())),
        }
        Ok(())
    }

    fn remove_map_value(&mut self, kind: MapType, key: &str) -> Result<()> {
        self.map(kind)?
            .retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        Ok(())
    }

    fn get_property(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let joined = dotted(path);
        if joined == "plugin_name" {
            return Ok(Some(b"test".to_vec()));
        }
        match self.streams.get(&self.effective) {
            Some(stream) => Ok(stream
                .properties
                .get(&joined)
                .cloned()
                .or_else(|| self.derived_property(stream, &joined))),
            None => Ok(self.root_properties.get(&joined).cloned()),
        }
    }

    fn set_property(&mut self, path: &[u8], value: &[u8]) -> Result<()> {
        let joined = dotted(path);
        match self.stream() {
            Some(stream) => stream.properties.insert(joined, value.to_vec()),
            None => self.root_properties.insert(joined, value.to_vec()),
        };
        Ok(())
    }

    fn continue_stream(&mut self, kind: StreamType) -> Result<()> {
        let stream = self.stream().ok_or_else(|| bad("proxy_continue_stream"))?;
        match kind {
            StreamType::HttpRequest => stream.resumed[0] = true,
            StreamType::HttpResponse => stream.resumed[1] = true,
            _ => return Err(bad("proxy_continue_stream")),
        }
        Ok(())
    }

    fn send_local_response(
        &mut self,
        status: u32,
        _details: &str,
        body: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        let status = u16::try_from(status).map_err(|_| bad("proxy_send_local_response"))?;
        let stream = self
            .stream()
            .ok_or_else(|| bad("proxy_send_local_response"))?;
        stream.local_reply = Some(LocalReply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn set_effective_context(&mut self, context: u32) -> Result<()> {
        if context == 1 || self.streams.contains_key(&context) {
            self.effective = context;
            Ok(())
        } else {
            Err(bad("proxy_set_effective_context"))
        }
    }

    fn get_shared_data(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32)> {
        let data = self.shared.data.borrow();
        Ok(match data.get(key) {
            Some((value, cas)) => (Some(value.clone()), *cas),
            None => (None, 0),
        })
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: u32) -> Result<()> {
        let mut data = self.shared.data.borrow_mut();
        let current = data.get(key).map_or(0, |(_, c)| *c);
        // As the proxy (and Envoy): CAS 0 always writes, another CAS must be an existing
        // key's current one, and a missing key is created whatever the CAS.
        if cas != 0 && cas != current && data.contains_key(key) {
            return Err(Error::Host {
                call: "proxy_set_shared_data",
                status: Status::CasMismatch,
            });
        }
        data.insert(
            key.to_owned(),
            (value.to_vec(), current.wrapping_add(1).max(1)),
        );
        Ok(())
    }

    fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32> {
        let mut metrics = self.shared.metrics.borrow_mut();
        if let Some(at) = metrics.iter().position(|m| m.name == name) {
            if metrics[at].kind != kind {
                return Err(bad("proxy_define_metric"));
            }
            return u32::try_from(at).map_err(|_| bad("proxy_define_metric"));
        }
        metrics.push(MetricValue {
            name: name.to_owned(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        u32::try_from(metrics.len() - 1).map_err(|_| bad("proxy_define_metric"))
    }

    fn increment_metric(&mut self, id: u32, offset: i64) -> Result<()> {
        let mut metrics = self.shared.metrics.borrow_mut();
        let metric = metrics
            .get_mut(id as usize)
            .ok_or_else(|| bad("proxy_increment_metric"))?;
        match metric.kind {
            MetricType::Counter if offset > 0 => metric.value += offset,
            MetricType::Gauge => metric.value += offset,
            _ => return Err(bad("proxy_increment_metric")),
        }
        Ok(())
    }

    fn record_metric(&mut self, id: u32, value: u64) -> Result<()> {
        let mut metrics = self.shared.metrics.borrow_mut();
        let metric = metrics
            .get_mut(id as usize)
            .ok_or_else(|| bad("proxy_record_metric"))?;
        let as_i64 = i64::try_from(value).unwrap_or(i64::MAX);
        match metric.kind {
            MetricType::Counter => metric.value = metric.value.saturating_add(as_i64),
            MetricType::Gauge => metric.value = as_i64,
            MetricType::Histogram => metric.samples.push(value),
        }
        Ok(())
    }

    fn get_metric(&mut self, id: u32) -> Result<u64> {
        let metrics = self.shared.metrics.borrow();
        let metric = metrics
            .get(id as usize)
            .ok_or_else(|| bad("proxy_get_metric"))?;
        match metric.kind {
            MetricType::Histogram => Err(bad("proxy_get_metric")),
            _ => Ok(metric.value.max(0).unsigned_abs()),
        }
    }

    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout_millis: u32,
    ) -> Result<u32> {
        self.next_token += 1;
        self.calls.push(SentCall {
            token: self.next_token,
            cluster: cluster.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            body: body.to_vec(),
            timeout: Duration::from_millis(u64::from(timeout_millis)),
        });
        Ok(self.next_token)
    }

    fn random_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            chunk.copy_from_slice(&self.random.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The host outside a harness: every call fails.
struct NoHost;

fn no_host(call: &'static str) -> Error {
    Error::Host {
        call,
        status: Status::InternalFailure,
    }
}

impl HostCalls for NoHost {
    fn log(&mut self, _: LogLevel, _: &str) -> Result<()> {
        Err(no_host("proxy_log"))
    }
    fn current_time_nanos(&mut self) -> Result<u64> {
        Err(no_host("proxy_get_current_time_nanoseconds"))
    }
    fn set_tick_period(&mut self, _: u32) -> Result<()> {
        Err(no_host("proxy_set_tick_period_milliseconds"))
    }
    fn get_buffer(&mut self, _: BufferType, _: usize, _: usize) -> Result<Vec<u8>> {
        Err(no_host("proxy_get_buffer_bytes"))
    }
    fn set_buffer(&mut self, _: BufferType, _: usize, _: usize, _: &[u8]) -> Result<()> {
        Err(no_host("proxy_set_buffer_bytes"))
    }
    fn get_map(&mut self, _: MapType) -> Result<Pairs> {
        Err(no_host("proxy_get_header_map_pairs"))
    }
    fn get_map_value(&mut self, _: MapType, _: &str) -> Result<Option<Vec<u8>>> {
        Err(no_host("proxy_get_header_map_value"))
    }
    fn add_map_value(&mut self, _: MapType, _: &str, _: &[u8]) -> Result<()> {
        Err(no_host("proxy_add_header_map_value"))
    }
    fn replace_map_value(&mut self, _: MapType, _: &str, _: &[u8]) -> Result<()> {
        Err(no_host("proxy_replace_header_map_value"))
    }
    fn remove_map_value(&mut self, _: MapType, _: &str) -> Result<()> {
        Err(no_host("proxy_remove_header_map_value"))
    }
    fn get_property(&mut self, _: &[u8]) -> Result<Option<Vec<u8>>> {
        Err(no_host("proxy_get_property"))
    }
    fn set_property(&mut self, _: &[u8], _: &[u8]) -> Result<()> {
        Err(no_host("proxy_set_property"))
    }
    fn continue_stream(&mut self, _: StreamType) -> Result<()> {
        Err(no_host("proxy_continue_stream"))
    }
    fn send_local_response(
        &mut self,
        _: u32,
        _: &str,
        _: &[u8],
        _: &[(&str, &[u8])],
    ) -> Result<()> {
        Err(no_host("proxy_send_local_response"))
    }
    fn set_effective_context(&mut self, _: u32) -> Result<()> {
        Err(no_host("proxy_set_effective_context"))
    }
    fn get_shared_data(&mut self, _: &str) -> Result<(Option<Vec<u8>>, u32)> {
        Err(no_host("proxy_get_shared_data"))
    }
    fn set_shared_data(&mut self, _: &str, _: &[u8], _: u32) -> Result<()> {
        Err(no_host("proxy_set_shared_data"))
    }
    fn define_metric(&mut self, _: MetricType, _: &str) -> Result<u32> {
        Err(no_host("proxy_define_metric"))
    }
    fn increment_metric(&mut self, _: u32, _: i64) -> Result<()> {
        Err(no_host("proxy_increment_metric"))
    }
    fn record_metric(&mut self, _: u32, _: u64) -> Result<()> {
        Err(no_host("proxy_record_metric"))
    }
    fn get_metric(&mut self, _: u32) -> Result<u64> {
        Err(no_host("proxy_get_metric"))
    }
    fn http_call(&mut self, _: &str, _: &[(&str, &[u8])], _: &[u8], _: u32) -> Result<u32> {
        Err(no_host("proxy_http_call"))
    }
    fn random_bytes(&mut self, out: &mut [u8]) {
        crate::host::fallback_random(self, out);
    }
}

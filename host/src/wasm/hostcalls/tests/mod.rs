//! Unit tests for the host functions: every ABI name is defined and every test filter links
//! (here); header maps, buffers, properties and stream control, shared state, callouts and
//! logging (in the submodules), each through the ABI — a WAT guest that re-exports the imports,
//! with a bump allocator — where memory handling matters, else on [`HostData`] directly.

use std::{sync::Arc, time::Duration};

use crate::wasm::context::{EventReceiver, event_queue};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use prometheus::Registry;
use wasmtime::{Linker, Memory, Store, Val};
use weft_abi::{
    BufferType, HOST_FUNCTIONS, HOST_MODULE, MapType, Status, WeftExport, decode_map, encode_map,
    wasi::{WASI_FUNCTIONS, WASI_MODULE},
};

use super::{memory::Fault, *};
use crate::{
    http::{
        headers::client_address_value,
        proxy::{Downstream, TlsInfo},
    },
    wasm::{
        EngineSettings, GuestLimits, WasmHost,
        context::{Exports, ResponseHead, StreamData, StreamEvent, StreamHandle},
        properties::PluginIdentity,
    },
};

/// The context id of the stream lent in these tests.
const STREAM: u32 = 2;
/// Another live stream context, not lent.
const OTHER: u32 = 3;

fn host() -> Arc<WasmHost> {
    let settings = EngineSettings {
        max_instances: 16,
        max_memory_bytes: 16 << 20,
        tick: Duration::from_millis(5),
    };
    WasmHost::new(settings, &Registry::new()).expect("host")
}

fn limits() -> GuestLimits {
    GuestLimits {
        deadline: Duration::from_secs(5),
        memory_bytes: 16 << 20,
    }
}

fn plugin() -> Arc<PluginIdentity> {
    Arc::new(PluginIdentity {
        name: "unit".into(),
        root_id: "unit-root".into(),
        vm_id: "unit-vm".into(),
    })
}

fn linker(host: &WasmHost) -> Linker<GuestState<HostData>> {
    let mut linker = Linker::new(host.runtime.engine());
    add_to_linker(&mut linker).expect("host functions");
    linker
}

/// A `GET /items?page=2` stream to `api.example` with `x-a: 1`, `x-a: 2`, `x-b: b`, and the
/// receiving end of its events.
fn stream() -> (StreamData, EventReceiver) {
    let client = "10.0.0.1:5000".parse().expect("addr");
    let mut request_headers = HeaderMap::new();
    request_headers.append("x-a", HeaderValue::from_static("1"));
    request_headers.append("x-a", HeaderValue::from_static("2"));
    request_headers.append("x-b", HeaderValue::from_static("b"));
    let downstream = Downstream {
        listener: "test".into(),
        peer: client,
        client_address: client_address_value(client.ip()),
        local: "127.0.0.1:8080".parse().expect("addr"),
        tls: Some(TlsInfo {
            version: "TLSv1.3",
            peer: None,
        }),
    };
    stream_data(downstream, "/items?page=2", request_headers)
}

/// An HTTPS `GET` of `path` to `api.example` over HTTP/1.1 from `downstream`, with
/// `request_headers`, before any response; and the receiving end of its events. The
/// properties tests build their streams with it too.
pub(in crate::wasm) fn stream_data(
    downstream: Downstream,
    path: &'static str,
    request_headers: HeaderMap,
) -> (StreamData, EventReceiver) {
    let (events, receiver) = event_queue();
    let stream = StreamData {
        downstream: Arc::new(downstream),
        started: std::time::UNIX_EPOCH,
        version: Version::HTTP_11,
        method: Method::GET,
        scheme: "https",
        authority: HeaderValue::from_static("api.example"),
        path: Bytes::from_static(path.as_bytes()),
        request_headers,
        request_trailers: None,
        request_body: BytesMut::new(),
        response: None,
        response_trailers: None,
        response_body: BytesMut::new(),
        properties: Default::default(),
        request_body_bytes: 0,
        response_body_bytes: 0,
        cluster: None,
        duration: None,
        local_response: None,
        resumed: [false; 2],
        closed: false,
        events,
    };
    (stream, receiver)
}

/// Instance state with the stream lent as context [`STREAM`], effective; and context
/// [`OTHER`] live but not lent.
struct Fixture {
    data: HostData,
    events: EventReceiver,
    other: EventReceiver,
}

fn fixture(host: &Arc<WasmHost>) -> Fixture {
    let mut data = HostData::new(
        host.clone(),
        plugin(),
        Bytes::from_static(b"{\"plugin\":true}"),
        Bytes::from_static(b"vm-config"),
    );
    let (stream, events) = stream();
    data.streams.insert(
        STREAM,
        StreamHandle {
            events: stream.events.clone(),
            slot: 0,
        },
    );
    let (other_events, other) = event_queue();
    data.streams.insert(
        OTHER,
        StreamHandle {
            events: other_events,
            slot: 1,
        },
    );
    data.stream = Some(Box::new(stream));
    data.stream_context = STREAM;
    data.effective = STREAM;
    Fixture {
        data,
        events,
        other,
    }
}

fn lent(data: &mut HostData) -> &mut StreamData {
    data.stream.as_deref_mut().expect("a lent stream")
}

// ---------------------------------------------------------------------------------------------
// Linking.

#[tokio::test]
async fn every_abi_function_is_defined() {
    let host = host();
    let linker = linker(&host);
    let mut store = host
        .runtime
        .store(GuestState::new(limits(), fixture(&host).data));
    for name in HOST_FUNCTIONS {
        assert!(
            linker.get(&mut store, HOST_MODULE, name).is_ok(),
            "{HOST_MODULE}.{name} is not defined"
        );
    }
    for name in WASI_FUNCTIONS {
        assert!(
            linker.get(&mut store, WASI_MODULE, name).is_ok(),
            "{WASI_MODULE}.{name} is not defined"
        );
    }
}

#[test]
fn every_test_filter_links_against_the_host_functions() {
    let host = host();
    let linker = linker(&host);
    assert!(!weft_test_artifacts::ALL.is_empty());
    for &(name, target, path) in weft_test_artifacts::ALL {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let module = host.runtime.compile(&bytes).expect("compiles");
        if let Err(e) = linker.instantiate_pre(&module.module) {
            panic!("{name} ({target}) does not link: {e:#}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A guest that re-exports the host functions, to call them through the ABI.

const GUEST: &str = r#"
(module
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 32768))
  (global $allocations (export "allocations") (mut i32) (i32.const 0))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    global.get $allocations
    i32.const 1
    i32.add
    global.set $allocations
    global.get $next
    local.set $at
    global.get $next
    local.get $size
    i32.add
    global.set $next
    local.get $at)
  (export "proxy_get_header_map_value" (func $get_value))
  (export "proxy_get_header_map_pairs" (func $get_pairs))
  (export "proxy_get_buffer_bytes" (func $get_buffer))
  (export "proxy_get_property" (func $get_property))
  (export "proxy_set_property" (func $set_property))
  (export "proxy_get_shared_data" (func $get_shared))
  (export "proxy_set_shared_data" (func $set_shared))
  (export "proxy_http_call" (func $http_call))
  (export "proxy_grpc_call" (func $grpc_call))
  (export "proxy_send_local_response" (func $local))
  (export "proxy_log" (func $log))
  (export "fd_write" (func $fd_write))
)
"#;

/// Where the tests put arguments, and where the host writes pointers and sizes.
const ARG: u32 = 1024;
const ARG2: u32 = 2048;
const ARG3: u32 = 3072;
const RET_PTR: u32 = 16;
const RET_SIZE: u32 = 20;
const RET_CAS: u32 = 24;
/// Past the end of the guest's one page.
const OUT_OF_BOUNDS: u32 = 70_000;

struct Guest {
    store: Store<GuestState<HostData>>,
    instance: wasmtime::Instance,
    memory: Memory,
    events: EventReceiver,
    other: EventReceiver,
}

async fn guest(host: &Arc<WasmHost>) -> Guest {
    guest_from(host, GUEST).await
}

/// A guest of module `wat` (which has [`GUEST`]'s exports), with its host buffer resolved as
/// an instance resolves it after its start function.
async fn guest_from(host: &Arc<WasmHost>, wat: &str) -> Guest {
    let module = host.runtime.compile(wat.as_bytes()).expect("compiles");
    let Fixture {
        data,
        events,
        other,
    } = fixture(host);
    let mut store = host.runtime.store(GuestState::new(limits(), data));
    let instance = linker(host)
        .instantiate(&mut store, &module.module)
        .expect("instantiates");
    let memory = instance.get_memory(&mut store, "memory").expect("memory");
    let allocate = instance
        .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
        .expect("allocator");
    let host_buffer = match instance
        .get_typed_func::<(), u64>(&mut store, WeftExport::HostBuffer.name())
        .ok()
    {
        Some(export) => {
            let bits = export.call(&mut store, ()).expect("returns");
            host_buffer_region(bits, memory.data_size(&store)).ok()
        }
        None => None,
    };
    store.data_mut().data.exports = Some(Exports {
        memory,
        allocate: Some(allocate),
        on_context_create: None,
        on_vm_start: None,
        on_configure: None,
        on_tick: None,
        on_queue_ready: None,
        on_request_headers: None,
        on_request_body: None,
        on_request_trailers: None,
        on_response_headers: None,
        on_response_body: None,
        on_response_trailers: None,
        on_log: None,
        on_done: None,
        on_delete: None,
        on_http_call_response: None,
        on_grpc_receive_initial_metadata: None,
        on_grpc_receive: None,
        on_grpc_receive_trailing_metadata: None,
        on_grpc_close: None,
    });
    store.data_mut().data.host_buffer = host_buffer;
    Guest {
        store,
        instance,
        memory,
        events,
        other,
    }
}

impl Guest {
    fn data(&mut self) -> &mut HostData {
        &mut self.store.data_mut().data
    }

    fn put(&mut self, at: u32, bytes: &[u8]) {
        self.memory
            .write(&mut self.store, at as usize, bytes)
            .expect("in bounds");
    }

    fn bytes(&self, at: u32, len: u32) -> Vec<u8> {
        let data = self.memory.data(&self.store);
        data[at as usize..(at + len) as usize].to_vec()
    }

    fn word(&self, at: u32) -> u32 {
        let b = self.bytes(at, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// How many times the host called the guest's allocator.
    fn allocations(&mut self) -> u32 {
        let global = self
            .instance
            .get_global(&mut self.store, "allocations")
            .expect("the allocation counter");
        global.get(&mut self.store).unwrap_i32() as u32
    }

    /// What the host handed back through `RET_PTR` / `RET_SIZE`.
    fn returned(&self) -> Vec<u8> {
        let (ptr, size) = (self.word(RET_PTR), self.word(RET_SIZE));
        if size == 0 {
            assert_eq!(ptr, 0, "empty data is address 0");
            return Vec::new();
        }
        self.bytes(ptr, size)
    }

    /// Calls the re-exported host function `name`; returns the status it returned.
    async fn call(&mut self, name: &str, params: &[u32]) -> u32 {
        let func = self
            .instance
            .get_func(&mut self.store, name)
            .unwrap_or_else(|| panic!("{name} is exported"));
        let params: Vec<Val> = params.iter().map(|&p| Val::I32(p as i32)).collect();
        let mut results = [Val::I32(-1)];
        func.call(&mut self.store, &params, &mut results)
            .unwrap_or_else(|e| panic!("{name} trapped: {e:#}"));
        results[0].unwrap_i32() as u32
    }

    /// Puts `key` at `ARG` and reads it from `map`.
    async fn header(&mut self, map: MapType, key: &str) -> Result<Vec<u8>, u32> {
        self.put(ARG, key.as_bytes());
        let status = self
            .call(
                "proxy_get_header_map_value",
                &[map as u32, ARG, key.len() as u32, RET_PTR, RET_SIZE],
            )
            .await;
        if status == Status::Ok as u32 {
            Ok(self.returned())
        } else {
            Err(status)
        }
    }
}

const OK: u32 = Status::Ok as u32;
const NOT_FOUND: u32 = Status::NotFound as u32;
const BAD_ARGUMENT: u32 = Status::BadArgument as u32;
const INVALID_MEMORY_ACCESS: u32 = Status::InvalidMemoryAccess as u32;

mod bodies;
mod calls;
mod headers;
mod host_buffer;
mod state;

//! weft's host buffer ([`weft_abi::HostBuffer`]): data a host function returns goes to the
//! guest's buffer without a call of its allocator when it fits; a guest without one, data
//! that does not fit and a region a host may not write all go through the allocator.

use weft_abi::HostBuffer;

use super::*;
use crate::wasm::instance::{Instance, InstanceSpec};

/// The region the buffer guests export: inside their one page, clear of the test's arguments
/// (below 4 KiB) and of the bump allocator (from 32 KiB).
const REGION: HostBuffer = HostBuffer {
    ptr: 8192,
    len: 4096,
};

/// [`GUEST`] plus `weft_host_buffer` returning `bits`, its memory `pages` long.
fn buffer_guest(bits: u64, pages: u32) -> String {
    let body = GUEST
        .trim_end()
        .strip_suffix(')')
        .expect("a module")
        .replace(
            r#"(memory (export "memory") 1)"#,
            &format!(r#"(memory (export "memory") {pages})"#),
        );
    format!("{body}  (func (export \"weft_host_buffer\") (result i64) i64.const {bits})\n)\n")
}

#[tokio::test]
async fn data_goes_to_the_host_buffer_without_the_allocator() {
    let host = host();
    let mut guest = guest_from(&host, &buffer_guest(REGION.to_bits(), 1)).await;
    let request = MapType::HttpRequestHeaders;

    assert_eq!(guest.header(request, "x-b").await, Ok(b"b".to_vec()));
    assert_eq!(guest.word(RET_PTR), REGION.ptr, "at the buffer's start");
    assert_eq!(
        guest
            .call("proxy_get_header_map_pairs", &[0, RET_PTR, RET_SIZE])
            .await,
        OK
    );
    assert_eq!(guest.word(RET_PTR), REGION.ptr, "every call starts over");
    let pairs = guest.returned();
    let decoded = decode_map(&pairs).expect("a map");
    assert_eq!(decoded[0], (&b":authority"[..], &b"api.example"[..]));

    // proxy_get_shared_data writes its CAS too; proxy_get_property.
    guest.put(ARG, b"k");
    guest.put(ARG2, b"shared value");
    assert_eq!(
        guest
            .call("proxy_set_shared_data", &[ARG, 1, ARG2, 12, 0])
            .await,
        OK
    );
    assert_eq!(
        guest
            .call(
                "proxy_get_shared_data",
                &[ARG, 1, RET_PTR, RET_SIZE, RET_CAS]
            )
            .await,
        OK
    );
    assert_eq!(guest.word(RET_PTR), REGION.ptr);
    assert_eq!(guest.returned(), b"shared value");
    assert_ne!(guest.word(RET_CAS), 0, "the CAS is written as well");
    guest.put(ARG, b"plugin_name");
    assert_eq!(
        guest
            .call("proxy_get_property", &[ARG, 11, RET_PTR, RET_SIZE])
            .await,
        OK
    );
    assert_eq!(guest.word(RET_PTR), REGION.ptr);
    assert_eq!(guest.returned(), b"unit");
    assert_eq!(guest.allocations(), 0, "the allocator was never called");

    // Data that does not fit is allocated as before; the buffer serves the next call again.
    let big = vec![b'v'; REGION.len as usize + 1];
    lent(guest.data())
        .request_headers
        .insert("x-big", HeaderValue::from_bytes(&big).expect("a value"));
    assert_eq!(guest.header(request, "x-big").await, Ok(big));
    assert_eq!(guest.allocations(), 1);
    assert!(guest.word(RET_PTR) >= 32768, "from the bump allocator");
    let exact = vec![b'e'; REGION.len as usize];
    lent(guest.data())
        .request_headers
        .insert("x-exact", HeaderValue::from_bytes(&exact).expect("a value"));
    assert_eq!(guest.header(request, "x-exact").await, Ok(exact));
    assert_eq!(guest.word(RET_PTR), REGION.ptr, "fills the buffer exactly");
    assert_eq!(guest.allocations(), 1);
}

#[tokio::test]
async fn a_guest_without_the_export_gets_allocated_memory() {
    let host = host();
    let mut guest = guest(&host).await;
    assert_eq!(
        guest.header(MapType::HttpRequestHeaders, "x-b").await,
        Ok(b"b".to_vec())
    );
    assert_eq!(guest.allocations(), 1);
    assert!(guest.word(RET_PTR) >= 32768, "from the bump allocator");
    assert_eq!(
        guest.header(MapType::HttpRequestHeaders, "x-missing").await,
        Err(NOT_FOUND)
    );
    assert_eq!(
        guest.allocations(),
        1,
        "nothing to hand over, nothing allocated"
    );
}

/// Regions a host may not write, each with a linear memory of `pages`, and why.
fn bad_regions() -> [(u64, u32, &'static str); 6] {
    let bits = |ptr, len| HostBuffer { ptr, len }.to_bits();
    [
        (bits(65536 - 100, 4096), 1, "runs past the end of memory"),
        (bits(70_000, 16), 1, "starts past the end of memory"),
        (bits(4096, HostBuffer::MAX_LEN + 1), 3, "longer than 64 KiB"),
        (bits(8192, 0), 1, "empty"),
        (bits(0, 4096), 1, "at address 0"),
        (bits(u32::MAX - 10, 4096), 1, "wraps around"),
    ]
}

#[tokio::test]
async fn a_region_a_host_may_not_write_is_ignored() {
    let host = host();
    for (bits, pages, why) in bad_regions() {
        let memory_len = pages as usize * 65536;
        assert!(host_buffer_region(bits, memory_len).is_err(), "{why}");
        let mut guest = guest_from(&host, &buffer_guest(bits, pages)).await;
        assert_eq!(
            guest.header(MapType::HttpRequestHeaders, "x-b").await,
            Ok(b"b".to_vec()),
            "{why}"
        );
        assert_eq!(guest.allocations(), 1, "{why}: the allocator serves");
    }
    let largest = HostBuffer {
        ptr: 65536,
        len: HostBuffer::MAX_LEN,
    };
    assert_eq!(
        host_buffer_region(largest.to_bits(), 2 * 65536),
        Ok(largest),
        "64 KiB ending at the end of memory"
    );
}

// ---------------------------------------------------------------------------------------------
// Through an instance's start: the export is called after the start function and the region
// serves `proxy_on_configure`.

/// A module whose `proxy_on_configure` reads its configuration and answers whether it landed
/// at [`REGION`]; its allocator traps. `weft_host_buffer` returns `bits`.
fn configure_guest(bits: u64) -> String {
    format!(
        r#"
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $started (mut i32) (i32.const 0))
  (func (export "_initialize") (global.set $started (i32.const 1)))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) unreachable)
  (func (export "weft_host_buffer") (result i64)
    ;; Only after the start function.
    (if (i32.eqz (global.get $started)) (then unreachable))
    i64.const {bits})
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20))
      (then (return (i32.const 0))))
    (i32.and
      (i32.eq (i32.load (i32.const 16)) (i32.const {ptr}))
      (i32.eq (i32.load (i32.const 20)) (local.get $size))))
)
"#,
        ptr = REGION.ptr,
    )
}

async fn start(host: &Arc<WasmHost>, wat: &str) -> Result<Arc<Instance>, String> {
    let module = host.runtime.compile(wat.as_bytes()).expect("compiles");
    let pre = host.linker.instantiate_pre(&module.module).expect("links");
    let spec = InstanceSpec {
        plugin: "unit".into(),
        identity: plugin(),
        configuration: Bytes::from_static(b"{\"plugin\":true}"),
        limits: limits(),
    };
    Instance::start(host, &pre, &spec)
        .await
        .map_err(|failure| failure.detail)
}

#[tokio::test]
async fn an_instance_resolves_its_host_buffer_after_its_start_function() {
    let host = host();
    let instance = start(&host, &configure_guest(REGION.to_bits()))
        .await
        .expect("configured from the host buffer, with no allocation");
    assert_eq!(instance.host_buffer().await, Some(REGION));
}

#[tokio::test]
async fn an_instance_ignores_a_region_a_host_may_not_write() {
    let host = host();
    for (bits, pages, why) in bad_regions() {
        if pages != 1 {
            continue;
        }
        let failure = start(&host, &configure_guest(bits))
            .await
            .err()
            .unwrap_or_else(|| panic!("{why}: the trapping allocator was not called"));
        assert!(failure.contains("proxy_on_configure"), "{why}: {failure}");
    }
}

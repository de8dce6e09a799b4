//! Golden lists of the v0.2.1 names, written out from the spec independently of the tables.

use super::*;

/// The "Functions exposed by the host" of the v0.2.1 spec, in its order.
const SPEC_HOST_FUNCTIONS: [&str; 39] = [
    "proxy_done",
    "proxy_set_effective_context",
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_get_header_map_size",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_get_status",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_set_shared_data",
    "proxy_get_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_define_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
    "proxy_get_metric",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_call_foreign_function",
];

/// The "Callbacks exposed by the Wasm module" of the v0.2.1 spec, in its order.
const SPEC_GUEST_EXPORTS: [&str; 31] = [
    "proxy_abi_version_0_2_1",
    "_initialize",
    "main",
    "_start",
    "proxy_on_memory_allocate",
    "malloc",
    "proxy_on_context_create",
    "proxy_on_done",
    "proxy_on_log",
    "proxy_on_delete",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_data",
    "proxy_on_upstream_connection_close",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_queue_ready",
    "proxy_on_foreign_function",
];

/// The host functions the Rust SDK (`proxy-wasm` 0.2.5, `src/hostcalls.rs`) imports.
const RUST_SDK_IMPORTS: [&str; 37] = [
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

/// The functions the Rust SDK (`proxy-wasm` 0.2.5) exports.
const RUST_SDK_EXPORTS: [&str; 28] = [
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_context_create",
    "proxy_on_done",
    "proxy_on_log",
    "proxy_on_delete",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_queue_ready",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_data",
    "proxy_on_upstream_connection_close",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_foreign_function",
];

#[test]
fn host_functions_match_the_spec() {
    assert_eq!(HOST_FUNCTIONS, SPEC_HOST_FUNCTIONS);
    for (function, name) in HostFunction::ALL.iter().zip(SPEC_HOST_FUNCTIONS) {
        assert_eq!(function.name(), name);
        assert_eq!(HostFunction::from_name(name), Some(*function));
        assert_eq!(function.to_string(), name);
    }
}

#[test]
fn guest_exports_match_the_spec() {
    assert_eq!(GUEST_EXPORTS, SPEC_GUEST_EXPORTS);
    for (export, name) in GuestExport::ALL.iter().zip(SPEC_GUEST_EXPORTS) {
        assert_eq!(export.name(), name);
        assert_eq!(GuestExport::from_name(name), Some(*export));
    }
}

#[test]
fn names_are_unique() {
    let mut host = HOST_FUNCTIONS.to_vec();
    host.sort_unstable();
    host.dedup();
    assert_eq!(host.len(), 39);
    let mut guest = GUEST_EXPORTS.to_vec();
    guest.sort_unstable();
    guest.dedup();
    assert_eq!(guest.len(), 31);
}

#[test]
fn every_rust_sdk_import_is_a_host_function() {
    for name in RUST_SDK_IMPORTS {
        assert!(HostFunction::from_name(name).is_some(), "{name}");
    }
    // The two the SDK never imports.
    let unused: Vec<&str> = HOST_FUNCTIONS
        .into_iter()
        .filter(|name| !RUST_SDK_IMPORTS.contains(name))
        .collect();
    assert_eq!(
        unused,
        ["proxy_get_buffer_status", "proxy_get_header_map_size"]
    );
}

#[test]
fn every_rust_sdk_export_is_a_guest_export() {
    for name in RUST_SDK_EXPORTS {
        assert!(GuestExport::from_name(name).is_some(), "{name}");
    }
}

#[test]
fn unknown_names_are_none() {
    assert_eq!(HostFunction::from_name("proxy_get_configuration"), None);
    assert_eq!(HostFunction::from_name(""), None);
    assert_eq!(GuestExport::from_name("proxy_on_start"), None);
    assert_eq!(HOST_MODULE, "env");
}

#[test]
fn weft_exports_are_outside_the_spec() {
    assert_eq!(
        WEFT_EXPORTS,
        ["weft_host_buffer", "weft_default_callbacks_v1"]
    );
    assert_eq!(
        WeftExport::DefaultCallbacks.name(),
        DEFAULT_CALLBACKS_EXPORT
    );
    for (export, name) in WeftExport::ALL.iter().zip(WEFT_EXPORTS) {
        assert_eq!(export.name(), name);
        assert_eq!(WeftExport::from_name(name), Some(*export));
        assert_eq!(GuestExport::from_name(name), None, "{name} is not v0.2.1's");
        assert!(
            !name.starts_with("proxy_"),
            "{name} must not look like a spec name"
        );
    }
}

/// The word behind `weft_default_callbacks_v1` is a contract between modules and hosts built
/// at different times: its name and bit numbers never change.
#[test]
fn default_callback_bits_are_fixed() {
    assert_eq!(DEFAULT_CALLBACKS_EXPORT, "weft_default_callbacks_v1");
    assert_eq!(GuestExport::from_name(DEFAULT_CALLBACKS_EXPORT), None);
    let bits: Vec<(&str, u32)> = StreamCallback::ALL
        .iter()
        .map(|c| (c.export().name(), c.bit()))
        .collect();
    assert_eq!(
        bits,
        [
            ("proxy_on_request_headers", 1),
            ("proxy_on_request_body", 2),
            ("proxy_on_request_trailers", 4),
            ("proxy_on_response_headers", 8),
            ("proxy_on_response_body", 16),
            ("proxy_on_response_trailers", 32),
            ("proxy_on_log", 64),
        ]
    );
}

//! The proxy-wasm ABI v0.2.1, once: its numbers, names and wire encodings, shared by the weft
//! host and the weft SDK so that nothing else redefines them.
//!
//! ```
//! use weft_abi::{decode_map, encode_map, MapType, Status};
//!
//! // What `proxy_get_header_map_pairs` hands a guest for two request headers.
//! let headers: [(&[u8], &[u8]); 2] = [(b":method", b"GET"), (b":path", b"/a?b=1")];
//! let wire = encode_map(&headers);
//! assert_eq!(&wire[..4], &[2, 0, 0, 0]); // pair count, little-endian
//!
//! // What the host reads back from `proxy_set_header_map_pairs`.
//! let decoded = decode_map(&wire)?;
//! assert_eq!(decoded, headers);
//! assert!(decode_map(&wire[..wire.len() - 1]).is_err()); // never a panic
//!
//! // Raw numbers from the guest become enums, or an error.
//! assert_eq!(Status::try_from(1)?, Status::NotFound);
//! assert_eq!(MapType::try_from(0)?, MapType::HttpRequestHeaders);
//! assert_eq!(Status::CasMismatch as u32, 8);
//! assert!(Status::try_from(99).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Contents
//!
//! - The ABI's enums, each `#[repr(u32)]` with `TryFrom<u32>` and `From<_> for u32`:
//!   [`Status`], [`Action`], [`LogLevel`], [`BufferType`], [`MapType`], [`StreamType`],
//!   [`MetricType`], [`PeerType`], plus [`GrpcStatus`] and the WASI numbers in [`wasi`].
//!   v0.2.1 has no separate headers/data/trailers statuses: stream callbacks return
//!   [`Action`]. The Rust SDK's `ContextType` is an SDK-side notion with no ABI number, so it
//!   is not here.
//! - The names that link a module to its host: the 39 [`HOST_FUNCTIONS`] (as
//!   [`HostFunction`]) in module [`HOST_MODULE`], and the 31 [`GUEST_EXPORTS`] (as
//!   [`GuestExport`]); weft's own optional exports, [`WEFT_EXPORTS`] (as [`WeftExport`]).
//! - The [host buffer](HostBuffer) extension: data handed to a guest without its allocator,
//!   when the module exports `weft_host_buffer` (other hosts never call it).
//! - The default-callbacks extension, [`DEFAULT_CALLBACKS_EXPORT`] with its [`StreamCallback`]
//!   bits, through which a weft-sdk module lets the host skip the stream callbacks its filter
//!   leaves at their no-op defaults.
//! - The header-map wire format: [`encode_map`], [`encode_map_into`], [`decode_map`],
//!   [`decode_map_limited`].
//! - Property paths and values as Envoy encodes them: [`split_property_path`],
//!   [`join_property_path`], `encode_property_*` and `decode_property_*`.
//!
//! # Sources
//!
//! Every number and name is checked by a test against the v0.2.1 spec
//! (<https://github.com/proxy-wasm/spec>, `abi-versions/v0.2.1/README.md`), the upstream Rust
//! SDK (crates.io `proxy-wasm` 0.2.5, `src/types.rs` and `src/hostcalls.rs`) and Envoy's side
//! (`proxy-wasm-cpp-sdk` `proxy_wasm_common.h`, `proxy-wasm-cpp-host` `src/pairs_util.cc`,
//! Envoy `source/extensions/common/wasm/context.cc`). Where those disagree, the module docs
//! say which one wins.

#![deny(missing_docs)]

mod enums;
mod host_buffer;
mod map;
mod names;
mod property;
mod status;
mod types;
pub mod wasi;

pub use enums::UnknownValue;
pub use host_buffer::HostBuffer;
pub use map::{
    MapError, MapLimits, MapPart, Pair, decode_map, decode_map_limited, encode_map,
    encode_map_into, encoded_map_len,
};
pub use names::{
    DEFAULT_CALLBACKS_EXPORT, GUEST_EXPORTS, GuestExport, HOST_FUNCTIONS, HOST_MODULE,
    HostFunction, StreamCallback, WEFT_EXPORTS, WeftExport,
};
pub use property::{
    PropertyError, decode_property_bool, decode_property_f64, decode_property_i64,
    decode_property_u64, encode_property_bool, encode_property_duration, encode_property_f64,
    encode_property_i64, encode_property_list, encode_property_timestamp, encode_property_u64,
    join_property_path, property_segments, split_property_path, write_property_path,
};
pub use status::{Action, GRPC_STATUS_NONE, GrpcStatus, LogLevel, Status};
pub use types::{BufferType, MapType, MetricType, PeerType, StreamType};

//! The host calls the SDK makes, with safe Rust signatures.
//!
//! In Wasm they are the proxy-wasm v0.2.1 imports of module `env` (signatures as the upstream
//! Rust SDK declares them). Data the host returns is either in the module's host buffer
//! ([`host_buffer`], weft's extension, see [`weft_abi::HostBuffer`]) — copied out or read in
//! place before the next host call — or in memory allocated through the module's
//! `proxy_on_memory_allocate` export ([`allocate`]), taken back as a `Vec` (the only case on
//! hosts other than weft). On any other target the calls go to the in-process host of
//! [`crate::testing`], so a filter's unit tests run in plain `cargo test`.

use weft_abi::{BufferType, LogLevel, MapType, MetricType, StreamType};

use crate::error::Result;

/// A header or trailer map: name-value pairs in order, values as bytes.
pub(crate) type Pairs = Vec<(String, Vec<u8>)>;

/// The operations of the host, one method per host call the SDK uses. The Wasm build calls the
/// imports; the native build hands them to the test host installed on this thread.
pub(crate) trait HostCalls {
    fn log(&mut self, level: LogLevel, message: &str) -> Result<()>;
    fn current_time_nanos(&mut self) -> Result<u64>;
    fn set_tick_period(&mut self, millis: u32) -> Result<()>;
    fn get_buffer(&mut self, kind: BufferType, start: usize, max: usize) -> Result<Vec<u8>>;
    fn set_buffer(
        &mut self,
        kind: BufferType,
        start: usize,
        size: usize,
        value: &[u8],
    ) -> Result<()>;
    fn get_map(&mut self, kind: MapType) -> Result<Pairs>;
    fn get_map_value(&mut self, kind: MapType, key: &str) -> Result<Option<Vec<u8>>>;
    fn add_map_value(&mut self, kind: MapType, key: &str, value: &[u8]) -> Result<()>;
    fn replace_map_value(&mut self, kind: MapType, key: &str, value: &[u8]) -> Result<()>;
    fn remove_map_value(&mut self, kind: MapType, key: &str) -> Result<()>;
    /// `path` in the ABI's encoding: segments joined by NUL bytes.
    fn get_property(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>>;
    /// An integer property, read where the host wrote it (no allocation on a weft host).
    fn get_property_i64(&mut self, path: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .get_property(path)?
            .and_then(|v| weft_abi::decode_property_i64(&v).ok()))
    }
    fn set_property(&mut self, path: &[u8], value: &[u8]) -> Result<()>;
    fn continue_stream(&mut self, kind: StreamType) -> Result<()>;
    fn send_local_response(
        &mut self,
        status: u32,
        details: &str,
        body: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<()>;
    fn set_effective_context(&mut self, context: u32) -> Result<()>;
    fn get_shared_data(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32)>;
    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: u32) -> Result<()>;
    fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32>;
    fn increment_metric(&mut self, id: u32, offset: i64) -> Result<()>;
    fn record_metric(&mut self, id: u32, value: u64) -> Result<()>;
    fn get_metric(&mut self, id: u32) -> Result<u64>;
    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout_millis: u32,
    ) -> Result<u32>;
    fn random_bytes(&mut self, out: &mut [u8]);
}

/// Runs `f` with the host of this build.
#[cfg(target_arch = "wasm32")]
pub(crate) fn host<T>(f: impl FnOnce(&mut dyn HostCalls) -> T) -> T {
    f(&mut wasm::Imports)
}

/// Runs `f` with the test host installed on this thread (see [`crate::testing`]).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host<T>(f: impl FnOnce(&mut dyn HostCalls) -> T) -> T {
    crate::testing::with_installed(f)
}

/// `weft_host_buffer`: where this module's host buffer lies, as
/// [`HostBuffer::to_bits`](weft_abi::HostBuffer::to_bits) packs it. A weft host calls it once
/// per instance and then writes the data a host call returns there when it fits, instead of
/// calling [`allocate`]. Off Wasm there is no such host: 0, no buffer.
pub fn host_buffer() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        wasm::host_buffer()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// `proxy_on_memory_allocate`: memory the host fills with a buffer it returns.
pub fn allocate(size: usize) -> *mut u8 {
    let mut buffer = Vec::<u8>::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    //! The proxy-wasm imports.

    use weft_abi::{
        BufferType, HostBuffer, LogLevel, MapType, MetricType, StreamType, decode_map,
        decode_property_i64, encode_map,
    };

    use std::cell::UnsafeCell;

    use super::{HostCalls, Pairs};
    use crate::error::{Error, Result, check};

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
        fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        fn proxy_get_buffer_bytes(
            kind: u32,
            start: usize,
            max: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        fn proxy_set_buffer_bytes(
            kind: u32,
            start: usize,
            size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
        fn proxy_get_header_map_pairs(
            kind: u32,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        fn proxy_get_header_map_value(
            kind: u32,
            key: *const u8,
            key_size: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        fn proxy_add_header_map_value(
            kind: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_replace_header_map_value(
            kind: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(kind: u32, key: *const u8, key_size: usize) -> u32;
        fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_continue_stream(kind: u32) -> u32;
        fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        fn proxy_set_effective_context(context: u32) -> u32;
        fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
            out_cas: *mut u32,
        ) -> u32;
        fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, out: *mut u32) -> u32;
        fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        fn proxy_record_metric(id: u32, value: u64) -> u32;
        fn proxy_get_metric(id: u32, out: *mut u64) -> u32;
        fn proxy_http_call(
            cluster: *const u8,
            cluster_size: usize,
            headers: *const u8,
            headers_size: usize,
            body: *const u8,
            body_size: usize,
            trailers: *const u8,
            trailers_size: usize,
            timeout: u32,
            out_token: *mut u32,
        ) -> u32;
    }

    #[cfg(target_os = "wasi")]
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn random_get(buf: *mut u8, len: usize) -> u16;
    }

    /// The length of the host buffer: room for a request's header map or a small body chunk;
    /// larger data comes through [`allocate`](super::allocate) as before.
    const HOST_BUFFER_LEN: usize = 16 * 1024;

    /// The host buffer's bytes (see [`super::host_buffer`]).
    #[repr(C, align(16))]
    struct HostBufferCell(UnsafeCell<[u8; HOST_BUFFER_LEN]>);

    // SAFETY: a Wasm instance runs one thread. Only the host writes the buffer, during a host
    // call that returns data; the SDK reads it right after that call and before the next one,
    // and never holds a reference into it across host calls.
    unsafe impl Sync for HostBufferCell {}

    static HOST_BUFFER: HostBufferCell = HostBufferCell(UnsafeCell::new([0; HOST_BUFFER_LEN]));

    /// The host buffer, packed for `weft_host_buffer`.
    pub(super) fn host_buffer() -> u64 {
        HostBuffer {
            ptr: HOST_BUFFER.0.get() as usize as u32,
            len: HOST_BUFFER_LEN as u32,
        }
        .to_bits()
    }

    /// The `size` bytes at `data` when `data` points into the host buffer: the host wrote them
    /// there during the host call just made, and will overwrite them in the next one. `None`
    /// when `data` is elsewhere (an allocation).
    ///
    /// # Safety
    ///
    /// Call it right after the host call that returned `data` and `size`, and drop the slice
    /// before the next host call.
    unsafe fn in_host_buffer<'a>(data: *const u8, size: usize) -> Option<&'a [u8]> {
        let start = HOST_BUFFER.0.get() as *const u8 as usize;
        let offset = (data as usize).checked_sub(start)?;
        if offset >= HOST_BUFFER_LEN {
            return None;
        }
        if size > HOST_BUFFER_LEN - offset {
            // Runs past the buffer's end: a host that breaks the protocol. Not an allocation
            // of ours either, so nothing of it is read (or freed).
            return Some(&[]);
        }
        // SAFETY: `offset..offset + size` is inside the buffer, and (by the contract above)
        // nothing writes it while the slice lives.
        Some(unsafe { std::slice::from_raw_parts(data, size) })
    }

    /// The data a host call just returned at `data`: copied out of the host buffer when the
    /// host wrote it there, else taken back from `proxy_on_memory_allocate`. Call it right
    /// after the host call, once.
    fn take(data: *mut u8, size: usize) -> Vec<u8> {
        if data.is_null() || size == 0 {
            return Vec::new();
        }
        // SAFETY: right after the host call; the slice is copied at once.
        if let Some(bytes) = unsafe { in_host_buffer(data, size) } {
            return bytes.to_vec();
        }
        // SAFETY: the host allocated `size` bytes at `data` with `allocate` (a `Vec<u8>` of
        // capacity `size`, forgotten) and filled them; ownership comes back to us here.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }

    /// Runs `f` on the data a host call just returned at `data`, in place when the host wrote
    /// it into the host buffer (no copy), else on the allocation taken back. Call it right
    /// after the host call, once; `f` makes no host call.
    fn with_taken<R>(data: *mut u8, size: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        if !data.is_null() && size != 0 {
            // SAFETY: right after the host call, and `f` makes none while it borrows.
            if let Some(bytes) = unsafe { in_host_buffer(data, size) } {
                return f(bytes);
            }
        }
        f(&take(data, size))
    }

    fn encode(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        encode_map(&pairs)
    }

    fn decode(call: &'static str, bytes: &[u8]) -> Result<Pairs> {
        let pairs = decode_map(bytes).map_err(|_| Error::Host {
            call,
            status: weft_abi::Status::SerializationFailure,
        })?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
            .collect())
    }

    /// The proxy-wasm imports.
    pub(super) struct Imports;

    // SAFETY (every block below): pointers and sizes passed to the host describe live Rust
    // slices for the duration of the call; out-pointers point at locals.
    impl HostCalls for Imports {
        fn log(&mut self, level: LogLevel, message: &str) -> Result<()> {
            check("proxy_log", unsafe {
                proxy_log(level as u32, message.as_ptr(), message.len())
            })
        }

        fn current_time_nanos(&mut self) -> Result<u64> {
            let mut out = 0;
            check("proxy_get_current_time_nanoseconds", unsafe {
                proxy_get_current_time_nanoseconds(&mut out)
            })?;
            Ok(out)
        }

        fn set_tick_period(&mut self, millis: u32) -> Result<()> {
            check("proxy_set_tick_period_milliseconds", unsafe {
                proxy_set_tick_period_milliseconds(millis)
            })
        }

        fn get_buffer(&mut self, kind: BufferType, start: usize, max: usize) -> Result<Vec<u8>> {
            let (mut data, mut size) = (std::ptr::null_mut(), 0);
            check("proxy_get_buffer_bytes", unsafe {
                proxy_get_buffer_bytes(kind as u32, start, max, &mut data, &mut size)
            })?;
            Ok(take(data, size))
        }

        fn set_buffer(
            &mut self,
            kind: BufferType,
            start: usize,
            size: usize,
            value: &[u8],
        ) -> Result<()> {
            check("proxy_set_buffer_bytes", unsafe {
                proxy_set_buffer_bytes(kind as u32, start, size, value.as_ptr(), value.len())
            })
        }

        fn get_map(&mut self, kind: MapType) -> Result<Pairs> {
            let (mut data, mut size) = (std::ptr::null_mut(), 0);
            check("proxy_get_header_map_pairs", unsafe {
                proxy_get_header_map_pairs(kind as u32, &mut data, &mut size)
            })?;
            with_taken(data, size, |bytes| {
                decode("proxy_get_header_map_pairs", bytes)
            })
        }

        fn get_map_value(&mut self, kind: MapType, key: &str) -> Result<Option<Vec<u8>>> {
            let (mut data, mut size) = (std::ptr::null_mut(), 0);
            let status = unsafe {
                proxy_get_header_map_value(
                    kind as u32,
                    key.as_ptr(),
                    key.len(),
                    &mut data,
                    &mut size,
                )
            };
            let value = take(data, size);
            crate::error::found(check("proxy_get_header_map_value", status).map(|()| value))
        }

        fn add_map_value(&mut self, kind: MapType, key: &str, value: &[u8]) -> Result<()> {
            check("proxy_add_header_map_value", unsafe {
                proxy_add_header_map_value(
                    kind as u32,
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                )
            })
        }

        fn replace_map_value(&mut self, kind: MapType, key: &str, value: &[u8]) -> Result<()> {
            check("proxy_replace_header_map_value", unsafe {
                proxy_replace_header_map_value(
                    kind as u32,
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                )
            })
        }

        fn remove_map_value(&mut self, kind: MapType, key: &str) -> Result<()> {
            check("proxy_remove_header_map_value", unsafe {
                proxy_remove_header_map_value(kind as u32, key.as_ptr(), key.len())
            })
        }

        fn get_property(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>> {
            let (mut data, mut size) = (std::ptr::null_mut(), 0);
            let status =
                unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
            let value = take(data, size);
            crate::error::found(check("proxy_get_property", status).map(|()| value))
        }

        fn get_property_i64(&mut self, path: &[u8]) -> Result<Option<i64>> {
            let (mut data, mut size) = (std::ptr::null_mut(), 0);
            let status =
                unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
            let value = with_taken(data, size, |v| decode_property_i64(v).ok());
            crate::error::found(check("proxy_get_property", status).map(|()| value))
                .map(Option::flatten)
        }

        fn set_property(&mut self, path: &[u8], value: &[u8]) -> Result<()> {
            check("proxy_set_property", unsafe {
                proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
            })
        }

        fn continue_stream(&mut self, kind: StreamType) -> Result<()> {
            check("proxy_continue_stream", unsafe {
                proxy_continue_stream(kind as u32)
            })
        }

        fn send_local_response(
            &mut self,
            status: u32,
            details: &str,
            body: &[u8],
            headers: &[(&str, &[u8])],
        ) -> Result<()> {
            let headers = encode(headers);
            check("proxy_send_local_response", unsafe {
                proxy_send_local_response(
                    status,
                    details.as_ptr(),
                    details.len(),
                    body.as_ptr(),
                    body.len(),
                    headers.as_ptr(),
                    headers.len(),
                    -1,
                )
            })
        }

        fn set_effective_context(&mut self, context: u32) -> Result<()> {
            check("proxy_set_effective_context", unsafe {
                proxy_set_effective_context(context)
            })
        }

        fn get_shared_data(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32)> {
            let (mut data, mut size, mut cas) = (std::ptr::null_mut(), 0, 0);
            let status = unsafe {
                proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
            };
            let value = take(data, size);
            match crate::error::found(check("proxy_get_shared_data", status))? {
                Some(()) => Ok((Some(value), cas)),
                None => Ok((None, 0)),
            }
        }

        fn set_shared_data(&mut self, key: &str, value: &[u8], cas: u32) -> Result<()> {
            check("proxy_set_shared_data", unsafe {
                proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
            })
        }

        fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32> {
            let mut id = 0;
            check("proxy_define_metric", unsafe {
                proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
            })?;
            Ok(id)
        }

        fn increment_metric(&mut self, id: u32, offset: i64) -> Result<()> {
            check("proxy_increment_metric", unsafe {
                proxy_increment_metric(id, offset)
            })
        }

        fn record_metric(&mut self, id: u32, value: u64) -> Result<()> {
            check("proxy_record_metric", unsafe {
                proxy_record_metric(id, value)
            })
        }

        fn get_metric(&mut self, id: u32) -> Result<u64> {
            let mut value = 0;
            check("proxy_get_metric", unsafe {
                proxy_get_metric(id, &mut value)
            })?;
            Ok(value)
        }

        fn http_call(
            &mut self,
            cluster: &str,
            headers: &[(&str, &[u8])],
            body: &[u8],
            timeout_millis: u32,
        ) -> Result<u32> {
            let headers = encode(headers);
            let trailers = encode(&[]);
            let mut token = 0;
            check("proxy_http_call", unsafe {
                proxy_http_call(
                    cluster.as_ptr(),
                    cluster.len(),
                    headers.as_ptr(),
                    headers.len(),
                    body.as_ptr(),
                    body.len(),
                    trailers.as_ptr(),
                    trailers.len(),
                    timeout_millis,
                    &mut token,
                )
            })?;
            Ok(token)
        }

        fn random_bytes(&mut self, out: &mut [u8]) {
            #[cfg(target_os = "wasi")]
            {
                // SAFETY: `out` is a live, writable slice of `out.len()` bytes.
                if unsafe { random_get(out.as_mut_ptr(), out.len()) } == 0 {
                    return;
                }
            }
            crate::host::fallback_random(self, out);
        }
    }
}

//! weft's host buffer: an optional extension of the ABI, outside v0.2.1, that lets a weft
//! host hand data to a guest without calling the guest's allocator.
//!
//! A module may export [`WeftExport::HostBuffer`](crate::WeftExport::HostBuffer)
//! (`weft_host_buffer`), a function `() -> i64` that returns where a static buffer of its own
//! lies, [packed](HostBuffer::to_bits) as `len << 32 | ptr`. A weft host calls it once per
//! instance, after the module's start function (`_initialize`) and before the root context is
//! created, and checks the region (non-empty, at most [`HostBuffer::MAX_LEN`] bytes, inside
//! linear memory; otherwise it ignores it). From then on, a host function that returns data
//! through `(ptr_ptr, size_ptr)` writes it into that region when it fits — at its start, at
//! most once per host call — instead of into memory from `proxy_on_memory_allocate`.
//!
//! So after each such host call the guest checks whether the returned pointer lies inside its
//! buffer: if it does, the bytes are the host's and are overwritten by the next host call, so
//! the guest copies them out (or finishes with them) first; if not, they are an allocation it
//! owns, as with every other host. Hosts that know nothing of the export (Envoy) never call it,
//! so a module exporting it runs everywhere unchanged.
//!
//! ```
//! use weft_abi::HostBuffer;
//!
//! let region = HostBuffer { ptr: 0x1_0000, len: 16 * 1024 };
//! assert_eq!(region.to_bits(), (16 * 1024) << 32 | 0x1_0000);
//! assert_eq!(HostBuffer::from_bits(region.to_bits()), region);
//! assert!(region.contains(0x1_0000 + 100, 20));
//! assert!(!region.contains(0x1_0000 + 16 * 1024 - 1, 2), "runs past the end");
//! ```

/// Where a guest's host buffer lies in its linear memory, as `weft_host_buffer` returns it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HostBuffer {
    /// The buffer's first byte.
    pub ptr: u32,
    /// Its length in bytes.
    pub len: u32,
}

impl HostBuffer {
    /// The longest buffer a host accepts (64 KiB); a longer one is ignored.
    pub const MAX_LEN: u32 = 64 * 1024;

    /// The buffer as `weft_host_buffer` returns it: `len` in the high 32 bits, `ptr` in the
    /// low 32.
    pub const fn to_bits(self) -> u64 {
        ((self.len as u64) << 32) | self.ptr as u64
    }

    /// The buffer `weft_host_buffer` returned.
    pub const fn from_bits(bits: u64) -> Self {
        Self {
            ptr: bits as u32,
            len: (bits >> 32) as u32,
        }
    }

    /// Whether `ptr..ptr + len` lies inside the buffer (an empty range at its end does not).
    pub const fn contains(self, ptr: u32, len: u32) -> bool {
        let (start, end) = (self.ptr as u64, self.ptr as u64 + self.len as u64);
        let (ptr, len) = (ptr as u64, len as u64);
        start <= ptr && ptr < end && ptr + len <= end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_at_the_extremes() {
        for region in [
            HostBuffer { ptr: 0, len: 0 },
            HostBuffer {
                ptr: u32::MAX,
                len: u32::MAX,
            },
            HostBuffer {
                ptr: 1,
                len: HostBuffer::MAX_LEN,
            },
        ] {
            assert_eq!(HostBuffer::from_bits(region.to_bits()), region);
        }
        assert_eq!(
            HostBuffer::from_bits(0x0000_4000_0001_0000),
            HostBuffer {
                ptr: 0x1_0000,
                len: 0x4000
            }
        );
    }

    #[test]
    fn contains_never_overflows() {
        let top = HostBuffer {
            ptr: u32::MAX - 15,
            len: 16,
        };
        assert!(top.contains(u32::MAX - 15, 16));
        assert!(top.contains(u32::MAX, 1));
        assert!(!top.contains(u32::MAX, 2));
        assert!(!top.contains(u32::MAX - 16, 1), "before the start");
        let empty = HostBuffer { ptr: 8, len: 0 };
        assert!(!empty.contains(8, 0));
    }
}

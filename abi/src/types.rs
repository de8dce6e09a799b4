//! What a host function acts on: buffers ([`BufferType`]), header maps ([`MapType`]), streams
//! ([`StreamType`]), metrics ([`MetricType`]) and the closing side of a connection
//! ([`PeerType`]).
//!
//! Variant names follow the Rust SDK (`proxy-wasm` 0.2.5, `src/types.rs`); where the v0.2.1
//! spec names a value differently, [`spec_name`](BufferType::spec_name) gives the spec's name.

use crate::enums::abi_enum;

abi_enum! {
    /// `proxy_buffer_type_t`: which buffer `proxy_get_buffer_bytes`,
    /// `proxy_set_buffer_bytes` and `proxy_get_buffer_status` act on.
    pub enum BufferType: "proxy_buffer_type_t" {
        /// The HTTP request body, in `proxy_on_request_body` (or while paused from it).
        HttpRequestBody = 0 => "HTTP_REQUEST_BODY",
        /// The HTTP response body, in `proxy_on_response_body` (or while paused from it).
        HttpResponseBody = 1 => "HTTP_RESPONSE_BODY",
        /// Bytes from the downstream TCP peer, in `proxy_on_downstream_data`.
        DownstreamData = 2 => "DOWNSTREAM_DATA",
        /// Bytes from the upstream TCP peer, in `proxy_on_upstream_data`.
        UpstreamData = 3 => "UPSTREAM_DATA",
        /// The body of an HTTP callout's response, in `proxy_on_http_call_response`.
        HttpCallResponseBody = 4 => "HTTP_CALL_RESPONSE_BODY",
        /// A gRPC message received from a callout, in `proxy_on_grpc_receive`
        /// (the spec's `GRPC_CALL_MESSAGE`).
        GrpcReceiveBuffer = 5 => "GRPC_CALL_MESSAGE",
        /// The VM configuration, in `proxy_on_vm_start`.
        VmConfiguration = 6 => "VM_CONFIGURATION",
        /// The plugin configuration, in `proxy_on_configure`.
        PluginConfiguration = 7 => "PLUGIN_CONFIGURATION",
        /// The arguments of a foreign function call, in `proxy_on_foreign_function`
        /// (the spec's `FOREIGN_FUNCTION_ARGUMENTS`).
        CallData = 8 => "FOREIGN_FUNCTION_ARGUMENTS",
    }
}

abi_enum! {
    /// `proxy_map_type_t`: which header map the `proxy_*_header_map_*` functions act on.
    pub enum MapType: "proxy_map_type_t" {
        /// HTTP request headers.
        HttpRequestHeaders = 0 => "HTTP_REQUEST_HEADERS",
        /// HTTP request trailers.
        HttpRequestTrailers = 1 => "HTTP_REQUEST_TRAILERS",
        /// HTTP response headers.
        HttpResponseHeaders = 2 => "HTTP_RESPONSE_HEADERS",
        /// HTTP response trailers.
        HttpResponseTrailers = 3 => "HTTP_RESPONSE_TRAILERS",
        /// Initial metadata of a gRPC callout's response (the spec's
        /// `GRPC_CALL_INITIAL_METADATA`).
        GrpcReceiveInitialMetadata = 4 => "GRPC_CALL_INITIAL_METADATA",
        /// Trailing metadata of a gRPC callout's response (the spec's
        /// `GRPC_CALL_TRAILING_METADATA`).
        GrpcReceiveTrailingMetadata = 5 => "GRPC_CALL_TRAILING_METADATA",
        /// Headers of an HTTP callout's response.
        HttpCallResponseHeaders = 6 => "HTTP_CALL_RESPONSE_HEADERS",
        /// Trailers of an HTTP callout's response.
        HttpCallResponseTrailers = 7 => "HTTP_CALL_RESPONSE_TRAILERS",
    }
}

abi_enum! {
    /// `proxy_stream_type_t`: which stream `proxy_continue_stream` and `proxy_close_stream`
    /// act on.
    pub enum StreamType: "proxy_stream_type_t" {
        /// The HTTP request.
        HttpRequest = 0 => "HTTP_REQUEST",
        /// The HTTP response.
        HttpResponse = 1 => "HTTP_RESPONSE",
        /// The downstream side of a TCP stream.
        Downstream = 2 => "DOWNSTREAM",
        /// The upstream side of a TCP stream.
        Upstream = 3 => "UPSTREAM",
    }
}

abi_enum! {
    /// `proxy_metric_type_t`: the kind of metric `proxy_define_metric` creates.
    pub enum MetricType: "proxy_metric_type_t" {
        /// A monotonically increasing count.
        Counter = 0 => "COUNTER",
        /// A value that goes up and down.
        Gauge = 1 => "GAUGE",
        /// A distribution of recorded values.
        Histogram = 2 => "HISTOGRAM",
    }
}

abi_enum! {
    /// `proxy_peer_type_t`: which side closed a TCP connection, as passed to
    /// `proxy_on_downstream_connection_close` and `proxy_on_upstream_connection_close`.
    pub enum PeerType: "proxy_peer_type_t" {
        /// Not known.
        Unknown = 0 => "UNKNOWN",
        /// The proxy closed it.
        Local = 1 => "LOCAL",
        /// The peer closed it.
        Remote = 2 => "REMOTE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts every value against the spec's number and name, one by one, and that the list
    /// is complete.
    fn assert_table<T>(expected: &[(T, u32, &str)], all: &[T], spec_name: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + Into<u32> + TryFrom<u32>,
    {
        for &(value, number, name) in expected {
            assert_eq!(value.into(), number, "{value:?}");
            assert_eq!(T::try_from(number).ok(), Some(value), "{number}");
            assert_eq!(spec_name(value), name);
        }
        let listed: Vec<T> = expected.iter().map(|&(value, _, _)| value).collect();
        assert_eq!(listed, all);
        let past_end = u32::try_from(expected.len()).expect("small table");
        assert!(T::try_from(past_end).is_err());
        assert!(T::try_from(u32::MAX).is_err());
    }

    #[test]
    fn buffer_type_numbers() {
        use BufferType::*;
        assert_table(
            &[
                (HttpRequestBody, 0, "HTTP_REQUEST_BODY"),
                (HttpResponseBody, 1, "HTTP_RESPONSE_BODY"),
                (DownstreamData, 2, "DOWNSTREAM_DATA"),
                (UpstreamData, 3, "UPSTREAM_DATA"),
                (HttpCallResponseBody, 4, "HTTP_CALL_RESPONSE_BODY"),
                (GrpcReceiveBuffer, 5, "GRPC_CALL_MESSAGE"),
                (VmConfiguration, 6, "VM_CONFIGURATION"),
                (PluginConfiguration, 7, "PLUGIN_CONFIGURATION"),
                (CallData, 8, "FOREIGN_FUNCTION_ARGUMENTS"),
            ],
            BufferType::ALL,
            BufferType::spec_name,
        );
    }

    #[test]
    fn map_type_numbers() {
        use MapType::*;
        assert_table(
            &[
                (HttpRequestHeaders, 0, "HTTP_REQUEST_HEADERS"),
                (HttpRequestTrailers, 1, "HTTP_REQUEST_TRAILERS"),
                (HttpResponseHeaders, 2, "HTTP_RESPONSE_HEADERS"),
                (HttpResponseTrailers, 3, "HTTP_RESPONSE_TRAILERS"),
                (GrpcReceiveInitialMetadata, 4, "GRPC_CALL_INITIAL_METADATA"),
                (
                    GrpcReceiveTrailingMetadata,
                    5,
                    "GRPC_CALL_TRAILING_METADATA",
                ),
                (HttpCallResponseHeaders, 6, "HTTP_CALL_RESPONSE_HEADERS"),
                (HttpCallResponseTrailers, 7, "HTTP_CALL_RESPONSE_TRAILERS"),
            ],
            MapType::ALL,
            MapType::spec_name,
        );
    }

    #[test]
    fn stream_type_numbers() {
        use StreamType::*;
        assert_table(
            &[
                (HttpRequest, 0, "HTTP_REQUEST"),
                (HttpResponse, 1, "HTTP_RESPONSE"),
                (Downstream, 2, "DOWNSTREAM"),
                (Upstream, 3, "UPSTREAM"),
            ],
            StreamType::ALL,
            StreamType::spec_name,
        );
    }

    #[test]
    fn metric_type_numbers() {
        use MetricType::*;
        assert_table(
            &[
                (Counter, 0, "COUNTER"),
                (Gauge, 1, "GAUGE"),
                (Histogram, 2, "HISTOGRAM"),
            ],
            MetricType::ALL,
            MetricType::spec_name,
        );
    }

    #[test]
    fn peer_type_numbers() {
        use PeerType::*;
        assert_table(
            &[
                (Unknown, 0, "UNKNOWN"),
                (Local, 1, "LOCAL"),
                (Remote, 2, "REMOTE"),
            ],
            PeerType::ALL,
            PeerType::spec_name,
        );
    }
}

//! `grpc`: holds each request while it makes a gRPC callout — a unary call or a stream — then
//! resumes it carrying the outcome as request headers.
//!
//! Exercises the gRPC callout family: `proxy_grpc_call`, `proxy_grpc_stream`,
//! `proxy_grpc_send`, `proxy_on_grpc_receive_initial_metadata`, `proxy_on_grpc_receive`,
//! `proxy_on_grpc_close` (which the SDK routes to the request's context with
//! `proxy_set_effective_context`), reading the `GrpcReceiveBuffer` and the
//! `GrpcReceiveInitialMetadata` map, `proxy_get_status`, `proxy_continue_stream` and
//! `proxy_send_local_response`; logs through `proxy_log`.
//!
//! Config (JSON, `on_configure`; anything else makes it return false):
//! `{"cluster": "NAME", "mode": "call"|"stream", "method": "NAME", "timeout_ms": 1000}` — all
//! but `cluster` optional: `mode` defaults to `call`, `method` to `Say` for a call and `Chat`
//! for a stream, `timeout_ms` (the unary call's timeout) to 1000. The service is always
//! `weft.test.Echo`; the metadata sent is always `x-from: grpc-filter`.
//!
//! - Request headers, mode `call`: `dispatch_grpc_call(<cluster>, "weft.test.Echo", <method>,
//!   [x-from: grpc-filter], <message>, <timeout>)`, the message being the request's `x-message`
//!   header or `hello`, and pause.
//! - Request headers, mode `stream`: `open_grpc_stream(<cluster>, "weft.test.Echo", <method>,
//!   [x-from: grpc-filter])`, sends the messages `one` and then `two` with end of stream, and
//!   pause.
//! - Either mode, if the host refuses to dispatch (Envoy: PARSE_FAILURE for an unknown
//!   cluster): answers `503` with header `x-grpc-error: dispatch <Status:?>` at once.
//! - Call answered (`on_grpc_call_response`; the SDK reports a received message with status 0,
//!   a call that ended without one with its close status): sets request header
//!   `x-grpc-status: <status>`; with status 0 also `x-grpc-reply: <the message as UTF-8>`,
//!   otherwise `x-grpc-message: <proxy_get_status message>` when there is one. Resumes.
//! - Stream: records the initial metadata's `x-echo-meta` and every message as UTF-8; on
//!   close sets request headers `x-grpc-status: <status>`, `x-grpc-replies: <the messages
//!   joined with ",">` (when any arrived), `x-grpc-echo-meta: <x-echo-meta>` (when it came),
//!   `x-grpc-message` as for a call (when the status is not 0). Resumes.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_context_id| Box::new(GrpcRoot { config: None }));
}}

/// The service every callout names.
const SERVICE: &str = "weft.test.Echo";

/// The metadata every callout sends.
const METADATA: [(&str, &[u8]); 1] = [("x-from", b"grpc-filter")];

/// Which kind of callout the filter makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A unary call.
    Call,
    /// A stream of two messages each way.
    Stream,
}

/// The parsed plugin configuration.
struct GrpcConfig {
    cluster: String,
    mode: Mode,
    method: String,
    timeout: Duration,
}

impl GrpcConfig {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("config is not JSON: {e}"))?;
        let cluster = json
            .get("cluster")
            .and_then(|v| v.as_str())
            .ok_or("config needs a string \"cluster\"")?;
        let mode = match json.get("mode").map(|v| v.as_str()) {
            None | Some(Some("call")) => Mode::Call,
            Some(Some("stream")) => Mode::Stream,
            Some(_) => return Err("\"mode\" must be \"call\" or \"stream\"".to_owned()),
        };
        let method = match json.get("method") {
            None if mode == Mode::Call => "Say",
            None => "Chat",
            Some(v) => v.as_str().ok_or("\"method\" must be a string")?,
        };
        let timeout_ms = match json.get("timeout_ms") {
            None => 1000,
            Some(v) => v.as_u64().ok_or("\"timeout_ms\" must be a whole number")?,
        };
        Ok(GrpcConfig {
            cluster: cluster.to_owned(),
            mode,
            method: method.to_owned(),
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

/// The root context: parses the configuration.
struct GrpcRoot {
    config: Option<Rc<GrpcConfig>>,
}

impl Context for GrpcRoot {}

impl RootContext for GrpcRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match GrpcConfig::parse(&bytes) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            Err(reason) => {
                log::error!("grpc: rejecting configuration: {reason}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Grpc {
            config: self.config.clone(),
            replies: Vec::new(),
            echo_meta: None,
        }))
    }
}

/// The per-request context.
struct Grpc {
    config: Option<Rc<GrpcConfig>>,
    /// The stream's messages so far.
    replies: Vec<String>,
    /// The stream's initial metadata `x-echo-meta`.
    echo_meta: Option<String>,
}

impl Grpc {
    /// Sets `x-grpc-status`, and `x-grpc-message` when the status is an error with a message.
    fn set_status(&self, status: u32) {
        self.set_http_request_header("x-grpc-status", Some(&status.to_string()));
        if status != 0
            && let (_, Some(message)) = self.get_grpc_status()
            && !message.is_empty()
        {
            self.set_http_request_header("x-grpc-message", Some(&message));
        }
    }

    fn call(&self, config: &GrpcConfig) -> Result<u32, proxy_wasm::types::Status> {
        let message = self
            .get_http_request_header("x-message")
            .unwrap_or_else(|| "hello".to_owned());
        self.dispatch_grpc_call(
            &config.cluster,
            SERVICE,
            &config.method,
            METADATA.to_vec(),
            Some(message.as_bytes()),
            config.timeout,
        )
    }

    fn stream(&self, config: &GrpcConfig) -> Result<u32, proxy_wasm::types::Status> {
        let token =
            self.open_grpc_stream(&config.cluster, SERVICE, &config.method, METADATA.to_vec())?;
        self.send_grpc_stream_message(token, Some(b"one"), false);
        self.send_grpc_stream_message(token, Some(b"two"), true);
        Ok(token)
    }
}

impl Context for Grpc {
    fn on_grpc_call_response(&mut self, _token_id: u32, status_code: u32, response_size: usize) {
        log::info!("grpc: call answered with status {status_code}");
        self.set_status(status_code);
        if status_code == 0 {
            let reply = self
                .get_grpc_call_response_body(0, response_size)
                .unwrap_or_default();
            self.set_http_request_header("x-grpc-reply", Some(&String::from_utf8_lossy(&reply)));
        }
        self.resume_http_request();
    }

    fn on_grpc_stream_initial_metadata(&mut self, _token_id: u32, _num_elements: u32) {
        self.echo_meta = self
            .get_grpc_stream_initial_metadata_value("x-echo-meta")
            .map(|value| String::from_utf8_lossy(&value).into_owned());
    }

    fn on_grpc_stream_message(&mut self, _token_id: u32, message_size: usize) {
        let message = self
            .get_grpc_stream_message(0, message_size)
            .unwrap_or_default();
        self.replies
            .push(String::from_utf8_lossy(&message).into_owned());
    }

    fn on_grpc_stream_close(&mut self, _token_id: u32, status_code: u32) {
        log::info!(
            "grpc: stream closed with status {status_code} after {} messages",
            self.replies.len()
        );
        self.set_status(status_code);
        if !self.replies.is_empty() {
            self.set_http_request_header("x-grpc-replies", Some(&self.replies.join(",")));
        }
        if let Some(meta) = &self.echo_meta {
            self.set_http_request_header("x-grpc-echo-meta", Some(meta));
        }
        self.resume_http_request();
    }
}

impl HttpContext for Grpc {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let dispatched = match config.mode {
            Mode::Call => self.call(&config),
            Mode::Stream => self.stream(&config),
        };
        if let Err(status) = dispatched {
            log::warn!("grpc: dispatch to {} refused: {status:?}", config.cluster);
            let error = format!("dispatch {status:?}");
            self.send_http_response(
                503,
                vec![("x-grpc-error", &error)],
                Some(b"grpc dispatch failed\n"),
            );
        }
        Action::Pause
    }
}

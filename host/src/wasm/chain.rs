//! The chain executor: runs a listener's filters over one request, the way Envoy's filter
//! manager runs proxy-wasm filters.
//!
//! - Every filter gets a stream context when the request starts (`proxy_on_context_create`).
//! - Request phases (headers, body chunks, trailers) run in chain order, response phases in
//!   reverse order. A phase's `Pause` holds the stream until the filter resumes it
//!   (`proxy_continue_stream`, typically from `proxy_on_http_call_response`) or answers locally;
//!   a paused body (`StopIterationAndBuffer`) is buffered for that filter, up to the listener's
//!   `maxBufferedBodyBytes` (413 on requests; on responses a 500, or a reset once the head has
//!   left), and handed to it whole with the next chunk.
//! - `proxy_send_local_response` answers at once; the rest of the request path is skipped.
//! - At the end: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` for every context, in
//!   chain order — also when the client went away mid-request.
//! - A filter that fails (trap, panic, deadline, memory cap) fails the request with 503 naming
//!   it (`FAIL_CLOSE`) or drops out of this request (`FAIL_OPEN`); its instance is replaced.
//! - Body bytes are counted as they pass — the request's as they arrive, the response's as
//!   they leave for the client — for `request.size` and `response.size`; `on_log` also sees
//!   `request.duration` and the cluster the request went to.
//!
//! Bodies stream through [`FilteredBody`], which runs the body phases frame by frame; the
//! request side and the response side share the [`FilterStream`] behind an async mutex
//! ([`HeldStream`]), since an upstream may answer while the request body is still arriving. A
//! small response body of known length, for a request without a body, is read whole instead and
//! goes through its phase in the handler ([`FilterStream::whole_response`]), before the head
//! leaves.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use futures_util::lock::{Mutex, OwnedMutexGuard};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame};

use super::{
    context::{
        EventReceiver, LocalResponse, ResponseHead, Side, StreamData, StreamEvent, event_queue,
    },
    filter::{Chain, Filter},
    instance::{Failure, Instance, StreamCall},
    properties::UPSTREAM_CLUSTER,
};
use crate::{
    config::resolved::FailStrategy,
    http::{
        body::{BoxError, ProxyBody, boxed, full},
        error::ProxyError,
        proxy::Downstream,
    },
};

/// `Action::Pause` as a guest returns it.
const PAUSE: u32 = 1;

/// What a phase decided.
pub enum Flow {
    /// Go on with the request.
    Continue,
    /// Answer with this response now (boxed: a `Flow` travels back through every phase call,
    /// and most of them carry `Continue`).
    Respond(Box<Response<ProxyBody>>),
}

impl Flow {
    /// The response a `Respond` carries; `Continue` here is a bug, answered as a reset.
    pub fn into_response(self) -> Response<ProxyBody> {
        flow_response(self)
    }
}

/// One filter's part in a stream.
struct Slot {
    filter: Arc<Filter>,
    /// `None` once the filter dropped out (failed open, or never started).
    instance: Option<Arc<Instance>>,
    context: u32,
    /// Whether the filter's context was created (or its creation attempted).
    started: bool,
    /// Body the filter holds paused, per side.
    buffers: [BytesMut; 2],
}

/// A request's run through a chain.
pub struct FilterStream {
    slots: Vec<Slot>,
    stream: Option<Box<StreamData>>,
    events: EventReceiver,
    buffer_limit: usize,
    pause_limit: Duration,
    /// Set when a request-body phase decided the request's answer (413, a local reply, a
    /// failure): the handler answers with it instead of the upstream's outcome.
    outcome: Option<Response<ProxyBody>>,
    finished: bool,
    /// Already the clean-up of a stream that went away: never handed on again.
    orphan: bool,
}

/// The request as it enters the chain.
pub struct RequestStart<'a> {
    /// The downstream connection.
    pub downstream: &'a Arc<Downstream>,
    /// The request's head; headers are moved into the stream (and back by [`FilterStream::take_request`]).
    pub parts: &'a mut http::request::Parts,
    /// `:authority`.
    pub authority: HeaderValue,
    /// Most body bytes a paused filter may hold.
    pub buffer_limit: usize,
    /// Longest a filter may hold the stream paused.
    pub pause_limit: Duration,
}

impl FilterStream {
    /// Creates every filter's stream context. A filter whose instance cannot start fails the
    /// request (`FAIL_CLOSE`) or sits this request out (`FAIL_OPEN`).
    pub async fn start(chain: &Chain, start: RequestStart<'_>) -> Result<FilterStream, Flow> {
        let (sender, events) = event_queue();
        let parts = start.parts;
        let path = parts.uri.path_and_query().map_or_else(
            || Bytes::from_static(b"/"),
            |p| Bytes::copy_from_slice(p.as_str().as_bytes()),
        );
        let mut request_headers = std::mem::take(&mut parts.headers);
        request_headers.remove(header::HOST);
        let stream = StreamData {
            downstream: start.downstream.clone(),
            started: SystemTime::now(),
            version: parts.version,
            method: parts.method.clone(),
            scheme: start.downstream.scheme(),
            authority: start.authority,
            path,
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
            events: sender,
        };
        let mut this = FilterStream {
            slots: Vec::with_capacity(chain.filters.len()),
            stream: Some(Box::new(stream)),
            events,
            buffer_limit: start.buffer_limit,
            pause_limit: start.pause_limit,
            outcome: None,
            finished: false,
            orphan: false,
        };
        // Contexts are created as the request reaches each filter, together with its
        // request-headers callback (one trip into Wasm); a filter the request never reached
        // gets its context at the end, for `on_log`.
        this.slots.extend(chain.filters.iter().map(|filter| Slot {
            filter: filter.clone(),
            instance: None,
            context: 0,
            started: false,
            buffers: [BytesMut::new(), BytesMut::new()],
        }));
        Ok(this)
    }

    /// Puts filter `slot` on an instance and creates its context there — with `headers`
    /// (count, end of stream), also running its request-headers callback, whose action it
    /// returns. An instance that failed or got stuck while this stream waited for it is not this
    /// stream's failure: the stream moves to another.
    async fn create_context(
        &mut self,
        slot: usize,
        headers: Option<(u32, bool)>,
    ) -> Result<u32, Flow> {
        self.slots[slot].started = true;
        let filter = self.slots[slot].filter.clone();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let instance = match filter.acquire().await {
                Ok(instance) => instance,
                // `acquire` logged and counted why.
                Err(failure) => return fail(&filter, &failure),
            };
            let context = instance.new_context();
            // After a few moves, wait for the instance rather than fail the request.
            let may_move = attempts < 3;
            let call = match headers {
                Some((headers, end_of_stream)) => StreamCall::Start {
                    may_move,
                    headers,
                    end_of_stream,
                },
                None => StreamCall::Create { may_move },
            };
            let result = match instance.try_stream_call(&mut self.stream, context, slot, call) {
                Ok(result) => result,
                // Boxed: the rare wait keeps the future of every call small.
                Err(call) => {
                    Box::pin(instance.stream_call(&mut self.stream, context, slot, call)).await
                }
            };
            match result {
                Ok(action) => {
                    self.slots[slot].instance = Some(instance);
                    self.slots[slot].context = context;
                    return Ok(action);
                }
                Err(failure) if failure.stale && attempts < 4 => continue,
                Err(failure) => {
                    tracing::warn!(filter = %filter.config.name, plugin = %filter.plugin.name, %failure, "filter failed");
                    return fail(&filter, &failure);
                }
            }
        }
    }

    fn stream(&mut self) -> Option<&mut StreamData> {
        self.stream.as_deref_mut()
    }

    /// Calls filter `slot`. A failure drops the filter out of the stream; with `FAIL_CLOSE`
    /// the request's answer is the 503.
    async fn call(&mut self, slot: usize, call: StreamCall) -> Result<u32, Flow> {
        let Some(instance) = self.slots[slot].instance.as_ref() else {
            return Ok(0);
        };
        let context = self.slots[slot].context;
        let result = match instance.try_stream_call(&mut self.stream, context, slot, call) {
            Ok(result) => result,
            Err(call) => {
                Box::pin(instance.stream_call(&mut self.stream, context, slot, call)).await
            }
        };
        match result {
            Ok(value) => Ok(value),
            Err(failure) => self.failed(slot, &failure),
        }
    }

    /// Filter `slot` failed: it drops out of the stream, and with `FAIL_CLOSE` the request's
    /// answer is the 503.
    fn failed(&mut self, slot: usize, failure: &Failure) -> Result<u32, Flow> {
        self.slots[slot].instance = None;
        let filter = &self.slots[slot].filter;
        tracing::warn!(filter = %filter.config.name, plugin = %filter.plugin.name, %failure, "filter failed");
        fail(filter, failure)
    }

    /// A local reply or close asked for during the last call, as the answer.
    fn take_local(&mut self) -> Option<Flow> {
        let stream = self.stream()?;
        if let Some(local) = stream.local_response.take() {
            return Some(Flow::Respond(Box::new(local_response(local))));
        }
        if stream.closed {
            return Some(Flow::Respond(Box::new(reset_response())));
        }
        None
    }

    /// Holds the stream after filter `slot` paused `side`, delivering events, until it is
    /// resumed or answered.
    async fn wait_resumed(&mut self, slot: usize, side: Side) -> Flow {
        let deadline = tokio::time::Instant::now() + self.pause_limit;
        loop {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(event) => event,
                Err(_) => {
                    return Flow::Respond(Box::new(
                        ProxyError::FilterStalled {
                            filter: self.slots[slot].filter.config.name.to_string(),
                            side: side.as_str(),
                            after: self.pause_limit,
                        }
                        .into_response(),
                    ));
                }
            };
            if let Some(flow) = self.handle_event(event, side).await {
                return flow;
            }
        }
    }

    /// Delivers one event; `Some` when it decided the stream's fate (or resumed `side`).
    async fn handle_event(&mut self, event: StreamEvent, side: Side) -> Option<Flow> {
        match event {
            StreamEvent::HttpCall {
                slot,
                token,
                response,
            } => {
                if let Err(flow) = self
                    .call(
                        slot,
                        StreamCall::HttpCallResponse {
                            token,
                            response: Box::new(response),
                        },
                    )
                    .await
                {
                    return Some(flow);
                }
            }
            StreamEvent::Grpc { slot, token, event } => {
                let call = StreamCall::Grpc {
                    token,
                    event: Box::new(event),
                };
                if let Err(flow) = self.call(slot, call).await {
                    return Some(flow);
                }
            }
            StreamEvent::Resume(resumed) => {
                return (resumed == side).then_some(Flow::Continue);
            }
            StreamEvent::LocalResponse(local) => {
                return Some(Flow::Respond(Box::new(local_response(local))));
            }
            StreamEvent::Close => return Some(Flow::Respond(Box::new(reset_response()))),
        }
        if let Some(flow) = self.take_local() {
            return Some(flow);
        }
        let resumed = self.stream.as_ref().is_some_and(|s| s.resumed(side));
        resumed.then_some(Flow::Continue)
    }

    /// Delivers events that are already waiting (callouts that completed while the stream was
    /// not paused).
    async fn deliver_ready(&mut self, side: Side) -> Option<Flow> {
        while let Some(event) = self.events.try_recv() {
            if let StreamEvent::Resume(_) = event {
                continue;
            }
            if let Some(Flow::Respond(response)) = Box::pin(self.handle_event(event, side)).await {
                return Some(Flow::Respond(response));
            }
        }
        None
    }

    /// Runs a phase on filter `slot` and settles what it asked for: a local reply, or a pause
    /// to wait out. (The call is made here rather than through [`call`](Self::call): one
    /// future less to build and move on every phase of every filter.)
    async fn phase(
        &mut self,
        slot: usize,
        call: StreamCall,
        side: Side,
        may_pause: bool,
    ) -> Result<u32, Flow> {
        let Some(instance) = self.slots[slot].instance.as_ref() else {
            return Ok(0);
        };
        let context = self.slots[slot].context;
        let result = match instance.try_stream_call(&mut self.stream, context, slot, call) {
            Ok(result) => result,
            Err(call) => {
                Box::pin(instance.stream_call(&mut self.stream, context, slot, call)).await
            }
        };
        let action = match result {
            Ok(action) => action,
            Err(failure) => self.failed(slot, &failure)?,
        };
        match self.settled(action, side, may_pause) {
            Some(result) => result,
            None => self.wait(slot, side).await,
        }
    }

    /// What follows a phase callback's `action`: a local reply, the action itself, or `None`:
    /// a pause to wait out ([`wait`](Self::wait)).
    fn settled(&mut self, action: u32, side: Side, may_pause: bool) -> Option<Result<u32, Flow>> {
        if let Some(flow) = self.take_local() {
            return Some(Err(flow));
        }
        let resumed = self.stream.as_ref().is_some_and(|s| s.resumed(side));
        if action == PAUSE && may_pause && !resumed {
            return None;
        }
        Some(Ok(action))
    }

    /// Holds the stream that filter `slot` paused until it is resumed (`Ok`) or answered.
    async fn wait(&mut self, slot: usize, side: Side) -> Result<u32, Flow> {
        // Boxed, like every rarely taken wait here: the futures of the common path (built and
        // moved on every phase call) stay small.
        match Box::pin(self.wait_resumed(slot, side)).await {
            Flow::Respond(response) => Err(Flow::Respond(response)),
            Flow::Continue => Ok(0),
        }
    }

    /// The slots in the order `side`'s phases visit them: chain order for the request,
    /// reverse for the response.
    fn order(&self, side: Side) -> impl Iterator<Item = usize> + use<> {
        let n = self.slots.len();
        (0..n).map(move |i| match side {
            Side::Request => i,
            Side::Response => n - 1 - i,
        })
    }

    /// A headers phase over every filter in `side`'s order.
    async fn headers(&mut self, side: Side, end_of_stream: bool) -> Flow {
        for slot in self.order(side) {
            let headers = self.stream.as_ref().map_or(0, |s| match side {
                // The pseudo-headers count: `:authority`, `:path`, `:method`, `:scheme`.
                Side::Request => s.request_headers.len() as u32 + 4,
                Side::Response => s
                    .response
                    .as_ref()
                    .map_or(0, |r| r.headers.len() as u32 + 1),
            });
            let result = if side == Side::Request && !self.slots[slot].started {
                match self
                    .create_context(slot, Some((headers, end_of_stream)))
                    .await
                {
                    Ok(action) => match self.settled(action, side, true) {
                        Some(result) => result,
                        None => self.wait(slot, side).await,
                    },
                    Err(flow) => Err(flow),
                }
            } else {
                let call = StreamCall::Headers {
                    side,
                    headers,
                    end_of_stream,
                };
                self.phase(slot, call, side, true).await
            };
            if let Err(flow) = result {
                return flow;
            }
        }
        self.deliver_ready(side).await.unwrap_or(Flow::Continue)
    }

    /// The request-headers phase, top-down.
    pub async fn request_headers(&mut self, end_of_stream: bool) -> Flow {
        self.headers(Side::Request, end_of_stream).await
    }

    /// The request head after the request-headers phase: method, path, authority and headers
    /// as the filters left them, and the cluster a filter chose (`weft.upstream_cluster`).
    pub fn take_request(
        &mut self,
        parts: &mut http::request::Parts,
    ) -> Result<(HeaderValue, Option<String>), ProxyError> {
        let Some(stream) = self.stream.as_deref_mut() else {
            return Err(ProxyError::BadRequest("request state lost".into()));
        };
        parts.method = stream.method.clone();
        // Filters may read the request headers again in later phases (`on_log` included).
        parts.headers = stream.request_headers.clone();
        let path = http::uri::PathAndQuery::from_maybe_shared(stream.path.clone())
            .map_err(|e| ProxyError::BadRequest(format!("a filter set an invalid :path: {e}")))?;
        parts.uri = http::Uri::from(path);
        let cluster = stream
            .properties
            .get(UPSTREAM_CLUSTER)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        Ok((stream.authority.clone(), cluster))
    }

    /// The response-headers phase, bottom-up. The head stays with the stream, where later
    /// phases read it: [`response_head`](Self::response_head) gives it back.
    pub async fn response_headers(
        &mut self,
        response: &mut http::response::Parts,
        end_of_stream: bool,
    ) -> Flow {
        if let Some(stream) = self.stream() {
            stream.response = Some(ResponseHead {
                status: response.status,
                headers: std::mem::take(&mut response.headers),
            });
        }
        self.headers(Side::Response, end_of_stream).await
    }

    /// The response head as the filters left it, into `response`: moved once the contexts
    /// have ended (nothing can read it any more), copied while body phases or `on_log` may
    /// still read it.
    pub fn response_head(&mut self, response: &mut http::response::Parts) {
        let finished = self.finished;
        let Some(head) = self.stream().and_then(|s| s.response.as_mut()) else {
            return;
        };
        response.status = head.status;
        response.headers = if finished {
            std::mem::take(&mut head.headers)
        } else {
            head.headers.clone()
        };
    }

    /// One body chunk of `side` through the chain; what comes out travels on. A filter that
    /// pauses keeps the chunk (with what it held before) and nothing travels; past the buffer
    /// limit, or when a filter answers or fails, the answer is the `Err`.
    async fn body(
        &mut self,
        side: Side,
        mut data: Bytes,
        end_of_stream: bool,
    ) -> Result<Option<Bytes>, Response<ProxyBody>> {
        if side == Side::Request
            && let Some(stream) = self.stream()
        {
            stream.request_body_bytes += data.len() as u64;
        }
        for slot in self.order(side) {
            if self.slots[slot].instance.is_none() {
                continue;
            }
            let mut buffered = std::mem::take(&mut self.slots[slot].buffers[side as usize]);
            if buffered.is_empty() {
                // Nothing held: lend the chunk itself — no copy when this stream owns it
                // (every chunk a filter passed on does), one copy when hyper's buffer shares it.
                buffered = std::mem::take(&mut data)
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            } else {
                buffered.extend_from_slice(&data);
            }
            let size = buffered.len() as u32;
            if let Some(stream) = self.stream() {
                *stream.body_mut(side) = buffered;
            }
            let call = StreamCall::Body {
                side,
                size,
                end_of_stream,
            };
            let action = self
                .phase(slot, call, side, end_of_stream)
                .await
                .map_err(Flow::into_response)?;
            let held = self
                .stream()
                .map(|s| std::mem::take(s.body_mut(side)))
                .unwrap_or_default();
            if action != PAUSE {
                data = held.freeze();
                continue;
            }
            if held.len() > self.buffer_limit {
                let filter = self.slots[slot].filter.config.name.to_string();
                let limit = self.buffer_limit;
                return Err(match side {
                    Side::Request => ProxyError::BodyTooLarge { filter, limit },
                    Side::Response => ProxyError::ResponseBodyTooLarge { filter, limit },
                }
                .into_response());
            }
            self.slots[slot].buffers[side as usize] = held;
            return Ok(None);
        }
        if side == Side::Response
            && let Some(stream) = self.stream()
        {
            stream.response_body_bytes += data.len() as u64;
        }
        Ok(Some(data))
    }

    /// `side`'s trailers through the chain, after the chunks filters still hold are flushed
    /// (as the body's end). Returns the flushed data and the trailers as the filters left them.
    async fn trailers(
        &mut self,
        side: Side,
        trailers: HeaderMap,
    ) -> Result<(Option<Bytes>, HeaderMap), Response<ProxyBody>> {
        let flushed = self.body(side, Bytes::new(), true).await?;
        if let Some(stream) = self.stream() {
            *stream.trailers_mut(side) = Some(trailers);
        }
        for slot in self.order(side) {
            let count = self
                .stream()
                .and_then(|s| s.trailers_mut(side).as_ref().map(|t| t.len() as u32))
                .unwrap_or(0);
            let call = StreamCall::Trailers {
                side,
                trailers: count,
            };
            self.phase(slot, call, side, true)
                .await
                .map_err(Flow::into_response)?;
        }
        let trailers = self
            .stream()
            .and_then(|s| s.trailers_mut(side).clone())
            .unwrap_or_default();
        Ok((flushed, trailers))
    }

    /// The response, its body read whole (`data`, then `trailers` if the upstream sent any),
    /// after the body phases — and the trailers phase — and the end of every context. The
    /// client gets the body the filters let through, or the answer a filter gave instead (a
    /// local reply, its failure, or a body held past the buffer limit): the head has not left
    /// yet, so the answer can still be a whole response rather than a reset.
    pub async fn whole_response(
        &mut self,
        mut head: http::response::Parts,
        data: Bytes,
        trailers: Option<HeaderMap>,
    ) -> Response<ProxyBody> {
        let result = match trailers {
            None => self
                .body(Side::Response, data, true)
                .await
                .map(|data| (data, None)),
            // Boxed: trailers are rare, and their phase would make this future larger.
            Some(trailers) => Box::pin(self.body_and_trailers(data, trailers)).await,
        };
        match result {
            Ok((data, trailers)) => {
                self.finish().await;
                self.response_head(&mut head);
                let data = data.unwrap_or_default();
                let body = match trailers {
                    None => full(data),
                    Some(trailers) => boxed(http_body_util::StreamBody::new(
                        futures_util::stream::iter([
                            Ok::<_, BoxError>(Frame::data(data)),
                            Ok(Frame::trailers(trailers)),
                        ]),
                    )),
                };
                Response::from_parts(head, body)
            }
            Err(response) => self.end_with(response).await,
        }
    }

    /// A whole response body's data and trailers through their phases.
    async fn body_and_trailers(
        &mut self,
        data: Bytes,
        trailers: HeaderMap,
    ) -> Result<(Option<Bytes>, Option<HeaderMap>), Response<ProxyBody>> {
        let first = self.body(Side::Response, data, false).await?;
        let (flushed, trailers) = self.trailers(Side::Response, trailers).await?;
        let data = match (first, flushed) {
            (Some(first), Some(flushed)) if !flushed.is_empty() => {
                let mut joined = BytesMut::from(&first[..]);
                joined.extend_from_slice(&flushed);
                Some(joined.freeze())
            }
            (first, flushed) => first.or(flushed),
        };
        Ok((data, Some(trailers)))
    }

    /// The answer a request-body phase decided on, if any.
    pub fn take_outcome(&mut self) -> Option<Response<ProxyBody>> {
        self.outcome.take()
    }

    /// Records the response the client gets (for `response.code` and `response.size` in
    /// `on_log`) when it did not come through the response phases: a local reply or an error.
    pub fn record_response(&mut self, response: &Response<ProxyBody>) {
        if let Some(stream) = self.stream() {
            stream.response = Some(ResponseHead {
                status: response.status(),
                headers: response.headers().clone(),
            });
            stream.response_body_bytes = response.body().size_hint().exact().unwrap_or(0);
        }
    }

    /// Records the cluster the request is routed to (`xds.cluster_name`).
    pub fn record_cluster(&mut self, cluster: &Arc<str>) {
        if let Some(stream) = self.stream() {
            stream.cluster = Some(cluster.clone());
        }
    }

    /// Ends the stream with `response` (a local reply or an error): recorded for `on_log`,
    /// then every context ended.
    pub async fn end_with(&mut self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        self.record_response(&response);
        self.finish().await;
        response
    }

    /// `on_done`, `on_log` and `on_delete` on every context, in chain order. Runs once.
    pub async fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if let Some(stream) = self.stream() {
            // A clock that stepped back makes it zero rather than unknown.
            stream.duration = Some(stream.started.elapsed().unwrap_or_default());
        }
        for slot in 0..self.slots.len() {
            if !self.slots[slot].started {
                // The request never reached this filter; it still sees the request end.
                let _ = self.create_context(slot, None).await;
            }
            if self.slots[slot].instance.is_none() {
                continue;
            }
            // A failure here has no request left to fail; the instance is replaced.
            let _ = self.call(slot, StreamCall::Finish).await;
        }
    }
}

impl Drop for FilterStream {
    fn drop(&mut self) {
        if self.finished || self.orphan || self.slots.iter().all(|s| s.instance.is_none()) {
            return;
        }
        // The request went away mid-flight (client gone): end the contexts on a task of their own.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (_, events) = event_queue();
        let mut orphan = FilterStream {
            slots: std::mem::take(&mut self.slots),
            stream: self.stream.take(),
            events,
            buffer_limit: self.buffer_limit,
            pause_limit: self.pause_limit,
            outcome: None,
            finished: false,
            orphan: true,
        };
        self.finished = true;
        handle.spawn(async move {
            if orphan.stream.is_none() {
                // The stream was lent to a call that was cancelled; only delete the contexts.
                orphan.finished = true;
                for slot in 0..orphan.slots.len() {
                    let _ = orphan.call(slot, StreamCall::Delete).await;
                }
                return;
            }
            orphan.finish().await;
        });
    }
}

/// A request's [`FilterStream`] as its handler holds it: its own, or — once a body runs
/// through the body phases — shared with that body behind an async mutex, and locked while the
/// handler works on it. A request without a body and a response read whole never share it.
pub enum HeldStream {
    /// The handler's alone.
    Own(FilterStream),
    /// Shared with a [`FilteredBody`]; the guard while the handler holds the lock.
    Shared(
        Arc<Mutex<FilterStream>>,
        Option<OwnedMutexGuard<FilterStream>>,
    ),
}

impl HeldStream {
    /// `stream` shared with a [`FilteredBody`] (given the returned handle); the handler
    /// takes it back with [`lock`](Self::lock).
    pub fn shared(stream: FilterStream) -> (Self, Arc<Mutex<FilterStream>>) {
        let shared = Arc::new(Mutex::new(stream));
        (HeldStream::Shared(shared.clone(), None), shared)
    }

    /// The stream, for the handler: waits for the lock if it is shared.
    pub async fn lock(&mut self) -> &mut FilterStream {
        match self {
            HeldStream::Own(stream) => stream,
            HeldStream::Shared(shared, guard) => {
                let guard = match guard {
                    Some(guard) => guard,
                    None => guard.insert(shared.clone().lock_owned().await),
                };
                &mut *guard
            }
        }
    }

    /// The stream shared (and unlocked), for a body that goes on after the handler returns.
    pub fn into_shared(self) -> Arc<Mutex<FilterStream>> {
        match self {
            HeldStream::Own(stream) => Arc::new(Mutex::new(stream)),
            HeldStream::Shared(shared, _) => shared,
        }
    }
}

fn flow_response(flow: Flow) -> Response<ProxyBody> {
    match flow {
        Flow::Respond(response) => *response,
        // Never decided by a failing phase; answer as a failed filter would.
        Flow::Continue => reset_response(),
    }
}

/// What a failure of `filter` does to its request: nothing more (`FAIL_OPEN`: the filter sits
/// the rest of the request out, as a `Continue`) or the 503 naming it (`FAIL_CLOSE`).
fn fail(filter: &Filter, failure: &Failure) -> Result<u32, Flow> {
    match filter.fail_strategy() {
        FailStrategy::FailOpen => Ok(0),
        FailStrategy::FailClose => Err(Flow::Respond(Box::new(filter_failed(
            filter,
            &failure.to_string(),
        )))),
    }
}

/// The 503 of a filter that failed with `FAIL_CLOSE`.
fn filter_failed(filter: &Filter, reason: &str) -> Response<ProxyBody> {
    ProxyError::FilterFailed {
        filter: filter.config.name.to_string(),
        plugin: filter.plugin.name.to_string(),
        reason: reason.to_owned(),
    }
    .into_response()
}

/// A filter's local reply as a response.
pub fn local_response(local: LocalResponse) -> Response<ProxyBody> {
    let has_body = !local.body.is_empty();
    let mut response = Response::new(full(local.body));
    *response.status_mut() = local.status;
    let headers = response.headers_mut();
    for (name, value) in local.headers {
        headers.append(name, value);
    }
    if has_body && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if let Some(status) = local.grpc_status
        && let Ok(value) = HeaderValue::from_str(&status.to_string())
    {
        headers.insert("grpc-status", value);
    }
    response
}

/// What `proxy_close_stream` answers with: a body that fails at once, so the connection (or
/// HTTP/2 stream) is reset rather than answered.
fn reset_response() -> Response<ProxyBody> {
    let body = http_body_util::StreamBody::new(futures_util::stream::once(async {
        Err::<Frame<Bytes>, BoxError>("stream closed by a filter".into())
    }));
    let mut response = Response::new(crate::http::body::boxed(body));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The running body phase of a [`FilteredBody`].
///
/// A step holds the stream's lock while the filters run, and those who wait for that lock do
/// not poll this body: the handler waits for it with the upstream's response head in hand (to
/// run the response phases), the response body's step waits for it too, and the request body
/// only goes upstream (over HTTP/1.1) as that response is read. So a step that cannot finish in
/// the poll that started it — a guest yielding at an epoch tick, an instance busy with another
/// stream, a paused filter — goes on as a task of its own: left to its poller, it could wait
/// forever for a poll that only comes once the lock it holds is free.
enum Step {
    /// Polled by the body's poller: the common case of a step that completes at once.
    Inline(Pin<Box<dyn Future<Output = StepResult> + Send>>),
    /// On a task of its own; aborted if the body is dropped, as an inline step would be.
    Spawned(StepTask),
}

/// What a body phase lets through: the frames that travel on, or why the body stops.
type StepResult = Result<Frames, BoxError>;

/// The frames one body step lets through: at most a data frame, then trailers (held in place,
/// not in a collection: no allocation per step).
#[derive(Default)]
struct Frames {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Frames {
    /// The next frame, data first.
    fn pop(&mut self) -> Option<Frame<Bytes>> {
        if let Some(data) = self.data.take() {
            return Some(Frame::data(data));
        }
        self.trailers.take().map(Frame::trailers)
    }

    fn is_empty(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// A step's task, aborted when dropped.
struct StepTask(tokio::task::JoinHandle<StepResult>);

impl Drop for StepTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Step {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<StepResult> {
        let future = match self {
            Step::Inline(future) => future,
            Step::Spawned(task) => {
                return Pin::new(&mut task.0).poll(cx).map(|joined| {
                    joined.unwrap_or_else(|e| Err(format!("a body phase failed: {e}").into()))
                });
            }
        };
        let polled = future.as_mut().poll(cx);
        // Outside a runtime (never on the proxy's path) the poller goes on driving it.
        if polled.is_pending()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let future = std::mem::replace(future, Box::pin(std::future::pending()));
            *self = Step::Spawned(StepTask(runtime.spawn(future)));
            // Registers the poller to be woken when the task is done.
            return self.poll(cx);
        }
        polled
    }
}

pin_project_lite::pin_project! {
    /// A body streamed through a chain's body phases: the request body on its way upstream or
    /// the response body on its way downstream. The response side ends the stream's contexts
    /// (`on_done`/`on_log`/`on_delete`) once its last frame went through.
    pub struct FilteredBody {
        #[pin]
        inner: ProxyBody,
        stream: Arc<Mutex<FilterStream>>,
        side: Side,
        step: Option<Step>,
        ready: Frames,
        inner_done: bool,
        done: bool,
    }
}

impl FilteredBody {
    /// Wraps `inner`, filtering it on `side`.
    pub fn new(inner: ProxyBody, stream: Arc<Mutex<FilterStream>>, side: Side) -> Self {
        Self {
            inner,
            stream,
            side,
            step: None,
            ready: Frames::default(),
            inner_done: false,
            done: false,
        }
    }
}

/// What the inner body produced.
enum Input {
    Data(Bytes, bool),
    Trailers(HeaderMap),
    End,
}

fn run_step(stream: Arc<Mutex<FilterStream>>, side: Side, input: Input) -> Step {
    Step::Inline(Box::pin(async move {
        let mut stream = stream.lock_owned().await;
        let end = !matches!(input, Input::Data(_, false));
        let result = match input {
            Input::Data(data, eos) => stream.body(side, data, eos).await.map(|data| (data, None)),
            Input::End => stream
                .body(side, Bytes::new(), true)
                .await
                .map(|data| (data, None)),
            // Boxed: trailers are rare, and their phase's future would make every step's
            // future (moved into its box on every body frame) larger.
            Input::Trailers(trailers) => Box::pin(stream.trailers(side, trailers))
                .await
                .map(|(data, trailers)| (data, Some(trailers))),
        };
        let result = match result {
            Ok((data, trailers)) => Ok(Frames {
                data: data.filter(|d| !d.is_empty()),
                trailers,
            }),
            Err(response) => {
                let status = response.status();
                if side == Side::Request {
                    // The handler answers with it once the upstream exchange stops.
                    stream.outcome = Some(response);
                }
                Err(BoxError::from(format!(
                    "a filter stopped the {} body ({status})",
                    side.as_str()
                )))
            }
        };
        if side == Side::Response && (end || result.is_err()) {
            stream.finish().await;
        }
        result
    }))
}

impl Body for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(frame) = this.ready.pop() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if let Some(step) = this.step.as_mut() {
                match step.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => {
                        *this.step = None;
                        match result {
                            Ok(frames) => {
                                *this.ready = frames;
                                continue;
                            }
                            Err(error) => {
                                *this.done = true;
                                *this.inner_done = true;
                                return Poll::Ready(Some(Err(error)));
                            }
                        }
                    }
                }
            }
            if *this.inner_done {
                *this.done = true;
                return Poll::Ready(None);
            }
            let input = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    *this.inner_done = true;
                    Input::End
                }
                Poll::Ready(Some(Err(error))) => {
                    *this.done = true;
                    *this.inner_done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let eos = this.inner.is_end_stream();
                        *this.inner_done = eos;
                        Input::Data(data, eos)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            *this.inner_done = true;
                            Input::Trailers(trailers)
                        }
                        Err(_) => continue,
                    },
                },
            };
            *this.step = Some(run_step(this.stream.clone(), *this.side, input));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests;

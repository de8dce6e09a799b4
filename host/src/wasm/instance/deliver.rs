//! The calls off a stream's common path: stream calls on guests without the trampolines (one
//! guest call after another), callout answers, root-context events and the tick timer.

use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

use weft_abi::StreamCallback;

use super::{Failure, GuestStore, Instance, StreamCall};
use crate::wasm::context::{Delivery, GrpcEvent, RootEvent, Side};

impl Instance {
    /// The calls [`plan`](Self::plan) leaves: context creation alone, callout answers, and
    /// every stream call on a guest without every callback the trampolines need (one guest call
    /// after another; a callback the guest lacks is `Continue`).
    pub(super) fn dispatch(
        self: &Arc<Self>,
        store: &mut GuestStore,
        context: u32,
        call: StreamCall,
    ) -> Result<u32, Failure> {
        let e = &self.exports;
        let root = self.root_id;
        match call {
            StreamCall::Create { .. } | StreamCall::Start { .. } => {
                if let Some(f) = &e.on_context_create {
                    self.invoke(store, f, (context, root), context)?;
                }
                let StreamCall::Start {
                    headers,
                    end_of_stream,
                    ..
                } = call
                else {
                    return Ok(0);
                };
                match &e.on_request_headers {
                    Some(f) => {
                        let params = (context, headers, u32::from(end_of_stream));
                        self.invoke(store, f, params, context)
                    }
                    None => Ok(0),
                }
            }
            StreamCall::Finish => {
                if let Some(f) = &e.on_done {
                    self.invoke(store, f, context, context)?;
                }
                if let Some(f) = &e.on_log
                    && !self.skips(StreamCallback::Log)
                {
                    self.invoke(store, f, context, context)?;
                }
                match &e.on_delete {
                    Some(f) => self.invoke(store, f, context, context).map(|()| 0),
                    None => Ok(0),
                }
            }
            StreamCall::HttpCallResponse { token, response } => {
                self.deliver_http_call(store, token, *response).map(|()| 0)
            }
            StreamCall::Grpc { token, event } => {
                self.deliver_grpc(store, token, *event).map(|()| 0)
            }
            StreamCall::Headers {
                side,
                headers,
                end_of_stream,
            } => {
                let func = match side {
                    Side::Request => &e.on_request_headers,
                    Side::Response => &e.on_response_headers,
                };
                let params = (context, headers, u32::from(end_of_stream));
                match func {
                    Some(f) => self.invoke(store, f, params, context),
                    None => Ok(0),
                }
            }
            StreamCall::Body {
                side,
                size,
                end_of_stream,
            } => {
                let func = match side {
                    Side::Request => &e.on_request_body,
                    Side::Response => &e.on_response_body,
                };
                let params = (context, size, u32::from(end_of_stream));
                match func {
                    Some(f) => self.invoke(store, f, params, context),
                    None => Ok(0),
                }
            }
            StreamCall::Trailers { side, trailers } => {
                let func = match side {
                    Side::Request => &e.on_request_trailers,
                    Side::Response => &e.on_response_trailers,
                };
                match func {
                    Some(f) => self.invoke(store, f, (context, trailers), context),
                    None => Ok(0),
                }
            }
            StreamCall::Delete => match &e.on_delete {
                Some(f) => self.invoke(store, f, context, context).map(|()| 0),
                None => Ok(0),
            },
        }
    }

    fn deliver_http_call(
        &self,
        store: &mut GuestStore,
        token: u32,
        response: crate::wasm::callout::CalloutResponse,
    ) -> Result<(), Failure> {
        let Some(f) = self.exports.on_http_call_response.clone() else {
            return Ok(());
        };
        let headers = response.headers.len() as u32;
        let body = response.body.len() as u32;
        let trailers = response.trailers.len() as u32;
        store.data_mut().data.delivery = Some(Delivery {
            headers: response.headers,
            trailers: response.trailers,
            body: response.body,
        });
        let root = self.root_id;
        let result = self.invoke(store, &f, (root, token, headers, body, trailers), root);
        store.data_mut().data.delivery = None;
        result
    }

    fn deliver_grpc(
        &self,
        store: &mut GuestStore,
        token: u32,
        event: GrpcEvent,
    ) -> Result<(), Failure> {
        let root = self.root_id;
        let e = &self.exports;
        let (func, count, delivery) = match event {
            GrpcEvent::InitialMetadata(headers) => (
                e.on_grpc_receive_initial_metadata.as_ref(),
                headers.len() as u32,
                Delivery {
                    headers,
                    ..Delivery::default()
                },
            ),
            GrpcEvent::Message(body) => (
                e.on_grpc_receive.as_ref(),
                body.len() as u32,
                Delivery {
                    body,
                    ..Delivery::default()
                },
            ),
            GrpcEvent::TrailingMetadata(trailers) => (
                e.on_grpc_receive_trailing_metadata.as_ref(),
                trailers.len() as u32,
                Delivery {
                    trailers,
                    ..Delivery::default()
                },
            ),
            GrpcEvent::Close { status, message } => {
                let data = &mut store.data_mut().data;
                data.status = (status, message);
                data.grpc.remove(&token);
                (e.on_grpc_close.as_ref(), status, Delivery::default())
            }
        };
        let Some(func) = func.cloned() else {
            return Ok(());
        };
        store.data_mut().data.delivery = Some(delivery);
        let result = self.invoke(store, &func, (root, token, count), root);
        store.data_mut().data.delivery = None;
        result
    }

    /// Runs a root-context callback on a task of its own.
    pub fn spawn_root(self: &Arc<Self>, event: RootEvent) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(instance) = weak.upgrade() {
                instance.root_call(event).await;
            }
        });
    }

    async fn root_call(self: &Arc<Self>, event: RootEvent) {
        if self.is_broken() {
            return;
        }
        let mut store = self.store.lock().await;
        let root = self.root_id;
        let result = match event {
            RootEvent::Tick => match &self.exports.on_tick {
                Some(f) => self.invoke(&mut store, f, root, root),
                None => Ok(()),
            },
            RootEvent::QueueReady(queue) => match &self.exports.on_queue_ready {
                Some(f) => self.invoke(&mut store, f, (root, queue), root),
                None => Ok(()),
            },
            RootEvent::HttpCall { token, response } => {
                self.deliver_http_call(&mut store, token, response)
            }
            RootEvent::Grpc { token, event } => self.deliver_grpc(&mut store, token, event),
        };
        if let Err(failure) = result {
            tracing::debug!(plugin = %self.plugin, %failure, "root context callback failed");
        }
        self.after_call(&mut store);
    }

    /// (Re)starts the ticker at `period`; zero stops it.
    pub(super) fn start_ticker(self: &Arc<Self>, period: Duration) {
        let generation = self.tick_generation.fetch_add(1, Ordering::Relaxed) + 1;
        if period.is_zero() {
            return;
        }
        let weak: Weak<Instance> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(instance) = weak.upgrade() else {
                    return;
                };
                if instance.tick_generation.load(Ordering::Relaxed) != generation
                    || instance.is_broken()
                {
                    return;
                }
                instance.root_call(RootEvent::Tick).await;
            }
        });
    }
}

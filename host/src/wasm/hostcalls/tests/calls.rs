//! Properties, stream control, local responses and callouts.

use super::*;

// ---------------------------------------------------------------------------------------------
// Properties.

#[tokio::test]
async fn properties_through_the_abi() {
    let host = host();
    let mut guest = guest(&host).await;
    let get = |path: &str| path.replace('.', "\0");

    let path = get("request.path");
    guest.put(ARG, path.as_bytes());
    let args = [ARG, path.len() as u32, RET_PTR, RET_SIZE];
    assert_eq!(guest.call("proxy_get_property", &args).await, OK);
    assert_eq!(guest.returned(), b"/items?page=2");

    let path = get("no.such.property");
    guest.put(ARG, path.as_bytes());
    let args = [ARG, path.len() as u32, RET_PTR, RET_SIZE];
    assert_eq!(guest.call("proxy_get_property", &args).await, NOT_FOUND);

    // Set on the stream, read back; the routing property is an ordinary stream value.
    let path = get(crate::wasm::properties::UPSTREAM_CLUSTER);
    guest.put(ARG, path.as_bytes());
    guest.put(ARG2, b"canary");
    let set = [ARG, path.len() as u32, ARG2, 6];
    assert_eq!(guest.call("proxy_set_property", &set).await, OK);
    assert_eq!(
        lent(guest.data()).properties.get("weft.upstream_cluster"),
        Some(&Bytes::from_static(b"canary"))
    );
    let args = [ARG, path.len() as u32, RET_PTR, RET_SIZE];
    assert_eq!(guest.call("proxy_get_property", &args).await, OK);
    assert_eq!(guest.returned(), b"canary");

    // A trailing NUL (some SDKs end the path with one) names the same property.
    let ended = format!("{path}\0");
    guest.put(ARG, ended.as_bytes());
    guest.put(ARG2, b"stable");
    let set_ended = [ARG, ended.len() as u32, ARG2, 6];
    assert_eq!(guest.call("proxy_set_property", &set_ended).await, OK);
    assert_eq!(
        lent(guest.data()).properties.get("weft.upstream_cluster"),
        Some(&Bytes::from_static(b"stable"))
    );
    guest.put(ARG2, b"canary");

    // On the root context: plugin properties read, stream properties do not, values set land
    // on the root context.
    guest.data().effective = guest.data().root_id;
    assert_eq!(guest.call("proxy_get_property", &args).await, NOT_FOUND);
    assert_eq!(guest.call("proxy_set_property", &set).await, OK);
    assert_eq!(
        guest.data().root_properties.get("weft.upstream_cluster"),
        Some(&Bytes::from_static(b"canary"))
    );
    guest.put(ARG, b"plugin_name");
    assert_eq!(
        guest
            .call("proxy_get_property", &[ARG, 11, RET_PTR, RET_SIZE])
            .await,
        OK
    );
    assert_eq!(guest.returned(), b"unit");
}

// ---------------------------------------------------------------------------------------------
// Stream control.

#[tokio::test]
async fn stream_control_acts_on_the_lent_stream_or_sends_events() {
    use streams::{close_stream, continue_stream, set_effective_context};
    let host = host();
    let mut f = fixture(&host);
    let data = &mut f.data;

    continue_stream(data, 0).expect("request");
    continue_stream(data, 1).expect("response");
    assert_eq!(lent(data).resumed, [true, true]);
    assert_eq!(continue_stream(data, 9), Err(Status::BadArgument));
    assert_eq!(
        continue_stream(data, 3),
        Err(Status::Unimplemented),
        "upstream"
    );
    close_stream(data, 0).expect("close");
    assert!(lent(data).closed);
    assert_eq!(close_stream(data, 7), Err(Status::BadArgument));

    set_effective_context(data, OTHER).expect("another live stream");
    continue_stream(data, 0).expect("resume the other stream");
    close_stream(data, 1).expect("close the other stream");
    assert!(matches!(
        f.other.try_recv(),
        Some(StreamEvent::Resume(crate::wasm::context::Side::Request))
    ));
    assert!(matches!(f.other.try_recv(), Some(StreamEvent::Close)));

    assert_eq!(set_effective_context(data, 77), Err(Status::BadArgument));
    set_effective_context(data, data.root_id).expect("root");
    continue_stream(data, 0).expect("nothing to resume from the root context");
    set_effective_context(data, STREAM).expect("the lent stream");
    assert!(
        f.events.try_recv().is_none(),
        "the lent stream is changed in place"
    );
}

#[tokio::test]
async fn local_responses_through_the_abi() {
    let host = host();
    let mut guest = guest(&host).await;
    let headers = encode_map(&[(&b"X-Denied"[..], &b"yes"[..])]);
    guest.put(ARG, b"denied by test");
    guest.put(ARG2, b"go away");
    guest.put(ARG3, &headers);
    let args =
        |status: u32, grpc: u32| [status, ARG, 14, ARG2, 7, ARG3, headers.len() as u32, grpc];
    assert_eq!(
        guest
            .call("proxy_send_local_response", &args(403, u32::MAX))
            .await,
        OK
    );
    let reply = lent(guest.data())
        .local_response
        .take()
        .expect("a local reply");
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(&reply.body[..], b"go away");
    assert_eq!(reply.details, "denied by test");
    assert_eq!(reply.grpc_status, None, "-1 is no gRPC status");
    assert_eq!(reply.headers.len(), 1);
    assert_eq!(reply.headers[0].0, "x-denied");

    assert_eq!(
        guest.call("proxy_send_local_response", &args(200, 7)).await,
        OK
    );
    let reply = lent(guest.data())
        .local_response
        .take()
        .expect("a local reply");
    assert_eq!(reply.grpc_status, Some(7));

    assert_eq!(
        guest
            .call("proxy_send_local_response", &args(1000, u32::MAX))
            .await,
        BAD_ARGUMENT,
        "invalid status code"
    );

    // From another context: an event for that stream.
    guest.data().effective = OTHER;
    assert_eq!(
        guest
            .call("proxy_send_local_response", &args(429, u32::MAX))
            .await,
        OK
    );
    match guest.other.try_recv() {
        Some(StreamEvent::LocalResponse(reply)) => assert_eq!(reply.status.as_u16(), 429),
        other => panic!("expected a local response event, got {other:?}"),
    }
    assert!(guest.events.try_recv().is_none());
}

// ---------------------------------------------------------------------------------------------
// Callouts.

#[tokio::test]
async fn callouts_to_unknown_clusters_are_refused() {
    let host = host();
    let mut guest = guest(&host).await;
    let headers = encode_map(&[
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/"),
        (b":authority", b"nowhere"),
    ]);
    guest.put(ARG, b"nowhere");
    guest.put(ARG2, &headers);
    // Cluster `nowhere`, the headers, no body or trailers, 1 s; the token at `token_ptr`.
    let size = headers.len() as u32;
    let http = |token_ptr: u32| [ARG, 7, ARG2, size, 0, 0, 0, 0, 1000, token_ptr];
    assert_eq!(
        guest.call("proxy_http_call", &http(RET_PTR)).await,
        BAD_ARGUMENT,
        "Envoy: BAD_ARGUMENT for an unknown cluster"
    );
    let grpc = [ARG, 7, ARG3, 4, ARG3, 4, 0, 0, 0, 0, 1000, RET_PTR];
    assert_eq!(
        guest.call("proxy_grpc_call", &grpc).await,
        Status::ParseFailure as u32,
        "Envoy: PARSE_FAILURE for an unknown gRPC cluster"
    );
    assert_eq!(
        guest.call("proxy_http_call", &http(OUT_OF_BOUNDS)).await,
        INVALID_MEMORY_ACCESS
    );
    assert!(guest.data().grpc.is_empty());
}

#[tokio::test]
async fn grpc_tokens_that_are_unknown_are_not_found() {
    let host = host();
    let mut f = fixture(&host);
    let data = &mut f.data;
    assert_eq!(
        callouts::grpc_send(data, 9, Bytes::new(), true),
        Err(Status::NotFound)
    );
    assert_eq!(callouts::grpc_cancel(data, 9), Err(Status::NotFound));
    assert_eq!(callouts::grpc_close(data, 9), Err(Status::NotFound));
}

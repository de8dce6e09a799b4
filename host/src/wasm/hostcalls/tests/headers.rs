//! Header maps: values, pairs, writes to headers and pseudo-headers, whole-map replacement.

use super::*;

#[tokio::test]
async fn header_values_through_the_abi() {
    let host = host();
    let mut guest = guest(&host).await;
    let request = MapType::HttpRequestHeaders;
    assert_eq!(guest.header(request, "x-b").await, Ok(b"b".to_vec()));
    assert_eq!(
        guest.header(request, "X-A").await,
        Ok(b"1,2".to_vec()),
        "keys are matched lowercased; several values are joined with a comma"
    );
    assert_eq!(
        guest.header(request, ":path").await,
        Ok(b"/items?page=2".to_vec())
    );
    assert_eq!(guest.header(request, ":method").await, Ok(b"GET".to_vec()));
    assert_eq!(
        guest.header(request, "host").await,
        Ok(b"api.example".to_vec()),
        "host is :authority"
    );
    assert_eq!(guest.header(request, "x-missing").await, Err(NOT_FOUND));
    assert_eq!(
        guest.header(MapType::HttpResponseHeaders, ":status").await,
        Err(BAD_ARGUMENT),
        "no response yet"
    );
    assert_eq!(
        guest.header(MapType::HttpRequestTrailers, "x-t").await,
        Err(NOT_FOUND),
        "absent trailers are an empty map"
    );
    assert_eq!(
        guest
            .call(
                "proxy_get_header_map_value",
                &[99, ARG, 3, RET_PTR, RET_SIZE]
            )
            .await,
        BAD_ARGUMENT,
        "unknown map type"
    );
    assert_eq!(
        guest
            .call(
                "proxy_get_header_map_value",
                &[0, OUT_OF_BOUNDS, 3, RET_PTR, RET_SIZE]
            )
            .await,
        INVALID_MEMORY_ACCESS
    );
    guest.put(ARG, b"x-b");
    assert_eq!(
        guest
            .call(
                "proxy_get_header_map_value",
                &[0, ARG, 3, OUT_OF_BOUNDS, RET_SIZE]
            )
            .await,
        INVALID_MEMORY_ACCESS,
        "the return pointer is outside memory"
    );

    // The root context has no stream: its maps are not available.
    guest.data().effective = guest.data().root_id;
    assert_eq!(guest.header(request, "x-b").await, Err(BAD_ARGUMENT));
    assert_eq!(
        guest
            .call("proxy_get_header_map_pairs", &[0, RET_PTR, RET_SIZE])
            .await,
        OK,
        "pairs of a map not available are an empty map, as Envoy answers"
    );
    assert!(guest.returned().is_empty());
}

#[tokio::test]
async fn header_pairs_through_the_abi_list_pseudo_headers_first() {
    let host = host();
    let mut guest = guest(&host).await;
    assert_eq!(
        guest
            .call("proxy_get_header_map_pairs", &[0, RET_PTR, RET_SIZE])
            .await,
        OK
    );
    let wire = guest.returned();
    let pairs = decode_map(&wire).expect("encoded map");
    let expected: [(&[u8], &[u8]); 7] = [
        (b":authority", b"api.example"),
        (b":path", b"/items?page=2"),
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b"x-a", b"1"),
        (b"x-a", b"2"),
        (b"x-b", b"b"),
    ];
    assert_eq!(pairs, expected);
    assert_eq!(
        maps::size(guest.data(), MapType::HttpRequestHeaders),
        Ok(wire.len() as u32)
    );
}

#[tokio::test]
async fn header_writes_change_headers_and_pseudo_headers() {
    use maps::{Op, get_value, write_value};
    let host = host();
    let mut f = fixture(&host);
    let data = &mut f.data;
    let request = MapType::HttpRequestHeaders;

    write_value(data, request, b"X-New", Op::Add, b"1").expect("add");
    write_value(data, request, b"x-new", Op::Add, b"2").expect("add again");
    assert_eq!(get_value(data, request, b"x-new"), Ok(b"1,2".to_vec()));
    write_value(data, request, b"x-new", Op::Replace, b"3").expect("replace");
    assert_eq!(get_value(data, request, b"x-new"), Ok(b"3".to_vec()));
    write_value(data, request, b"x-new", Op::Remove, b"").expect("remove");
    assert_eq!(get_value(data, request, b"x-new"), Err(Status::NotFound));
    let huge = vec![b'a'; maps::MAX_MAP_BYTES];
    assert!(
        matches!(
            write_value(data, request, b"x-huge", Op::Add, &huge),
            Err(Fault::Trap(_))
        ),
        "growing a map past the host's limit traps"
    );
    write_value(data, request, b"x-never", Op::Remove, b"").expect("removing nothing is Ok");

    write_value(data, request, b":path", Op::Replace, b"/v2?x=1").expect(":path");
    write_value(data, request, b":method", Op::Add, b"POST").expect(":method");
    write_value(data, request, b":authority", Op::Replace, b"other.example").expect(":authority");
    write_value(data, request, b"Host", Op::Replace, b"third.example").expect("host");
    write_value(data, request, b":scheme", Op::Replace, b"http").expect(":scheme");
    {
        let stream = lent(data);
        assert_eq!(&stream.path[..], b"/v2?x=1");
        assert_eq!(stream.method, Method::POST);
        assert_eq!(stream.authority, "third.example");
        assert_eq!(stream.scheme, "http");
        assert!(
            stream.request_headers.get("host").is_none(),
            "Host stays out of the header fields"
        );
    }
    write_value(data, request, b":path", Op::Remove, b"").expect("removing :path is Ok");
    assert_eq!(&lent(data).path[..], b"/v2?x=1", "and changes nothing");

    for (key, value) in [
        (&b":method"[..], &b"NOT A METHOD"[..]),
        (b":path", b""),
        (b":scheme", b"gopher"),
        (b":protocol", b"websocket"),
        (b"bad name", b"v"),
        (b"x-ok", b"line\nbreak"),
    ] {
        assert_eq!(
            write_value(data, request, key, Op::Replace, value),
            Err(Status::BadArgument.into()),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(
        lent(data).method,
        Method::POST,
        "a bad value changes nothing"
    );

    // Response headers exist once the response does; `:status` is its status code.
    let response = MapType::HttpResponseHeaders;
    assert_eq!(
        write_value(data, response, b"x-r", Op::Add, b"1"),
        Err(Status::BadArgument.into())
    );
    lent(data).response = Some(ResponseHead {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
    });
    write_value(data, response, b":status", Op::Replace, b"418").expect(":status");
    write_value(data, response, b"x-r", Op::Add, b"1").expect("response header");
    assert_eq!(get_value(data, response, b":status"), Ok(b"418".to_vec()));
    assert_eq!(
        write_value(data, response, b":status", Op::Replace, b"abc"),
        Err(Status::BadArgument.into())
    );

    // Trailers are created by the first write.
    let trailers = MapType::HttpRequestTrailers;
    assert_eq!(maps::get_pairs(data, trailers), Vec::<u8>::new());
    assert_eq!(maps::size(data, trailers), Ok(0));
    write_value(data, trailers, b"x-t", Op::Remove, b"").expect("remove from absent trailers");
    assert!(lent(data).request_trailers.is_none());
    write_value(data, trailers, b"x-t", Op::Replace, b"t").expect("trailer");
    assert_eq!(get_value(data, trailers, b"x-t"), Ok(b"t".to_vec()));
    assert_eq!(
        write_value(data, trailers, b":path", Op::Replace, b"/"),
        Err(Status::BadArgument.into())
    );

    // Callout maps are read-only, and absent outside a delivery.
    let call = MapType::HttpCallResponseHeaders;
    assert_eq!(get_value(data, call, b":status"), Err(Status::BadArgument));
    data.delivery = Some(crate::wasm::context::Delivery {
        headers: vec![(Bytes::from_static(b":status"), Bytes::from_static(b"200"))],
        ..Default::default()
    });
    assert_eq!(get_value(data, call, b":status"), Ok(b"200".to_vec()));
    assert_eq!(
        write_value(data, call, b"x", Op::Add, b"1"),
        Err(Status::BadArgument.into())
    );
}

#[tokio::test]
async fn set_pairs_replaces_the_whole_map() {
    let host = host();
    let mut f = fixture(&host);
    let data = &mut f.data;
    let pairs: [(&[u8], &[u8]); 3] = [(b":method", b"PUT"), (b"X-One", b"1"), (b"x-two", b"2")];
    maps::set_pairs(data, MapType::HttpRequestHeaders, &encode_map(&pairs)).expect("set");
    let stream = lent(data);
    assert_eq!(stream.method, Method::PUT);
    assert_eq!(
        &stream.path[..],
        b"/items?page=2",
        "pseudo-headers left out are kept"
    );
    assert_eq!(stream.request_headers.len(), 2);
    assert_eq!(stream.request_headers["x-one"], "1");
    assert!(stream.request_headers.get("x-a").is_none());
    assert_eq!(
        maps::set_pairs(data, MapType::HttpRequestHeaders, b"\x05\0\0\0junk"),
        Err(Status::BadArgument.into()),
        "malformed map"
    );
}

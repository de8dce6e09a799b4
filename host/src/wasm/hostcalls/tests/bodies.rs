//! Buffers: clamped reads, prepend/replace/append writes, the host's size limit.

use super::*;

#[tokio::test]
async fn buffer_reads_clamp_to_the_buffer() {
    use buffers::get_bytes;
    let host = host();
    let mut guest = guest(&host).await;
    lent(guest.data()).request_body = BytesMut::from(&b"hello world"[..]);
    let body = BufferType::HttpRequestBody;
    let data = guest.data();
    assert_eq!(get_bytes(data, body, 0, 5), Ok(b"hello".to_vec()));
    assert_eq!(get_bytes(data, body, 6, 100), Ok(b"world".to_vec()));
    assert_eq!(get_bytes(data, body, 11, 5), Ok(Vec::new()));
    assert_eq!(get_bytes(data, body, 20, 5), Ok(Vec::new()));
    assert_eq!(
        get_bytes(data, body, 1, u32::MAX),
        Ok(b"ello world".to_vec()),
        "start + max_size past u32::MAX still reads the rest"
    );
    assert_eq!(
        get_bytes(data, BufferType::PluginConfiguration, 0, u32::MAX),
        Ok(b"{\"plugin\":true}".to_vec())
    );
    assert_eq!(
        get_bytes(data, BufferType::HttpCallResponseBody, 0, 10),
        Err(Status::NotFound)
    );
    assert_eq!(
        get_bytes(data, BufferType::DownstreamData, 0, 10),
        Err(Status::NotFound)
    );

    let call = |start: u32, max: u32| {
        [
            BufferType::HttpRequestBody as u32,
            start,
            max,
            RET_PTR,
            RET_SIZE,
        ]
    };
    assert_eq!(guest.call("proxy_get_buffer_bytes", &call(6, 3)).await, OK);
    assert_eq!(guest.returned(), b"wor");
    guest.put(RET_PTR, &[0xff; 8]);
    assert_eq!(guest.call("proxy_get_buffer_bytes", &call(50, 3)).await, OK);
    assert_eq!(
        (guest.word(RET_PTR), guest.word(RET_SIZE)),
        (0, 0),
        "nothing to read: Ok, address 0, length 0"
    );
    assert_eq!(
        guest
            .call("proxy_get_buffer_bytes", &[42, 0, 1, RET_PTR, RET_SIZE])
            .await,
        BAD_ARGUMENT,
        "unknown buffer type"
    );
    guest.data().effective = guest.data().root_id;
    assert_eq!(
        guest.call("proxy_get_buffer_bytes", &call(0, 3)).await,
        NOT_FOUND,
        "no body without a stream"
    );
}

#[tokio::test]
async fn buffer_writes_prepend_replace_or_append() {
    use buffers::set_bytes;
    let host = host();
    let mut f = fixture(&host);
    let data = &mut f.data;
    let body = BufferType::HttpResponseBody;
    lent(data).response_body = BytesMut::from(&b"middle"[..]);
    set_bytes(data, body, 0, 0, b"<").expect("prepend");
    set_bytes(data, body, u32::MAX, 0, b">").expect("append");
    assert_eq!(&lent(data).response_body[..], b"<middle>");
    assert_eq!(
        set_bytes(data, body, 2, 3, b"x"),
        Err(Status::BadArgument.into()),
        "no splicing inside the buffer"
    );
    set_bytes(data, body, 0, 8, b"new").expect("replace");
    let huge = vec![0u8; buffers::MAX_BODY_BYTES];
    assert!(
        matches!(
            set_bytes(data, body, u32::MAX, 0, &huge),
            Err(Fault::Trap(_))
        ),
        "growing a body past the host's limit traps"
    );
    assert_eq!(&lent(data).response_body[..], b"new");
    assert_eq!(buffers::length(data, body), Ok(3));
    assert_eq!(
        set_bytes(data, BufferType::PluginConfiguration, 0, 0, b"x"),
        Err(Status::BadArgument.into()),
        "read-only"
    );
}

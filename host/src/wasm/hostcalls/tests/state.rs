//! Shared data and queues, logging, timers.

use super::*;

// ---------------------------------------------------------------------------------------------
// Shared data and queues.

#[tokio::test]
async fn shared_data_through_the_abi() {
    let host = host();
    let mut guest = guest(&host).await;
    guest.put(ARG, b"counter");
    guest.put(ARG2, b"41");
    let get = [ARG, 7, RET_PTR, RET_SIZE, RET_CAS];
    assert_eq!(guest.call("proxy_get_shared_data", &get).await, NOT_FOUND);
    assert_eq!(
        guest
            .call("proxy_set_shared_data", &[ARG, 7, ARG2, 2, 0])
            .await,
        OK
    );
    assert_eq!(guest.call("proxy_get_shared_data", &get).await, OK);
    assert_eq!(guest.returned(), b"41");
    let cas = guest.word(RET_CAS);
    assert_ne!(cas, 0);
    guest.put(ARG2, b"42");
    assert_eq!(
        guest
            .call("proxy_set_shared_data", &[ARG, 7, ARG2, 2, cas + 1])
            .await,
        Status::CasMismatch as u32
    );
    assert_eq!(
        guest
            .call("proxy_set_shared_data", &[ARG, 7, ARG2, 2, cas])
            .await,
        OK
    );
    assert_eq!(guest.call("proxy_get_shared_data", &get).await, OK);
    assert_eq!(guest.returned(), b"42");
    assert_eq!(
        host.shared_data.get("unit-vm", b"counter").map(|(v, _)| v),
        Ok(Bytes::from_static(b"42")),
        "stored under the plugin's VM id"
    );
}

#[tokio::test]
async fn shared_queues_register_enqueue_and_dequeue() {
    let host = host();
    let mut f = fixture(&host);
    let token = shared::register_queue(&mut f.data, "jobs");
    assert_eq!(host.queues.resolve("unit-vm", "jobs"), Some(token));
    host.queues
        .enqueue(token, Bytes::from_static(b"job-1"))
        .expect("enqueue");
    assert_eq!(host.queues.dequeue(token), Ok(Bytes::from_static(b"job-1")));
    assert_eq!(host.queues.dequeue(token), Err(Status::Empty));
    assert_eq!(
        shared::register_queue(&mut f.data, "jobs"),
        token,
        "registering again opens the same queue"
    );
}

// ---------------------------------------------------------------------------------------------
// Logging and timers.

#[tokio::test]
async fn logging_and_stdout() {
    let host = host();
    let mut guest = guest(&host).await;
    guest.put(ARG, b"hello");
    assert_eq!(guest.call("proxy_log", &[2, ARG, 5]).await, OK);
    assert!(!guest.data().panicked);
    assert_eq!(guest.call("proxy_log", &[9, ARG, 5]).await, BAD_ARGUMENT);
    assert_eq!(
        guest.call("proxy_log", &[2, OUT_OF_BOUNDS, 5]).await,
        INVALID_MEMORY_ACCESS
    );
    assert_eq!(guest.call("proxy_log", &[5, ARG, 5]).await, OK);
    assert!(
        guest.data().panicked,
        "a Critical line is the SDK's panic hook"
    );

    // Two iovecs to stdout: "hello" and " world\n".
    guest.put(ARG2, b" world\n");
    let iovecs: Vec<u8> = [ARG, 5, ARG2, 7]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    guest.put(ARG3, &iovecs);
    assert_eq!(guest.call("fd_write", &[1, ARG3, 2, RET_SIZE]).await, 0);
    assert_eq!(guest.word(RET_SIZE), 12);
    assert_eq!(
        guest.call("fd_write", &[7, ARG3, 2, RET_SIZE]).await,
        8,
        "BADF"
    );
    assert_eq!(
        guest
            .call("fd_write", &[2, OUT_OF_BOUNDS, 2, RET_SIZE])
            .await,
        21,
        "FAULT"
    );
}

#[tokio::test]
async fn tick_periods_are_recorded_for_the_instance() {
    let host = host();
    let mut f = fixture(&host);
    general::set_tick_period(&mut f.data, 250);
    assert_eq!(f.data.tick_period, Some(Duration::from_millis(250)));
    assert!(f.data.tick_changed);
    general::set_tick_period(&mut f.data, 0);
    assert_eq!(
        f.data.tick_period,
        Some(Duration::ZERO),
        "zero stops ticking"
    );
}

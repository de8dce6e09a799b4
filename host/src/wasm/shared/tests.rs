//! Unit tests for shared data and queues: Envoy's CAS rules, VM isolation, exact counts under
//! concurrent compare-and-swap from many threads, FIFO queues with owner notification.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use bytes::Bytes;
use weft_abi::Status;

use super::*;

#[test]
fn get_and_set_follow_envoys_cas_rules() {
    let data = SharedData::new();
    assert_eq!(data.get("vm", b"k").err(), Some(Status::NotFound));
    data.set("vm", b"k", Bytes::from_static(b"one"), 0)
        .expect("unconditional set");
    let (value, cas) = data.get("vm", b"k").expect("present");
    assert_eq!((&value[..], cas != 0), (&b"one"[..], true));
    assert_eq!(
        data.set("vm", b"k", Bytes::from_static(b"stale"), cas + 1),
        Err(Status::CasMismatch)
    );
    data.set("vm", b"k", Bytes::from_static(b"two"), cas)
        .expect("current cas wins");
    let (value, new_cas) = data.get("vm", b"k").expect("present");
    assert_eq!(&value[..], b"two");
    assert_ne!(new_cas, cas, "every write gets a fresh cas");
    assert_eq!(
        data.set("vm", b"k", Bytes::from_static(b"old"), cas),
        Err(Status::CasMismatch)
    );
    data.set("vm", b"fresh", Bytes::from_static(b"x"), 12345)
        .expect("a missing key is created whatever the cas");
}

#[test]
fn vm_ids_do_not_see_each_other() {
    let data = SharedData::new();
    data.set("a", b"k", Bytes::from_static(b"1"), 0)
        .expect("set");
    assert_eq!(data.get("b", b"k").err(), Some(Status::NotFound));
}

/// Many workers incrementing one counter with get + CAS-set retries end at the exact total.
#[test]
fn concurrent_compare_and_swap_loses_no_update() {
    let data = Arc::new(SharedData::new());
    let read = |data: &SharedData| {
        let (value, cas) = data.get("vm", b"count").expect("seeded");
        (
            u64::from_le_bytes(value[..].try_into().expect("8 bytes")),
            cas,
        )
    };
    data.set(
        "vm",
        b"count",
        Bytes::copy_from_slice(&0u64.to_le_bytes()),
        0,
    )
    .expect("seed");
    let (threads, increments) = (8, 500);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let data = data.clone();
            thread::spawn(move || {
                for _ in 0..increments {
                    loop {
                        let (current, cas) = read(&data);
                        let next = Bytes::copy_from_slice(&(current + 1).to_le_bytes());
                        match data.set("vm", b"count", next, cas) {
                            Ok(()) => break,
                            Err(status) => assert_eq!(status, Status::CasMismatch),
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("worker");
    }
    assert_eq!(read(&data).0, threads * increments);
}

#[test]
fn queues_are_fifo_and_notify_their_owner() {
    let queues = SharedQueues::new();
    assert_eq!(queues.resolve("vm", "jobs"), None);
    let notified = Arc::new(Mutex::new(Vec::new()));
    let log = notified.clone();
    let token = queues.register(
        "vm",
        "jobs",
        Arc::new(move |t| log.lock().expect("lock").push(t)),
    );
    assert_ne!(token, 0);
    assert_eq!(queues.resolve("vm", "jobs"), Some(token));
    assert_eq!(queues.resolve("other-vm", "jobs"), None);
    assert_eq!(queues.dequeue(token), Err(Status::Empty));
    queues
        .enqueue(token, Bytes::from_static(b"first"))
        .expect("enqueue");
    queues
        .enqueue(token, Bytes::from_static(b"second"))
        .expect("enqueue");
    assert_eq!(*notified.lock().expect("lock"), vec![token, token]);
    assert_eq!(&queues.dequeue(token).expect("item")[..], b"first");
    assert_eq!(&queues.dequeue(token).expect("item")[..], b"second");
    assert_eq!(queues.dequeue(token), Err(Status::Empty));
    assert_eq!(
        queues.enqueue(token + 99, Bytes::new()),
        Err(Status::NotFound)
    );
    assert_eq!(queues.dequeue(token + 99), Err(Status::NotFound));
}

#[test]
fn re_registering_keeps_items_and_moves_the_owner() {
    let queues = SharedQueues::new();
    let first = Arc::new(AtomicUsize::new(0));
    let second = Arc::new(AtomicUsize::new(0));
    let f = first.clone();
    let token = queues.register(
        "vm",
        "q",
        Arc::new(move |_| {
            f.fetch_add(1, Ordering::Relaxed);
        }),
    );
    queues
        .enqueue(token, Bytes::from_static(b"kept"))
        .expect("enqueue");
    let s = second.clone();
    let again = queues.register(
        "vm",
        "q",
        Arc::new(move |_| {
            s.fetch_add(1, Ordering::Relaxed);
        }),
    );
    assert_eq!(again, token);
    queues
        .enqueue(token, Bytes::from_static(b"next"))
        .expect("enqueue");
    assert_eq!(
        (
            first.load(Ordering::Relaxed),
            second.load(Ordering::Relaxed)
        ),
        (1, 1)
    );
    assert_eq!(&queues.dequeue(token).expect("item")[..], b"kept");
}

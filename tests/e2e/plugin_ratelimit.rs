//! End-to-end tests of the built-in `ratelimit` plugin (`builtin://ratelimit`) through the proxy:
//! a bucket shared by every worker admits exactly its burst however many clients race for it
//! (HTTP/1.1 connections and h2c streams at once), a refused request gets `429` with
//! `Retry-After`, and header keys and instance names keep buckets apart.

use http::{HeaderValue, Version};
use weft_e2e::client::{self, H2Conn, Reply};
use weft_e2e::filters::{STEP, send, start, step};
use weft_e2e::resources::{Filter, Plugin, edge};
use weft_e2e::upstream::Upstream;
use weft_e2e::within;

fn builtin() -> Plugin {
    Plugin::new("ratelimit", "").url("builtin://ratelimit")
}

/// A GET of `path` carrying `x-user: user` when there is one.
fn get_as(
    path: &str,
    user: Option<&'static str>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut request = client::get(path);
    if let Some(user) = user {
        request
            .headers_mut()
            .insert("x-user", HeaderValue::from_static(user));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_exactly_the_burst_and_then_429() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    const BURST: usize = 50;
    let up = Upstream::http1("web").await.expect("upstream");
    let filter = Filter::new("ratelimit").config("{key: client_ip, rate: 1/h, burst: 50}");
    let weft = start(&edge(up.addr, &[builtin()], [filter]), "builtin ratelimit").await;
    let addr = weft.addr("public");

    // Even tasks open an HTTP/1.1 connection per request; odd ones multiplex their requests as
    // concurrent streams of one h2c connection. All race for the same bucket (one client IP).
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        tasks.push(tokio::spawn(async move {
            let h2 = if task % 2 == 1 {
                Some(H2Conn::connect(addr).await?)
            } else {
                None
            };
            let mut requests = Vec::new();
            for i in 0..PER_TASK {
                let path = format!("/t{task}/r{i}");
                let h2 = h2.clone();
                requests.push(tokio::spawn(async move {
                    match h2 {
                        Some(h2) => h2.get(&path).await,
                        None => client::h1(addr, client::get(&path)).await,
                    }
                }));
            }
            let mut replies = Vec::new();
            for request in requests {
                replies.push(request.await??);
            }
            anyhow::Ok(replies)
        }));
    }
    let mut replies: Vec<Reply> = Vec::new();
    for task in tasks {
        let task = within(STEP * 4, "a client task", task).await;
        replies.extend(
            task.expect("the client task")
                .unwrap_or_else(|e| panic!("a request failed: {e:#}")),
        );
    }
    assert_eq!(replies.len(), TASKS * PER_TASK);

    let allowed: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        allowed.len(),
        BURST,
        "exactly the burst is admitted across workers and connections"
    );
    assert_eq!(
        refused.len(),
        TASKS * PER_TASK - BURST,
        "the rest is refused"
    );

    // Each admitted request took its own token: the remaining counts are 49, 48, …, 0.
    let mut remaining: Vec<u64> = allowed
        .iter()
        .map(|r| {
            assert_eq!(r.header("x-ratelimit-limit"), Some("50"));
            r.header("x-ratelimit-remaining")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("x-ratelimit-remaining on {:?}", r.headers))
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..50).collect::<Vec<u64>>());

    for reply in refused {
        let retry_after: u64 = reply
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("retry-after on a 429: {:?}", reply.headers));
        // One token per hour: the next one is about an hour away.
        assert!(
            (3_500..=3_600).contains(&retry_after),
            "retry-after {retry_after}"
        );
        assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(reply.header("x-ratelimit-limit"), Some("50"));
        assert_eq!(reply.text(), "rate limited\n");
    }
    assert_eq!(
        up.requests(),
        BURST,
        "refused requests never reach the upstream"
    );
    weft.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keys_and_instance_names_keep_buckets_apart() {
    let up = Upstream::http1("web").await.expect("upstream");
    // Two instances with the same key and a burst of 2: were their buckets shared, every
    // request would take two tokens from one bucket.
    let config = "{key: \"header:x-user\", rate: 1/h, burst: 2}";
    let filters = [
        Filter::new("ratelimit").named("first").config(config),
        Filter::new("ratelimit").named("second").config(config),
    ];
    let weft = start(
        &edge(up.addr, &[builtin()], filters),
        "two ratelimit filters",
    )
    .await;
    let addr = weft.addr("public");

    for (user, version) in [("ann", Version::HTTP_11), ("bob", Version::HTTP_2)] {
        let statuses = [
            send(addr, version, get_as("/", Some(user))).await.status,
            send(addr, version, get_as("/", Some(user))).await.status,
            send(addr, version, get_as("/", Some(user))).await.status,
        ];
        assert_eq!(statuses, [200, 200, 429], "{user}: a bucket of 2 per user");
    }
    for _ in 0..4 {
        let reply = step(
            "a request without x-user",
            client::h1(addr, get_as("/", None)),
        )
        .await;
        assert_eq!(
            reply.status, 200,
            "requests without the key's header are not limited"
        );
        assert_eq!(reply.header("x-ratelimit-limit"), None);
    }
    weft.shutdown().await;
}

//! Filters swapped while traffic flows: keep-alive clients over HTTP/1.1 and h2c send requests
//! without pause while the configuration changes twenty times — the filter's name, its module
//! (the same filter built for the other target), or both. No request fails, no connection
//! drops, every request runs on one version from start to end (its request and response phases
//! agree on the filter's name), and new requests — on existing connections too — get the new
//! version as soon as the reload returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_e2e::client::{self, H1Conn, H2Conn, Reply};
use weft_e2e::filters::{STEP, start, step};
use weft_e2e::resources::{Filter, Plugin, edge};
use weft_e2e::upstream::{Upstream, header_values};
use weft_e2e::{wait_for, within};
use weft_test_artifacts::{HEADERS_UNKNOWN, HEADERS_WASIP1};

/// The whole test is bounded by this.
const WHOLE: Duration = Duration::from_secs(30);

/// `headers` from `module` as filter `name`.
fn config(up: SocketAddr, module: &str, name: &str) -> String {
    edge(
        up,
        &[Plugin::new("headers", module)],
        [Filter::new("headers").named(name)],
    )
}

/// The filter name a request ran with: the upstream's `x-filtered-by` and the client's
/// `x-response-filtered-by` must be one and the same.
fn filtered_by(reply: &Reply) -> Result<String, String> {
    if reply.status != 200 {
        return Err(format!("status {}: {}", reply.status, reply.text()));
    }
    let json: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("a non-JSON body ({e}): {}", reply.text()))?;
    let request = header_values(&json, "x-filtered-by");
    let response: Vec<&str> = reply
        .headers
        .get_all("x-response-filtered-by")
        .iter()
        .map(|v| v.to_str().unwrap_or("<non-ASCII>"))
        .collect();
    match (request.as_slice(), response.as_slice()) {
        ([req], [resp]) if req == resp => Ok(req.clone()),
        _ => Err(format!(
            "request phase saw {request:?}, response phase {response:?}: one request ran on \
             two versions, or a filter ran twice or not at all"
        )),
    }
}

/// Keep-alive clients sending requests until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    /// The filter name each client's latest request ran with.
    latest: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A client's connection: HTTP/1.1 or h2c.
enum Client {
    H1(H1Conn),
    H2(H2Conn),
}

impl Client {
    async fn connect(addr: SocketAddr, h2: bool) -> anyhow::Result<Client> {
        Ok(if h2 {
            Client::H2(H2Conn::connect(addr).await?)
        } else {
            Client::H1(H1Conn::connect(addr).await?)
        })
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        match self {
            Client::H1(c) => c.get(path).await,
            Client::H2(c) => c.get(path).await,
        }
    }
}

impl Load {
    /// `clients` connections to `addr`, alternating HTTP/1.1 and h2c.
    async fn start(addr: SocketAddr, clients: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            failures: Arc::default(),
            latest: Arc::new(Mutex::new(vec![String::new(); clients])),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for id in 0..clients {
            let h2 = id % 2 == 1;
            let mut client = step("connecting a load client", Client::connect(addr, h2)).await;
            let (stop, ok) = (load.stop.clone(), load.ok.clone());
            let (failures, latest) = (load.failures.clone(), load.latest.clone());
            tasks.push(tokio::spawn(async move {
                let kind = if h2 { "h2c" } else { "HTTP/1.1" };
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let path = format!("/load/{id}/{n}");
                    let outcome = match tokio::time::timeout(STEP, client.get(&path)).await {
                        Err(_) => Err(format!("no answer within {STEP:?}")),
                        Ok(Err(e)) => Err(format!("{e:#}")),
                        Ok(Ok(reply)) => filtered_by(&reply),
                    };
                    match outcome {
                        Ok(name) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            if let Ok(mut latest) = latest.lock() {
                                latest[id] = name;
                            }
                        }
                        Err(why) => {
                            if let Ok(mut failures) = failures.lock() {
                                failures.push(format!("client {id} ({kind}) GET {path}: {why}"));
                            }
                            // Keep loading on a fresh connection, so one failure shows once.
                            if let Ok(Ok(fresh)) =
                                tokio::time::timeout(STEP, Client::connect(addr, h2)).await
                            {
                                client = fresh;
                            }
                        }
                    }
                }
            }));
        }
        Load { tasks, ..load }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn latest(&self) -> Vec<String> {
        self.latest.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until `n` more requests succeeded than now.
    async fn progress(&self, n: usize, what: &str) {
        let target = self.ok() + n;
        let moved = wait_for(|| async { self.ok() >= target }, STEP).await;
        assert!(
            moved,
            "{what}: the load stalled at {} successful requests; failures: {:?}",
            self.ok(),
            self.failures()
        );
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            within(STEP, "stopping a load client", task)
                .await
                .expect("a load client task");
        }
        let ok = self.ok.load(Ordering::SeqCst);
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (ok, failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_swap_under_load_without_failing_a_request() {
    within(WHOLE, "the whole hot-swap test", swap_under_load()).await;
}

async fn swap_under_load() {
    // Each step changes one thing or both: name; module; name and module.
    let states = [
        ("a", HEADERS_WASIP1),
        ("b", HEADERS_WASIP1),
        ("b", HEADERS_UNKNOWN),
    ];
    let up = Upstream::http1("web").await.expect("upstream");
    let first = config(up.addr, states[0].1, states[0].0);
    let weft = start(&first, "the headers filter").await;
    let addr = weft.addr("public");
    let load = Load::start(addr, 8).await;
    load.progress(16, "before the first swap").await;

    let swaps = 20;
    for i in 1..=swaps {
        let (name, module) = states[i % states.len()];
        let what = format!("swap {i} to {name} from {module}");
        let version = step(&what, weft.apply_config(&config(up.addr, module, name))).await;
        assert_eq!(version, i as u64 + 1, "swap {i}");
        // The admin server shows the version and the module now serving.
        let dump = step("GET /config_dump", weft.admin_get("/config_dump")).await;
        let other = if module == HEADERS_WASIP1 {
            HEADERS_UNKNOWN
        } else {
            HEADERS_WASIP1
        };
        assert_eq!(dump.json()["version"], version.to_string(), "swap {i}");
        assert!(
            dump.text().contains(module) && !dump.text().contains(other),
            "after swap {i}, /config_dump names the module {module} and not {other}: {}",
            dump.text()
        );
        // A request that starts now runs on the new version.
        let what = format!("a fresh request after swap {i}");
        let reply = step(&what, client::h1(addr, client::get("/fresh"))).await;
        assert_eq!(
            filtered_by(&reply),
            Ok(name.to_owned()),
            "a request started after swap {i} runs on it"
        );
        load.progress(16, &format!("after swap {i}")).await;
    }

    // Every keep-alive connection moves to the last version.
    let last = states[swaps % states.len()].0;
    let moved = wait_for(|| async { load.latest().iter().all(|n| n == last) }, STEP).await;
    assert!(
        moved,
        "every load client's requests run on the last version ({last}): {:?}",
        load.latest()
    );
    let (ok, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during {swaps} swaps:\n{}",
        failures.len(),
        ok + failures.len(),
        failures.join("\n")
    );
    assert!(
        ok >= 16 * (swaps + 1),
        "the load ran throughout: {ok} requests"
    );
}

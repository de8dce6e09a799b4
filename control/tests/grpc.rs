//! Service tests of the control plane's gRPC API: a real server on 127.0.0.1:0 over a
//! temporary data directory, driven through the generated tonic clients.

use std::{path::Path, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tonic::{Code, Status, Streaming};
use weft_control::{
    client::{self, Clients},
    proto::{
        ApplyRequest, ChangeAction, DeletePluginRequest, DeleteResourceRequest, DiscoveryRequest,
        FetchRequest, GetPluginRequest, GetResourceRequest, ListPluginsRequest,
        ListResourcesRequest, PublishChunk, ReloadRequest, Snapshot, StatusRequest,
        registry_client::RegistryClient,
    },
    server::{Running, ServeOptions, start},
};
use weft_test_artifacts::PASSTHROUGH_WASIP1;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A chain running the `hello` plugin, which follows the newest published version.
const CHAIN: &str = include_str!("fixtures/chain.yaml");

/// A listener whose chain does not exist (`filterChain` is on line 6).
const DANGLING: &str = include_str!("fixtures/dangling.yaml");

/// The smallest module the registry accepts (not the same bytes as the passthrough filter).
const MINIMAL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))"#;

async fn start_in(data: &Path) -> Result<(Running, Clients), Box<dyn std::error::Error>> {
    let mut options = ServeOptions::new(([127, 0, 0, 1], 0).into(), data.to_owned());
    options.admin = Some(([127, 0, 0, 1], 0).into());
    options.debounce = Duration::from_millis(20);
    let running = start(options).await?;
    let clients = client::connect(&format!("http://{}", running.addr), &running.token).await?;
    Ok((running, clients))
}

/// Publishes `bytes` as `name@version` in chunks of `chunk` bytes.
async fn publish(
    clients: &mut Clients,
    name: &str,
    version: &str,
    bytes: &[u8],
    chunk: usize,
) -> Result<weft_control::proto::PublishReply, Status> {
    let chunks: Vec<PublishChunk> = bytes
        .chunks(chunk)
        .enumerate()
        .map(|(i, data)| PublishChunk {
            name: if i == 0 {
                name.to_owned()
            } else {
                String::new()
            },
            version: if i == 0 {
                version.to_owned()
            } else {
                String::new()
            },
            data: data.to_vec(),
        })
        .collect();
    Ok(clients
        .registry
        .publish(tokio_stream::iter(chunks))
        .await?
        .into_inner())
}

async fn fetch(clients: &mut Clients, sha256: &str) -> Result<Vec<u8>, Status> {
    let mut stream = clients
        .registry
        .fetch(FetchRequest {
            sha256: sha256.to_owned(),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

async fn apply(clients: &mut Clients, yaml: &str) -> Result<u64, Status> {
    Ok(clients
        .resources
        .apply(ApplyRequest {
            yaml: yaml.to_owned(),
        })
        .await?
        .into_inner()
        .version)
}

fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    match result {
        Err(status) => status,
        Ok(value) => panic!("expected an error status, got {value:?}"),
    }
}

#[tokio::test]
async fn a_module_published_in_chunks_lists_gets_and_fetches_back_byte_identical() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (running, mut clients) = start_in(dir.path()).await?;
    let bytes = std::fs::read(PASSTHROUGH_WASIP1)?;
    let reply = publish(&mut clients, "hello", "1.0.0", &bytes, 64 * 1024).await?;
    assert!(reply.created);
    let module = reply.module.ok_or("no module in the reply")?;
    assert_eq!(module.size, bytes.len() as u64);

    let listed = clients
        .registry
        .list(ListPluginsRequest {})
        .await?
        .into_inner();
    assert_eq!(listed.plugins.len(), 1);
    assert_eq!(listed.plugins[0].name, "hello");
    assert_eq!(listed.plugins[0].versions, vec![module.clone()]);

    let newest = clients
        .registry
        .get(GetPluginRequest {
            name: "hello".into(),
            version: None,
        })
        .await?
        .into_inner();
    assert_eq!(newest, module);

    assert_eq!(fetch(&mut clients, &module.sha256).await?, bytes);

    // Republishing the same bytes is a no-op; other bytes under the same version are refused.
    let again = publish(&mut clients, "hello", "1.0.0", &bytes, 1024 * 1024).await?;
    assert!(!again.created);
    let other = wat::parse_str(MINIMAL)?;
    let refused = code(publish(&mut clients, "hello", "1.0.0", &other, 1024 * 1024).await);
    assert_eq!(refused.code(), Code::AlreadyExists, "{}", refused.message());

    let missing = code(
        clients
            .registry
            .get(GetPluginRequest {
                name: "hello".into(),
                version: Some("9.9.9".into()),
            })
            .await,
    );
    assert_eq!(missing.code(), Code::NotFound);
    let bad_digest = code(fetch(&mut clients, "abc").await);
    assert_eq!(bad_digest.code(), Code::InvalidArgument);
    running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_module_that_is_not_proxy_wasm_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (running, mut clients) = start_in(dir.path()).await?;
    let plain = wat::parse_str(r#"(module (func (export "run")))"#)?;
    let refused = code(publish(&mut clients, "plain", "1.0.0", &plain, 1024).await);
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("not a proxy-wasm filter"),
        "{}",
        refused.message()
    );
    let text = code(publish(&mut clients, "text", "1.0.0", b"hello", 1024).await);
    assert_eq!(text.code(), Code::InvalidArgument);
    let empty = code(
        clients
            .registry
            .publish(tokio_stream::iter(Vec::<PublishChunk>::new()))
            .await,
    );
    assert_eq!(empty.code(), Code::InvalidArgument);
    let listed = clients
        .registry
        .list(ListPluginsRequest {})
        .await?
        .into_inner();
    assert!(listed.plugins.is_empty());
    running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn resources_apply_with_a_version_bump_and_refuse_dangling_references_by_line() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let (running, mut clients) = start_in(dir.path()).await?;
    // Before the module is published, the plugin is refused.
    let unpublished = code(apply(&mut clients, CHAIN).await);
    assert_eq!(unpublished.code(), Code::InvalidArgument);
    assert!(
        unpublished
            .message()
            .starts_with("line 5: field `spec.url`"),
        "{}",
        unpublished.message()
    );

    let bytes = std::fs::read(PASSTHROUGH_WASIP1)?;
    publish(&mut clients, "hello", "1.0.0", &bytes, 1024 * 1024).await?;
    let applied = clients
        .resources
        .apply(ApplyRequest { yaml: CHAIN.into() })
        .await?
        .into_inner();
    assert_eq!(applied.version, 1);
    assert_eq!(applied.changes.len(), 4);
    assert!(
        applied
            .changes
            .iter()
            .all(|c| c.action() == ChangeAction::Created)
    );
    assert_eq!(apply(&mut clients, CHAIN).await?, 1, "unchanged: no bump");

    let dangling = code(apply(&mut clients, DANGLING).await);
    assert_eq!(dangling.code(), Code::InvalidArgument);
    assert_eq!(
        dangling.message(),
        "line 6: field `spec.filterChain`: no FilterChain named `missing`"
    );

    let listed = clients
        .resources
        .list(ListResourcesRequest { kind: None })
        .await?
        .into_inner();
    assert_eq!(listed.version, 1);
    assert_eq!(listed.resources.len(), 4);
    let plugin = clients
        .resources
        .get(GetResourceRequest {
            kind: "plugin".into(),
            name: "hello".into(),
        })
        .await?
        .into_inner();
    assert!(plugin.yaml.contains("registry://hello"), "{}", plugin.yaml);

    // In use: neither the chain nor the module can go.
    let in_use = code(
        clients
            .resources
            .delete(DeleteResourceRequest {
                kind: "FilterChain".into(),
                name: "edge".into(),
            })
            .await,
    );
    assert_eq!(
        in_use.code(),
        Code::FailedPrecondition,
        "{}",
        in_use.message()
    );
    let module_in_use = code(
        clients
            .registry
            .delete(DeletePluginRequest {
                name: "hello".into(),
                version: "1.0.0".into(),
            })
            .await,
    );
    assert_eq!(module_in_use.code(), Code::FailedPrecondition);

    let deleted = clients
        .resources
        .delete(DeleteResourceRequest {
            kind: "Listener".into(),
            name: "public".into(),
        })
        .await?
        .into_inner();
    assert_eq!(deleted.version, 2);
    let gone = code(
        clients
            .resources
            .get(GetResourceRequest {
                kind: "Listener".into(),
                name: "public".into(),
            })
            .await,
    );
    assert_eq!(gone.code(), Code::NotFound);
    running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn calls_without_the_token_are_unauthenticated() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (running, _) = start_in(dir.path()).await?;
    let url = format!("http://{}", running.addr);
    let mut anonymous = RegistryClient::connect(url.clone()).await?;
    let refused = code(anonymous.list(ListPluginsRequest {}).await);
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut wrong = client::connect(&url, "not-the-token").await?;
    let refused = code(
        wrong
            .resources
            .list(ListResourcesRequest { kind: None })
            .await,
    );
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = code(wrong.discovery.status(StatusRequest {}).await);
    assert_eq!(refused.code(), Code::Unauthenticated);
    running.shutdown().await?;
    Ok(())
}

/// One simulated proxy on a Subscribe call.
struct Proxy {
    requests: mpsc::Sender<DiscoveryRequest>,
    snapshots: Streaming<Snapshot>,
    node: String,
}

impl Proxy {
    async fn subscribe(clients: &mut Clients, node: &str) -> Result<Self, Status> {
        let (requests, snapshots) = clients.subscribe(node, 0).await?;
        Ok(Self {
            requests,
            snapshots,
            node: node.to_owned(),
        })
    }

    async fn next(&mut self) -> Result<Snapshot, Box<dyn std::error::Error>> {
        let next = tokio::time::timeout(Duration::from_secs(10), self.snapshots.message()).await?;
        Ok(next?.ok_or("the snapshot stream ended")?)
    }

    async fn answer(
        &self,
        snapshot: &Snapshot,
        running: u64,
        error: &str,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.requests
            .send(DiscoveryRequest {
                node: self.node.clone(),
                version_info: running,
                response_nonce: snapshot.nonce.clone(),
                error_detail: error.to_owned(),
            })
            .await?;
        Ok(())
    }
}

/// Polls `Status` until `done` holds for `node`.
async fn wait_for_status(
    clients: &mut Clients,
    node: &str,
    done: impl Fn(&weft_control::proto::ProxyStatus) -> bool,
) -> Result<weft_control::proto::ProxyStatus, Box<dyn std::error::Error>> {
    for _ in 0..200 {
        let status = clients
            .discovery
            .status(StatusRequest {})
            .await?
            .into_inner();
        if let Some(proxy) = status.proxies.into_iter().find(|p| p.node == node)
            && done(&proxy)
        {
            return Ok(proxy);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("status of {node} never got there").into())
}

#[tokio::test]
async fn a_subscriber_gets_snapshots_and_status_shows_its_acks_and_nacks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (running, mut clients) = start_in(dir.path()).await?;
    let bytes = std::fs::read(PASSTHROUGH_WASIP1)?;
    let published = publish(&mut clients, "hello", "1.0.0", &bytes, 1024 * 1024).await?;
    let module = published.module.ok_or("no module")?;
    apply(&mut clients, CHAIN).await?;

    let mut proxy = Proxy::subscribe(&mut clients, "proxy-a").await?;
    let first = proxy.next().await?;
    assert_eq!(first.version, 1);
    assert!(
        first.yaml.contains("url: registry://hello"),
        "{}",
        first.yaml
    );
    assert_eq!(first.yaml.matches("kind: ").count(), 4);
    assert_eq!(first.modules.len(), 1);
    assert_eq!(first.modules[0].url, "registry://hello");
    assert_eq!(first.modules[0].sha256, module.sha256);
    assert_eq!(first.modules[0].size, bytes.len() as u64);
    proxy.answer(&first, 1, "").await?;
    let acked = wait_for_status(&mut clients, "proxy-a", |p| p.applied_version == 1).await?;
    assert!(acked.connected);
    assert!(acked.last_seen_unix_ms > 0);

    // A change is pushed with a fresh nonce; the proxy rejects it.
    let version = apply(
        &mut clients,
        "apiVersion: weft/v1\nkind: Cluster\nmetadata: {name: api}\nspec: {endpoints: [\"127.0.0.1:9090\"]}\n",
    )
    .await?;
    assert_eq!(version, 2);
    let second = proxy.next().await?;
    assert_eq!(second.version, 2);
    assert_ne!(second.nonce, first.nonce);
    assert!(second.yaml.contains("name: api"));
    proxy
        .answer(&second, 1, "cluster api: connection refused")
        .await?;
    let nacked = wait_for_status(&mut clients, "proxy-a", |p| p.last_nack_version == 2).await?;
    assert_eq!(nacked.applied_version, 1);
    assert_eq!(nacked.last_nack_error, "cluster api: connection refused");

    // Publishing a new version of a followed plugin moves it: a new version, a new module.
    let v2 = wat::parse_str(MINIMAL)?;
    let moved = publish(&mut clients, "hello", "2.0.0", &v2, 1024 * 1024).await?;
    assert_eq!(moved.resource_version, 3);
    let third = proxy.next().await?;
    assert_eq!(third.version, 3);
    assert_eq!(third.modules[0].version, "2.0.0");
    proxy.answer(&third, 3, "").await?;
    wait_for_status(&mut clients, "proxy-a", |p| p.applied_version == 3).await?;

    let metrics = running.metrics_text();
    assert!(metrics.contains("weft_control_pushes_total 3"), "{metrics}");
    assert!(
        metrics.contains("weft_control_rejections_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_control_connected_proxies 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_control_convergence_seconds_count 1"),
        "{metrics}"
    );

    // The admin endpoint serves the same text.
    let admin = running.admin_addr.ok_or("no admin address")?;
    let mut http = tokio::net::TcpStream::connect(admin).await?;
    http.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    http.read_to_string(&mut response).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("weft_control_rejections_total 1"),
        "{response}"
    );

    // Hanging up shows as disconnected.
    drop(proxy);
    wait_for_status(&mut clients, "proxy-a", |p| !p.connected).await?;
    running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_reload_pushes_the_newest_version_with_a_new_generation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (running, mut clients) = start_in(dir.path()).await?;
    let reload = |name: &str| ReloadRequest { name: name.into() };

    let unknown = code(clients.registry.reload(reload("hello")).await);
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let bytes = std::fs::read(PASSTHROUGH_WASIP1)?;
    publish(&mut clients, "hello", "1.0.0", &bytes, 1024 * 1024).await?;
    let unused = code(clients.registry.reload(reload("hello")).await);
    assert_eq!(unused.code(), Code::FailedPrecondition);
    assert!(
        unused
            .message()
            .contains("no Plugin resource refers to registry://hello"),
        "{}",
        unused.message()
    );

    let applied = apply(&mut clients, CHAIN).await?;
    let mut proxy = Proxy::subscribe(&mut clients, "proxy-a").await?;
    let first = proxy.next().await?;
    assert_eq!(first.modules[0].generation, 0);
    proxy.answer(&first, applied, "").await?;

    let reply = clients.registry.reload(reload("hello")).await?.into_inner();
    assert_eq!(reply.version, applied + 1);
    assert_eq!(reply.generation, 1);
    assert_eq!(reply.plugins, ["hello"]);
    let module = reply.module.ok_or("no module")?;
    assert_eq!(module.version, "1.0.0");
    let pushed = proxy.next().await?;
    assert_eq!(pushed.version, reply.version);
    assert_eq!(pushed.yaml, first.yaml, "only the generation changed");
    assert_eq!(pushed.modules[0].generation, 1);
    assert_eq!(pushed.modules[0].sha256, module.sha256);
    proxy.answer(&pushed, pushed.version, "").await?;
    wait_for_status(&mut clients, "proxy-a", |p| {
        p.applied_version == reply.version
    })
    .await?;

    // The generation survives a restart.
    drop(proxy);
    running.shutdown().await?;
    let (running, mut clients) = start_in(dir.path()).await?;
    let mut proxy = Proxy::subscribe(&mut clients, "proxy-a").await?;
    let again = proxy.next().await?;
    assert_eq!(again.version, reply.version);
    assert_eq!(again.modules[0].generation, 1);
    drop(proxy);
    running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_subscriber_must_name_its_node() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (running, mut clients) = start_in(dir.path()).await?;
    let mut proxy = Proxy::subscribe(&mut clients, "").await?;
    let refused = match proxy.next().await {
        Err(e) => e.to_string(),
        Ok(snapshot) => panic!("expected a refusal, got {snapshot:?}"),
    };
    assert!(refused.contains("must name the proxy's node"), "{refused}");
    running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bytes = std::fs::read(PASSTHROUGH_WASIP1)?;
    let (running, mut clients) = start_in(dir.path()).await?;
    let token = running.token.clone();
    assert!(running.token_created);
    let module = publish(&mut clients, "hello", "1.0.0", &bytes, 100_000)
        .await?
        .module
        .ok_or("no module")?;
    apply(&mut clients, CHAIN).await?;
    // A subscriber open at shutdown does not keep the store locked.
    let mut proxy = Proxy::subscribe(&mut clients, "proxy-a").await?;
    proxy.next().await?;
    running.shutdown().await?;

    let (running, mut clients) = start_in(dir.path()).await?;
    assert_eq!(running.token, token);
    assert!(!running.token_created);
    let listed = clients
        .resources
        .list(ListResourcesRequest {
            kind: Some("Plugin".into()),
        })
        .await?
        .into_inner();
    assert_eq!(listed.version, 1);
    assert_eq!(listed.resources.len(), 1);
    let got = clients
        .registry
        .get(GetPluginRequest {
            name: "hello".into(),
            version: Some("1.0.0".into()),
        })
        .await?
        .into_inner();
    assert_eq!(got, module);
    assert_eq!(fetch(&mut clients, &module.sha256).await?, bytes);
    let mut proxy = Proxy::subscribe(&mut clients, "proxy-a").await?;
    let snapshot = proxy.next().await?;
    assert_eq!(snapshot.version, 1);
    assert_eq!(snapshot.modules.len(), 1);
    running.shutdown().await?;
    Ok(())
}

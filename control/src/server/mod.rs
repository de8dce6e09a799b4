//! The control plane's gRPC server: the `Registry`, `Resources` and `Discovery` services of
//! `proto/weft/control/v1/control.proto` over the embedded store in `--data`, behind a bearer
//! token, plus an admin HTTP endpoint with the metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), weft_control::server::ControlError> {
//! use weft_control::server::{ServeOptions, start};
//!
//! let running = start(ServeOptions::new(
//!     "127.0.0.1:0".parse().expect("an address"),
//!     "/var/lib/weft".into(),
//! ))
//! .await?;
//! println!("gRPC on {}, token in {}", running.addr, running.token_path.display());
//! running.shutdown().await
//! # }
//! ```

mod auth;
mod discovery;
mod metrics;
mod registry;
mod resources;
mod status;

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::{StreamExt as _, wrappers::TcpListenerStream};

pub use metrics::Metrics;
pub use registry::{CHUNK_BYTES, MAX_MODULE_BYTES};

use crate::{
    proto::{
        discovery_server::DiscoveryServer, registry_server::RegistryServer,
        resources_server::ResourcesServer,
    },
    registry::Registry,
    resources::Resources,
    store::{RedbStore, Store, StoreError},
    token::{self, TOKEN_FILE, TokenError},
};

/// The default gRPC address (`weft control` without `--listen`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:18000";

/// The default time a proxy's pushes wait after a change, so a burst becomes one push.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// How long [`Running::shutdown`] waits for open calls to end before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The gRPC address; port 0 picks a free port (see [`Running::addr`]).
    pub listen: SocketAddr,
    /// The data directory: the store (`weft.redb`) and the token (`token`). Created if needed.
    pub data: PathBuf,
    /// The admin HTTP address serving `/stats/prometheus` and `/ready`; none when `None`.
    pub admin: Option<SocketAddr>,
    /// How long each proxy's push waits after a change ([`DEFAULT_DEBOUNCE`]).
    pub debounce: Duration,
}

impl ServeOptions {
    /// gRPC on `listen`, the store in `data`, no admin endpoint, the default debounce.
    pub fn new(listen: SocketAddr, data: PathBuf) -> Self {
        Self {
            listen,
            data,
            admin: None,
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// A failure to start or run the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The token file could not be created or read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A control plane task panicked or was cancelled.
    #[error("control plane task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running control plane; [`Running::shutdown`] stops it and releases the data directory.
pub struct Running {
    /// The gRPC address it listens on.
    pub addr: SocketAddr,
    /// The admin HTTP address, when one was asked for.
    pub admin_addr: Option<SocketAddr>,
    /// The API token clients present as `authorization: Bearer <token>`.
    pub token: String,
    /// Where the token is stored (`DATA/token`).
    pub token_path: PathBuf,
    /// Whether the token was created by this start (first start on this data directory).
    pub token_created: bool,
    metrics: Arc<Metrics>,
    hub: Arc<discovery::Hub>,
    store: Arc<dyn Store>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .field("token_path", &self.token_path)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The control plane's metrics in the Prometheus text format (what the admin endpoint's
    /// `/stats/prometheus` serves).
    pub fn metrics_text(&self) -> String {
        self.metrics.text()
    }

    /// Stops accepting calls, ends every Subscribe stream, waits (up to a few seconds) for
    /// open calls to finish, and closes the store, so the data directory can be opened again.
    pub async fn shutdown(self) -> Result<(), ControlError> {
        let Self {
            stop,
            server,
            admin,
            hub,
            store,
            ..
        } = self;
        stop.send_replace(true);
        hub.join_subscribers().await;
        let mut server = server;
        let served = match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(joined) => joined?,
            Err(_) => {
                tracing::warn!("open calls did not finish in time; closing them");
                server.abort();
                Ok(())
            }
        };
        if let Some(admin) = admin {
            admin.await?;
        }
        drop(hub);
        // Blocking store work still running (a publish's compile) holds the store; wait so
        // the next open of the data directory does not find it locked.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Arc::strong_count(&store) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        served?;
        tracing::info!("control plane stopped");
        Ok(())
    }
}

/// Starts the control plane and returns once it listens: opens (creating) the data directory,
/// its token and store, binds `options.listen` (and `options.admin`), and serves until
/// [`Running::shutdown`].
pub async fn start(options: ServeOptions) -> Result<Running, ControlError> {
    let data = options.data.clone();
    let (token, token_created, store) = tokio::task::spawn_blocking(move || {
        let (token, created) = token::ensure_token(&data)?;
        let store = RedbStore::open(&data)?;
        Ok::<_, ControlError>((token, created, store))
    })
    .await??;
    let store: Arc<dyn Store> = Arc::new(store);
    let registry = Registry::new(store.clone());
    let resources = Resources::new(store.clone());
    let version = {
        let resources = resources.clone();
        tokio::task::spawn_blocking(move || resources.version())
            .await?
            .map_err(|e| match e {
                crate::resources::ResourceError::Store(e) => e,
                other => StoreError::Backend(other.to_string()),
            })?
    };
    let metrics = Arc::new(Metrics::new()?);
    let (stop, stopped) = watch::channel(false);
    let hub = Arc::new(discovery::Hub::new(
        store.clone(),
        version,
        options.debounce,
        metrics.clone(),
        stopped.clone(),
    ));

    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| ControlError::Bind {
                addr: options.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| ControlError::Bind {
        addr: options.listen,
        source,
    })?;
    let admin = match options.admin {
        Some(admin) => {
            let listener = TcpListener::bind(admin)
                .await
                .map_err(|source| ControlError::Bind {
                    addr: admin,
                    source,
                })?;
            let admin_addr = listener.local_addr().map_err(|source| ControlError::Bind {
                addr: admin,
                source,
            })?;
            let task = tokio::spawn(metrics::serve_admin(
                listener,
                metrics.clone(),
                stopped.clone(),
            ));
            Some((admin_addr, task))
        }
        None => None,
    };

    let auth = auth::RequireToken::new(&token);
    let router = tonic::transport::Server::builder()
        .add_service(RegistryServer::with_interceptor(
            registry::RegistryService {
                registry,
                hub: hub.clone(),
            },
            auth.clone(),
        ))
        .add_service(ResourcesServer::with_interceptor(
            resources::ResourcesService {
                resources,
                store: store.clone(),
                hub: hub.clone(),
            },
            auth.clone(),
        ))
        .add_service(DiscoveryServer::with_interceptor(
            discovery::DiscoveryService { hub: hub.clone() },
            auth,
        ));
    let mut until = stopped;
    // tonic leaves sockets it did not accept itself as they are: without TCP_NODELAY, a reply
    // written in two segments waits out the client's delayed ACK (40 ms) for its second.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(socket) = &accepted
            && let Err(e) = socket.set_nodelay(true)
        {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        accepted
    });
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = until.wait_for(|stop| *stop).await;
    }));
    let token_path = options.data.join(TOKEN_FILE);
    tracing::info!(
        addr = %addr,
        admin = ?admin.as_ref().map(|(a, _)| *a),
        data = %options.data.display(),
        token = %token_path.display(),
        token_created,
        version,
        "control plane listening"
    );
    let (admin_addr, admin) = match admin {
        Some((addr, task)) => (Some(addr), Some(task)),
        None => (None, None),
    };
    Ok(Running {
        addr,
        admin_addr,
        token,
        token_path,
        token_created,
        metrics,
        hub,
        store,
        stop,
        server,
        admin,
    })
}

/// Runs the control plane until `shutdown` completes (e.g. Ctrl-C), then stops it cleanly.
/// Prints where it listens and where the API token is.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControlError> {
    let running = start(options).await?;
    let created = if running.token_created {
        "created "
    } else {
        ""
    };
    eprintln!(
        "weft control: gRPC on {}{}; API token {created}in {}",
        running.addr,
        running
            .admin_addr
            .map(|a| format!(", metrics on http://{a}/stats/prometheus"))
            .unwrap_or_default(),
        running.token_path.display(),
    );
    shutdown.await;
    running.shutdown().await
}

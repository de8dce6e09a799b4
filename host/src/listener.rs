//! A listener's accept loop: enforces `maxConnections` at accept, spawns a task per connection,
//! and stops accepting when told (reload removed it, or the process drains). Stopping also tells
//! every open connection of the listener to finish gracefully.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{http::server, runtime::Shared};

/// A running listener.
pub struct ListenerHandle {
    /// The address it is bound to (port resolved when configured as 0).
    pub local_addr: SocketAddr,
    /// The configured address, to tell whether a reload must rebind.
    pub configured: SocketAddr,
    open: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ListenerHandle {
    /// Starts accepting on an already bound socket.
    pub fn spawn(
        shared: Arc<Shared>,
        name: Arc<str>,
        socket: TcpListener,
        configured: SocketAddr,
        drain_timeout: Duration,
    ) -> std::io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            shared,
            name,
            socket,
            open.clone(),
            stopped,
            drain_timeout,
        ));
        Ok(Self {
            local_addr,
            configured,
            open,
            stop,
            task,
        })
    }

    /// Connections open on this listener.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops accepting (the socket closes) and asks open connections to finish gracefully.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        self.task.abort();
    }
}

/// Decrements the open-connection count when a connection task ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>, prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.dec();
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    name: Arc<str>,
    socket: TcpListener,
    open: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(listener) = shared.runtime.load().listeners.get(&name).cloned() else {
            continue;
        };
        if open.load(Ordering::Relaxed) >= listener.config.limits.max_connections {
            listener.stats.cx_overflow.inc();
            tracing::debug!(listener = %name, client = %peer, "connection refused: maxConnections reached");
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        listener.stats.cx_total.inc();
        listener.stats.cx_active.inc();
        let guard = OpenGuard(open.clone(), listener.stats.cx_active.clone());
        let (shared, name, stop) = (shared.clone(), name.clone(), stopped.clone());
        tokio::spawn(async move {
            let _guard = guard;
            server::serve(shared, name, stream, peer, stop, drain_timeout).await;
        });
    }
}

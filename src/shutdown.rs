//! Graceful shutdown, the mini-redis way: a broadcast tells every task to stop;
//! each task holds a clone of an `mpsc::Sender` it never uses, so the owner knows
//! every task has finished when the receiver yields `None`.

use tokio::sync::{broadcast, mpsc};

/// Held by the owner of a group of tasks.
pub struct ShutdownGroup {
    /// Dropped (or sent on) to tell every task to stop.
    notify: broadcast::Sender<()>,
    /// Cloned into each task; the group is done when all clones are gone.
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by one task: wait on [`Shutdown::recv`] in its `select!`.
pub struct Shutdown {
    /// Set once the signal arrived, so `recv` returns at once afterwards.
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
    /// Never used; its drop tells the group this task ended.
    _done: mpsc::Sender<()>,
}

impl Default for ShutdownGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownGroup {
    pub fn new() -> Self {
        let (notify, _) = broadcast::channel(1);
        let (done_tx, done_rx) = mpsc::channel(1);
        Self {
            notify,
            done_tx,
            done_rx,
        }
    }

    /// A handle for one more task.
    pub fn handle(&self) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify: self.notify.subscribe(),
            _done: self.done_tx.clone(),
        }
    }

    /// Tells every task to stop and waits until all of them have.
    pub async fn shutdown(self) {
        let Self {
            notify,
            done_tx,
            mut done_rx,
        } = self;
        drop(notify);
        drop(done_tx);
        let _ = done_rx.recv().await;
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Another handle of the same group, for a task started again by a supervisor.
    /// Once the group has shut down, its `recv` returns at once.
    pub fn resubscribe(&self) -> Self {
        Self {
            is_shutdown: self.is_shutdown,
            notify: self.notify.resubscribe(),
            _done: self._done.clone(),
        }
    }

    /// Resolves when the group shuts down.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: a signal during a slow start-up (leaf
/// server, agents) is then a clean shutdown, not the default kill.
pub fn signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers we can only wait forever; say so once.
            tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

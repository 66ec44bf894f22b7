//! Keeps the node's long-lived loops alive: a panic in the reconciler or the
//! forwarder used to end that task silently, and with it every later deployment or
//! every result's way to the hub, while heartbeats said all was well.

use std::future::Future;
use std::time::Duration;

use crate::shutdown::Shutdown;

/// First pause before a task that panicked is started again; doubles per panic in
/// a row, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// A run that lasted this long resets the pause: it was not a crash loop.
const STABLE: Duration = Duration::from_secs(300);

/// Runs `start(shutdown)` as its own task and starts it again whenever it panics,
/// until the group shuts down. `on_panic` hears of each panic (with its message)
/// before the pause. A task that returns on its own ends supervision: the loops
/// supervised here return only at shutdown.
pub async fn supervise<F, Fut, P, PF>(
    name: &'static str,
    mut shutdown: Shutdown,
    mut start: F,
    mut on_panic: P,
) where
    F: FnMut(Shutdown) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    P: FnMut(String) -> PF,
    PF: Future<Output = ()>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        let began = tokio::time::Instant::now();
        let task = tokio::spawn(start(shutdown.resubscribe()));
        let message = match task.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => panic_message(e.into_panic()),
            Err(_) => return, // cancelled: the runtime is going away
        };
        if began.elapsed() > STABLE {
            pause = FIRST_PAUSE;
        }
        tracing::error!(
            task = name,
            "task panicked, starting it again in {pause:?}: {message}"
        );
        on_panic(format!(
            "the node's {name} panicked and is started again in {}s: {message}",
            pause.as_secs()
        ))
        .await;
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|_| "(no message)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::shutdown::ShutdownGroup;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_started_again_until_shutdown() {
        let group = ShutdownGroup::new();
        let runs = Arc::new(AtomicU32::new(0));
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let supervisor = tokio::spawn({
            let (runs, heard) = (runs.clone(), heard.clone());
            supervise(
                "test loop",
                group.handle(),
                move |mut shutdown| {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        if n <= 2 {
                            panic!("run {n} broke");
                        }
                        shutdown.recv().await;
                    }
                },
                move |message| {
                    heard.lock().unwrap().push(message);
                    async {}
                },
            )
        });
        // Two panics: paused 1 s, then 2 s; the third run stays up.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let heard = heard.lock().unwrap().clone();
        assert_eq!(heard.len(), 2);
        assert!(heard[0].contains("test loop panicked") && heard[0].contains("run 1 broke"));
        assert!(heard[1].contains("again in 2s"), "{}", heard[1]);
        tokio::time::timeout(Duration::from_secs(5), group.shutdown())
            .await
            .expect("the supervised task did not stop at shutdown");
        supervisor.await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "started again after shutdown"
        );
    }
}

//! The log writer's own thread.
//!
//! An emit's way to its sockets has three waits after the request: the writer
//! hands the batch to SQLite's thread, takes the commit back, and hands the
//! events to the deliverer. On the shared runtime each of those wake-ups queues
//! behind whatever else is runnable, and under fan-out that is one write task
//! per socket per event: thousands. Measured at 5,000 sockets × 50 emits/s, the
//! commit took 37 ms on average from the writer's side while SQLite's own work
//! took well under one. On a thread of its own the writer is woken by the
//! operating system, as SQLite's thread is, and it is never behind the sockets.
//!
//! The deliverer is not here: it runs on the shared runtime (see
//! [`super::delivery`]). Its work is waking one write task per socket, and from
//! a worker thread those wake-ups go to that worker's own queue and run there
//! with the bytes still in its cache; from this thread each one went through the
//! runtime's shared queue, and the writer waited behind the deliverer's turn.

use std::future::Future;

use futures_util::FutureExt;
use tokio::runtime::Builder;
use tokio::sync::oneshot;

/// Runs a task livehub cannot work without. If it panics, nothing would be
/// delivered any more while the process looked alive: exit instead, so that
/// the supervisor restarts livehub and clients reconnect and replay.
pub(crate) async fn critical<F: Future<Output = ()>>(name: &'static str, task: F) {
    if std::panic::AssertUnwindSafe(task)
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!(
            task = name,
            "a critical task panicked; exiting so that a supervisor restarts livehub"
        );
        std::process::exit(70);
    }
}

/// Runs the [`critical`] `task` on a single-threaded runtime of its own, on a
/// thread named `thread` that ends with the task (when the last
/// [`super::Hub`] is dropped and its queue drains).
pub(crate) fn spawn_critical<F>(
    thread: &str,
    name: &'static str,
    task: F,
) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::memory::worker_parked)
        .build()?;
    // The caller awaits the task's handle; the thread waits for this instead.
    let (running, ended) = oneshot::channel::<()>();
    let handle = runtime.spawn(async move {
        let _running = running;
        critical(name, task).await
    });
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = ended.await;
            });
        })?;
    Ok(handle)
}

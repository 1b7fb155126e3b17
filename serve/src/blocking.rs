//! One bounded executor for the work that blocks a thread: policy evaluations (CPU for
//! tens of microseconds to the epoch deadline) and file reads.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why a job did not give its result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockingError {
    /// The executor was closed ([`BlockingExecutor::close`]) before the job got a slot.
    #[error("shutting down")]
    Closed,
    /// The job panicked.
    #[error("the job failed unexpectedly")]
    Panicked,
}

/// Runs closures on tokio's blocking threads, at most `limit` at a time; the rest wait
/// for a slot without holding a thread. Cheap to clone; clones share the slots.
#[derive(Debug, Clone)]
pub struct BlockingExecutor {
    slots: Arc<Semaphore>,
}

impl BlockingExecutor {
    /// An executor that runs at most `limit` jobs at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    /// Runs `job` on a blocking thread once a slot is free, and returns its result.
    ///
    /// # Errors
    ///
    /// [`BlockingError::Closed`] after [`Self::close`]; [`BlockingError::Panicked`] when
    /// `job` panics.
    pub async fn run<T, F>(&self, job: F) -> Result<T, BlockingError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| BlockingError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            job()
        })
        .await
        .map_err(|_| BlockingError::Panicked)
    }

    /// Refuses jobs from now on (those running finish); for a server that has drained.
    pub fn close(&self) {
        self.slots.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_limit_jobs_run_at_once() {
        let executor = BlockingExecutor::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                let executor = executor.clone();
                tokio::spawn(async move {
                    executor
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_and_a_closed_executor_are_errors() {
        let executor = BlockingExecutor::new(1);
        assert!(matches!(
            executor.run(|| panic!("boom")).await,
            Err(BlockingError::Panicked)
        ));
        assert_eq!(executor.run(|| 7).await.unwrap(), 7);
        executor.close();
        assert!(matches!(
            executor.run(|| 7).await,
            Err(BlockingError::Closed)
        ));
    }
}

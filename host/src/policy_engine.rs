//! The wasmtime engine policies run on, and the one epoch ticker that drives their
//! deadlines: made here with regcred's configuration, or handed in by an embedder.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::LoadError;
use crate::limits::Limits;

/// A wasmtime [`Engine`] with the thread that advances its epoch. Clone it to run many
/// policies on one engine and one ticker thread (each [`PolicyPre`](crate::PolicyPre)
/// built without one makes its own); the thread stops when the last clone is dropped.
///
/// ```
/// use std::time::Duration;
/// use regcred_host::{PolicyEngine, PolicyPre};
///
/// let mut config = wasmtime::Config::new();
/// config.epoch_interruption(true);
/// let engine = PolicyEngine::new(wasmtime::Engine::new(&config)?, Duration::from_millis(5))?;
/// let first = PolicyPre::builder().engine(engine.clone()).build()?;
/// let second = PolicyPre::builder().engine(engine.clone()).build()?;
/// assert!(wasmtime::Engine::same(first.engine(), second.engine()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    tick: Duration,
    pool_slots: Option<u32>,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("tick", &self.tick)
            .field("pool_slots", &self.pool_slots)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Runs policies on an embedder's `engine`, advancing its epoch every `tick` (at
    /// least 1 ms; deadlines are counted in ticks). The engine's allocator is the
    /// embedder's: with a pooling allocator, its memory size must fit the policies'
    /// memory limits. The embedded module loads precompiled on it when its compilation
    /// settings are [`regcred_module_build::engine_config`]'s (compared by
    /// [`regcred_module_build::compatibility_digest`]), and is compiled otherwise.
    ///
    /// # Errors
    ///
    /// [`LoadError::Engine`] when the engine was built without
    /// `Config::epoch_interruption(true)` (deadlines could not be enforced) or the ticker
    /// thread cannot start.
    pub fn new(engine: Engine, tick: Duration) -> Result<Self, LoadError> {
        if !engine.get_epoch_interruption() {
            return Err(LoadError::Engine {
                reason: "the engine must be built with Config::epoch_interruption(true): \
                         policy deadlines are epoch deadlines"
                    .into(),
            });
        }
        Self::start(engine, tick.max(Duration::from_millis(1)), None)
    }

    /// regcred's own engine: [`regcred_module_build::engine_config`] (epoch interruption,
    /// the settings the embedded module was precompiled for), and a pooling allocator
    /// with `slots` instance slots sized for `limits` (or on-demand allocation with
    /// `None`), ticking every [`Limits::epoch_tick`].
    ///
    /// # Errors
    ///
    /// [`LoadError::Engine`] when the machine refuses the engine (address space for the
    /// pool) or the ticker thread.
    pub fn with_limits(limits: &Limits, slots: Option<u32>) -> Result<Self, LoadError> {
        // The compilation settings the build script precompiled the embedded module with.
        let mut config = regcred_module_build::engine_config();
        if let Some(slots) = slots {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_core_instances(slots)
                .total_memories(slots)
                .total_tables(slots)
                .max_memories_per_module(1)
                .max_tables_per_module(1)
                .max_memory_size(limits.memory_limit())
                .table_elements(limits.table_elements())
                // Keep a small memory's pages mapped between instances: resetting them
                // is cheaper than faulting them in again.
                .linear_memory_keep_resident(1 << 20)
                .table_keep_resident(64 << 10);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|err| LoadError::Engine {
            reason: err.to_string(),
        })?;
        Self::start(engine, limits.epoch_tick(), slots)
    }

    fn start(engine: Engine, tick: Duration, pool_slots: Option<u32>) -> Result<Self, LoadError> {
        let ticker = Ticker::start(&engine, tick)?;
        Ok(Self {
            engine,
            tick,
            pool_slots,
            _ticker: Arc::new(ticker),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How often the epoch advances.
    pub fn epoch_tick(&self) -> Duration {
        self.tick
    }

    /// The pool's instance slots, when this is regcred's own pooling engine.
    pub fn pool_slots(&self) -> Option<u32> {
        self.pool_slots
    }
}

/// Advances the engine's epoch until dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: &Engine, tick: Duration) -> Result<Self, LoadError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let engine = engine.clone();
        let thread = std::thread::Builder::new()
            .name("regcred-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(|err| LoadError::Engine {
                reason: format!("cannot start the epoch ticker thread: {err}"),
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

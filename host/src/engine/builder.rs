//! What a policy is loaded with: [`PolicyBuilder`] and the [`InstanceStrategy`].

use crate::error::LoadError;
use crate::limits::Limits;
use crate::module::PolicyModule;
use crate::policy_engine::PolicyEngine;

use super::PolicyPre;

/// How evaluations get their instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InstanceStrategy {
    /// A fresh instance for every evaluation: nothing one caller's request leaves in the
    /// module's memory is seen by the next. The default.
    #[default]
    Fresh,
    /// One instance kept warm and reused while it behaves; a call that fails discards
    /// it. A call that finds it busy (another thread) uses a fresh instance.
    Reuse,
}

/// Configures and loads a policy: the module, the limits, the instance strategy and the
/// allocator.
///
/// ```
/// use std::time::Duration;
/// use regcred_host::{InstanceStrategy, Limits, PolicyModule, PolicyPre};
///
/// let policy = PolicyPre::builder()
///     .module(PolicyModule::embedded())
///     .limits(Limits::builder().epoch_deadline(Duration::from_millis(100)).build())
///     .instance_strategy(InstanceStrategy::Reuse)
///     .build()?;
/// assert_eq!(policy.abi_version().major, 1);
/// # Ok::<(), regcred_host::LoadError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    pub(super) module: Option<PolicyModule>,
    pub(super) limits: Limits,
    pub(super) strategy: InstanceStrategy,
    pub(super) pool_size: Option<u32>,
    pub(super) engine: Option<PolicyEngine>,
}

impl Default for PolicyBuilder {
    fn default() -> Self {
        Self {
            module: None,
            limits: Limits::default(),
            strategy: InstanceStrategy::default(),
            pool_size: Some(PolicyBuilder::DEFAULT_POOL_SIZE),
            engine: None,
        }
    }
}

impl PolicyBuilder {
    /// The pooling allocator's default number of instance slots.
    pub const DEFAULT_POOL_SIZE: u32 = 32;

    /// The module to load (default: [`PolicyModule::embedded`]).
    #[must_use]
    pub fn module(mut self, module: PolicyModule) -> Self {
        self.module = Some(module);
        self
    }

    /// The limits of every evaluation (default: [`Limits::default`]).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Fresh instance per evaluation (default) or a reused one.
    #[must_use]
    pub fn instance_strategy(mut self, strategy: InstanceStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Instances come from a pool of `slots` preallocated ones (default
    /// [`Self::DEFAULT_POOL_SIZE`]): instantiation drops from tens of microseconds to a
    /// few. Each slot reserves address space (not memory) for one linear memory; an
    /// evaluation finding every slot busy fails with [`EvalError::Busy`](crate::EvalError::Busy).
    #[must_use]
    pub fn pooling(mut self, slots: u32) -> Self {
        self.pool_size = Some(slots.max(1));
        self
    }

    /// Instances are allocated on demand (no pool, no concurrency cap).
    #[must_use]
    pub fn on_demand(mut self) -> Self {
        self.pool_size = None;
        self
    }

    /// Runs on `engine`, shared with other policies (one engine, one ticker thread),
    /// instead of an engine of the policy's own. The engine's allocator and tick apply:
    /// [`Self::pooling`], [`Self::on_demand`] and [`Limits::epoch_tick`] are then not used.
    #[must_use]
    pub fn engine(mut self, engine: PolicyEngine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Compiles the module (or loads the code precompiled for it, see [`LoadPath`](crate::LoadPath)),
    /// checks its imports, exports and ABI version, and starts the epoch ticker (unless a
    /// shared [`PolicyEngine`] was given).
    ///
    /// # Errors
    ///
    /// A [`LoadError`] naming what is wrong with the module or the configuration.
    pub fn build(self) -> Result<PolicyPre, LoadError> {
        PolicyPre::load(self)
    }
}

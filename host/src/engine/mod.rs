//! The wasmtime side: one compiled module and one `InstancePre` per loaded policy, on an
//! engine of its own or a shared [`PolicyEngine`], a store per evaluation, limits on
//! every store. [`builder`] has what it is loaded with, [`abi_call`] the module's raw
//! ABI as the host calls it; this file the instances and their stores.

use std::sync::{Mutex, TryLockError};

use regcred_types::{PolicyConfig, Resolution, RuntimeProfile, SecretManifest, ValidationReport};
use wasmtime::{
    Engine, Extern, InstancePre, Linker, ModuleExport, PoolConcurrencyLimitError, ResourceLimiter,
    Store, Trap,
};

mod abi_call;
mod builder;

use crate::abi::{ABI_MAJOR, AbiVersion};
use crate::error::{EvalError, LoadError};
use crate::limits::Limits;
use crate::module::PolicyModule;
use crate::policy_engine::PolicyEngine;
use crate::precompiled::{LoadPath, compile};
use crate::typed::{self, RequestRef};

use abi_call::{ExportIndex, Exports, Failure, call_evaluate, check_initial_memory, check_shape};
pub use builder::{InstanceStrategy, PolicyBuilder};

/// What a store carries: the limiter, which records why it refused.
struct StoreState {
    limiter: Limiter,
}

struct Limiter {
    memory_limit: usize,
    table_elements: usize,
    exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // An error, not `Ok(false)`: the guest's allocator would turn a failed grow
            // into an abort anyway, and an error tells the host exactly why.
            self.exceeded = true;
            wasmtime::bail!("memory limit exceeded");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.exceeded = true;
            wasmtime::bail!("table limit exceeded");
        }
        Ok(true)
    }
}

/// A live instance with its store.
struct Live {
    store: Store<StoreState>,
    exports: Exports,
}

/// A loaded policy: compiled once, ready to instantiate; `Send + Sync`, share it in an
/// `Arc`.
///
/// Every evaluation runs in a store with an epoch deadline and a memory limit, and gets
/// a fresh instance unless [`InstanceStrategy::Reuse`] is chosen. Whatever the module
/// does (loop, trap, hand back a bad pointer or garbage), the call returns an
/// [`EvalError`] and the next call works as before.
///
/// ```
/// use regcred_host::PolicyPre;
///
/// let policy = PolicyPre::new()?;
/// let response = policy.evaluate_raw(br#"{"op": "frobnicate"}"#)?;
/// let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
/// assert_eq!(response["error"]["code"], "bad_request");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PolicyPre {
    module: PolicyModule,
    pre: InstancePre<StoreState>,
    exports: ExportIndex,
    limits: Limits,
    strategy: InstanceStrategy,
    pool_size: Option<u32>,
    abi_version: AbiVersion,
    load_path: LoadPath,
    warm: Mutex<Option<Live>>,
    // Declared last: dropped after everything that uses the engine.
    engine: PolicyEngine,
}

impl std::fmt::Debug for PolicyPre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyPre")
            .field("module", &self.module)
            .field("abi_version", &self.abi_version)
            .field("load_path", &self.load_path)
            .field("limits", &self.limits)
            .field("strategy", &self.strategy)
            .field("pool_size", &self.pool_size)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl PolicyPre {
    /// A builder with the defaults: embedded module, [`Limits::default`], fresh instances
    /// from a pool.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Loads the embedded module with the defaults.
    ///
    /// # Errors
    ///
    /// A [`LoadError`]; with the embedded module only when the machine refuses the
    /// engine (address space for the pool, a thread for the ticker).
    pub fn new() -> Result<Self, LoadError> {
        Self::builder().build()
    }

    fn load(builder: PolicyBuilder) -> Result<Self, LoadError> {
        let PolicyBuilder {
            module,
            mut limits,
            strategy,
            pool_size,
            engine,
        } = builder;
        let module = module.unwrap_or_else(PolicyModule::embedded);
        let engine = match engine {
            Some(engine) => engine,
            None => PolicyEngine::with_limits(&limits, pool_size)?,
        };
        // Deadlines are counted in the ticks of the engine's ticker.
        limits.set_epoch_tick(engine.epoch_tick());
        let pool_size = engine.pool_slots();
        check_initial_memory(module.bytes(), &limits)?;
        let (compiled, load_path) = compile(engine.engine(), &module)?;
        let exports = check_shape(&compiled)?;
        let pre = Linker::new(engine.engine())
            .instantiate_pre(&compiled)
            .map_err(|err| LoadError::Compile {
                reason: format!("{err:#}"),
            })?;

        let mut policy = Self {
            module,
            pre,
            exports,
            limits,
            strategy,
            pool_size,
            abi_version: AbiVersion { major: 0, minor: 0 },
            load_path,
            warm: Mutex::new(None),
            engine,
        };
        let found = policy
            .probe_abi_version()
            .map_err(|source| LoadError::Probe { source })?;
        if found.major != ABI_MAJOR {
            return Err(LoadError::AbiVersion {
                found,
                supported: ABI_MAJOR,
            });
        }
        policy.abi_version = found;
        Ok(policy)
    }

    /// The module's ABI version.
    pub fn abi_version(&self) -> AbiVersion {
        self.abi_version
    }

    /// How the module became machine code: precompiled at build time (the embedded
    /// module on an engine with regcred's compilation settings) or compiled at load.
    pub fn load_path(&self) -> &LoadPath {
        &self.load_path
    }

    /// The module this policy runs.
    pub fn module(&self) -> &PolicyModule {
        &self.module
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The instance strategy.
    pub fn instance_strategy(&self) -> InstanceStrategy {
        self.strategy
    }

    /// The wasmtime engine (to precompile or inspect; the ticker advances its epoch).
    pub fn engine(&self) -> &Engine {
        self.engine.engine()
    }

    /// The engine with its ticker, to share with other policies.
    pub fn policy_engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// Validates one Secret.
    ///
    /// # Errors
    ///
    /// [`EvalError::Rejected`] when the policy refuses the request (an invalid
    /// `config`); any other [`EvalError`] when the module misbehaves or hits a limit.
    pub fn validate(
        &self,
        secret: &SecretManifest,
        config: &PolicyConfig,
    ) -> Result<ValidationReport, EvalError> {
        let request = RequestRef::Validate {
            secret,
            config: typed::non_default(config),
        };
        typed::parse_validation(&self.call(&request.to_json()?)?)
    }

    /// The credentials to try for `image`, from `secrets` in imagePullSecrets order,
    /// filled for `runtime`.
    ///
    /// # Errors
    ///
    /// [`EvalError::Rejected`] with code `invalid_image` for a malformed reference;
    /// any other [`EvalError`] when the module misbehaves or hits a limit.
    pub fn resolve(
        &self,
        image: &str,
        secrets: &[SecretManifest],
        runtime: RuntimeProfile,
        config: &PolicyConfig,
    ) -> Result<Resolution, EvalError> {
        let request = RequestRef::Resolve {
            image,
            secrets,
            runtime,
            config: typed::non_default(config),
        };
        typed::parse_resolution(&self.call(&request.to_json()?)?)
    }

    /// Converts a dockerconfigjson or dockercfg Secret into regcredentials Secrets.
    ///
    /// # Errors
    ///
    /// [`EvalError::Rejected`] with code `invalid_secret` when the Secret cannot be
    /// converted; any other [`EvalError`] when the module misbehaves or hits a limit.
    pub fn convert(&self, secret: &SecretManifest) -> Result<Vec<SecretManifest>, EvalError> {
        let request = RequestRef::Convert { secret };
        typed::parse_conversion(&self.call(&request.to_json()?)?)
    }

    /// Sends one JSON request (`policy-wasm/ABI.md`) and returns the JSON response,
    /// checked to be UTF-8 JSON. An `{"error": ...}` response is returned as is.
    ///
    /// # Errors
    ///
    /// [`EvalError::InputTooLarge`] before the module runs; otherwise an [`EvalError`]
    /// for each way a module can fail (time, memory, trap, bad buffer, bad response).
    pub fn evaluate_raw(&self, request: &[u8]) -> Result<Vec<u8>, EvalError> {
        let response = self.call(request)?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&response)
            .map_err(|err| EvalError::invalid_json("JSON", &err))?;
        Ok(response)
    }

    /// One evaluation, with the input limit and a UTF-8 response; the typed API parses
    /// the JSON itself, so it does not pay for a syntax check first.
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, EvalError> {
        if request.len() > self.limits.input_limit() {
            return Err(EvalError::InputTooLarge {
                len: request.len(),
                limit: self.limits.input_limit(),
            });
        }
        let response = match self.strategy {
            InstanceStrategy::Fresh => self.evaluate_fresh(request)?,
            InstanceStrategy::Reuse => self.evaluate_warm(request)?,
        };
        std::str::from_utf8(&response).map_err(|err| EvalError::InvalidUtf8 {
            valid_up_to: err.valid_up_to(),
        })?;
        Ok(response)
    }

    fn evaluate_fresh(&self, request: &[u8]) -> Result<Vec<u8>, EvalError> {
        let mut live = self.instantiate()?;
        let result = call_evaluate(&mut live, request, false);
        result.map_err(|err| self.classify(err, &live.store))
    }

    fn evaluate_warm(&self, request: &[u8]) -> Result<Vec<u8>, EvalError> {
        let mut slot = match self.warm.try_lock() {
            Ok(slot) => slot,
            // Another thread holds the warm instance: do not wait for it.
            Err(TryLockError::WouldBlock) => return self.evaluate_fresh(request),
            // A panic while holding the lock left nothing inconsistent worth keeping.
            Err(TryLockError::Poisoned(poisoned)) => {
                let mut slot = poisoned.into_inner();
                *slot = None;
                slot
            }
        };
        let mut live = match slot.take() {
            Some(live) => live,
            None => self.instantiate()?,
        };
        live.store.set_epoch_deadline(self.limits.deadline_ticks());
        match call_evaluate(&mut live, request, true) {
            Ok(response) => {
                *slot = Some(live);
                Ok(response)
            }
            // The instance is dropped: whatever state the failure left is gone.
            Err(err) => Err(self.classify(err, &live.store)),
        }
    }

    fn new_store(&self) -> Store<StoreState> {
        let mut store = Store::new(
            self.engine.engine(),
            StoreState {
                limiter: Limiter {
                    memory_limit: self.limits.memory_limit(),
                    table_elements: self.limits.table_elements(),
                    exceeded: false,
                },
            },
        );
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.limits.deadline_ticks());
        store.epoch_deadline_trap();
        store
    }

    fn instantiate(&self) -> Result<Live, EvalError> {
        let mut store = self.new_store();
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(err) => return Err(self.classify(err.into(), &store)),
        };
        let mut get = |export: &ModuleExport| instance.get_module_export(&mut store, export);
        let memory = get(&self.exports.memory).and_then(Extern::into_memory);
        let alloc = get(&self.exports.alloc).and_then(Extern::into_func);
        let dealloc = get(&self.exports.dealloc).and_then(Extern::into_func);
        let evaluate = get(&self.exports.evaluate).and_then(Extern::into_func);
        let (Some(memory), Some(alloc), Some(dealloc), Some(evaluate)) =
            (memory, alloc, dealloc, evaluate)
        else {
            // `check_shape` saw them in the module; an instance always has them.
            return Err(EvalError::Runtime {
                reason: "an export checked at load time is missing".into(),
            });
        };
        let typed = (
            alloc.typed::<i32, i32>(&store),
            dealloc.typed::<(i32, i32), ()>(&store),
            evaluate.typed::<(i32, i32), i64>(&store),
        );
        let (Ok(alloc), Ok(dealloc), Ok(evaluate)) = typed else {
            return Err(EvalError::Runtime {
                reason: "an export's signature changed after load".into(),
            });
        };
        Ok(Live {
            store,
            exports: Exports {
                memory,
                alloc,
                dealloc,
                evaluate,
            },
        })
    }

    /// Instantiates the module in a fresh store and asks its ABI version, as loading
    /// did: a health check for a long-lived host, and the cost of instantiation alone.
    ///
    /// # Errors
    ///
    /// An [`EvalError`] when the instance does not fit the limits now (every pool slot
    /// busy, for one) or the module misbehaves.
    pub fn check_instance(&self) -> Result<AbiVersion, EvalError> {
        self.probe_abi_version()
    }

    fn probe_abi_version(&self) -> Result<AbiVersion, EvalError> {
        let mut store = self.new_store();
        let version = self.pre.instantiate(&mut store).and_then(|instance| {
            let func = instance
                .get_module_export(&mut store, &self.exports.abi_version)
                .and_then(Extern::into_func)
                .ok_or_else(|| wasmtime::format_err!("the ABI version export is missing"))?;
            func.typed::<(), i32>(&store)?.call(&mut store, ())
        });
        version
            .map(AbiVersion::from_packed)
            .map_err(|err| self.classify(err.into(), &store))
    }

    /// Maps a wasmtime failure to the typed error, using what the store recorded.
    fn classify(&self, err: Failure, store: &Store<StoreState>) -> EvalError {
        let err = match err {
            Failure::Typed(err) => return err,
            Failure::Wasmtime(err) => err,
        };
        if store.data().limiter.exceeded {
            return EvalError::MemoryLimit {
                limit: self.limits.memory_limit(),
            };
        }
        if let Some(trap) = err.downcast_ref::<Trap>() {
            return match trap {
                Trap::Interrupt => EvalError::Timeout {
                    deadline: self.limits.epoch_deadline(),
                },
                trap => EvalError::Trap {
                    reason: trap.to_string(),
                },
            };
        }
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return EvalError::Busy {
                limit: self.pool_size.unwrap_or_default(),
            };
        }
        EvalError::Runtime {
            reason: format!("{err:#}"),
        }
    }
}

#[cfg(test)]
mod tests;

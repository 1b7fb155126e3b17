//! The limits every evaluation runs under.

use std::time::Duration;

/// The limits every evaluation runs under: time, memory and input size.
///
/// ```
/// use std::time::Duration;
/// use regcred_host::Limits;
///
/// let limits = Limits::builder()
///     .epoch_deadline(Duration::from_millis(20))
///     .memory_limit(16 << 20)
///     .build();
/// assert_eq!(limits.memory_limit(), 16 << 20);
/// assert_eq!(limits.input_limit(), Limits::DEFAULT_INPUT_LIMIT);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    epoch_deadline: Duration,
    epoch_tick: Duration,
    memory_limit: usize,
    input_limit: usize,
    table_elements: usize,
}

impl Limits {
    /// The default deadline for one evaluation (instantiation included), 50 ms.
    pub const DEFAULT_EPOCH_DEADLINE: Duration = Duration::from_millis(50);
    /// The default period of the epoch ticker, 5 ms: the deadline's granularity.
    pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(5);
    /// The default cap on the module's linear memory, 32 MiB.
    pub const DEFAULT_MEMORY_LIMIT: usize = 32 << 20;
    /// The default cap on one request, 4 MiB: four Secrets at the API server's 1 MiB
    /// limit.
    pub const DEFAULT_INPUT_LIMIT: usize = 4 << 20;
    /// The default cap on a table's elements.
    pub const DEFAULT_TABLE_ELEMENTS: usize = 10_000;

    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder {
            limits: Self::default(),
        }
    }

    /// The longest one evaluation may run.
    pub fn epoch_deadline(&self) -> Duration {
        self.epoch_deadline
    }

    /// How often the epoch advances.
    pub fn epoch_tick(&self) -> Duration {
        self.epoch_tick
    }

    /// Counts the deadline in ticks of `tick` (the ticker of a shared engine).
    pub(crate) fn set_epoch_tick(&mut self, tick: Duration) {
        self.epoch_tick = tick;
    }

    /// The deadline in ticks: rounded up, plus one because the first tick may come at
    /// once, so the module always gets at least [`Limits::epoch_deadline`].
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        let ticks = self.epoch_deadline.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX - 1) + 1
    }

    /// The largest linear memory, in bytes.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// The largest request, in bytes.
    pub fn input_limit(&self) -> usize {
        self.input_limit
    }

    /// The most elements a table may hold.
    pub fn table_elements(&self) -> usize {
        self.table_elements
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            epoch_deadline: Self::DEFAULT_EPOCH_DEADLINE,
            epoch_tick: Self::DEFAULT_EPOCH_TICK,
            memory_limit: Self::DEFAULT_MEMORY_LIMIT,
            input_limit: Self::DEFAULT_INPUT_LIMIT,
            table_elements: Self::DEFAULT_TABLE_ELEMENTS,
        }
    }
}

/// Builds [`Limits`]; every setter starts from the defaults and returns the builder.
#[derive(Debug, Clone)]
pub struct LimitsBuilder {
    limits: Limits,
}

impl LimitsBuilder {
    /// The longest one evaluation may run, instantiation included (default 50 ms).
    /// Measured in epoch ticks, so it is honoured to within one tick.
    #[must_use]
    pub fn epoch_deadline(mut self, deadline: Duration) -> Self {
        self.limits.epoch_deadline = deadline;
        self
    }

    /// How often the ticker thread advances the epoch (default 5 ms, at least 1 ms).
    #[must_use]
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.limits.epoch_tick = tick.max(Duration::from_millis(1));
        self
    }

    /// The largest linear memory, in bytes (default 32 MiB).
    #[must_use]
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.limits.memory_limit = bytes;
        self
    }

    /// The largest request, in bytes (default 4 MiB). Larger requests fail with
    /// [`crate::EvalError::InputTooLarge`] before the module runs.
    #[must_use]
    pub fn input_limit(mut self, bytes: usize) -> Self {
        self.limits.input_limit = bytes;
        self
    }

    /// The most elements a table may hold (default 10 000).
    #[must_use]
    pub fn table_elements(mut self, elements: usize) -> Self {
        self.limits.table_elements = elements;
        self
    }

    /// The limits.
    pub fn build(self) -> Limits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_and_adds_a_tick() {
        let limits = Limits::builder()
            .epoch_deadline(Duration::from_millis(12))
            .epoch_tick(Duration::from_millis(5))
            .build();
        assert_eq!(limits.deadline_ticks(), 4);
        assert_eq!(Limits::default().deadline_ticks(), 11);
    }
}

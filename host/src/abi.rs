//! The ABI version a module declares and the one this host speaks: a leaf that the
//! module loader, the engine and the errors all name.

use std::fmt;

/// The ABI major version this host speaks (`policy-wasm/ABI.md`).
pub const ABI_MAJOR: u16 = 1;

/// A module's ABI version, from its `regcred_abi_version` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbiVersion {
    /// Changes break hosts; a host runs only its own major version.
    pub major: u16,
    /// Changes only add.
    pub minor: u16,
}

impl AbiVersion {
    /// Splits the export's `major << 16 | minor`.
    pub fn from_packed(packed: i32) -> Self {
        let packed = packed as u32;
        Self {
            major: (packed >> 16) as u16,
            minor: (packed & 0xffff) as u16,
        }
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_splits_major_and_minor() {
        let v = AbiVersion::from_packed(1 << 16 | 3);
        assert_eq!((v.major, v.minor), (1, 3));
        assert_eq!(v.to_string(), "1.3");
        assert_eq!(AbiVersion::from_packed(-1).major, 0xffff);
    }
}

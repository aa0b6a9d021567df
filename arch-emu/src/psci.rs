//! PSCI (Arm DEN 0022) and SMCCC (Arm DEN 0028) calls a guest makes over HVC or SMC.
//!
//! [`decode`] turns the guest's W0 and X1..X3 into a [`Call`]; the hypervisor
//! performs it and writes the result back to X0. Unknown function IDs decode to
//! [`Call::Unknown`], which is answered with [`NOT_SUPPORTED`].

/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND (SMC32).
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
/// CPU_SUSPEND (SMC64).
pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (SMC32).
pub const CPU_ON_32: u32 = 0x8400_0003;
/// CPU_ON (SMC64).
pub const CPU_ON_64: u32 = 0xC400_0003;
/// AFFINITY_INFO (SMC32).
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
/// AFFINITY_INFO (SMC64).
pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000A;
/// SMCCC_VERSION.
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES.
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

/// SUCCESS.
pub const SUCCESS: i64 = 0;
/// NOT_SUPPORTED.
pub const NOT_SUPPORTED: i64 = -1;
/// INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;
/// DENIED.
pub const DENIED: i64 = -3;
/// ALREADY_ON.
pub const ALREADY_ON: i64 = -4;
/// ON_PENDING.
pub const ON_PENDING: i64 = -5;
/// INTERNAL_FAILURE.
pub const INTERNAL_FAILURE: i64 = -6;
/// INVALID_ADDRESS.
pub const INVALID_ADDRESS: i64 = -9;

/// AFFINITY_INFO result: the affinity instance is ON.
pub const AFFINITY_ON: i64 = 0;
/// AFFINITY_INFO result: the affinity instance is OFF.
pub const AFFINITY_OFF: i64 = 1;
/// AFFINITY_INFO result: the affinity instance is ON_PENDING.
pub const AFFINITY_ON_PENDING: i64 = 2;

/// The PSCI version we implement, as PSCI_VERSION returns it: 1.1.
pub const IMPLEMENTED_PSCI_VERSION: i64 = (1 << 16) | 1;
/// The SMCCC version we implement, as SMCCC_VERSION returns it: 1.1.
pub const IMPLEMENTED_SMCCC_VERSION: i64 = (1 << 16) | 1;
/// MIGRATE_INFO_TYPE result: no Trusted OS, migration not required.
pub const MIGRATE_INFO_TYPE_NOT_REQUIRED: i64 = 2;

/// A decoded PSCI or SMCCC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// PSCI_VERSION.
    Version,
    /// PSCI_FEATURES for `function_id`.
    Features {
        /// The function queried.
        function_id: u32,
    },
    /// CPU_ON.
    CpuOn {
        /// MPIDR affinity of the target.
        target_mpidr: u64,
        /// Where the target starts.
        entry_point: u64,
        /// Passed to the target in X0.
        context_id: u64,
    },
    /// CPU_OFF.
    CpuOff,
    /// AFFINITY_INFO.
    AffinityInfo {
        /// MPIDR affinity of the instance asked about.
        target_affinity: u64,
        /// The affinity level (only 0 is meaningful on PSCI 1.x).
        lowest_affinity_level: u64,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// SMCCC_VERSION.
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES for `function_id`.
    SmcccArchFeatures {
        /// The function queried.
        function_id: u32,
    },
    /// Anything else: answered with NOT_SUPPORTED.
    Unknown {
        /// The function ID the guest passed.
        function_id: u32,
    },
}

/// Whether `function_id` uses the SMC32 calling convention (bit 30 clear), whose
/// arguments are 32-bit (SMCCC section 2.5: the upper bits of the registers are ignored).
pub fn is_smc32(function_id: u32) -> bool {
    function_id & (1 << 30) == 0
}

/// Decodes a call from the guest's X0..X3.
pub fn decode(x0: u64, x1: u64, x2: u64, x3: u64) -> Call {
    let function_id = x0 as u32;
    let arg = |x: u64| {
        if is_smc32(function_id) {
            x & 0xffff_ffff
        } else {
            x
        }
    };
    match function_id {
        PSCI_VERSION => Call::Version,
        PSCI_FEATURES => Call::Features {
            function_id: x1 as u32,
        },
        CPU_ON_32 | CPU_ON_64 => Call::CpuOn {
            target_mpidr: arg(x1),
            entry_point: arg(x2),
            context_id: arg(x3),
        },
        CPU_OFF => Call::CpuOff,
        AFFINITY_INFO_32 | AFFINITY_INFO_64 => Call::AffinityInfo {
            target_affinity: arg(x1),
            lowest_affinity_level: arg(x2),
        },
        MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        SYSTEM_OFF => Call::SystemOff,
        SYSTEM_RESET => Call::SystemReset,
        SMCCC_VERSION => Call::SmcccVersion,
        SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures {
            function_id: x1 as u32,
        },
        _ => Call::Unknown { function_id },
    }
}

/// The PSCI_FEATURES answer for `function_id`: SUCCESS (0, no feature flags) for the
/// functions the hypervisor implements, NOT_SUPPORTED for the rest.
pub fn features(function_id: u32) -> i64 {
    match function_id {
        PSCI_VERSION | PSCI_FEATURES | CPU_ON_32 | CPU_ON_64 | CPU_OFF | AFFINITY_INFO_32
        | AFFINITY_INFO_64 | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET | SMCCC_VERSION => {
            SUCCESS
        }
        _ => NOT_SUPPORTED,
    }
}

/// The MPIDR affinity fields (Aff3..Aff0) of an MPIDR value, as CPU_ON and
/// AFFINITY_INFO compare them.
pub fn mpidr_affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_on_64_keeps_full_width_arguments() {
        let call = decode(
            u64::from(CPU_ON_64),
            1,
            0x8020_0000_1000,
            0xdead_beef_0000_0001,
        );
        assert_eq!(
            call,
            Call::CpuOn {
                target_mpidr: 1,
                entry_point: 0x8020_0000_1000,
                context_id: 0xdead_beef_0000_0001
            }
        );
    }

    #[test]
    fn cpu_on_32_ignores_upper_argument_bits() {
        let call = decode(
            u64::from(CPU_ON_32),
            0xffff_0000_0000_0001,
            0x1_8000_0000,
            0,
        );
        assert_eq!(
            call,
            Call::CpuOn {
                target_mpidr: 1,
                entry_point: 0x8000_0000,
                context_id: 0
            }
        );
    }

    #[test]
    fn function_id_upper_bits_are_ignored() {
        assert_eq!(
            decode(0xffff_ffff_0000_0000 | u64::from(SYSTEM_OFF), 0, 0, 0),
            Call::SystemOff
        );
    }

    #[test]
    fn unknown_function_is_not_supported() {
        assert_eq!(
            decode(0xC400_00FF, 0, 0, 0),
            Call::Unknown {
                function_id: 0xC400_00FF
            }
        );
        assert_eq!(features(0xC400_00FF), NOT_SUPPORTED);
    }

    #[test]
    fn implemented_functions_are_reported_by_features() {
        for f in [
            PSCI_VERSION,
            CPU_ON_64,
            CPU_OFF,
            AFFINITY_INFO_64,
            SYSTEM_OFF,
            SYSTEM_RESET,
        ] {
            assert_eq!(features(f), SUCCESS, "{f:#x}");
        }
        assert_eq!(features(CPU_SUSPEND_64), NOT_SUPPORTED);
    }

    #[test]
    fn version_is_1_1() {
        assert_eq!(IMPLEMENTED_PSCI_VERSION, 0x1_0001);
    }

    #[test]
    fn affinity_drops_non_affinity_bits() {
        assert_eq!(mpidr_affinity(0x8000_0000 | 0x0102), 0x0102);
        assert_eq!(mpidr_affinity(0xff_4000_0000), 0xff_0000_0000);
    }
}

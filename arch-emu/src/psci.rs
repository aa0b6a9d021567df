//! PSCI 1.1 (Arm DEN 0022D.b) and SMCCC 1.1 (Arm DEN 0028) as a guest sees them.
//!
//! [`decode`] turns the guest's W0 and X1..X3 into a [`Call`]; [`handle`] checks
//! its arguments against the specification and the guest's vCPUs and says what
//! the hypervisor must do ([`Action`]): answer in X0, start a vCPU, switch the
//! caller off, suspend it, end the guest, or forward an SMCCC architecture
//! workaround to the host firmware. Unknown and unimplemented function IDs
//! decode to [`Call::Unknown`] and get [`NOT_SUPPORTED`]; [`features`] (PSCI_FEATURES)
//! and [`handle`] share one list of what is implemented ([`IMPLEMENTED`]).
//!
//! Sections are cited by the function's name and, where given, its number in
//! DEN 0022D.b (PSCI 1.1: 5.4 CPU_SUSPEND, 5.6 CPU_ON, 5.7 AFFINITY_INFO, 5.9
//! MIGRATE_INFO_TYPE) and DEN 0028 (SMCCC 1.1).

use crate::addr::{Ipa, MemRange};

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
/// MIGRATE (SMC32).
pub const MIGRATE_32: u32 = 0x8400_0005;
/// MIGRATE (SMC64).
pub const MIGRATE_64: u32 = 0xC400_0005;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// MIGRATE_INFO_UP_CPU (SMC32).
pub const MIGRATE_INFO_UP_CPU_32: u32 = 0x8400_0007;
/// MIGRATE_INFO_UP_CPU (SMC64).
pub const MIGRATE_INFO_UP_CPU_64: u32 = 0xC400_0007;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000A;
/// CPU_FREEZE.
pub const CPU_FREEZE: u32 = 0x8400_000B;
/// CPU_DEFAULT_SUSPEND (SMC32).
pub const CPU_DEFAULT_SUSPEND_32: u32 = 0x8400_000C;
/// CPU_DEFAULT_SUSPEND (SMC64).
pub const CPU_DEFAULT_SUSPEND_64: u32 = 0xC400_000C;
/// NODE_HW_STATE (SMC32).
pub const NODE_HW_STATE_32: u32 = 0x8400_000D;
/// NODE_HW_STATE (SMC64).
pub const NODE_HW_STATE_64: u32 = 0xC400_000D;
/// SYSTEM_SUSPEND (SMC32).
pub const SYSTEM_SUSPEND_32: u32 = 0x8400_000E;
/// SYSTEM_SUSPEND (SMC64).
pub const SYSTEM_SUSPEND_64: u32 = 0xC400_000E;
/// PSCI_SET_SUSPEND_MODE.
pub const PSCI_SET_SUSPEND_MODE: u32 = 0x8400_000F;
/// PSCI_STAT_RESIDENCY (SMC32).
pub const PSCI_STAT_RESIDENCY_32: u32 = 0x8400_0010;
/// PSCI_STAT_RESIDENCY (SMC64).
pub const PSCI_STAT_RESIDENCY_64: u32 = 0xC400_0010;
/// PSCI_STAT_COUNT (SMC32).
pub const PSCI_STAT_COUNT_32: u32 = 0x8400_0011;
/// PSCI_STAT_COUNT (SMC64).
pub const PSCI_STAT_COUNT_64: u32 = 0xC400_0011;
/// SYSTEM_RESET2 (SMC32).
pub const SYSTEM_RESET2_32: u32 = 0x8400_0012;
/// SYSTEM_RESET2 (SMC64).
pub const SYSTEM_RESET2_64: u32 = 0xC400_0012;
/// MEM_PROTECT.
pub const MEM_PROTECT: u32 = 0x8400_0013;
/// MEM_PROTECT_CHECK_RANGE (SMC32).
pub const MEM_PROTECT_CHECK_RANGE_32: u32 = 0x8400_0014;
/// MEM_PROTECT_CHECK_RANGE (SMC64).
pub const MEM_PROTECT_CHECK_RANGE_64: u32 = 0xC400_0014;

/// SMCCC_VERSION (DEN 0028, "SMCCC_VERSION").
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES (DEN 0028, "SMCCC_ARCH_FEATURES").
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// SMCCC_ARCH_SOC_ID (SMCCC 1.2; not part of what we implement).
pub const SMCCC_ARCH_SOC_ID: u32 = 0x8000_0002;
/// SMCCC_ARCH_WORKAROUND_1 (CVE-2017-5715, branch target injection).
pub const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
/// SMCCC_ARCH_WORKAROUND_2 (CVE-2018-3639, speculative store bypass).
pub const SMCCC_ARCH_WORKAROUND_2: u32 = 0x8000_7FFF;
/// SMCCC_ARCH_WORKAROUND_3 (CVE-2017-5715 and CVE-2022-23960, branch history).
pub const SMCCC_ARCH_WORKAROUND_3: u32 = 0x8000_3FFF;

/// SUCCESS.
pub const SUCCESS: i64 = 0;
/// NOT_SUPPORTED (also SMCCC's "unknown function identifier").
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
/// NOT_PRESENT.
pub const NOT_PRESENT: i64 = -7;
/// DISABLED.
pub const DISABLED: i64 = -8;
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

/// PSCI_FEATURES(CPU_SUSPEND) flags (PSCI_FEATURES, "flags"): bit 1, the power_state parameter
/// uses the extended StateID format; bit 0 clear, OS-initiated mode is not
/// supported (platform-coordinated only).
pub const CPU_SUSPEND_FEATURES: i64 = 1 << 1;

/// The extended power_state format (5.4, "power_state"): StateType, bit 30 (1 = powerdown).
pub const POWER_STATE_TYPE_POWERDOWN: u32 = 1 << 30;
/// The extended power_state format: StateID, bits \[27:0\]. The only StateID we
/// implement is 0, for the core alone (the guest has no deeper power domains);
/// its StateType chooses standby or powerdown.
pub const POWER_STATE_ID_MASK: u32 = 0x0fff_ffff;
/// The extended power_state format: bits 31 and \[29:28\] are reserved, must be zero.
pub const POWER_STATE_RESERVED: u32 = (1 << 31) | (0b11 << 28);

/// SYSTEM_RESET2 reset_type (SYSTEM_RESET2, "reset_type"): bit 31 set means a vendor-specific reset.
pub const RESET_TYPE_VENDOR: u32 = 1 << 31;
/// SYSTEM_RESET2 architectural reset type 0: SYSTEM_WARM_RESET.
pub const SYSTEM_WARM_RESET: u32 = 0;

/// The bits of a CPU_ON target_cpu or AFFINITY_INFO target_affinity that must be
/// zero (5.6 and 5.7, parameters): \[63:40\] and \[31:24\]; the rest are Aff3..Aff0 in MPIDR layout.
pub const MPIDR_RESERVED: u64 = 0xffff_ff00_ff00_0000;

/// The function IDs the hypervisor implements; PSCI_FEATURES reports these
/// (and nothing else) as present.
pub const IMPLEMENTED: [u32; 15] = [
    PSCI_VERSION,
    CPU_SUSPEND_32,
    CPU_SUSPEND_64,
    CPU_OFF,
    CPU_ON_32,
    CPU_ON_64,
    AFFINITY_INFO_32,
    AFFINITY_INFO_64,
    MIGRATE_INFO_TYPE,
    SYSTEM_OFF,
    SYSTEM_RESET,
    PSCI_FEATURES,
    SYSTEM_RESET2_32,
    SYSTEM_RESET2_64,
    SMCCC_VERSION,
];

/// A decoded PSCI or SMCCC call, its arguments as wide as the calling
/// convention makes them (SMC32: 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// PSCI_VERSION.
    Version,
    /// CPU_SUSPEND.
    CpuSuspend {
        /// The power state asked for (a 32-bit parameter in both conventions).
        power_state: u32,
        /// Where a powerdown state resumes.
        entry_point: u64,
        /// Passed in X0 when a powerdown state resumes.
        context_id: u64,
    },
    /// CPU_OFF.
    CpuOff,
    /// CPU_ON.
    CpuOn {
        /// MPIDR of the target, reserved bits included (checked by [`handle`]).
        target_cpu: u64,
        /// Where the target starts.
        entry_point: u64,
        /// Passed to the target in X0.
        context_id: u64,
    },
    /// AFFINITY_INFO.
    AffinityInfo {
        /// MPIDR affinity of the instance asked about.
        target_affinity: u64,
        /// The lowest affinity level that `target_affinity` names (a 32-bit parameter).
        lowest_affinity_level: u32,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// SYSTEM_RESET2.
    SystemReset2 {
        /// The reset asked for (a 32-bit parameter).
        reset_type: u32,
        /// Vendor-specific; ignored for SYSTEM_WARM_RESET.
        cookie: u64,
    },
    /// PSCI_FEATURES for `function_id`.
    Features {
        /// The function queried (a 32-bit parameter).
        function_id: u32,
    },
    /// SMCCC_VERSION.
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES for `function_id`.
    SmcccArchFeatures {
        /// The function queried (a 32-bit parameter).
        function_id: u32,
    },
    /// SMCCC_ARCH_WORKAROUND_1, _2 or _3.
    ArchWorkaround {
        /// Which one.
        function_id: u32,
        /// W1 (WORKAROUND_2's enable flag; unused by the others).
        w1: u32,
    },
    /// Anything else: answered with NOT_SUPPORTED.
    Unknown {
        /// The function ID the guest passed.
        function_id: u32,
    },
}

/// Whether `function_id` uses the SMC32 calling convention (bit 30 clear), whose
/// arguments are 32-bit (DEN 0028, "SMC32/HVC32 argument passing": the upper
/// halves of X1..X7 are ignored by an SMC32 function).
pub fn is_smc32(function_id: u32) -> bool {
    function_id & (1 << 30) == 0
}

/// Decodes a call from the guest's X0..X3. Only W0 is the function ID (DEN 0028,
/// function identifiers: bits \[63:32\] of X0 are ignored); SMC32 arguments lose their upper halves.
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
        CPU_SUSPEND_32 | CPU_SUSPEND_64 => Call::CpuSuspend {
            power_state: x1 as u32,
            entry_point: arg(x2),
            context_id: arg(x3),
        },
        CPU_OFF => Call::CpuOff,
        CPU_ON_32 | CPU_ON_64 => Call::CpuOn {
            target_cpu: arg(x1),
            entry_point: arg(x2),
            context_id: arg(x3),
        },
        AFFINITY_INFO_32 | AFFINITY_INFO_64 => Call::AffinityInfo {
            target_affinity: arg(x1),
            lowest_affinity_level: x2 as u32,
        },
        MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        SYSTEM_OFF => Call::SystemOff,
        SYSTEM_RESET => Call::SystemReset,
        SYSTEM_RESET2_32 | SYSTEM_RESET2_64 => Call::SystemReset2 {
            reset_type: x1 as u32,
            cookie: arg(x2),
        },
        PSCI_FEATURES => Call::Features {
            function_id: x1 as u32,
        },
        SMCCC_VERSION => Call::SmcccVersion,
        SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures {
            function_id: x1 as u32,
        },
        SMCCC_ARCH_WORKAROUND_1 | SMCCC_ARCH_WORKAROUND_2 | SMCCC_ARCH_WORKAROUND_3 => {
            Call::ArchWorkaround {
                function_id,
                w1: x1 as u32,
            }
        }
        _ => Call::Unknown { function_id },
    }
}

/// The PSCI_FEATURES answer for `function_id`: the feature flags of an
/// implemented function (0 except CPU_SUSPEND's, [`CPU_SUSPEND_FEATURES`]),
/// NOT_SUPPORTED for the rest (MIGRATE, MEM_PROTECT, SYSTEM_SUSPEND, ...).
/// SMCCC_VERSION is the one SMCCC function PSCI_FEATURES reports (DEN 0028,
/// discovery: how a caller learns it may call SMCCC_VERSION).
pub fn features(function_id: u32) -> i64 {
    match function_id {
        CPU_SUSPEND_32 | CPU_SUSPEND_64 => CPU_SUSPEND_FEATURES,
        f if IMPLEMENTED.contains(&f) => SUCCESS,
        _ => NOT_SUPPORTED,
    }
}

/// The MPIDR affinity fields (Aff3..Aff0) of an MPIDR value.
pub fn mpidr_affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// The affinity fields that name an instance at `level` (0..=3): the fields at
/// and above it; `None` for a level above 3.
fn affinity_mask(level: u32) -> Option<u64> {
    match level {
        0 => Some(0xff_00ff_ffff),
        1 => Some(0xff_00ff_ff00),
        2 => Some(0xff_00ff_0000),
        3 => Some(0xff_0000_0000),
        _ => None,
    }
}

/// A vCPU's PSCI power state (5.7: ON, OFF, ON_PENDING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Off: its physical CPU waits at EL2.
    Off,
    /// CPU_ON accepted: start at `entry` with X0 = `context_id`.
    OnPending {
        /// Entry point (IPA).
        entry: u64,
        /// Passed in X0.
        context_id: u64,
    },
    /// Running (a suspended vCPU is ON too).
    On,
}

/// What the host firmware answered to SMCCC_ARCH_FEATURES for each
/// SMCCC_ARCH_WORKAROUND_n on one physical CPU (NOT_SUPPORTED when it does not
/// implement SMCCC 1.1 at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareWorkarounds {
    /// SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_1).
    pub workaround_1: i64,
    /// SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_2).
    pub workaround_2: i64,
    /// SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_3).
    pub workaround_3: i64,
}

impl FirmwareWorkarounds {
    /// A firmware that implements none of them.
    pub const NONE: FirmwareWorkarounds = FirmwareWorkarounds {
        workaround_1: NOT_SUPPORTED,
        workaround_2: NOT_SUPPORTED,
        workaround_3: NOT_SUPPORTED,
    };

    /// The firmware's answer for `function_id`, if it is one of the workarounds.
    pub fn answer(&self, function_id: u32) -> Option<i64> {
        match function_id {
            SMCCC_ARCH_WORKAROUND_1 => Some(self.workaround_1),
            SMCCC_ARCH_WORKAROUND_2 => Some(self.workaround_2),
            SMCCC_ARCH_WORKAROUND_3 => Some(self.workaround_3),
            _ => None,
        }
    }
}

/// What [`handle`] needs to know about the guest.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// vCPU i's MPIDR affinity (Aff3..Aff0).
    pub mpidrs: &'a [u64],
    /// Guest RAM: the only valid entry points.
    pub ram: MemRange<Ipa>,
    /// The host firmware's SMCCC workarounds, as seen from the caller's CPU.
    pub firmware: FirmwareWorkarounds,
}

/// What the hypervisor does for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write this to X0 and resume the caller.
    Return(i64),
    /// CPU_ON accepted: `vcpu` is now ON_PENDING; wake its CPU, return SUCCESS.
    Start {
        /// The vCPU started.
        vcpu: usize,
    },
    /// CPU_OFF: the caller is now OFF; it does not return.
    Off,
    /// CPU_SUSPEND to standby: wait for a wake-up event (as WFI would), then
    /// return SUCCESS (5.4).
    Standby,
    /// CPU_SUSPEND to powerdown: wait for a wake-up event, then enter
    /// `entry_point` in the state CPU_ON gives (5.4, 5.6), X0 = `context_id`.
    Powerdown {
        /// Where the caller resumes.
        entry_point: u64,
        /// Its X0 there.
        context_id: u64,
    },
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET, or SYSTEM_RESET2's SYSTEM_WARM_RESET.
    SystemReset,
    /// Make the same call to the host firmware (X0 = `function_id`, X1 = `w1`)
    /// and return its X0 to the caller.
    Firmware {
        /// The SMCCC function.
        function_id: u32,
        /// Its W1.
        w1: u32,
    },
}

/// Performs `call` from vCPU `caller`, changing `power` (index = vCPU) as
/// CPU_ON and CPU_OFF do. Every argument is checked here, as the sections cited
/// inline say; nothing a guest passes can make it panic.
pub fn handle(call: Call, caller: usize, env: &Env<'_>, power: &mut [Power]) -> Action {
    let entry_ok = |ipa: u64| env.ram.contains(Ipa(ipa));
    let ret = match call {
        Call::Version => IMPLEMENTED_PSCI_VERSION,
        Call::CpuSuspend {
            power_state,
            entry_point,
            context_id,
        } => {
            // 5.4: reserved bits of the extended format are zero, and the
            // StateID is one the implementation defines (only 0 here); anything
            // else is INVALID_PARAMETERS.
            if power_state & POWER_STATE_RESERVED != 0 || power_state & POWER_STATE_ID_MASK != 0 {
                INVALID_PARAMETERS
            } else if power_state & POWER_STATE_TYPE_POWERDOWN == 0 {
                return Action::Standby;
            } else if !entry_ok(entry_point) {
                // 5.4: a powerdown state's entry point must be valid for the caller.
                INVALID_ADDRESS
            } else {
                return Action::Powerdown {
                    entry_point,
                    context_id,
                };
            }
        }
        Call::CpuOff => {
            if let Some(p) = power.get_mut(caller) {
                *p = Power::Off;
            }
            return Action::Off;
        }
        Call::CpuOn {
            target_cpu,
            entry_point,
            context_id,
        } => {
            // 5.6: target_cpu bits [63:40] and [31:24] must be zero, and it must
            // name a core that exists; else INVALID_PARAMETERS.
            let target = (target_cpu & MPIDR_RESERVED == 0)
                .then(|| env.mpidrs.iter().position(|&m| m == target_cpu))
                .flatten();
            match target {
                None => INVALID_PARAMETERS,
                // 5.6: an entry point outside what the caller may use is INVALID_ADDRESS.
                Some(_) if !entry_ok(entry_point) => INVALID_ADDRESS,
                Some(t) => match power.get_mut(t) {
                    None => INVALID_PARAMETERS,
                    Some(Power::On) => ALREADY_ON,
                    Some(Power::OnPending { .. }) => ON_PENDING,
                    Some(p) => {
                        *p = Power::OnPending {
                            entry: entry_point,
                            context_id,
                        };
                        return Action::Start { vcpu: t };
                    }
                },
            }
        }
        Call::AffinityInfo {
            target_affinity,
            lowest_affinity_level,
        } => affinity_info(target_affinity, lowest_affinity_level, env, power),
        // 5.9: no Trusted OS needs migrating.
        Call::MigrateInfoType => MIGRATE_INFO_TYPE_NOT_REQUIRED,
        Call::SystemOff => return Action::SystemOff,
        Call::SystemReset => return Action::SystemReset,
        Call::SystemReset2 { reset_type, .. } => {
            // SYSTEM_RESET2: architectural reset types other than SYSTEM_WARM_RESET are
            // reserved, and we implement no vendor-specific one: INVALID_PARAMETERS.
            if reset_type == SYSTEM_WARM_RESET {
                return Action::SystemReset;
            }
            INVALID_PARAMETERS
        }
        Call::Features { function_id } => features(function_id),
        Call::SmcccVersion => IMPLEMENTED_SMCCC_VERSION,
        Call::SmcccArchFeatures { function_id } => match function_id {
            // DEN 0028, SMCCC_ARCH_FEATURES: implemented architecture functions answer >= 0.
            SMCCC_VERSION | SMCCC_ARCH_FEATURES => SUCCESS,
            f => env.firmware.answer(f).unwrap_or(NOT_SUPPORTED),
        },
        Call::ArchWorkaround { function_id, w1 } => {
            match env.firmware.answer(function_id) {
                // The firmware implements it: it does the work (DEN 0028,
                // SMCCC_ARCH_WORKAROUND_1/2/3).
                Some(a) if a != NOT_SUPPORTED => {
                    return Action::Firmware { function_id, w1 };
                }
                _ => NOT_SUPPORTED,
            }
        }
        Call::Unknown { .. } => NOT_SUPPORTED,
    };
    Action::Return(ret)
}

/// AFFINITY_INFO (5.7): the state of the affinity instance `target_affinity`
/// names at `lowest_affinity_level`: ON if any core in it is ON, else
/// ON_PENDING if any is, else OFF.
fn affinity_info(target: u64, level: u32, env: &Env<'_>, power: &[Power]) -> i64 {
    // 5.7: reserved bits as for CPU_ON; levels 0..=3 exist (fields below the
    // level are ignored); anything else, or no core there, is INVALID_PARAMETERS.
    let Some(mask) = affinity_mask(level) else {
        return INVALID_PARAMETERS;
    };
    if target & MPIDR_RESERVED != 0 {
        return INVALID_PARAMETERS;
    }
    let mut found = false;
    let mut pending = false;
    for (i, &m) in env.mpidrs.iter().enumerate() {
        if m & mask != target & mask {
            continue;
        }
        found = true;
        match power.get(i) {
            Some(Power::On) => return AFFINITY_ON,
            Some(Power::OnPending { .. }) => pending = true,
            Some(Power::Off) | None => {}
        }
    }
    match (found, pending) {
        (false, _) => INVALID_PARAMETERS,
        (true, true) => AFFINITY_ON_PENDING,
        (true, false) => AFFINITY_OFF,
    }
}

#[cfg(test)]
mod tests;

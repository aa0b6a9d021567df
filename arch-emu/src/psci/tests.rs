use super::*;

/// Two vCPUs in one cluster (MPIDR 0x0 and 0x1) and a third in cluster 1
/// (0x100), guest RAM at 0x4000_0000 (256 MiB), a firmware with every workaround.
const MPIDRS: [u64; 3] = [0x0, 0x1, 0x100];
const RAM_BASE: u64 = 0x4000_0000;
const ENTRY: u64 = RAM_BASE + 0x8_0000;

fn env(firmware: FirmwareWorkarounds) -> Env<'static> {
    Env {
        mpidrs: &MPIDRS,
        ram: MemRange {
            base: Ipa(RAM_BASE),
            size: 0x1000_0000,
        },
        firmware,
    }
}

const FW_ALL: FirmwareWorkarounds = FirmwareWorkarounds {
    workaround_1: 0,
    workaround_2: 0,
    workaround_3: 0,
};

/// vCPU 0 on, the others off.
fn boot_power() -> [Power; 3] {
    [Power::On, Power::Off, Power::Off]
}

fn call(x0: u32, x1: u64, x2: u64, x3: u64, power: &mut [Power]) -> Action {
    handle(decode(u64::from(x0), x1, x2, x3), 0, &env(FW_ALL), power)
}

fn ret(x0: u32, x1: u64, x2: u64, x3: u64) -> i64 {
    match call(x0, x1, x2, x3, &mut boot_power()) {
        Action::Return(v) => v,
        other => panic!("{x0:#x} did not return: {other:?}"),
    }
}

// ---- decoding -------------------------------------------------------------

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
            target_cpu: 1,
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
        0xffff_ffff_0000_0002,
    );
    assert_eq!(
        call,
        Call::CpuOn {
            target_cpu: 1,
            entry_point: 0x8000_0000,
            context_id: 2
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
fn function_id_with_nonzero_bits_23_16_is_unknown() {
    // SMCCC: bits [23:16] of a fast call's function ID must be zero.
    assert_eq!(
        decode(u64::from(PSCI_VERSION | 0x0001_0000), 0, 0, 0),
        Call::Unknown {
            function_id: PSCI_VERSION | 0x0001_0000
        }
    );
}

#[test]
fn unknown_function_is_not_supported() {
    assert_eq!(ret(0xC400_00FF, 0, 0, 0), NOT_SUPPORTED);
    assert_eq!(features(0xC400_00FF), NOT_SUPPORTED);
}

// ---- PSCI_VERSION, PSCI_FEATURES ---------------------------------------------

#[test]
fn version_is_1_1() {
    assert_eq!(ret(PSCI_VERSION, 0, 0, 0), 0x1_0001);
}

#[test]
fn features_reports_every_implemented_function() {
    for f in IMPLEMENTED {
        assert!(ret(PSCI_FEATURES, u64::from(f), 0, 0) >= 0, "{f:#x}");
    }
}

#[test]
fn features_and_dispatch_agree_on_every_psci_function_id() {
    // Every function ID in the PSCI range (0x8400_0000..=0x8400_001F and the
    // SMC64 twins): PSCI_FEATURES says NOT_SUPPORTED exactly when a call
    // returns NOT_SUPPORTED (X1 names an implemented function for PSCI_FEATURES).
    for base in [0x8400_0000u32, 0xC400_0000] {
        for n in 0..0x20 {
            let f = base | n;
            let supported = features(f) != NOT_SUPPORTED;
            let answered = !matches!(
                call(f, u64::from(PSCI_VERSION), ENTRY, 0, &mut boot_power()),
                Action::Return(NOT_SUPPORTED)
            );
            assert_eq!(supported, answered, "{f:#x}");
        }
    }
}

#[test]
fn unimplemented_optional_functions_are_not_supported() {
    for f in [
        MIGRATE_32,
        MIGRATE_64,
        MIGRATE_INFO_UP_CPU_32,
        MIGRATE_INFO_UP_CPU_64,
        CPU_FREEZE,
        CPU_DEFAULT_SUSPEND_32,
        CPU_DEFAULT_SUSPEND_64,
        NODE_HW_STATE_32,
        NODE_HW_STATE_64,
        SYSTEM_SUSPEND_32,
        SYSTEM_SUSPEND_64,
        PSCI_SET_SUSPEND_MODE,
        PSCI_STAT_RESIDENCY_32,
        PSCI_STAT_RESIDENCY_64,
        PSCI_STAT_COUNT_32,
        PSCI_STAT_COUNT_64,
        MEM_PROTECT,
        MEM_PROTECT_CHECK_RANGE_32,
        MEM_PROTECT_CHECK_RANGE_64,
    ] {
        assert_eq!(features(f), NOT_SUPPORTED, "features {f:#x}");
        assert_eq!(ret(f, 0, 0, 0), NOT_SUPPORTED, "call {f:#x}");
    }
}

#[test]
fn features_of_smccc_version_is_success_but_not_of_arch_calls() {
    assert_eq!(ret(PSCI_FEATURES, u64::from(SMCCC_VERSION), 0, 0), SUCCESS);
    assert_eq!(features(SMCCC_ARCH_FEATURES), NOT_SUPPORTED);
    assert_eq!(features(SMCCC_ARCH_WORKAROUND_1), NOT_SUPPORTED);
}

#[test]
fn features_ignores_upper_half_of_x1() {
    assert_eq!(
        ret(
            PSCI_FEATURES,
            0xffff_ffff_0000_0000 | u64::from(CPU_OFF),
            0,
            0
        ),
        SUCCESS
    );
}

// ---- CPU_ON ---------------------------------------------------------------------

/// Fault 1 of issue 9: CPU_ON with `(1 << 24) | 1` started CPU 1.
#[test]
fn fault1_cpu_on_with_reserved_mpidr_bits_is_invalid_parameters() {
    let mut power = boot_power();
    for f in [CPU_ON_64, CPU_ON_32] {
        assert_eq!(
            call(f, (1 << 24) | 1, ENTRY, 0, &mut power),
            Action::Return(INVALID_PARAMETERS),
            "{f:#x}"
        );
    }
    assert_eq!(power[1], Power::Off);
    assert_eq!(
        call(AFFINITY_INFO_64, (1 << 24) | 1, 0, 0, &mut power),
        Action::Return(INVALID_PARAMETERS)
    );
}

#[test]
fn cpu_on_rejects_every_reserved_bit() {
    for bit in (24..32).chain(40..64) {
        assert_eq!(
            call(CPU_ON_64, (1u64 << bit) | 1, ENTRY, 0, &mut boot_power()),
            Action::Return(INVALID_PARAMETERS),
            "bit {bit}"
        );
    }
}

#[test]
fn cpu_on_32_ignores_reserved_bits_above_31() {
    let mut power = boot_power();
    assert_eq!(
        call(CPU_ON_32, (1 << 40) | 1, ENTRY, 7, &mut power),
        Action::Start { vcpu: 1 }
    );
}

#[test]
fn cpu_on_of_an_absent_cpu_is_invalid_parameters() {
    for target in [0x2, 0x101, 0x1_0000, 0x1_0000_0000] {
        assert_eq!(
            call(CPU_ON_64, target, ENTRY, 0, &mut boot_power()),
            Action::Return(INVALID_PARAMETERS),
            "{target:#x}"
        );
    }
}

#[test]
fn cpu_on_outside_ram_is_invalid_address() {
    let mut power = boot_power();
    for entry in [0, RAM_BASE - 4, RAM_BASE + 0x1000_0000, u64::MAX] {
        assert_eq!(
            call(CPU_ON_64, 1, entry, 0, &mut power),
            Action::Return(INVALID_ADDRESS),
            "{entry:#x}"
        );
    }
    assert_eq!(power[1], Power::Off);
}

#[test]
fn cpu_on_starts_an_off_cpu_pending() {
    let mut power = boot_power();
    assert_eq!(
        call(CPU_ON_64, 0x100, ENTRY, 0x55, &mut power),
        Action::Start { vcpu: 2 }
    );
    assert_eq!(
        power[2],
        Power::OnPending {
            entry: ENTRY,
            context_id: 0x55
        }
    );
    assert_eq!(
        call(CPU_ON_64, 0x100, ENTRY, 0, &mut power),
        Action::Return(ON_PENDING)
    );
}

#[test]
fn cpu_on_of_a_running_cpu_is_already_on() {
    assert_eq!(ret(CPU_ON_64, 0, ENTRY, 0), ALREADY_ON);
}

// ---- CPU_OFF -------------------------------------------------------------------

#[test]
fn cpu_off_switches_the_caller_off() {
    let mut power = [Power::On, Power::On, Power::Off];
    let a = handle(
        decode(u64::from(CPU_OFF), 0, 0, 0),
        1,
        &env(FW_ALL),
        &mut power,
    );
    assert_eq!(a, Action::Off);
    assert_eq!(power, [Power::On, Power::Off, Power::Off]);
}

// ---- AFFINITY_INFO ---------------------------------------------------------------

#[test]
fn affinity_info_reports_each_state() {
    let mut power = [
        Power::On,
        Power::Off,
        Power::OnPending {
            entry: ENTRY,
            context_id: 0,
        },
    ];
    let mut q = |aff, level| call(AFFINITY_INFO_64, aff, level, 0, &mut power);
    assert_eq!(q(0, 0), Action::Return(AFFINITY_ON));
    assert_eq!(q(1, 0), Action::Return(AFFINITY_OFF));
    assert_eq!(q(0x100, 0), Action::Return(AFFINITY_ON_PENDING));
}

#[test]
fn affinity_info_above_level_0_aggregates_the_cluster() {
    let mut power = [Power::Off, Power::On, Power::Off];
    // Cluster 0 (Aff1 = 0) has vCPU 1 on; Aff0 is ignored at level 1.
    assert_eq!(
        call(AFFINITY_INFO_64, 0xff, 1, 0, &mut power),
        Action::Return(AFFINITY_ON)
    );
    // Cluster 1 holds only vCPU 2, off.
    assert_eq!(
        call(AFFINITY_INFO_64, 0x100, 1, 0, &mut power),
        Action::Return(AFFINITY_OFF)
    );
    // Level 2 and 3: everything (Aff2 = Aff3 = 0).
    assert_eq!(
        call(AFFINITY_INFO_64, 0xffff, 2, 0, &mut power),
        Action::Return(AFFINITY_ON)
    );
    assert_eq!(
        call(AFFINITY_INFO_64, 0xff_ffff, 3, 0, &mut power),
        Action::Return(AFFINITY_ON)
    );
}

#[test]
fn affinity_info_level_above_3_is_invalid_parameters() {
    assert_eq!(ret(AFFINITY_INFO_64, 0, 4, 0), INVALID_PARAMETERS);
    assert_eq!(
        ret(AFFINITY_INFO_64, 0, u64::from(u32::MAX), 0),
        INVALID_PARAMETERS
    );
}

#[test]
fn affinity_info_level_is_a_32_bit_parameter() {
    assert_eq!(ret(AFFINITY_INFO_64, 0, 1 << 32, 0), AFFINITY_ON);
}

#[test]
fn affinity_info_of_an_absent_instance_is_invalid_parameters() {
    assert_eq!(ret(AFFINITY_INFO_64, 0x2, 0, 0), INVALID_PARAMETERS);
    assert_eq!(ret(AFFINITY_INFO_64, 0x200, 1, 0), INVALID_PARAMETERS);
    assert_eq!(ret(AFFINITY_INFO_64, 1 << 40, 0, 0), INVALID_PARAMETERS);
    assert_eq!(ret(AFFINITY_INFO_32, (1 << 40) | 1, 0, 0), AFFINITY_OFF);
}

// ---- CPU_SUSPEND -------------------------------------------------------------------

/// Fault 2 of issue 9: CPU_SUSPEND was missing.
#[test]
fn fault2_cpu_suspend_is_reported_and_standby_suspends() {
    assert_eq!(ret(PSCI_FEATURES, u64::from(CPU_SUSPEND_64), 0, 0), 2);
    assert_eq!(ret(PSCI_FEATURES, u64::from(CPU_SUSPEND_32), 0, 0), 2);
    assert_eq!(
        call(CPU_SUSPEND_64, 0, 0, 0, &mut boot_power()),
        Action::Standby
    );
    assert_eq!(
        call(CPU_SUSPEND_32, 0, 0, 0, &mut boot_power()),
        Action::Standby
    );
}

#[test]
fn cpu_suspend_powerdown_resumes_at_the_entry_point() {
    assert_eq!(
        call(
            CPU_SUSPEND_64,
            1 << 30,
            ENTRY,
            0x1234_5678_9abc,
            &mut boot_power()
        ),
        Action::Powerdown {
            entry_point: ENTRY,
            context_id: 0x1234_5678_9abc
        }
    );
    assert_eq!(
        call(
            CPU_SUSPEND_32,
            1 << 30,
            0xffff_ffff_0000_0000 | ENTRY,
            0xffff_ffff_0000_0009,
            &mut boot_power()
        ),
        Action::Powerdown {
            entry_point: ENTRY,
            context_id: 9
        }
    );
}

#[test]
fn cpu_suspend_powerdown_outside_ram_is_invalid_address() {
    assert_eq!(ret(CPU_SUSPEND_64, 1 << 30, 0x1000, 0), INVALID_ADDRESS);
}

#[test]
fn cpu_suspend_standby_ignores_the_entry_point() {
    assert_eq!(
        call(CPU_SUSPEND_64, 0, 0x1000, 0, &mut boot_power()),
        Action::Standby
    );
}

#[test]
fn cpu_suspend_reserved_bits_or_unknown_state_id_are_invalid_parameters() {
    for ps in [1u64 << 31, 1 << 29, 1 << 28, 1, 0x0fff_ffff, (1 << 30) | 2] {
        assert_eq!(
            ret(CPU_SUSPEND_64, ps, ENTRY, 0),
            INVALID_PARAMETERS,
            "{ps:#x}"
        );
    }
}

#[test]
fn cpu_suspend_power_state_is_a_32_bit_parameter() {
    assert_eq!(
        call(
            CPU_SUSPEND_64,
            0xffff_ffff_0000_0000,
            0,
            0,
            &mut boot_power()
        ),
        Action::Standby
    );
}

// ---- system functions -------------------------------------------------------------

#[test]
fn migrate_info_type_says_no_migration() {
    assert_eq!(ret(MIGRATE_INFO_TYPE, 0, 0, 0), 2);
}

#[test]
fn system_off_and_reset_end_the_guest() {
    assert_eq!(
        call(SYSTEM_OFF, 0, 0, 0, &mut boot_power()),
        Action::SystemOff
    );
    assert_eq!(
        call(SYSTEM_RESET, 0, 0, 0, &mut boot_power()),
        Action::SystemReset
    );
}

#[test]
fn system_reset2_warm_reset_resets_and_other_types_are_invalid() {
    for f in [SYSTEM_RESET2_32, SYSTEM_RESET2_64] {
        assert_eq!(
            call(f, 0, 0xdead, 0, &mut boot_power()),
            Action::SystemReset
        );
        assert_eq!(ret(f, 1, 0, 0), INVALID_PARAMETERS);
        assert_eq!(ret(f, 0x7fff_ffff, 0, 0), INVALID_PARAMETERS);
        assert_eq!(
            ret(f, u64::from(RESET_TYPE_VENDOR), 0, 0),
            INVALID_PARAMETERS
        );
    }
    // reset_type is 32 bits wide: the upper half of X1 is not part of it.
    assert_eq!(
        call(SYSTEM_RESET2_64, 1 << 32, 0, 0, &mut boot_power()),
        Action::SystemReset
    );
}

// ---- SMCCC -----------------------------------------------------------------------------

#[test]
fn smccc_version_is_1_1() {
    assert_eq!(ret(SMCCC_VERSION, 0, 0, 0), 0x1_0001);
}

#[test]
fn smccc_arch_features_knows_the_discovery_calls() {
    assert_eq!(
        ret(SMCCC_ARCH_FEATURES, u64::from(SMCCC_VERSION), 0, 0),
        SUCCESS
    );
    assert_eq!(
        ret(SMCCC_ARCH_FEATURES, u64::from(SMCCC_ARCH_FEATURES), 0, 0),
        SUCCESS
    );
    assert_eq!(
        ret(SMCCC_ARCH_FEATURES, u64::from(SMCCC_ARCH_SOC_ID), 0, 0),
        NOT_SUPPORTED
    );
    assert_eq!(
        ret(SMCCC_ARCH_FEATURES, u64::from(PSCI_VERSION), 0, 0),
        NOT_SUPPORTED
    );
}

#[test]
fn smccc_arch_features_passes_on_the_firmware_answers() {
    let fw = FirmwareWorkarounds {
        workaround_1: 0,
        workaround_2: -2,
        workaround_3: NOT_SUPPORTED,
    };
    let q = |f: u32| {
        handle(
            decode(u64::from(SMCCC_ARCH_FEATURES), u64::from(f), 0, 0),
            0,
            &env(fw),
            &mut boot_power(),
        )
    };
    assert_eq!(q(SMCCC_ARCH_WORKAROUND_1), Action::Return(0));
    assert_eq!(q(SMCCC_ARCH_WORKAROUND_2), Action::Return(-2));
    assert_eq!(q(SMCCC_ARCH_WORKAROUND_3), Action::Return(NOT_SUPPORTED));
}

#[test]
fn workaround_calls_go_to_the_firmware_only_if_it_has_them() {
    let fw = FirmwareWorkarounds {
        workaround_1: 0,
        workaround_2: 1,
        workaround_3: NOT_SUPPORTED,
    };
    let c = |f: u32, x1: u64| {
        handle(
            decode(u64::from(f), x1, 0, 0),
            0,
            &env(fw),
            &mut boot_power(),
        )
    };
    assert_eq!(
        c(SMCCC_ARCH_WORKAROUND_1, 0),
        Action::Firmware {
            function_id: SMCCC_ARCH_WORKAROUND_1,
            w1: 0
        }
    );
    assert_eq!(
        c(SMCCC_ARCH_WORKAROUND_2, 0xffff_ffff_0000_0001),
        Action::Firmware {
            function_id: SMCCC_ARCH_WORKAROUND_2,
            w1: 1
        }
    );
    assert_eq!(c(SMCCC_ARCH_WORKAROUND_3, 0), Action::Return(NOT_SUPPORTED));
    let none = handle(
        decode(u64::from(SMCCC_ARCH_WORKAROUND_1), 0, 0, 0),
        0,
        &env(FirmwareWorkarounds::NONE),
        &mut boot_power(),
    );
    assert_eq!(none, Action::Return(NOT_SUPPORTED));
}

#[test]
fn affinity_drops_non_affinity_bits() {
    assert_eq!(mpidr_affinity(0x8000_0000 | 0x0102), 0x0102);
    assert_eq!(mpidr_affinity(0xff_4000_0000), 0xff_0000_0000);
}

// ---- no panic on any input --------------------------------------------------------------

proptest::proptest! {
    #[test]
    fn any_call_from_any_caller_is_answered(
        x0 in proptest::prelude::any::<u64>(),
        x1 in proptest::prelude::any::<u64>(),
        x2 in proptest::prelude::any::<u64>(),
        x3 in proptest::prelude::any::<u64>(),
        caller in 0usize..5,
    ) {
        let mut power = boot_power();
        let _ = handle(decode(x0, x1, x2, x3), caller, &env(FW_ALL), &mut power);
    }
}

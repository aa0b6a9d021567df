use super::*;
use crate::testutil::TempDir;

/// The file every test names.
const FILE: &str = "cfg/x.toml";

fn parse(text: &str) -> Result<Config> {
    Config::parse(Path::new(FILE), text)
}

/// The message a file is refused with.
fn refusal(text: &str) -> String {
    parse(text).expect_err("refused").0
}

/// A valid two-guest file, `extra` added to guest `b`'s table.
fn two(extra: &str) -> String {
    format!(
        "[[guest]]\nname = \"a\"\ncpus = 1\nmemory = \"512M\"\n\n[[guest]]\nname = \"b\"\ncpus = 1\nmemory = \"512M\"\nsegment = 2\n{extra}"
    )
}

fn checked_in(name: &str) -> Config {
    let path = crate::paths::workspace_root().join("configs").join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn main_toml_is_one_guest_in_the_single_guest_style() {
    let c = checked_in("main.toml");
    assert!(c.single_style());
    assert_eq!((c.machine.memory, c.machine.cpus), (2 << 30, Some(2)));
    let g = &c.guests[0];
    assert_eq!((g.nic, g.nic_slot), (Nic::E1000e, NicSlot::RootPort));
    assert_eq!(g.disks, [DiskSpec::Default]);
    assert_eq!(
        (&g.kernel, &g.initrd),
        (&FileSpec::Default, &Some(FileSpec::Default))
    );
}

#[test]
fn two_guests_toml_gives_one_guest_the_nic_and_the_other_the_disk() {
    let c = checked_in("two-guests.toml");
    assert!(!c.single_style());
    let [a, b] = c.guests.as_slice() else {
        panic!("{:?}", c.guests)
    };
    assert_eq!(
        (a.cpus.count(), a.nic, a.disks.len()),
        (Some(1), Nic::E1000e, 0)
    );
    assert_eq!(
        (b.cpus.count(), b.nic, &b.disks),
        (Some(1), Nic::None, &vec![DiskSpec::Default])
    );
    assert_ne!(a.segment, b.segment);
}

#[test]
fn every_key_is_read() {
    let c = parse(
        r#"
[machine]
memory = "1G"
cpus = 4
qemu-args = ["-s"]
hv-args = ["loglevel=debug"]
smmu = true

[[guest]]
name = "g"
cpus = [0x1, 0x100]
memory = "256M"
kernel = "k/Image"
initrd = "/abs/initrd"
append = "quiet"
exec = "true"
nic = "igb"
nic-slot = "switch"
hostfwd = ["5201:5201"]
disks = ["ram:64M", "d.img"]
virtio-console = true
segment = 3
root-ports = 8
on-reset = "restart"
"#,
    )
    .expect("valid");
    assert_eq!(
        c.machine,
        Machine {
            memory: 1 << 30,
            cpus: Some(4),
            qemu_args: vec!["-s".into()],
            hv_args: vec!["loglevel=debug".into()],
            smmu: true,
        }
    );
    assert_eq!(
        c.guests,
        [Guest {
            name: "g".into(),
            cpus: Cpus::Mpidrs(vec![1, 0x100]),
            memory: Memory::Size(256 << 20),
            kernel: FileSpec::Path("cfg/k/Image".into()),
            initrd: Some(FileSpec::Path("/abs/initrd".into())),
            append: "quiet".into(),
            bootargs: None,
            exec: Some("true".into()),
            nic: Nic::Igb,
            nic_slot: NicSlot::Switch,
            hostfwd: vec![PortForward {
                host: 5201,
                guest: 5201
            }],
            disks: vec![DiskSpec::Ram(64 << 20), DiskSpec::Image("cfg/d.img".into())],
            virtio_console: true,
            segment: 3,
            root_ports: Some(8),
            on_reset: ResetAction::Restart,
        }]
    );
}

#[test]
fn omitted_keys_take_their_defaults() {
    let c = parse("[[guest]]\nname = \"g\"\nmemory = \"rest\"\n").expect("valid");
    assert_eq!((c.machine.memory, c.machine.cpus), (DEFAULT_MEMORY, None));
    let g = &c.guests[0];
    assert_eq!(g.cpus, Cpus::Count(1));
    assert_eq!(
        (g.nic, g.segment, g.on_reset),
        (Nic::None, 1, ResetAction::Stop)
    );
    assert!(g.disks.is_empty() && g.root_ports.is_none());
}

#[test]
fn initrd_none_means_no_initrd() {
    let c =
        parse("[[guest]]\nname = \"g\"\nmemory = \"rest\"\ninitrd = \"none\"\n").expect("valid");
    assert_eq!(c.guests[0].initrd, None);
}

// ------------------------------------------------------------------ errors

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let e = refusal("[[guest]\nname = \"a\"\n");
    assert!(e.starts_with("cfg/x.toml:1:8: invalid table header"), "{e}");
}

#[test]
fn an_unknown_key_names_the_guest_and_the_key() {
    let e = refusal(&two("memroy = \"1G\"\n"));
    assert!(
        e.starts_with("cfg/x.toml:11:1: guest b: unknown field `memroy`, expected one of"),
        "{e}"
    );
}

#[test]
fn an_unknown_machine_key_is_refused() {
    let e = refusal("[machine]\nram = \"1G\"\n");
    assert!(e.starts_with("cfg/x.toml:2:1: unknown field `ram`"), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_guest_the_key_and_what_it_wants() {
    let e = refusal(&two("").replace(
        "cpus = 1\nmemory = \"512M\"\nsegment",
        "cpus = 2.5\nmemory = \"512M\"\nsegment",
    ));
    assert!(e.starts_with("cfg/x.toml:8:8: guest b: cpus: invalid type: floating point `2.5`, expected a number of CPUs, \"all\", or a list of MPIDRs"), "{e}");
}

#[test]
fn a_bad_size_names_the_guest_and_the_key() {
    let e = refusal(&two("").replace("memory = \"512M\"\nsegment", "memory = \"12X\"\nsegment"));
    assert!(
        e.starts_with(
            "cfg/x.toml:9:10: guest b: memory: \"12X\": want a size like \"512M\", or \"rest\""
        ),
        "{e}"
    );
}

#[test]
fn memory_in_pieces_smaller_than_2m_is_refused() {
    let e = refusal("[[guest]]\nname = \"a\"\nmemory = \"513M\"\n");
    assert!(
        e.contains("guest a: memory: \"513M\": want a multiple of 2M"),
        "{e}"
    );
}

#[test]
fn a_missing_memory_names_the_guest() {
    let e = refusal("[[guest]]\nname = \"a\"\ncpus = 1\n");
    assert!(
        e.starts_with("cfg/x.toml:1:1: guest a: missing field `memory`"),
        "{e}"
    );
}

#[test]
fn an_unknown_nic_model_lists_the_models() {
    let e = refusal(&two("nic = \"rtl8139\"\n"));
    assert!(e.starts_with("cfg/x.toml:11:7: guest b: nic: unknown variant `rtl8139`, expected one of `e1000e`, `igb`, `none`"), "{e}");
}

#[test]
fn a_root_ports_value_out_of_range_is_refused() {
    let e = refusal(&two("root-ports = 40\n"));
    assert_eq!(e, "cfg/x.toml:11:14: guest b: root-ports: 40: want 2 to 31");
}

#[test]
fn a_name_that_is_no_node_name_is_refused() {
    let e = refusal("[[guest]]\nname = \"2nd\"\nmemory = \"rest\"\n");
    assert_eq!(
        e,
        "cfg/x.toml:2:8: guest 2nd: name: \"2nd\": want a letter first"
    );
}

#[test]
fn two_guests_with_one_name_are_refused() {
    let e = refusal(&two("").replace("name = \"b\"", "name = \"a\""));
    assert_eq!(
        e,
        "cfg/x.toml:7:8: guest a: name: \"a\" is also guest #1's name"
    );
}

#[test]
fn all_cpus_beside_another_guest_is_refused() {
    let e = refusal(&two("").replace(
        "cpus = 1\nmemory = \"512M\"\nsegment",
        "cpus = \"all\"\nmemory = \"512M\"\nsegment",
    ));
    assert!(
        e.starts_with("cfg/x.toml:8:8: guest b: cpus: \"all\" with other guests"),
        "{e}"
    );
}

#[test]
fn rest_memory_for_two_guests_is_refused() {
    let e = refusal(&two("").replace("\"512M\"", "\"rest\""));
    assert_eq!(
        e,
        "cfg/x.toml:9:10: guest b: memory: \"rest\" again (guest a has it): give a size"
    );
}

#[test]
fn a_cpu_listed_by_two_guests_is_refused() {
    let e = refusal(&two("").replace("cpus = 1", "cpus = [0x1]"));
    assert_eq!(e, "cfg/x.toml:8:8: guest b: cpus: CPU 0x1 is guest a's too");
}

#[test]
fn a_cpu_listed_twice_by_one_guest_is_refused() {
    let e = refusal("[[guest]]\nname = \"a\"\ncpus = [1, 1]\nmemory = \"rest\"\n");
    assert!(
        e.starts_with("cfg/x.toml:3:8: guest a: cpus: CPU 0x1 is listed twice"),
        "{e}"
    );
}

#[test]
fn a_segment_used_twice_is_refused() {
    let e = refusal(&two("").replace("segment = 2", "segment = 1").replace(
        "memory = \"512M\"\n\n",
        "memory = \"512M\"\nsegment = 1\n\n",
    ));
    assert_eq!(
        e,
        "cfg/x.toml:11:11: guest b: segment: 1 is guest a's segment too"
    );
}

#[test]
fn bootargs_with_append_is_refused() {
    let e = refusal(&two("bootargs = \"x\"\nappend = \"y\"\n"));
    assert!(e.starts_with("cfg/x.toml:11:12: guest b: bootargs: is the whole command line, and append needs the default one"), "{e}");
}

#[test]
fn one_image_for_two_guests_is_refused() {
    let e = refusal(
        &two("disks = [\"default\"]\n")
            .replace("segment = 2", "segment = 2\n")
            .replacen(
                "memory = \"512M\"\n",
                "memory = \"512M\"\ndisks = [\"default\"]\n",
                1,
            ),
    );
    assert!(
        e.contains("guest b: disks: \"default\" is guest a's disk too: an image serves one guest"),
        "{e}"
    );
}

#[test]
fn a_disk_entry_none_is_refused_saying_to_leave_it_out() {
    let e = refusal(&two("disks = [\"none\"]\n"));
    assert!(
        e.starts_with("cfg/x.toml:11:9: guest b: disks: \"none\": want \"default\""),
        "{e}"
    );
}

#[test]
fn a_bad_port_forward_is_refused() {
    let e = refusal(&two("hostfwd = [\"22\"]\n"));
    assert_eq!(
        e,
        "cfg/x.toml:11:11: guest b: hostfwd: \"22\": want \"HOSTPORT:GUESTPORT\""
    );
}

#[test]
fn a_file_without_guests_is_refused() {
    assert_eq!(
        refusal("[machine]\nmemory = \"1G\"\n"),
        "cfg/x.toml: no [[guest]]: describe at least one guest"
    );
}

#[test]
fn machine_memory_below_64m_is_refused() {
    let e = refusal("[machine]\nmemory = \"32M\"\n[[guest]]\nname = \"a\"\nmemory = \"rest\"\n");
    assert_eq!(
        e,
        "cfg/x.toml:2:10: [machine]: memory: 32 MiB: want at least 64M"
    );
}

#[test]
fn guests_whose_memory_adds_up_to_more_than_the_machine_are_refused_naming_each() {
    let e = refusal(&format!(
        "[machine]\nmemory = \"1G\"\n{}",
        two("").replace("\"512M\"\nsegment", "\"768M\"\nsegment")
    ));
    assert_eq!(
        e,
        "cfg/x.toml:11:10: guest b: memory: the guests' memory adds up to 1280 MiB (a: 512 MiB, b: 768 MiB), more than the machine's 1024 MiB"
    );
}

#[test]
fn a_guest_with_more_memory_than_the_machine_is_refused() {
    let e = refusal("[[guest]]\nname = \"a\"\nmemory = \"4G\"\n");
    assert_eq!(
        e,
        "cfg/x.toml:3:10: guest a: memory: 4096 MiB, more than the machine's 2048 MiB"
    );
}

#[test]
fn a_mem_option_below_the_guests_memory_is_refused() {
    let mut c = parse(&two("")).expect("valid");
    let o = Overrides {
        mem: Some(768 << 20),
        ..Overrides::default()
    };
    let e = c.apply(&o).expect_err("1024 MiB of guests in 768").0;
    assert_eq!(
        e,
        "cfg/x.toml:9:10: guest b: memory: the guests' memory adds up to 1024 MiB (a: 512 MiB, b: 512 MiB), more than the machine's 768 MiB"
    );
}

#[test]
fn more_nics_than_host_slots_are_refused() {
    let mut text = String::new();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        text.push_str(&format!(
            "[[guest]]\nname = \"{n}\"\nmemory = \"64M\"\nsegment = {}\nnic = \"igb\"\n",
            i + 1
        ));
    }
    let e = refusal(&text);
    assert_eq!(
        e,
        "cfg/x.toml:20:7: guest d: nic: 4 NICs: the host has slots for 3"
    );
}

#[test]
fn the_single_guest_style_refuses_a_second_disk() {
    let e = refusal("[[guest]]\nname = \"a\"\ncpus = \"all\"\nmemory = \"rest\"\ndisks = [\"ram:1M\", \"ram:2M\"]\n");
    assert!(
        e.starts_with(
            "cfg/x.toml:5:9: guest a: disks: 2 disks: one at most in the single-guest style"
        ),
        "{e}"
    );
}

#[test]
fn the_single_guest_style_refuses_restart_on_reset() {
    let e = refusal(
        "[[guest]]\nname = \"a\"\ncpus = \"all\"\nmemory = \"rest\"\non-reset = \"restart\"\n",
    );
    assert!(
        e.contains(
            "guest a: on-reset: \"restart\": a reset stops the guest in the single-guest style"
        ),
        "{e}"
    );
}

// --------------------------------------------------------------- overrides

#[test]
fn guest_options_with_several_guests_need_a_guest_name() {
    let mut c = parse(&two("")).expect("valid");
    let o = Overrides {
        nic: Some(Nic::Igb),
        exec: Some("true".into()),
        ..Overrides::default()
    };
    let e = c.apply(&o).expect_err("which guest?").0;
    assert_eq!(e, "cfg/x.toml: --nic apply to one guest and the file has 2 (a, b): say which with --guest NAME before them");
}

#[test]
fn exec_without_a_guest_name_is_the_command_of_every_guest_without_one() {
    let mut c = parse(&two("exec = \"lspci\"\n")).expect("valid");
    let o = Overrides {
        exec: Some("true".into()),
        ..Overrides::default()
    };
    c.apply(&o).expect("valid");
    assert_eq!(
        (c.guests[0].exec.as_deref(), c.guests[1].exec.as_deref()),
        (Some("true"), Some("lspci"))
    );
}

#[test]
fn exec_without_a_guest_name_leaves_a_guest_with_bootargs_alone() {
    let mut c = parse(&two("bootargs = \"probe=boot\"\n")).expect("valid");
    let o = Overrides {
        exec: Some("true".into()),
        ..Overrides::default()
    };
    c.apply(&o).expect("a guest with bootargs takes no command");
    assert_eq!(
        (c.guests[0].exec.as_deref(), c.guests[1].exec.as_deref()),
        (Some("true"), None)
    );
    c.check_commands()
        .expect("a guest with bootargs needs none");
}

#[test]
fn apply_all_gives_the_guests_own_exec_before_the_common_one() {
    let mut c = parse(&two("")).expect("valid");
    let global = Overrides {
        exec: Some("true".into()),
        ..Overrides::default()
    };
    let b = Overrides {
        guest: Some("b".into()),
        exec: Some("lspci".into()),
        ..Overrides::default()
    };
    c.apply_all(&global, &[b]).expect("valid");
    assert_eq!(
        (c.guests[0].exec.as_deref(), c.guests[1].exec.as_deref()),
        (Some("true"), Some("lspci"))
    );
}

#[test]
fn commands_for_some_guests_only_are_refused_naming_every_guest_without_one() {
    let text = format!(
        "{}\n[[guest]]\nname = \"c\"\nmemory = \"512M\"\nsegment = 3\n",
        two("exec = \"lspci\"\n")
    );
    let c = parse(&text).expect("valid");
    let e = c.check_commands().expect_err("a and c have none").0;
    assert!(
        e.starts_with("cfg/x.toml: guests a, c have no command and guest b has one:"),
        "{e}"
    );
    assert!(e.contains("--guest NAME --exec CMD"), "{e}");
}

#[test]
fn the_run_reads_the_status_lines_of_the_guests_with_a_command_by_their_names() {
    let mut c = parse(&two("exec = \"lspci\"\n")).expect("valid");
    c.guests[0].exec = Some("true".into());
    assert_eq!(c.command_guests(), ["a", "b"]);
}

#[test]
fn the_run_reads_one_guests_status_line_without_a_prefix() {
    let c = parse("[[guest]]\nname = \"a\"\nmemory = \"512M\"\nexec = \"true\"\n").expect("valid");
    assert!(!c.single_style(), "a guest node");
    assert_eq!(c.command_guests(), Vec::<String>::new());
}

#[test]
fn commands_for_every_guest_or_none_pass() {
    parse(&two(""))
        .expect("valid")
        .check_commands()
        .expect("none");
    let mut c = parse(&two("exec = \"lspci\"\n")).expect("valid");
    c.guests[0].exec = Some("true".into());
    c.check_commands().expect("every guest");
}

#[test]
fn guest_options_apply_to_the_guest_named() {
    let mut c = parse(&two("")).expect("valid");
    let o = Overrides {
        guest: Some("b".into()),
        nic: Some(Nic::Igb),
        ..Overrides::default()
    };
    c.apply(&o).expect("valid");
    assert_eq!((c.guests[0].nic, c.guests[1].nic), (Nic::None, Nic::Igb));
}

#[test]
fn an_unknown_guest_name_lists_the_guests() {
    let mut c = parse(&two("")).expect("valid");
    let o = Overrides {
        guest: Some("z".into()),
        ..Overrides::default()
    };
    let e = c.apply(&o).expect_err("no z").0;
    assert_eq!(e, "cfg/x.toml: --guest z: no such guest (its guests: a, b)");
}

#[test]
fn machine_options_need_no_guest_name() {
    let mut c = parse(&two("")).expect("valid");
    let o = Overrides {
        mem: Some(1 << 30),
        qemu_args: vec!["-s".into()],
        ..Overrides::default()
    };
    c.apply(&o).expect("valid");
    assert_eq!(
        (c.machine.memory, c.machine.qemu_args.as_slice()),
        (1 << 30, &["-s".to_string()][..])
    );
}

#[test]
fn smp_sets_the_machines_cpus_when_the_guest_takes_all() {
    let mut c = checked_in("main.toml");
    let o = Overrides {
        smp: Some(4),
        ..Overrides::default()
    };
    c.apply(&o).expect("valid");
    assert_eq!((c.machine.cpus, &c.guests[0].cpus), (Some(4), &Cpus::All));
    assert!(c.single_style());
}

#[test]
fn smp_sets_a_guests_cpu_count() {
    let mut c = parse(&two("")).expect("valid");
    let o = Overrides {
        guest: Some("a".into()),
        smp: Some(3),
        ..Overrides::default()
    };
    c.apply(&o).expect("valid");
    assert_eq!(c.guests[0].cpus, Cpus::Count(3));
}

#[test]
fn disk_none_leaves_the_guest_without_a_disk() {
    let mut c = checked_in("main.toml");
    let o = Overrides {
        disk: Some(None),
        ..Overrides::default()
    };
    c.apply(&o).expect("valid");
    assert!(c.guests[0].disks.is_empty());
}

#[test]
fn a_problem_an_option_made_names_the_option() {
    let mut c =
        parse("[[guest]]\nname = \"a\"\nmemory = \"rest\"\nappend = \"quiet\"\n").expect("valid");
    let o = Overrides {
        cmdline: Some("x".into()),
        ..Overrides::default()
    };
    let e = c.apply(&o).expect_err("append and bootargs").0;
    assert!(
        e.starts_with("cfg/x.toml: guest a: bootargs (from --cmdline): is the whole command line"),
        "{e}"
    );
}

// ------------------------------------------------------------------- files

#[test]
fn the_projects_image_is_asked_for_only_when_a_guest_takes_it() {
    let dir = TempDir::new("files");
    let k = dir.file("Image", 0x1000);
    let c = parse(&format!(
        "[[guest]]\nname = \"a\"\nmemory = \"rest\"\nkernel = \"{}\"\ninitrd = \"none\"\n",
        k.display()
    ))
    .expect("valid");
    let files = c
        .files(|| panic!("the image is not needed"))
        .expect("files");
    assert_eq!(
        files,
        [GuestFiles {
            kernel: k,
            initrd: None
        }]
    );
}

#[test]
fn a_missing_kernel_file_names_the_guest_and_the_key() {
    let c =
        parse("[[guest]]\nname = \"a\"\nmemory = \"rest\"\nkernel = \"nope\"\n").expect("valid");
    let e = c
        .files(|| Ok(("k".into(), "i".into())))
        .expect_err("no such file")
        .0;
    assert_eq!(
        e,
        "cfg/x.toml:4:10: guest a: kernel: cfg/nope: no such file"
    );
}

#[test]
fn main_toml_boots_what_cargo_xtask_run_always_booted() {
    // What `cargo xtask run` set before the file existed: RunConfig::new's
    // defaults (2 CPUs, 2 GiB), an e1000e behind a root port on user
    // networking without forwards, the default disk image as the host disk
    // the hypervisor drives, nothing on the hypervisor's command line.
    let c = checked_in("main.toml");
    let files = GuestFiles {
        kernel: "Image".into(),
        initrd: Some("initrd".into()),
    };
    let mode = Mode::Hypervisor("hv.bin".into());
    let cfg = c
        .run_config(0, mode.clone(), &files, Path::new("disk.img"))
        .expect("valid");
    let mut before = RunConfig::new(mode, "Image".into(), "initrd".into());
    before.nic = Nic::E1000e;
    before.nic_slot = NicSlot::RootPort;
    before.net = NetBackend::User { forwards: vec![] };
    before.host_disk = Some("disk.img".into());
    before.disk = Disk::Host;
    assert_eq!(cfg, before);
}

#[test]
fn root_ports_of_a_single_guest_go_on_the_hypervisors_command_line() {
    let c = parse("[machine]\nhv-args = [\"loglevel=debug\"]\n[[guest]]\nname = \"a\"\ncpus = \"all\"\nmemory = \"rest\"\nroot-ports = 31\n").expect("valid");
    let files = GuestFiles {
        kernel: "k".into(),
        initrd: None,
    };
    let cfg = c
        .run_config(0, Mode::Hypervisor("hv".into()), &files, Path::new("d"))
        .expect("valid");
    assert_eq!(cfg.hypervisor_args, "loglevel=debug root-ports=31");
}

#[test]
fn guests_without_a_segment_take_the_lowest_numbers_no_other_guest_has() {
    let c = parse(
        "[[guest]]\nname = \"a\"\ncpus = 1\nmemory = \"256M\"\n\n\
         [[guest]]\nname = \"b\"\ncpus = 1\nmemory = \"256M\"\nsegment = 1\n\n\
         [[guest]]\nname = \"c\"\ncpus = 1\nmemory = \"256M\"\n",
    )
    .expect("valid");
    let segments: Vec<u16> = c.guests.iter().map(|g| g.segment).collect();
    assert_eq!(segments, [2, 1, 3]);
}

#[test]
fn an_empty_command_is_refused_before_it_leaves_a_guest_in_its_shell() {
    let c = parse(&two("exec = \" \"")).expect("parses");
    let e = c.check_commands().expect_err("empty command").0;
    assert_eq!(
        e,
        "cfg/x.toml:11:8: guest b: exec: an empty command: give one, or none for an interactive shell"
    );
}

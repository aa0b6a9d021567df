//! Runs every `tests/scenarios/*.toml`: dropping a file in that folder adds a scenario.
use std::path::PathBuf;

#[test]
fn every_scenario_file_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the scenario collection, found {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(f).expect("readable scenario");
        let result = toml::from_str::<tests::scenario::Scenario>(&text)
            .map_err(|e| format!("parse: {e}"))
            .and_then(|s| tests::scenario::run(&s));
        match result {
            Ok(()) => println!("scenario {name}: ok"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "failing scenarios:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_wrong_expectation_is_reported_with_its_step() {
    let s: tests::scenario::Scenario = toml::from_str(
        r#"
        description = "the runner itself must fail on a wrong expectation"
        [[port]]
        dev = 1
        [[step]]
        op = "read"
        at = "00:01.0"
        offset = 0
        size = 2
        expect = 0x8086
        "#,
    )
    .expect("parses");
    let err = tests::scenario::run(&s).expect_err("must fail");
    assert!(err.contains("step 1") && err.contains("0x1b36"), "{err}");
}

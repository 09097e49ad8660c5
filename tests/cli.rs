//! The binary's command line: bad configs name the field and exit non-zero.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ringtail");

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_config_file_with_an_unknown_field_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ringtail.yaml");
    std::fs::write(&path, "replication_factr: 3\n").expect("write");
    let (code, out) = run(&["--config", path.to_str().expect("utf8")], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("replication_factr"), "{out}");
}

#[test]
fn quorums_that_do_not_overlap_are_refused_whether_set_by_file_env_or_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ringtail.yaml");
    std::fs::write(&path, "read_quorum: 1\n").expect("write");
    let (code, out) = run(&["--config", path.to_str().expect("utf8")], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("replication_factor") && out.contains("must exceed"),
        "{out}"
    );
    let (code, out) = run(&[], &[("RINGTAIL_WRITE_QUORUM", "1")]);
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = run(&["--target", "router"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("`target`") && out.contains("router"), "{out}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let (code, out) = run(&["--config", "/nonexistent/ringtail.yaml"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("/nonexistent/ringtail.yaml"), "{out}");
}

//! The command line itself: generated completions and man page, `.env` errors, setting
//! errors that name what the user typed, and the help text clap writes from its attributes.

use crate::common::scrubbed_assert_cmd;

fn output_of(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = scrubbed_assert_cmd(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish_with_the_real_flags() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = output_of(dir.path(), &["--generate-completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("devrev-merge"), "{shell}: {out}");
        for flag in ["csv", "backup-only", "verify-backups", "max-retries"] {
            assert!(out.contains(flag), "{shell} completion lacks --{flag}");
        }
        assert!(err.is_empty(), "{shell}: {err}");
    }
    // Nothing but the script: no log folder, no report folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_man_page_is_generated_from_the_clap_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = output_of(dir.path(), &["--generate-man"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH devrev-merge 1"), "{out}");
    for flag in [
        r"\-\-csv",
        r"\-\-backup\-only",
        r"\-\-test\-api",
        r"\-\-max\-retries",
    ] {
        assert!(out.contains(flag), "man page lacks {flag}");
    }
}

#[test]
fn generators_are_not_combined_with_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = output_of(dir.path(), &["--generate-man", "--test-api"], &[]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
}

#[test]
fn a_malformed_env_file_is_exit_78_naming_the_file_and_line_not_its_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "RATE_LIMIT_CALLS=45\nDEVREV_API_TOKEN s3cr3t-tok\n",
    )
    .unwrap();
    let (code, out, err) = output_of(dir.path(), &["--test-api"], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains(".env line 2"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(!err.contains("no DevRev API token"), "{err}");
    assert!(out.is_empty());
}

#[test]
fn a_bad_max_retries_names_the_flag_or_the_variable_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = output_of(
        dir.path(),
        &["--test-api"],
        &[("DEVREV_MAX_RETRIES", "lots"), ("DEVREV_API_TOKEN", "t")],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("DEVREV_MAX_RETRIES=\"lots\""), "{err}");
    assert!(!err.contains("--devrev-max-retries"), "{err}");

    let (code, _, err) = output_of(
        dir.path(),
        &["--test-api", "--max-retries", "lots"],
        &[("DEVREV_API_TOKEN", "t")],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("--max-retries=\"lots\""), "{err}");

    // Every setting names its own real flag.
    for flag in [
        "--rate-limit-calls",
        "--rate-limit-period",
        "--connect-timeout",
        "--read-timeout",
    ] {
        let (code, _, err) = output_of(dir.path(), &["--test-api", flag, "0"], &[]);
        assert_eq!(code, 78, "{flag}: {err}");
        assert!(err.contains(&format!("{flag}=\"0\"")), "{flag}: {err}");
    }
}

#[test]
fn help_shows_env_and_default_from_clap_without_values_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = output_of(
        dir.path(),
        &["--help"],
        &[
            ("DEVREV_MAX_RETRIES", "7"),
            ("DEVREV_BASE_URL", "https://env-value.example"),
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("[env: DEVREV_MAX_RETRIES]"), "{out}");
    assert!(out.contains("[default: 3]"), "{out}");
    assert!(out.contains("[env: DEVREV_BASE_URL]"), "{out}");
    assert!(out.contains("[default: https://api.devrev.ai]"), "{out}");
    assert!(!out.contains("env-value.example"), "{out}");
}

#[test]
fn a_token_that_cannot_be_a_header_is_exit_78_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = output_of(
        dir.path(),
        &["--test-api"],
        &[("DEVREV_API_TOKEN", "secret-part\nsecond-line")],
    );
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("DEVREV_API_TOKEN"), "{err}");
    assert!(
        !err.contains("secret-part"),
        "the token is never echoed: {err}"
    );
}

#[test]
fn export_refuses_a_dangling_symlink_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere.csv"), dir.path().join("out.csv"))
        .unwrap();
    // No server at this address: a refusal before any call is the only way to exit 73 here.
    let (code, out, err) = output_of(
        dir.path(),
        &["--export-contacts", "out.csv"],
        &[
            ("DEVREV_API_TOKEN", "t"),
            ("DEVREV_BASE_URL", "http://127.0.0.1:9"),
        ],
    );
    assert_eq!(code, 73, "{out}{err}");
    assert!(err.contains("as a symbolic link"), "{err}");
    assert!(!dir.path().join("elsewhere.csv").exists());
}

#[test]
fn completions_and_man_page_install_whatever_the_environment_and_env_file_hold() {
    let dir = tempfile::tempdir().unwrap();
    // A shell with settings exported and a .env that other commands refuse: the README's
    // install lines must still write real files (clap's `exclusive` made this exit 2 with an
    // empty completion file).
    std::fs::write(dir.path().join(".env"), "not a setting line\n").unwrap();
    let env = [
        ("RATE_LIMIT_CALLS", "abc"),
        ("DEVREV_BASE_URL", "http://remote.example"),
        ("DEVREV_API_TOKEN", "t"),
    ];
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = output_of(dir.path(), &["--generate-completions", shell], &env);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            out.contains("--csv") || out.contains("csv"),
            "{shell}: {out}"
        );
        assert!(
            out.len() > 1000,
            "{shell}: a whole script, not {} bytes",
            out.len()
        );
    }
    let (code, out, err) = output_of(dir.path(), &["--generate-man"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH devrev-merge 1"), "{out}");
    // The same .env still stops every real command.
    let (code, _, err) = output_of(dir.path(), &["--test-api"], &env);
    assert_eq!(code, 78, "{err}");
}

#[test]
fn a_generator_with_a_typed_flag_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = output_of(dir.path(), &["--generate-man", "--yes"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("--yes"), "{err}");
}

#[test]
fn help_and_man_page_say_where_the_token_comes_from_list_exit_codes_and_group_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = output_of(dir.path(), &["--help"], &[]);
    assert_eq!(code, 0);
    for text in [
        "DEVREV_API_TOKEN",
        ".env",
        "Exit codes:",
        "78  configuration",
        "75  interrupted",
        "Examples:",
        "devrev-merge --csv contacts.csv --preview",
        "Commands:",
        "Plan and merge:",
        "Backup:",
        "Files:",
        "API (the token comes from DEVREV_API_TOKEN",
        "Output:",
    ] {
        assert!(out.contains(text), "--help lacks {text:?}:\n{out}");
    }
    // The usage line names the commands, not every flag in one line.
    let usage = out.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert!(usage.len() < 100, "{usage}");
    assert!(usage.contains("--csv FILE"), "{usage}");
    // -h: short, still says where the token comes from.
    let (_, short, _) = output_of(dir.path(), &["-h"], &[]);
    assert!(short.contains("DEVREV_API_TOKEN"), "{short}");
    let (_, man, _) = output_of(dir.path(), &["--generate-man"], &[]);
    for text in ["DEVREV_API_TOKEN", "Exit codes:", "Examples:"] {
        assert!(man.contains(text), "man page lacks {text:?}");
    }
}

#[test]
fn dry_run_and_a_token_flag_point_at_what_this_tool_has() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = output_of(dir.path(), &["--csv", "c.csv", "--dry-run"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("--preview"), "{err}");
    let (code, _, err) = output_of(dir.path(), &["--test-api", "--token=s3cr3t"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DEVREV_API_TOKEN"), "{err}");
    assert!(
        !err.contains("s3cr3t"),
        "the typed token is not echoed: {err}"
    );
}

/// `--decisions` belongs to the preview and the merge run: with any other command it would be
/// ignored without a word, so it is refused (exit 2) naming both flags.
#[test]
fn decisions_with_a_command_that_does_not_read_them_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--csv", "c.csv", "--backup-only", "--decisions", "d.csv"][..],
        &["--test-api", "--decisions", "d.csv"],
        &["--status", "--decisions", "d.csv"],
    ] {
        let (code, _, err) = output_of(dir.path(), args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--decisions"), "{args:?}: {err}");
    }
}

/// A first `devrev-merge` with nothing after it: a short screen of what the tool does and the
/// commands to start with (exit 0), not a list of flags joined by pipes.
#[test]
fn no_arguments_show_a_short_first_screen() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = output_of(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Start here:"), "{out}");
    assert!(out.contains("devrev-merge --demo"), "{out}");
    assert!(out.contains("--help-topic"), "{out}");
    assert!(out.lines().count() < 25, "{out}");
    assert!(!out.contains('|'), "no flags joined by pipes: {out}");
}

/// The docs are reachable from an installed binary: `--help-topic NAME` prints a page built
/// in; `list` names them; an unknown name is a usage error naming the pages.
#[test]
fn help_topics_print_the_built_in_docs() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = output_of(dir.path(), &["--help-topic", "review"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("### What each word does"), "{out}");
    let (code, out, _) = output_of(dir.path(), &["--help-topic", "list"], &[]);
    assert_eq!(code, 0);
    for page in ["review", "restore", "commands", "files", "api"] {
        assert!(out.contains(page), "{out}");
    }
    let (code, _, err) = output_of(dir.path(), &["--help-topic", "nope"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("restore"), "{err}");
}

/// The usage lines name every mode, decisions and export included, and the generators show.
#[test]
fn usage_names_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (_, short, _) = output_of(dir.path(), &["-h"], &[]);
    for mode in [
        "--decisions FILE",
        "--export-contacts FILE",
        "--generate-completions SHELL",
        "--help-topic TOPIC",
        "--status",
        "--restore",
    ] {
        assert!(short.contains(mode), "{mode}: {short}");
    }
}

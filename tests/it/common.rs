//! Scaffolding the end-to-end modules share: the built binary with a scrubbed environment in
//! a temp folder, pointing it at the fake DevRev, and file permission bits.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use devrev_fake::fake::FakeServer;

/// The binary with an empty environment except `PATH`, `HOME` (= `dir`) and a 10 ms retry
/// backoff, run in `dir`: nothing from the developer's shell or `~/.env` leaks into a test.
pub fn scrubbed_cmd(dir: &Path) -> Command {
    // DEVREV_MERGE_TEST_BIN runs the suite against another build (an older commit's binary,
    // to see a new test fail before its fix).
    let bin = std::env::var_os("DEVREV_MERGE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_devrev-merge").into());
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("DEVREV_MERGE_MIN_BACKOFF_MS", "10")
        // The `--merge-watch` window, shortened for tests (honoured by debug builds only).
        .env("DEVREV_MERGE_TEST_WATCH_MS", "500")
        .current_dir(dir);
    c
}

/// [`scrubbed_cmd`] as an `assert_cmd::Command`.
pub fn scrubbed_assert_cmd(dir: &Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(scrubbed_cmd(dir))
}

/// Points `c` at `fake` with its valid token.
pub fn with_fake<'c>(c: &'c mut Command, fake: &FakeServer) -> &'c mut Command {
    c.env("DEVREV_BASE_URL", fake.base_url())
        .env("DEVREV_API_TOKEN", fake.token())
}

/// The permission bits of `p` (`0o600`, `0o700`, ...).
pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A savepoint journal (version 2: a header line, then one JSON line per change, the last
/// line of a pair or a group decision winning) read back as `{"version": .., "pairs": {key:
/// record}, "decisions": {group: decision}}`, the shape
/// the tests check. Every line must be JSON except a torn last one (no line end: a kill in
/// the middle of an append), which is skipped exactly as the binary skips it; a whole line
/// that does not parse panics here, as the binary refuses it (exit 65).
pub fn read_savepoint(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut lines = whole.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next()?).expect("the savepoint header is JSON");
    let mut pairs = serde_json::Map::new();
    let mut decisions = header
        .get("decisions")
        .and_then(|d| d.as_object().cloned())
        .unwrap_or_default();
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).expect("every whole savepoint line is JSON");
        if let Some(d) = v.get("decision") {
            let group = d["group"].as_str().expect("a decision names its group");
            decisions.insert(group.to_string(), d.clone());
        } else if let Some(rec) = v.get("pair") {
            let key = format!(
                "{} <- {}",
                rec["primary"].as_str().unwrap(),
                rec["secondary"].as_str().unwrap()
            );
            pairs.insert(key, rec.clone());
        } else {
            pairs.remove(v["removed"].as_str().expect("a pair or a removal"));
        }
    }
    let mut doc = header;
    doc["pairs"] = serde_json::Value::Object(pairs);
    doc["decisions"] = serde_json::Value::Object(decisions);
    Some(doc)
}

/// A contact's phone numbers (a seed contact or the fake's JSON): none when absent.
pub fn phones(contact: &serde_json::Value) -> Vec<String> {
    contact["phone_numbers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

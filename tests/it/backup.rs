//! Backups against the fake DevRev: taking one (library level, `backup::take_with`), the
//! failure modes (faults, expired URLs, disk space, hostile names), `--verify-backups` on
//! damaged folders, and the API-call formula checked against the fake's request log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use devrev_merge::backup::manifest::Manifest;
use devrev_merge::backup::{self, BackupError, BackupInput, BackupSummary, RunReads, TakeOptions};
use devrev_merge::detect::{Contact, Pair};
use devrev_merge::devrev::types::RevUser;
use devrev_merge::devrev::{ClientConfig, DevRevClient};
use devrev_merge::error::AppError;
use devrev_merge::options::BackupScope;
use serde_json::{Value, json};

use crate::closed_pipe;
use crate::common::{mode, scrubbed_cmd, with_fake};
use devrev_fake::fake::{ArtifactRec, FakeOptions, FakeServer, Fault, ScriptedFault};
use devrev_fake::seed::{self, GenSpec, Seed, summary_ids};

// ---- helpers ---------------------------------------------------------------------------

fn spec() -> GenSpec {
    GenSpec {
        pairs: 1,
        review_groups: 0,
        singles: 2,
        tickets_per_contact: (4, 4),
        shared_ticket_pct: 50,
        timeline_entries: (2, 6),
        attachments_pct: 40,
        attachment_size_max: 64 * 1024,
        conversations_per_secondary: (2, 2),
        ..GenSpec::default()
    }
}

/// A fake with one clean pair; returns it and (primary, secondary) DONs.
fn world(spec: GenSpec, opts: impl FnOnce(&mut FakeOptions)) -> (FakeServer, String, String) {
    let seed = Seed::generate(&spec);
    let (p, s) = seed.pairs()[0].clone();
    let mut o = FakeOptions {
        seed,
        ..FakeOptions::default()
    };
    opts(&mut o);
    (FakeServer::start(o), p, s)
}

fn client(fake: &FakeServer, page_size: u32) -> DevRevClient {
    DevRevClient::new(ClientConfig {
        base_url: devrev_merge::config::parse_base_url(&fake.base_url()).unwrap(),
        token: fake.token().into(),
        rate_limit_calls: 100_000,
        rate_limit_period: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(30),
        max_retries: 3,
        page_size,
        min_backoff: Duration::from_millis(10),
        limits: Default::default(),
    })
    .unwrap()
}

fn contact(fake: &FakeServer, id: &str, line: u64) -> Contact {
    fake.with_state(|s| {
        let u = &s.rev_user(id).unwrap().json;
        let get = |k: &str| u[k].as_str().unwrap_or_default().to_string();
        Contact {
            line,
            rev_user_id: id.to_string(),
            display_name: get("display_name"),
            email: get("email").trim().to_lowercase(),
            external_ref: get("external_ref"),
            full_name: get("full_name"),
            created_at: get("created_date"),
            updated_at: get("modified_date"),
            ticket_count: Some(s.tickets_reported_by(id).len() as u64),
        }
    })
}

fn pair(fake: &FakeServer, p: &str, s: &str) -> Pair {
    let primary = contact(fake, p, 2);
    let secondary = contact(fake, s, 3);
    Pair {
        email: primary.email.clone(),
        primary,
        secondary,
    }
}

struct Run<'a> {
    fake: &'a FakeServer,
    pair: Pair,
    root: PathBuf,
    scope: BackupScope,
    page_size: u32,
    opts: TakeOptions,
    /// The run's read cache, when the test shares one between backups.
    reads: Option<&'a RunReads>,
}

impl<'a> Run<'a> {
    fn new(fake: &'a FakeServer, p: &str, s: &str, root: &Path) -> Self {
        Run {
            fake,
            pair: pair(fake, p, s),
            root: root.to_path_buf(),
            scope: BackupScope::Secondary,
            page_size: 100,
            opts: TakeOptions::default(),
            reads: None,
        }
    }

    /// Fetches both contacts (as the saga's Validate does), then takes the backup. Returns the
    /// outcome, the contacts as fetched, and the index in the request log where the backup's
    /// own requests start.
    fn take(&self) -> (Result<BackupSummary, BackupError>, RevUser, RevUser, usize) {
        self.take_n(1).pop().unwrap()
    }

    /// `n` backups of the same pair at the same time.
    fn take_n(
        &self,
        n: usize,
    ) -> Vec<(Result<BackupSummary, BackupError>, RevUser, RevUser, usize)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = client(self.fake, self.page_size);
            let primary = c
                .rev_users_get(&self.pair.primary.rev_user_id)
                .await
                .unwrap();
            let secondary = c
                .rev_users_get(&self.pair.secondary.rev_user_id)
                .await
                .unwrap();
            let start = self.fake.requests().len();
            let lists = devrev_merge::validate::ListReads::none();
            let input = BackupInput {
                pair: &self.pair,
                primary: &primary,
                secondary: &secondary,
                run_id: "test-run",
                scope: self.scope,
                root: &self.root,
                lists: &lists,
                reads: self.reads,
            };
            let futs = (0..n).map(|_| backup::take_with(&c, input, &self.opts));
            let results = futures_util::future::join_all(futs).await;
            results
                .into_iter()
                .map(|r| (r, primary.clone(), secondary.clone(), start))
                .collect()
        })
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn manifest(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join("verification.json")).unwrap()).unwrap()
}

/// Every path under `dir` (files and folders), recursively.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Backup folders (not the lock file) directly under `root`.
fn backup_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for p in tree(dir) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// Adds an attachment to the fake's world and returns its embedded summary.
fn add_artifact(fake: &FakeServer, n: u64, name: &str, size: usize, with_file: bool) -> Value {
    fake.with_state(|s| {
        let id = format!("don:core:dvrv-us-1:devo/{}:artifact/{n}", s.org);
        let file = json!({"name": name, "type": "application/octet-stream", "size": size});
        s.artifacts.insert(
            id.clone(),
            ArtifactRec {
                json: json!({"id": id, "display_id": format!("artifact-{n}"), "file": file,
                             "created_date": "2024-05-01T10:00:00Z"}),
                bytes: seed::artifact_bytes(&id, size),
            },
        );
        if with_file {
            json!({"id": id, "display_id": format!("artifact-{n}"), "file": file})
        } else {
            json!({"id": id, "display_id": format!("artifact-{n}")})
        }
    })
}

/// The DON of the first ticket (in id order) that names `contact`.
fn ticket_of(fake: &FakeServer, contact: &str) -> String {
    fake.with_state(|s| {
        s.tickets_reported_by(contact)[0].json["id"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

/// Appends a comment carrying `artifacts` to `object`'s timeline.
fn add_comment(fake: &FakeServer, object: &str, artifacts: Vec<Value>) {
    fake.with_state(|s| {
        let tl = s.timelines.entry(object.to_string()).or_default();
        let n = tl.len();
        tl.push(json!({
            "type": "timeline_comment",
            "id": format!("{object}:comment/added{n}"),
            "object": object,
            "object_display_id": "x",
            "object_type": "ticket",
            "body": "see attached",
            "created_date": "2099-01-01T00:00:00Z",
            "visibility": "external",
            "artifacts": artifacts,
        }));
    })
}

/// The binary with a scrubbed environment in `dir`, pointed at the fake.
fn std_cmd(dir: &Path, fake: Option<&FakeServer>) -> std::process::Command {
    let mut c = scrubbed_cmd(dir);
    c.env("RATE_LIMIT_CALLS", "60000");
    if let Some(f) = fake {
        with_fake(&mut c, f);
    }
    c
}

fn cmd(dir: &Path, fake: Option<&FakeServer>) -> Command {
    Command::from_std(std_cmd(dir, fake))
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(c: &mut Command) -> Outcome {
    let out = c.output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---- taking a backup ---------------------------------------------------------------------

#[test]
fn backup_follows_every_page_and_holds_everything_listed() {
    let (fake, p, s) = world(
        GenSpec {
            timeline_entries: (8, 20),
            ..spec()
        },
        |_| {},
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    // Pages of 3 make every list (tickets, timelines, conversations) span several pages.
    let mut r = Run::new(&fake, &p, &s, &root);
    r.page_size = 3;
    let (res, primary, _secondary, start) = r.take();
    let sum = res.unwrap();
    let dir = &sum.dir;
    assert_eq!(
        backup_dirs(&root),
        vec![dir.clone()],
        "one folder, no .partial left"
    );
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{}_", r.pair.email))
    );
    assert_private(dir);
    backup::verify::verify_dir(dir).unwrap();

    let (want_tickets, sec_tickets, convs) = fake.with_state(|st| {
        let mut all: BTreeSet<String> = BTreeSet::new();
        for id in [&p, &s] {
            for t in st.tickets_reported_by(id) {
                all.insert(t.json["id"].as_str().unwrap().to_string());
            }
        }
        let sec: Vec<String> = st
            .tickets_reported_by(&s)
            .iter()
            .map(|t| t.json["id"].as_str().unwrap().to_string())
            .collect();
        let convs: Vec<String> = st
            .conversations_with(&s)
            .iter()
            .map(|c| c.json["id"].as_str().unwrap().to_string())
            .collect();
        (all, sec, convs)
    });
    assert!(
        want_tickets.len() > 3 * 2,
        "the world must need several pages"
    );
    let tickets = read_json(&dir.join("tickets.json"));
    assert_eq!(ids(&tickets), want_tickets);
    assert_eq!(sum.tickets, want_tickets.len());
    assert_eq!(
        ids(&read_json(&dir.join("conversations.json"))),
        convs.iter().cloned().collect()
    );
    assert_eq!(sum.conversations, 2);

    // Every timeline of the secondary's tickets and conversations, complete and in order.
    let m = manifest(dir);
    let saved: BTreeMap<String, String> = m
        .objects
        .iter()
        .map(|o| (o.id.clone(), o.dir.clone()))
        .collect();
    assert_eq!(m.counts.tickets_with_timeline, sec_tickets.len());
    for id in sec_tickets.iter().chain(convs.iter()) {
        let folder = saved
            .get(id)
            .unwrap_or_else(|| panic!("no timeline for {id}"));
        let msgs = read_json(&dir.join(folder).join("messages.json"));
        let got: Vec<String> = msgs["timeline_entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        let mut want: Vec<Value> =
            fake.with_state(|st| st.timelines.get(id).cloned().unwrap_or_default());
        want.sort_by(|a, b| a["created_date"].as_str().cmp(&b["created_date"].as_str()));
        assert_eq!(got.len(), want.len(), "{id}");
        assert!(got.len() > 3, "{id}: the timeline must span several pages");
        let want_ids: BTreeSet<String> = want
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            want_ids,
            "{id}"
        );
    }
    // Tickets that name only the primary: listed, but no timeline (scope = secondary).
    for o in &m.objects {
        assert!(
            sec_tickets.contains(&o.id) || convs.contains(&o.id),
            "{} saved out of scope",
            o.id
        );
    }

    // Attachment bytes equal what DevRev serves, and their downloads carried no token.
    assert!(m.counts.attachments > 0, "the world must have attachments");
    for o in &m.objects {
        for a in &o.attachments {
            let want = fake.with_state(|st| st.artifacts[&a.artifact_id].bytes.clone());
            assert_eq!(
                std::fs::read(dir.join(&a.path)).unwrap(),
                want,
                "{}",
                a.path
            );
        }
    }
    let log = fake.requests();
    let downloads: Vec<_> = log[start..]
        .iter()
        .filter(|r| r.path.starts_with("/download/"))
        .collect();
    assert_eq!(downloads.len(), m.counts.attachments);
    assert!(
        downloads.iter().all(|r| !r.had_auth_header),
        "a download sent the DevRev token"
    );
    assert!(
        log[start..]
            .iter()
            .filter(|r| r.path == "/works.list")
            .count()
            >= 3
    );

    // Neither the token nor a pre-signed URL is written anywhere.
    for f in tree(dir).into_iter().filter(|f| f.is_file()) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(&fake.token()), "token in {}", f.display());
        assert!(!text.contains("sig="), "download URL in {}", f.display());
    }

    // Both contacts exactly as rev-users.get returned them, unknown fields included.
    let meta = read_json(&dir.join("metadata.json"));
    assert_eq!(meta["primary"], serde_json::to_value(&primary).unwrap());
    assert!(
        meta["primary"]["custom_fields"].is_object(),
        "unknown fields must be kept"
    );
    assert_eq!(meta["primary_id"], p.as_str());
    assert_eq!(meta["secondary_id"], s.as_str());
    assert_eq!(meta["run_id"], "test-run");
    assert_eq!(meta["tool_version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn scope_both_saves_the_primarys_timelines_too() {
    let (fake, p, s) = world(spec(), |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Run::new(&fake, &p, &s, tmp.path());
    r.scope = BackupScope::Both;
    let sum = r.take().0.unwrap();
    let m = manifest(&sum.dir);
    assert_eq!(m.counts.tickets_with_timeline, sum.tickets);
    assert_eq!(m.scope, BackupScope::Both);
}

#[test]
fn attachments_of_zero_bytes_and_several_megabytes() {
    let (fake, p, s) = world(
        GenSpec {
            attachments_pct: 0,
            ..spec()
        },
        |_| {},
    );
    let t = ticket_of(&fake, &s);
    let empty = add_artifact(&fake, 90001, "empty.txt", 0, true);
    let big = add_artifact(&fake, 90002, "dump.bin", 3 * 1024 * 1024 + 17, true);
    // Summaries without `file` need one artifacts.get for the size.
    let bare = add_artifact(&fake, 90003, "notes.pdf", 1234, false);
    fake.with_state(|st| st.works.get_mut(&t).unwrap().json["artifacts"] = json!([empty, big]));
    // The same artifact referenced twice is saved once.
    add_comment(&fake, &t, vec![bare.clone(), empty.clone()]);

    let tmp = tempfile::tempdir().unwrap();
    let (res, ..) = Run::new(&fake, &p, &s, tmp.path()).take();
    let sum = res.unwrap();
    assert_eq!(sum.attachments, 3);
    let m = manifest(&sum.dir);
    let obj = m.objects.iter().find(|o| o.id == t).unwrap();
    let by_id: BTreeMap<&str, &str> = obj
        .attachments
        .iter()
        .map(|a| (a.artifact_id.as_str(), a.path.as_str()))
        .collect();
    for (summary, size) in [
        (&empty, 0usize),
        (&big, 3 * 1024 * 1024 + 17),
        (&bare, 1234),
    ] {
        let id = summary["id"].as_str().unwrap();
        let path = sum.dir.join(by_id[id]);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), size, "{}", path.display());
        assert_eq!(bytes, seed::artifact_bytes(id, size));
        let entry = m.files.iter().find(|f| f.path == by_id[id]).unwrap();
        assert_eq!(entry.size, size as u64);
    }
    assert!(by_id[big["id"].as_str().unwrap()].ends_with("/attachments/90002_dump.bin"));
    assert_eq!(
        fake.count("/artifacts.get"),
        1,
        "artifacts.get only for the summary without a size"
    );
    assert_eq!(fake.count("/artifacts.locate"), 3);
}

#[test]
fn an_expired_download_url_is_located_again() {
    // The first download is answered only after the URL's 1 s lifetime: 403, then one more
    // artifacts.locate and a download that works.
    let (fake, p, s) = world(spec(), |o| {
        o.url_ttl = Duration::from_millis(1000);
        o.faults = vec![ScriptedFault {
            path: Some("/download/".into()),
            nth: 1,
            fault: Fault::Slow(Duration::from_millis(1300)),
        }];
    });
    let tmp = tempfile::tempdir().unwrap();
    let (res, _, _, start) = Run::new(&fake, &p, &s, tmp.path()).take();
    let sum = res.unwrap();
    let log = fake.requests();
    let downloads: Vec<_> = log[start..]
        .iter()
        .filter(|r| r.path.starts_with("/download/"))
        .collect();
    assert_eq!(downloads[0].status, 403, "the first URL must have expired");
    assert!(downloads[1..].iter().all(|r| r.status == 200));
    let locates = log[start..]
        .iter()
        .filter(|r| r.path == "/artifacts.locate")
        .count();
    assert_eq!(locates, sum.attachments + 1, "exactly one extra locate");
    backup::verify::verify_dir(&sum.dir).unwrap();
}

#[test]
fn a_url_that_expires_again_fails_the_backup_and_leaves_no_folder() {
    let (fake, p, s) = world(spec(), |o| o.url_ttl = Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let err = Run::new(&fake, &p, &s, &root).take().0.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("attachment") && msg.contains("403"), "{msg}");
    assert_eq!(fake.count("/download/"), 2, "one try and one relocated try");
    assert!(backup_dirs(&root).is_empty(), "{:?}", tree(&root));
    assert_eq!(AppError::from(err).exit_code(), 1, "a per-pair failure");
}

#[test]
fn a_500_in_the_middle_is_retried() {
    let (fake, p, s) = world(spec(), |o| {
        o.faults = vec![
            ScriptedFault {
                path: Some("/works.list".into()),
                nth: 2,
                fault: Fault::Status500,
            },
            ScriptedFault {
                path: Some("/timeline-entries.list".into()),
                nth: 2,
                fault: Fault::Status500,
            },
            ScriptedFault {
                path: Some("/artifacts.locate".into()),
                nth: 1,
                fault: Fault::Status503,
            },
            ScriptedFault {
                path: Some("/download/".into()),
                nth: 1,
                fault: Fault::Status500,
            },
        ];
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Run::new(&fake, &p, &s, tmp.path());
    r.page_size = 3;
    let (res, _, _, start) = r.take();
    let sum = res.unwrap();
    backup::verify::verify_dir(&sum.dir).unwrap();
    let log = fake.requests();
    let failed: Vec<_> = log[start..]
        .iter()
        .filter(|r| r.status >= 500)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    // Each failed request was repeated: the same path answered 200 right after.
    for (i, r) in log
        .iter()
        .enumerate()
        .skip(start)
        .filter(|(_, r)| r.status >= 500)
    {
        let next = log[i + 1..]
            .iter()
            .find(|n| n.path.split('/').nth(1) == r.path.split('/').nth(1))
            .unwrap();
        assert_eq!(next.status, 200, "{} was not retried", r.path);
    }
}

#[test]
fn a_persistent_failure_leaves_no_complete_looking_folder() {
    // Every try of the first download fails (1 + 3 retries): the backup fails after its
    // JSON files were written, and the unfinished folder is removed.
    let (fake, p, s) = world(spec(), |o| {
        o.faults = (1..=4)
            .map(|nth| ScriptedFault {
                path: Some("/download/".into()),
                nth,
                fault: Fault::Status500,
            })
            .collect();
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let err = Run::new(&fake, &p, &s, &root).take().0.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert!(backup_dirs(&root).is_empty(), "{:?}", tree(&root));

    // And `--verify-backups` finds nothing that claims to be a backup, which is not a pass.
    let out = run(cmd(tmp.path(), None).args(["--verify-backups", "backups"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("no backup folders found in backups"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_persistent_failure_while_listing_writes_nothing() {
    let (fake, p, s) = world(spec(), |o| {
        o.faults = (1..=4)
            .map(|nth| ScriptedFault {
                path: Some("/timeline-entries.list".into()),
                nth,
                fault: Fault::Status503,
            })
            .collect();
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let err = Run::new(&fake, &p, &s, &root).take().0.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert!(
        !root.exists(),
        "nothing may be written before the listing is complete"
    );
}

#[test]
fn names_from_data_cannot_escape_the_backup_folder() {
    let (fake, p, s) = world(
        GenSpec {
            attachments_pct: 0,
            ..spec()
        },
        |_| {},
    );
    let t = ticket_of(&fake, &s);
    let evil_name = "../../../../../outside\u{0}\n.txt";
    let a = add_artifact(&fake, 90010, evil_name, 10, true);
    let b = add_artifact(&fake, 90011, "/etc/passwd", 10, true);
    fake.with_state(|st| {
        let w = &mut st.works.get_mut(&t).unwrap().json;
        w["artifacts"] = json!([a, b]);
        w["display_id"] = json!("../../../escaped-ticket");
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("work").join("backups");
    let mut r = Run::new(&fake, &p, &s, &root);
    r.pair.email = "../../../escape\u{0}/\r\n..@evil.com".into();
    let sum = r.take().0.unwrap();

    // Everything the backup wrote is inside its own folder.
    for path in tree(tmp.path()) {
        assert!(
            path.starts_with(&root) || path == tmp.path().join("work"),
            "escaped: {}",
            path.display()
        );
    }
    let name = sum.dir.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(sum.dir.parent().unwrap(), root);
    assert!(
        !name.starts_with('.') && !name.contains(['/', '\0', '\n', '\r']),
        "{name:?}"
    );
    let m = manifest(&sum.dir);
    let obj = m.objects.iter().find(|o| o.id == t).unwrap();
    // Plain names only: `conversations/<one name>` and `.../attachments/<one name>`.
    let plain = |p: &str, parts: usize| {
        let segs: Vec<&str> = p.split('/').collect();
        segs.len() == parts
            && segs
                .iter()
                .all(|c| !c.is_empty() && !c.starts_with('.') && !c.contains(['\0', '\n', '\r']))
    };
    assert!(plain(&obj.dir, 2), "{}", obj.dir);
    for att in &obj.attachments {
        assert!(plain(&att.path, 4), "{}", att.path);
        assert!(sum.dir.join(&att.path).is_file());
    }
    // The original name is kept in the manifest for a restore.
    assert!(
        obj.attachments
            .iter()
            .any(|x| x.name.as_deref() == Some(evil_name))
    );
    backup::verify::verify_dir(&sum.dir).unwrap();
}

#[test]
fn too_little_disk_space_stops_before_anything_is_written() {
    let (fake, p, s) = world(spec(), |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let mut r = Run::new(&fake, &p, &s, &root);
    r.opts.free_space_override = Some(1_000_000);
    let err = r.take().0.unwrap_err();
    match &err {
        BackupError::NoSpace {
            needed, available, ..
        } => {
            assert_eq!(*available, 1_000_000);
            assert!(
                *needed > 16 * 1024 * 1024,
                "the margin is part of the estimate"
            );
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(!root.exists(), "nothing may be written");
    let app = AppError::from(err);
    assert_eq!(app.exit_code(), 73);
    assert!(app.to_string().contains("not enough free space"), "{app}");
    assert_eq!(fake.count("/download/"), 0);
}

#[test]
fn two_backups_of_the_same_email_at_once_do_not_collide() {
    let (fake, p, s) = world(spec(), |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let results = Run::new(&fake, &p, &s, tmp.path()).take_n(2);
    let dirs: Vec<PathBuf> = results.into_iter().map(|(r, ..)| r.unwrap().dir).collect();
    assert_ne!(dirs[0], dirs[1]);
    for d in &dirs {
        backup::verify::verify_dir(d).unwrap();
    }
    assert_eq!(backup_dirs(tmp.path()).len(), 2);
}

#[test]
fn leftovers_of_a_crashed_run_are_removed_by_the_next_backup() {
    let (fake, p, s) = world(spec(), |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let leftover = tmp.path().join("old@example.com_20240101_000000.partial");
    std::fs::create_dir_all(leftover.join("conversations/TKT-1")).unwrap();
    std::fs::write(leftover.join("tickets.json"), b"[").unwrap();
    let sum = Run::new(&fake, &p, &s, tmp.path()).take().0.unwrap();
    assert!(!leftover.exists());
    assert_eq!(backup_dirs(tmp.path()), vec![sum.dir]);
}

#[test]
fn a_csv_ticket_count_that_differs_is_noted_once_not_warned() {
    let (fake, p, s) = world(spec(), |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Run::new(&fake, &p, &s, tmp.path());
    let listed = r.pair.secondary.ticket_count.unwrap();
    r.pair.secondary.ticket_count = Some(listed + 7);
    let sum = r.take().0.unwrap();
    assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
    assert_eq!(
        sum.ticket_counts_differ.len(),
        1,
        "{:?}",
        sum.ticket_counts_differ
    );
    assert!(
        sum.ticket_counts_differ[0].starts_with("secondary ")
            && sum.ticket_counts_differ[0].ends_with(&format!(
                ": TICKET_COUNT {}, DevRev lists {listed}",
                listed + 7
            )),
        "{}",
        sum.ticket_counts_differ[0]
    );
}

// ---- the API-call formula ---------------------------------------------------------------

fn pages(n: usize) -> usize {
    n.div_ceil(100).max(1)
}

#[test]
fn api_cost_matches_the_formula() {
    let (fake, p, s) = world(
        GenSpec {
            tickets_per_contact: (5, 5),
            attachments_pct: 50,
            ..spec()
        },
        |_| {},
    );
    // One long timeline (3 pages of 100).
    let long = ticket_of(&fake, &s);
    fake.with_state(|st| {
        let tl = st.timelines.get_mut(&long).unwrap();
        let first = tl[0].clone();
        for k in 0..(230 - tl.len()) {
            let mut e = first.clone();
            e["id"] = json!(format!("{long}:comment/bulk{k}"));
            e.as_object_mut().unwrap().remove("artifacts");
            tl.push(e);
        }
    });

    // The figures, computed from the fake's world independently of the backup code.
    let (t, ts, e_sum, c, e_conv, a, a0) = fake.with_state(|st| {
        let mut tickets: BTreeMap<String, Value> = BTreeMap::new();
        for id in [&p, &s] {
            for w in st.tickets_reported_by(id) {
                tickets.insert(w.json["id"].as_str().unwrap().into(), w.json.clone());
            }
        }
        let mut objects: Vec<(String, Vec<Value>)> = Vec::new();
        for (id, w) in &tickets {
            if summary_ids(&w["reported_by"]).contains(&s) {
                let own = w["artifacts"].as_array().cloned().unwrap_or_default();
                objects.push((id.clone(), own));
            }
        }
        let ts = objects.len();
        let convs = st.conversations_with(&s);
        for cv in &convs {
            objects.push((cv.json["id"].as_str().unwrap().into(), vec![]));
        }
        let (mut e_sum, mut e_conv, mut a, mut a0) = (0, 0, 0, 0);
        for (i, (id, own)) in objects.iter().enumerate() {
            let tl = st.timelines.get(id).cloned().unwrap_or_default();
            if i < ts {
                e_sum += pages(tl.len());
            } else {
                e_conv += pages(tl.len());
            }
            let mut seen = BTreeSet::new();
            let summaries = own.iter().chain(
                tl.iter()
                    .flat_map(|e| e["artifacts"].as_array().into_iter().flatten()),
            );
            for sm in summaries {
                if seen.insert(sm["id"].as_str().unwrap().to_string()) {
                    a += 1;
                    if sm["file"]["size"].as_u64().is_none() {
                        a0 += 1;
                    }
                }
            }
        }
        (tickets.len(), ts, e_sum, convs.len(), e_conv, a, a0)
    });
    let expected = pages(t) + e_sum + pages(c) + e_conv + a0 + a;

    let tmp = tempfile::tempdir().unwrap();
    let (res, _, _, start) = Run::new(&fake, &p, &s, tmp.path()).take();
    let sum = res.unwrap();
    let log = fake.requests();
    let mine = &log[start..];
    let api_calls = mine
        .iter()
        .filter(|r| !r.path.starts_with("/download/"))
        .count();
    let by_path = |p: &str| mine.iter().filter(|r| r.path == p).count();
    eprintln!(
        "backup cost: T={t} Ts={ts} timeline pages={e_sum} C={c} conversation pages={e_conv} A={a} A0={a0} \
         -> formula {expected}, fake log {api_calls} API calls + {} downloads",
        mine.len() - api_calls
    );
    assert!(
        a > 0 && a0 > 0 && c > 0,
        "the world must exercise every term"
    );
    assert_eq!(api_calls, expected);
    assert_eq!(by_path("/works.list"), pages(t));
    assert_eq!(by_path("/timeline-entries.list"), e_sum + e_conv);
    assert_eq!(by_path("/conversations.list"), pages(c));
    assert_eq!(by_path("/artifacts.get"), a0);
    assert_eq!(by_path("/artifacts.locate"), a);
    assert_eq!(mine.len() - api_calls, a, "one download per attachment");
    assert_eq!(sum.attachments, a);
    assert_eq!(sum.tickets, t);
    assert!(e_sum >= ts + 2, "the long timeline costs 3 pages");
}

// ---- --verify-backups -------------------------------------------------------------------

/// A folder `backups/` under a temp dir holding one verified backup; returns (tmp, backup dir).
fn one_backup(fake: &FakeServer, p: &str, s: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let sum = Run::new(fake, p, s, &root).take().0.unwrap();
    (tmp, sum.dir)
}

fn verify_cmd(tmp: &Path) -> Outcome {
    run(cmd(tmp, None).args(["--verify-backups", "backups"]))
}

fn first_attachment(dir: &Path) -> PathBuf {
    let m = manifest(dir);
    let a = m
        .objects
        .iter()
        .flat_map(|o| o.attachments.iter())
        .find(|a| m.files.iter().any(|f| f.path == a.path && f.size > 0));
    dir.join(&a.expect("a non-empty attachment").path)
}

#[test]
fn verify_backups_passes_intact_folders() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, dir) = one_backup(&fake, &p, &s);
    let out = verify_cmd(tmp.path());
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.stdout.contains(&format!("OK          {name} (")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1 backup folder(s): 1 OK, 0 FAILED"),
        "{}",
        out.stdout
    );

    let out = run(cmd(tmp.path(), None).args(["--verify-backups", "backups", "--json"]));
    assert_eq!(out.code, 0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["summary"]["ok"], 1);
    assert_eq!(v["backups"][0]["status"], "ok");
    assert_eq!(
        v["backups"][0]["counts"]["tickets"],
        manifest(&dir).counts.tickets
    );

    // One backup folder given directly works too.
    let out = run(cmd(tmp.path(), None).arg("--verify-backups").arg(&dir));
    assert_eq!(out.code, 0, "{}", out.stdout);
}

fn assert_failed(out: &Outcome, needle: &str) {
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("FAILED"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.contains(needle), "wanted {needle:?} in {line:?}");
    assert!(out.stdout.contains("1 FAILED"), "{}", out.stdout);
    assert!(out.stderr.contains("did not verify"), "{}", out.stderr);
}

#[test]
fn verify_backups_into_a_closed_pipe_exits_with_its_own_code() {
    // `--verify-backups backups --json | head -c 10`: the reader is gone before the first
    // byte; that used to panic (exit 101) instead of reporting how the check went.
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, dir) = one_backup(&fake, &p, &s);
    for args in [
        &["--verify-backups", "backups", "--json"][..],
        &["--verify-backups", "backups"][..],
    ] {
        let mut c = std_cmd(tmp.path(), None);
        c.args(args);
        let out = closed_pipe::run(c, false);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    // A failed check keeps exit 1 even when stderr is the same dead pipe (`2>&1 | head`).
    let f = first_attachment(&dir);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let mut c = std_cmd(tmp.path(), None);
    c.args(["--verify-backups", "backups"]);
    assert_eq!(closed_pipe::run(c, true).code, Some(1));
}

#[test]
fn verify_backups_catches_a_flipped_byte() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, dir) = one_backup(&fake, &p, &s);
    let f = first_attachment(&dir);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let rel = f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
    assert_failed(
        &verify_cmd(tmp.path()),
        &format!("{rel}: sha256 differs from verification.json"),
    );
}

#[test]
fn verify_backups_catches_a_truncated_file() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, dir) = one_backup(&fake, &p, &s);
    let f = dir.join("tickets.json");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    assert_failed(
        &verify_cmd(tmp.path()),
        &format!(
            "tickets.json: {} bytes on disk, verification.json says {len} (truncated or changed)",
            len - 10
        ),
    );
}

#[test]
fn verify_backups_catches_a_deleted_file() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, dir) = one_backup(&fake, &p, &s);
    let m = manifest(&dir);
    let rel = format!("{}/messages.json", m.objects[0].dir);
    std::fs::remove_file(dir.join(&rel)).unwrap();
    assert_failed(
        &verify_cmd(tmp.path()),
        &format!("{rel}: listed in verification.json but missing"),
    );
}

#[test]
fn verify_backups_catches_an_edited_count() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, dir) = one_backup(&fake, &p, &s);
    let mut v = read_json(&dir.join("verification.json"));
    let n = v["counts"]["tickets"].as_u64().unwrap();
    v["counts"]["tickets"] = json!(n + 1);
    std::fs::write(
        dir.join("verification.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
    assert_failed(
        &verify_cmd(tmp.path()),
        &format!(
            "tickets.json holds {n} tickets, verification.json counts {}",
            n + 1
        ),
    );
}

#[test]
fn verify_backups_catches_an_unlisted_file_and_a_broken_manifest() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, dir) = one_backup(&fake, &p, &s);
    std::fs::write(dir.join("conversations/extra.txt"), b"x").unwrap();
    assert_failed(
        &verify_cmd(tmp.path()),
        "conversations/extra.txt: file not listed in verification.json",
    );
    std::fs::write(dir.join("verification.json"), b"{not json").unwrap();
    assert_failed(&verify_cmd(tmp.path()), "verification.json does not parse");
}

#[test]
fn verify_backups_reports_a_partial_leftover() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, _dir) = one_backup(&fake, &p, &s);
    std::fs::create_dir(
        tmp.path()
            .join("backups/jane@example.com_20250101_000000.partial"),
    )
    .unwrap();
    let out = verify_cmd(tmp.path());
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("LEFTOVER    jane@example.com_20250101_000000.partial: leftover of an interrupted backup"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("2 backup folder(s): 1 OK, 0 FAILED, 1 leftover"),
        "{}",
        out.stdout
    );
}

#[test]
fn verify_backups_of_a_folder_without_backups_fails_closed() {
    // Pointed at the wrong (empty) folder, the check must not read as "all OK".
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    for json in [false, true] {
        let mut c = cmd(tmp.path(), None);
        c.args(["--verify-backups", "empty"]);
        if json {
            c.arg("--json");
        }
        let out = run(&mut c);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains("no backup folders found in empty: a backup folder is named"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("verification.json"), "{}", out.stderr);
        assert!(!out.stdout.contains("0 backup folder(s)"), "{}", out.stdout);
    }
}

#[test]
fn verify_backups_of_a_missing_folder_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(cmd(tmp.path(), None).args(["--verify-backups", "nope"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("nope does not exist"), "{}", out.stderr);
    // A file is not a backups folder either, and says so.
    std::fs::write(tmp.path().join("contacts.csv"), "x").unwrap();
    let out = run(cmd(tmp.path(), None).args(["--verify-backups", "contacts.csv"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("contacts.csv is not a folder"),
        "{}",
        out.stderr
    );
}

#[test]
fn verify_backups_against_api_finds_tickets_that_left_both_contacts() {
    let (fake, p, s) = world(spec(), |_| {});
    let (tmp, _dir) = one_backup(&fake, &p, &s);
    let against_api = |fake: &FakeServer| {
        run(cmd(tmp.path(), Some(fake)).args(["--verify-backups", "backups", "--against-api"]))
    };
    let out = against_api(&fake);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // After the merge the secondary is gone and its tickets name the primary: all still there.
    let merged = crate::probe::Probe::new(&fake).call(
        "rev-users.merge",
        json!({"primary_user": p, "secondary_user": s}),
    );
    assert_eq!(merged.status, 200);
    fake.apply_pending_merges();
    assert!(fake.with_state(|st| st.tickets_reported_by(&s).is_empty()));
    let before = fake.requests().len();
    let out = against_api(&fake);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 OK"), "{}", out.stdout);

    // A ticket loses both contacts in DevRev: the backup holds a ticket DevRev no longer lists.
    let t = ticket_of(&fake, &p);
    let label = fake.with_state(|st| {
        let w = &mut st.works.get_mut(&t).unwrap().json;
        let keep: Vec<Value> = w["reported_by"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["id"] != p.as_str() && u["id"] != s.as_str())
            .cloned()
            .collect();
        w["reported_by"] = json!(keep);
        w["display_id"].as_str().unwrap().to_string()
    });
    let out = against_api(&fake);
    assert_failed(
        &out,
        &format!("1 backed-up ticket(s) no longer name either contact in DevRev: {label}"),
    );
    // Read-only: only lists.
    let log = fake.requests();
    assert!(
        log[before..].iter().all(|r| r.path == "/works.list"),
        "{:?}",
        log[before..].iter().map(|r| &r.path).collect::<Vec<_>>()
    );

    // Without a token it is a configuration error.
    let out = run(cmd(tmp.path(), None).args(["--verify-backups", "backups", "--against-api"]));
    assert_eq!(out.code, 78, "{}", out.stderr);
}

// ---- --backup-only ----------------------------------------------------------------------

/// A world of `pairs` clean pairs plus needs-review groups and singles, its CSV written to
/// `<tmp>/contacts.csv`.
fn csv_world(pairs: usize, opts: impl FnOnce(&mut FakeOptions)) -> (FakeServer, tempfile::TempDir) {
    let mut o = FakeOptions {
        seed: Seed::generate(&GenSpec {
            pairs,
            review_groups: 2,
            singles: 3,
            ..spec()
        }),
        ..FakeOptions::default()
    };
    opts(&mut o);
    let fake = FakeServer::start(o);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), fake.contacts_csv()).unwrap();
    (fake, tmp)
}

const READS: [&str; 7] = [
    "/rev-users.get",
    "/rev-users.list",
    "/works.list",
    "/timeline-entries.list",
    "/conversations.list",
    "/artifacts.get",
    "/artifacts.locate",
];

#[test]
fn backup_only_backs_up_every_clean_pair_and_merges_nothing() {
    let (fake, tmp) = csv_world(3, |_| {});
    let out = run(cmd(tmp.path(), Some(&fake)).args(["--csv", "contacts.csv", "--backup-only"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("3 pair(s): 3 backed up and verified, 0 failed"),
        "{}",
        out.stdout
    );
    let dirs = backup_dirs(&tmp.path().join("backups"));
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    let secondaries: BTreeSet<String> =
        fake.with_state(|st| st.merges.iter().map(|m| m.secondary.clone()).collect());
    assert!(secondaries.is_empty(), "nothing may be merged");
    for d in &dirs {
        backup::verify::verify_dir(d).unwrap();
        assert_private(d);
    }
    // Read-only: every request was a read or a download.
    for r in fake.requests() {
        assert!(
            READS.contains(&r.path.as_str()) || r.path.starts_with("/download/"),
            "unexpected request {}",
            r.path
        );
    }
    // The pairs backed up are exactly the seed's clean pairs.
    let backed: BTreeSet<String> = dirs.iter().map(|d| manifest(d).secondary_id).collect();
    let want: BTreeSet<String> = Seed::generate(&GenSpec {
        pairs: 3,
        review_groups: 2,
        singles: 3,
        ..spec()
    })
    .pairs()
    .into_iter()
    .map(|(_, s)| s)
    .collect();
    assert_eq!(backed, want);

    let out = verify_cmd(tmp.path());
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("3 backup folder(s): 3 OK"),
        "{}",
        out.stdout
    );

    let out = run(cmd(tmp.path(), Some(&fake)).args([
        "--csv",
        "contacts.csv",
        "--backup-only",
        "--json",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], 3);
    assert_eq!(v["pairs"].as_array().unwrap().len(), 3);
    assert_eq!(
        backup_dirs(&tmp.path().join("backups")).len(),
        6,
        "a second run adds new folders"
    );
}

#[test]
fn backup_only_with_too_little_disk_space_exits_73_and_writes_nothing() {
    let (fake, tmp) = csv_world(2, |_| {});
    let out = run(cmd(tmp.path(), Some(&fake))
        .env(backup::FAKE_FREE_BYTES_ENV, "1000")
        .args(["--csv", "contacts.csv", "--backup-only"]));
    assert_eq!(out.code, 73, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("not enough free space"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("1000 available"), "{}", out.stderr);
    assert!(backup_dirs(&tmp.path().join("backups")).is_empty());
    assert_eq!(fake.count("/download/"), 0);
    assert_eq!(fake.count("/artifacts.locate"), 0);
}

#[test]
fn backup_only_reports_a_failed_pair_and_backs_up_the_others() {
    let (fake, tmp) = csv_world(3, |_| {});
    // One secondary disappears after the export: its pair fails, the others are backed up.
    let gone = Seed::generate(&GenSpec {
        pairs: 3,
        review_groups: 2,
        singles: 3,
        ..spec()
    })
    .pairs()[1]
        .1
        .clone();
    fake.with_state(|st| st.rev_users.remove(&gone));
    let out = run(cmd(tmp.path(), Some(&fake)).args(["--csv", "contacts.csv", "--backup-only"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("3 pair(s): 2 backed up and verified, 1 failed"),
        "{}",
        out.stdout
    );
    let failed = out
        .stdout
        .lines()
        .find(|l| l.starts_with("FAILED"))
        .unwrap();
    // It names the contact that is gone and the likely reason, not a bare "HTTP 404".
    let revu = devrev_merge::detect::display_id(&gone);
    assert!(
        failed.contains(&format!(
            "the secondary contact {revu} ({gone}) was not found in DevRev (HTTP 404): it may \
             already have been merged"
        )),
        "{failed}"
    );
    // Each failure is printed once (the FAILED line), not again as a log line on stderr.
    let shown = format!("{}{}", out.stdout, out.stderr)
        .matches("was not found in DevRev")
        .count();
    assert_eq!(shown, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(backup_dirs(&tmp.path().join("backups")).len(), 2);
}

#[test]
fn a_killed_backup_leaves_a_partial_folder_that_the_next_run_removes() {
    // The first download hangs; the process is killed meanwhile, like a crash or power loss.
    let (fake, tmp) = csv_world(1, |o| {
        o.faults = vec![ScriptedFault {
            path: Some("/download/".into()),
            nth: 1,
            fault: Fault::Slow(Duration::from_secs(2)),
        }];
    });
    let root = tmp.path().join("backups");
    let mut child = std_cmd(tmp.path(), Some(&fake))
        .args(["--csv", "contacts.csv", "--backup-only", "-q"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.count("/download/") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never reached a download"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let dirs = backup_dirs(&root);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].to_string_lossy().ends_with(".partial"), "{dirs:?}");
    assert!(
        dirs[0].join("tickets.json").exists(),
        "the JSON files were written first"
    );

    let out = verify_cmd(tmp.path());
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("LEFTOVER"), "{}", out.stdout);

    let out = run(cmd(tmp.path(), Some(&fake)).args(["--csv", "contacts.csv", "--backup-only"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let dirs = backup_dirs(&root);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(!dirs[0].to_string_lossy().ends_with(".partial"));
    let out = verify_cmd(tmp.path());
    assert_eq!(out.code, 0, "{}", out.stdout);
}

// ---- each thing read once per run (issue 29) -------------------------------------------

/// The paths of the requests from `start` on.
fn paths_from(fake: &FakeServer, start: usize) -> Vec<String> {
    fake.requests()[start..]
        .iter()
        .map(|r| r.path.clone())
        .collect()
}

fn reads_of(paths: &[String], what: &str) -> usize {
    paths.iter().filter(|p| p.starts_with(what)).count()
}

/// Within one run, a second backup of the same objects reads none of them again: timelines
/// come from the first read, attachments are linked from the first folder (checked against
/// its sha256). Once that folder is gone, the attachments are downloaded again; with no
/// freshness window, the timelines are read again.
#[test]
fn a_later_backup_in_the_run_reuses_what_an_earlier_one_read() {
    let (fake, p, s) = world(spec(), |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let reads = RunReads::with_window(Duration::from_secs(600));
    let mut run = Run::new(&fake, &p, &s, tmp.path());
    run.reads = Some(&reads);

    let (r1, _, _, start1) = run.take();
    let first = r1.unwrap();
    let first_paths = paths_from(&fake, start1);
    let timelines = reads_of(&first_paths, "/timeline-entries.list");
    assert!(first.attachments > 0 && timelines > 0, "{first:?}");
    assert_eq!(
        reads_of(&first_paths, "/artifacts.locate"),
        first.attachments
    );
    assert_eq!((first.timelines_reused, first.attachments_reused), (0, 0));

    let (r2, _, _, start2) = run.take();
    let second = r2.unwrap();
    let paths = paths_from(&fake, start2);
    for what in [
        "/timeline-entries.list",
        "/artifacts.locate",
        "/artifacts.get",
        "/download/",
    ] {
        assert_eq!(reads_of(&paths, what), 0, "{what} again: {paths:?}");
    }
    assert_eq!(second.timelines_reused, timelines);
    assert_eq!(second.attachments_reused, second.attachments);
    assert_eq!(
        manifest(&second.dir).counts.attachments_reused,
        second.attachments
    );
    backup::verify::verify_dir(&first.dir).unwrap();
    backup::verify::verify_dir(&second.dir).unwrap();
    // The same files as the first backup's, byte for byte.
    let m = manifest(&second.dir);
    for o in &m.objects {
        for a in &o.attachments {
            assert_eq!(
                std::fs::read(second.dir.join(&a.path)).unwrap(),
                std::fs::read(first.dir.join(&a.path)).unwrap()
            );
        }
    }

    // Both earlier folders dropped: the attachments come from DevRev again.
    std::fs::remove_dir_all(&first.dir).unwrap();
    std::fs::remove_dir_all(&second.dir).unwrap();
    let (r3, _, _, start3) = run.take();
    let third = r3.unwrap();
    let paths = paths_from(&fake, start3);
    assert_eq!(reads_of(&paths, "/artifacts.locate"), third.attachments);
    assert_eq!(reads_of(&paths, "/download/"), third.attachments);
    assert_eq!(reads_of(&paths, "/timeline-entries.list"), 0);
    assert_eq!(third.attachments_reused, 0);
    backup::verify::verify_dir(&third.dir).unwrap();

    // No window: every timeline is read again, the attachments still linked.
    let no_window = RunReads::with_window(Duration::ZERO);
    run.reads = Some(&no_window);
    let (r4, _, _, _) = run.take();
    r4.unwrap();
    let (r5, _, _, start5) = run.take();
    let fifth = r5.unwrap();
    let paths = paths_from(&fake, start5);
    assert_eq!(reads_of(&paths, "/timeline-entries.list"), timelines);
    assert_eq!(reads_of(&paths, "/artifacts.locate"), 0);
    assert_eq!(fifth.timelines_reused, 0);
    assert_eq!(fifth.attachments_reused, fifth.attachments);
    backup::verify::verify_dir(&fifth.dir).unwrap();
}

/// An earlier folder whose attachment changed on disk is not a source: the attachment is
/// downloaded again and the new backup verifies.
#[test]
fn a_changed_earlier_file_is_downloaded_again() {
    let (fake, p, s) = world(spec(), |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let reads = RunReads::with_window(Duration::from_secs(600));
    let mut run = Run::new(&fake, &p, &s, tmp.path());
    run.reads = Some(&reads);
    let first = run.take().0.unwrap();
    let m = manifest(&first.dir);
    let a = m
        .objects
        .iter()
        .flat_map(|o| &o.attachments)
        .find(|a| a.declared_size.is_some_and(|n| n > 0))
        .expect("an attachment with bytes");
    // Same size, other bytes (someone edited the file in place).
    let path = first.dir.join(&a.path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (r, _, _, start) = run.take();
    let second = r.unwrap();
    let paths = paths_from(&fake, start);
    assert_eq!(reads_of(&paths, "/artifacts.locate"), 1, "{paths:?}");
    assert_eq!(second.attachments_reused, second.attachments - 1);
    backup::verify::verify_dir(&second.dir).unwrap();
    assert!(backup::verify::verify_dir(&first.dir).is_err());
}

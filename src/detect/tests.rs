//! Detection's tests: the rules of DESIGN §5 on small files, malformed input, and properties
//! (shuffling, hash collisions) that must never change the plan.

use super::scan::{COLLIDE, hash64, radix_sort, sort_pairs_by_email};
use super::*;
use std::io::Cursor;

const HEADER: &str =
    "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT\n";

fn opts() -> DetectOptions {
    DetectOptions {
        keep: Keep::Revu,
        email_domain: None,
    }
}

fn plan(csv: &str) -> Result<Plan, AppError> {
    plan_from_reader("t.csv", Cursor::new(csv.as_bytes().to_vec()), &opts())
}

fn row(id: &str, email: &str, r: &str, tickets: &str) -> String {
    format!(
        "don:identity:dvrv-us-1:devo/o:revu/{id},Name {id},{email},{r},,2024-12-03 15:16:07.123,2024-12-03 15:16:07.123,{tickets}\n"
    )
}

#[test]
fn normalization_trims_and_lowercases() {
    assert_eq!(
        normalize_email("  Jane.Doe@Example.COM \t"),
        "jane.doe@example.com"
    );
    assert_eq!(normalize_email("ÉLODIE@EXAMPLE.FR"), "élodie@example.fr");
    assert_eq!(normalize_email(""), "");
    assert_eq!(normalize_email("   "), "");
}

#[test]
fn ref_classes() {
    assert_eq!(classify_ref("REVU-aB3dE5fG"), RefClass::Revu);
    assert_eq!(classify_ref(" user_2abc "), RefClass::User);
    assert_eq!(
        classify_ref("user_x-drop-don:identity:dvrv-us-1:devo/o:revu/y"),
        RefClass::Drop
    );
    assert_eq!(classify_ref("user_x-drop-a-drop-b"), RefClass::Drop);
    assert_eq!(
        classify_ref("revu-abc"),
        RefClass::Other,
        "ids are case-sensitive"
    );
    assert_eq!(classify_ref("USER_abc"), RefClass::Other);
    assert_eq!(classify_ref("REVU-"), RefClass::Other);
    assert_eq!(classify_ref("user_"), RefClass::Other);
    assert_eq!(classify_ref("jane@example.com"), RefClass::Other);
    assert_eq!(classify_ref(""), RefClass::Other);
}

#[test]
fn display_ids_come_from_dons() {
    assert_eq!(
        display_id("don:identity:dvrv-us-1:devo/o:revu/aB3"),
        "REVU-aB3"
    );
    assert_eq!(display_id("REVU-aB3"), "REVU-aB3");
}

#[test]
fn clean_pair_with_keep_revu_and_keep_user() {
    let csv = format!(
        "{HEADER}{}{}",
        row("u1", "Jane@X.com", "user_1", "3"),
        row("r1", " jane@x.com", "REVU-r1", "")
    );
    let p = plan(&csv).unwrap();
    assert_eq!(p.pairs.len(), 1);
    assert_eq!(p.pairs[0].email, "jane@x.com");
    assert_eq!(p.pairs[0].primary.external_ref, "REVU-r1");
    assert_eq!(p.pairs[0].secondary.external_ref, "user_1");
    assert_eq!(p.pairs[0].secondary.ticket_count, Some(3));
    assert_eq!(p.pairs[0].primary.ticket_count, None);
    assert_eq!(p.pairs[0].secondary.line, 2);
    let o = DetectOptions {
        keep: Keep::User,
        email_domain: None,
    };
    let p = plan_from_reader("t.csv", Cursor::new(csv.into_bytes()), &o).unwrap();
    assert_eq!(p.pairs[0].primary.external_ref, "user_1");
    assert_eq!(p.pairs[0].secondary.external_ref, "REVU-r1");
}

fn reason_of(rows: &[String]) -> ReviewReason {
    let csv = format!("{HEADER}{}", rows.concat());
    let p = plan(&csv).unwrap();
    assert!(p.pairs.is_empty(), "{:?}", p.pairs);
    assert_eq!(p.needs_review.len(), 1, "{:?}", p.needs_review);
    p.needs_review[0].reason
}

#[test]
fn every_needs_review_reason() {
    let e = "a@x.com";
    assert_eq!(
        reason_of(&[row("u1", e, "user_1", "1"), row("u2", e, "user_2", "1")]),
        ReviewReason::SeveralUser
    );
    assert_eq!(
        reason_of(&[
            row("u1", e, "user_1", "1"),
            row("u2", e, "user_2", "1"),
            row("u3", e, "user_3", "")
        ]),
        ReviewReason::SeveralUser
    );
    assert_eq!(
        reason_of(&[row("r1", e, "REVU-r1", "1"), row("r2", e, "REVU-r2", "1")]),
        ReviewReason::SeveralRevu
    );
    assert_eq!(
        reason_of(&[
            row("r1", e, "REVU-r1", "1"),
            row("r2", e, "REVU-r2", "1"),
            row("u1", e, "user_1", "1")
        ]),
        ReviewReason::SeveralRevu
    );
    assert_eq!(
        reason_of(&[
            row("r1", e, "REVU-r1", "1"),
            row("u1", e, "user_1", "1"),
            row("u2", e, "user_2", "1")
        ]),
        ReviewReason::RevuWithSeveralUser
    );
    assert_eq!(
        reason_of(&[
            row("r1", e, "REVU-r1", "1"),
            row("u1", e, "user_1-drop-don:identity:x:revu/u1", "1")
        ]),
        ReviewReason::DropRef
    );
    assert_eq!(
        reason_of(&[
            row("r1", e, "REVU-r1", "1"),
            row("u1", e, "user_1", "1"),
            row("d1", e, "user_9-drop-x", "")
        ]),
        ReviewReason::DropRef
    );
    assert_eq!(
        reason_of(&[row("r1", e, "REVU-r1", "1"), row("o1", e, "a@x.com", "1")]),
        ReviewReason::OtherRef
    );
    // The same id twice in one group, even when the refs would make a pair.
    assert_eq!(
        reason_of(&[row("r1", e, "REVU-r1", "1"), row("r1", e, "user_1", "1")]),
        ReviewReason::DuplicateId
    );
    // The same id on a single row of another email: that row is flagged too.
    let csv = format!(
        "{HEADER}{}{}{}",
        row("r1", "a@x.com", "REVU-r1", ""),
        row("u1", "a@x.com", "user_1", ""),
        row("r1", "b@x.com", "user_2", "")
    );
    let p = plan(&csv).unwrap();
    assert!(p.pairs.is_empty());
    assert_eq!(p.needs_review.len(), 2);
    assert!(
        p.needs_review
            .iter()
            .all(|g| g.reason == ReviewReason::DuplicateId)
    );
    assert_eq!(p.needs_review[1].contacts.len(), 1);
    assert!(
        p.needs_review[0].detail.contains("revu/r1"),
        "{}",
        p.needs_review[0].detail
    );
}

#[test]
fn singles_no_email_and_domain_filter() {
    let csv = format!(
        "{HEADER}{}{}{}{}{}{}",
        row("r1", "a@x.com", "REVU-r1", "1"),
        row("u1", "b@x.com", "user_1", "1"),
        row("d1", "c@x.com", "user_1-drop-y", "1"),
        row("o1", "d@y.com", "d@y.com", "1"),
        row("n1", "", "REVU-n1", "1"),
        row("n2", "  ", "user_2", "")
    );
    let p = plan(&csv).unwrap();
    assert_eq!(p.rows_read, 6);
    assert_eq!(p.emails, 4);
    assert_eq!(
        p.singles,
        Singles {
            revu: 1,
            user: 1,
            drop: 1,
            other: 1
        }
    );
    assert_eq!(p.no_email.len(), 2);
    assert!(p.pairs.is_empty() && p.needs_review.is_empty());
    let o = DetectOptions {
        keep: Keep::Revu,
        email_domain: Some("X.com".into()),
    };
    let p = plan_from_reader("t.csv", Cursor::new(csv.into_bytes()), &o).unwrap();
    assert_eq!(p.emails, 3);
    assert_eq!(
        p.outside_domain, 3,
        "d@y.com and the two rows without email"
    );
    assert_eq!(p.email_domain.as_deref(), Some("x.com"));
}

#[test]
fn headers_any_case_any_order_extra_columns_bom_crlf_quotes() {
    let csv = "\u{feff}Ticket_Count,extra,email,External_Ref,rev_user_id\r\n\
                   2,\"x, \"\"quoted\"\"\nnewline\",A@x.com,REVU-1,id1\r\n\
                   ,z,a@x.com,user_1,id2\r\n";
    let p = plan(csv).unwrap();
    assert_eq!(p.pairs.len(), 1);
    assert_eq!(p.pairs[0].primary.rev_user_id, "id1");
    assert_eq!(p.pairs[0].primary.ticket_count, Some(2));
    assert_eq!(
        p.pairs[0].secondary.line, 4,
        "the quoted newline counts as a line"
    );
    assert_eq!(p.pairs[0].primary.display_name, "");
}

fn err(csv: &[u8]) -> String {
    let e = plan_from_reader("t.csv", Cursor::new(csv.to_vec()), &opts()).unwrap_err();
    assert_eq!(e.exit_code(), 65, "{e}");
    e.to_string()
}

#[test]
fn malformed_files_are_data_errors_with_line_and_column() {
    assert!(err(b"").contains("no contacts"));
    assert!(err(HEADER.as_bytes()).contains("no contacts"));
    let m = err(b"REV_USER_ID,DISPLAY_NAME\nx,y\n");
    assert!(
        m.contains("missing required columns EMAIL, EXTERNAL_REF"),
        "{m}"
    );
    let m = err(format!("{HEADER}{}a,b\n", row("r1", "a@x.com", "REVU-1", "1")).as_bytes());
    assert!(m.contains("line 3, 2 fields but the header has 8"), "{m}");
    let m = err(format!("{HEADER}{}", row("r1", "a@x.com", "REVU-1", "many")).as_bytes());
    assert!(
        m.contains("line 2, column 8 (TICKET_COUNT): \"many\" is not a whole number"),
        "{m}"
    );
    let mut bad = format!("{HEADER}{}", row("r1", "a@x.com", "REVU-1", "1")).into_bytes();
    let at = HEADER.len() + bad[HEADER.len()..].iter().position(|b| *b == b'N').unwrap();
    bad[at] = 0xFF;
    let m = err(&bad);
    assert!(
        m.contains("line 2, column 2 (DISPLAY_NAME): not valid UTF-8"),
        "{m}"
    );
    let m = err(b"EMAIL,email,REV_USER_ID,EXTERNAL_REF\n");
    assert!(m.contains("column EMAIL appears twice"), "{m}");
    let m = err(format!("{HEADER},n,a@x.com,REVU-1,,,,1\n").as_bytes());
    assert!(m.contains("line 2, column 1 (REV_USER_ID): empty"), "{m}");
}

#[test]
fn at_most_twenty_problems_are_listed() {
    let mut csv = HEADER.to_string();
    for i in 0..25 {
        csv.push_str(&row(&format!("r{i}"), "a@x.com", "REVU-1", "x"));
    }
    let m = err(csv.as_bytes());
    assert!(m.starts_with("t.csv: 25 problems"), "{m}");
    assert_eq!(m.matches("is not a whole number").count(), 20);
    assert!(m.contains("... and 5 more"), "{m}");
}

#[test]
fn radix_sort_sorts_and_is_stable() {
    let v: Vec<(u64, u32)> = (0..50_000u32)
        .map(|i| {
            (
                hash64(&(i % 17_777).to_string()) ^ (u64::from(i % 3) << 60),
                i,
            )
        })
        .collect();
    let mut want = v.clone();
    want.sort_by_key(|x| x.0);
    assert_eq!(
        radix_sort(v, |x| x.0),
        want,
        "stable: equal keys keep their order"
    );
    assert!(radix_sort(Vec::<u64>::new(), |x| *x).is_empty());
}

#[test]
fn in_place_sort_matches_a_plain_sort() {
    let email = |i: u64| {
        // Long shared prefixes, so the 16-byte keys tie and the full strings decide.
        let local = [
            "a",
            "a.very.long.shared.prefix",
            "a.very.long.shared.prefiy",
            "b",
            "",
        ];
        format!("{}{}@x.com", local[(i % 5) as usize], (i * 7919 + 13) % 23)
    };
    for n in 0..60u64 {
        let c = Contact::empty();
        let mut pairs: Vec<Pair> = (0..n)
            .map(|i| Pair {
                email: email(i),
                primary: c.clone(),
                secondary: c.clone(),
            })
            .collect();
        let mut want: Vec<String> = pairs.iter().map(|p| p.email.clone()).collect();
        want.sort();
        sort_pairs_by_email(&mut pairs);
        assert_eq!(
            pairs.iter().map(|p| p.email.clone()).collect::<Vec<_>>(),
            want
        );
    }
}

#[test]
fn move_pair_to_review_keeps_order() {
    let csv = format!(
        "{HEADER}{}{}{}{}",
        row("r1", "a@x.com", "REVU-r1", ""),
        row("u1", "a@x.com", "user_1", ""),
        row("u2", "b@x.com", "user_2", ""),
        row("u3", "b@x.com", "user_3", "")
    );
    let mut p = plan(&csv).unwrap();
    p.move_pair_to_review(0, ReviewReason::LiveNotFound, "gone".into());
    assert!(p.pairs.is_empty());
    assert_eq!(p.needs_review[0].email, "a@x.com");
    assert_eq!(p.needs_review[0].reason, ReviewReason::LiveNotFound);
    assert_eq!(p.needs_review[1].reason, ReviewReason::SeveralUser);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    type Row = (String, String, String, Option<u64>);

    /// Generated rows: (id, email, ref, ticket count). Small pools so that emails collide
    /// often and every kind of group shows up; about one row in ten reuses an earlier
    /// row's id.
    fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
        let email = prop::sample::select(vec![
            "a@x.com",
            "A@X.com",
            " a@x.com ",
            "b@x.com",
            "B@x.COM",
            "c@y.org",
            "d@x.com",
            "e@x.com",
            "f@x.com",
            "",
            "  ",
        ])
        .prop_map(str::to_string);
        let r = prop_oneof![
            4 => (0u8..12).prop_map(|n| format!("REVU-r{n}")),
            4 => (0u8..12).prop_map(|n| format!("user_{n}")),
            1 => (0u8..3).prop_map(|n| format!("user_{n}-drop-don:identity:x:revu/z")),
            1 => prop::sample::select(vec!["", "a@x.com", "revu-lower"]).prop_map(str::to_string),
        ];
        let dup = prop::option::weighted(0.1, any::<prop::sample::Index>());
        prop::collection::vec((dup, email, r, prop::option::of(0u64..50)), 1..40).prop_map(|v| {
            let mut ids: Vec<String> = Vec::with_capacity(v.len());
            let mut out = Vec::with_capacity(v.len());
            for (i, (dup, email, r, t)) in v.into_iter().enumerate() {
                let id = match dup {
                    Some(ix) if i > 0 => ids[ix.index(i)].clone(),
                    _ => format!("don:identity:dvrv-us-1:devo/o:revu/id{i}"),
                };
                ids.push(id.clone());
                out.push((id, email, r, t));
            }
            out
        })
    }

    fn to_csv(rows: &[Row]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(vec![]);
        w.write_record([
            "REV_USER_ID",
            "DISPLAY_NAME",
            "EMAIL",
            "EXTERNAL_REF",
            "TICKET_COUNT",
        ])
        .unwrap();
        for (id, email, r, t) in rows {
            let t = t.map(|t| t.to_string()).unwrap_or_default();
            w.write_record([id.as_str(), "Name, \"quoted\"", email, r, &t])
                .unwrap();
        }
        w.into_inner().unwrap()
    }

    fn run(rows: &[Row], keep: Keep, domain: Option<&str>) -> Plan {
        let o = DetectOptions {
            keep,
            email_domain: domain.map(str::to_string),
        };
        plan_from_reader("p.csv", Cursor::new(to_csv(rows)), &o).unwrap()
    }

    fn without_lines(mut p: Plan) -> Plan {
        for pair in &mut p.pairs {
            pair.primary.line = 0;
            pair.secondary.line = 0;
        }
        for c in p
            .needs_review
            .iter_mut()
            .flat_map(|g| g.contacts.iter_mut())
            .chain(p.no_email.iter_mut())
        {
            c.line = 0;
        }
        p
    }

    /// The properties below only mean something if the generator makes every bucket.
    #[test]
    fn generator_covers_every_bucket() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut pairs, mut singles, mut no_email) = (0, 0, 0);
        let mut reasons = HashSet::new();
        for _ in 0..300 {
            let rows = arb_rows().new_tree(&mut runner).unwrap().current();
            let p = run(&rows, Keep::Revu, None);
            pairs += p.pairs.len();
            singles += p.singles.total();
            no_email += p.no_email.len();
            reasons.extend(p.needs_review.iter().map(|g| g.reason));
        }
        assert!(
            pairs > 50 && singles > 50 && no_email > 50,
            "{pairs} {singles} {no_email}"
        );
        for r in [
            ReviewReason::DuplicateId,
            ReviewReason::DropRef,
            ReviewReason::OtherRef,
            ReviewReason::SeveralRevu,
            ReviewReason::RevuWithSeveralUser,
            ReviewReason::SeveralUser,
        ] {
            assert!(reasons.contains(&r), "{r:?} never generated");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn every_row_in_exactly_one_bucket(rows in arb_rows(),
                                           keep in prop_oneof![Just(Keep::Revu), Just(Keep::User)],
                                           domain in prop::option::of(Just("x.com"))) {
            let p = run(&rows, keep, domain);
            prop_assert_eq!(p.rows_read, rows.len() as u64);
            let in_buckets = 2 * p.pairs.len() as u64 + p.review_rows() + p.no_email.len() as u64
                + p.singles.total() + p.outside_domain;
            prop_assert_eq!(in_buckets, p.rows_read);
            prop_assert_eq!(p.emails, p.pairs.len() as u64 + p.needs_review.len() as u64 + p.singles.total());
            // Every line appears once across pairs, groups and no-email rows.
            let mut lines: Vec<u64> = p.pairs.iter().flat_map(|x| [x.primary.line, x.secondary.line])
                .chain(p.needs_review.iter().flat_map(|g| g.contacts.iter().map(|c| c.line)))
                .chain(p.no_email.iter().map(|c| c.line)).collect();
            let n = lines.len();
            lines.sort_unstable();
            lines.dedup();
            prop_assert_eq!(lines.len(), n);
            for g in &p.needs_review {
                prop_assert!(g.contacts.len() >= 2 || g.reason == ReviewReason::DuplicateId);
                for c in &g.contacts {
                    prop_assert_eq!(&normalize_email(&c.email), &g.email);
                }
            }
            for c in &p.no_email {
                prop_assert!(normalize_email(&c.email).is_empty());
            }
        }

        #[test]
        fn pairs_are_one_revu_and_one_user_with_equal_emails(rows in arb_rows(),
                                                             keep in prop_oneof![Just(Keep::Revu), Just(Keep::User)]) {
            let p = run(&rows, keep, None);
            for pair in &p.pairs {
                let (want_p, want_s) = match keep {
                    Keep::Revu | Keep::Auto => (RefClass::Revu, RefClass::User),
                    Keep::User => (RefClass::User, RefClass::Revu),
                };
                prop_assert_eq!(pair.primary.ref_class(), want_p);
                prop_assert_eq!(pair.secondary.ref_class(), want_s);
                prop_assert_eq!(normalize_email(&pair.primary.email), pair.email.clone());
                prop_assert_eq!(normalize_email(&pair.secondary.email), pair.email.clone());
                prop_assert!(!pair.email.is_empty());
                prop_assert_ne!(&pair.primary.rev_user_id, &pair.secondary.rev_user_id);
            }
        }

        #[test]
        fn hash_collisions_change_nothing(rows in arb_rows(),
                                          keep in prop_oneof![Just(Keep::Revu), Just(Keep::User)]) {
            let strong = run(&rows, keep, None);
            for m in [(4, 1000), (3, 40), (2, 7), (1, 1)] {
                COLLIDE.with(|c| c.set(Some(m)));
                let weak = run(&rows, keep, None);
                COLLIDE.with(|c| c.set(None));
                prop_assert_eq!(&strong, &weak, "moduli {:?}", m);
            }
        }

        #[test]
        fn shuffling_rows_changes_nothing((rows, shuffled) in arb_rows()
                                              .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))) {
            let a = without_lines(run(&rows, Keep::Revu, None));
            let b = without_lines(run(&shuffled, Keep::Revu, None));
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn headers_from_spreadsheets_and_warehouses_are_recognised() {
    let csv = "Rev User Id,Display Name,e-mail,external-ref,Ticket Count\r\n\
               id1,A,a@x.com,REVU-1,2\r\n\
               id2,B,a@x.com,user_1,0\r\n";
    let p = plan(csv).unwrap();
    assert_eq!(p.pairs.len(), 1);
    assert_eq!(p.pairs[0].primary.ticket_count, Some(2));
}

#[test]
fn a_semicolon_or_tab_separated_export_says_so_and_what_to_do() {
    for (sep, what) in [(";", "semicolons"), ("\t", "tabs")] {
        let header = ["REV_USER_ID", "DISPLAY_NAME", "EMAIL", "EXTERNAL_REF"].join(sep);
        let m = err(format!("\u{feff}{header}\r\nid1{sep}A{sep}a@x.com{sep}REVU-1\r\n").as_bytes());
        assert!(
            m.contains(&format!("separated by {what}, not by commas")),
            "{m}"
        );
        assert!(m.contains("CSV UTF-8 (Comma delimited)"), "{m}");
        assert!(m.contains("t.csv: line 1"), "{m}");
    }
}

#[test]
fn a_missing_column_suggests_the_header_that_looks_like_it() {
    let m = err(b"REV_USER_ID,EMAIL_ADDRESS,EXTERNAL_REF\nx,a@x.com,REVU-1\n");
    assert!(m.contains("missing required column EMAIL"), "{m}");
    assert!(m.contains("rename \"EMAIL_ADDRESS\" to EMAIL"), "{m}");
}

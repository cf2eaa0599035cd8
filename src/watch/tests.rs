use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn token(jti: &str) -> TokenState {
    let mut digest = [0u8; 32];
    digest[..jti.len().min(32)].copy_from_slice(&jti.as_bytes()[..jti.len().min(32)]);
    TokenState::Valid(TokenInfo {
        digest,
        jti: Some(jti.to_owned()),
        issued_at: Some(at(0)),
        expires_at: Some(at(600)),
        warn_after: Some(at(480)),
    })
}

fn entry(name: &str, kind: EntryKind, content: u8) -> Entry {
    Entry {
        name: name.to_owned(),
        kind,
        digest: Some([content; 32]),
        not_regular: None,
    }
}

/// A kubelet layout at `version` with `jti`; `ca` stands for ca.crt's content.
fn layout(version: &str, jti: &str, ca: u8) -> Snapshot {
    Snapshot {
        exists: true,
        data: DataLink::Version(version.to_owned()),
        entries: vec![
            entry("ca.crt", EntryKind::ThroughData, ca),
            entry("token", EntryKind::ThroughData, jti.as_bytes()[0]),
        ],
        version_names: vec!["ca.crt".into(), "token".into()],
        token_path: "token".into(),
        token: token(jti),
    }
}

fn empty() -> Snapshot {
    Snapshot {
        exists: true,
        data: DataLink::Absent,
        entries: Vec::new(),
        version_names: Vec::new(),
        token_path: "token".into(),
        token: TokenState::Absent,
    }
}

#[test]
fn the_token_present_at_start_is_the_baseline() {
    let mut tracker = Tracker::new();
    assert!(tracker.start(&layout("..v1", "a", 1), at(0)).is_empty());
    assert!(tracker.observe(&layout("..v1", "a", 1), at(1)).is_empty());
    let events = tracker.observe(&layout("..v2", "b", 1), at(2));
    assert_eq!(
        events,
        vec![Event::Rotation {
            time: at(2),
            old_jti: Some("a".into()),
            new_jti: Some("b".into()),
            iat: Some(at(0)),
            exp: Some(at(600)),
            warnafter: Some(at(480)),
            consistent: true,
            old_data_dir: Some("..v1".into()),
            new_data_dir: Some("..v2".into()),
            changed: vec!["token".into()],
            problems: vec![],
        }]
    );
    assert_eq!(tracker.current().and_then(|t| t.jti.as_deref()), Some("b"));
}

#[test]
fn the_first_token_of_an_empty_directory_is_a_rotation_from_nothing() {
    let mut tracker = Tracker::new();
    assert!(tracker.start(&empty(), at(0)).is_empty());
    let mut missing = empty();
    missing.exists = false;
    assert!(
        tracker.observe(&missing, at(1)).is_empty(),
        "waiting is no error"
    );
    let events = tracker.observe(&layout("..v1", "a", 1), at(2));
    assert!(
        matches!(&events[..], [Event::Rotation { old_jti: None, new_jti: Some(n), consistent: true, changed, .. }]
            if n == "a" && changed.len() == 2),
        "{events:?}"
    );
}

#[test]
fn a_swap_with_the_same_token_is_an_update() {
    let mut tracker = Tracker::new();
    tracker.start(&layout("..v1", "a", 1), at(0));
    let events = tracker.observe(&layout("..v2", "a", 2), at(1));
    assert!(
        matches!(&events[..], [Event::Update { consistent: true, changed, .. }] if changed == &["ca.crt"]),
        "{events:?}"
    );
    // A swap to identical content is still reported (the writer published a version).
    let events = tracker.observe(&layout("..v3", "a", 2), at(2));
    assert!(
        matches!(&events[..], [Event::Update { changed, .. }] if changed.is_empty()),
        "{events:?}"
    );
}

#[test]
fn a_token_written_in_place_is_an_inconsistent_rotation() {
    let mut tracker = Tracker::new();
    tracker.start(&layout("..v1", "a", 1), at(0));
    let events = tracker.observe(&layout("..v1", "b", 1), at(1));
    let [Event::Rotation {
        consistent,
        problems,
        ..
    }] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert!(!consistent);
    assert!(
        problems[0].contains("without a ..data swap"),
        "{problems:?}"
    );
}

#[test]
fn plain_files_make_every_rotation_inconsistent() {
    let mut tracker = Tracker::new();
    let mut plain = empty();
    plain.entries = vec![entry("token", EntryKind::Plain, b'a')];
    plain.token = token("a");
    tracker.start(&plain, at(0));
    plain.entries = vec![entry("token", EntryKind::Plain, b'b')];
    plain.token = token("b");
    let events = tracker.observe(&plain, at(1));
    let [Event::Rotation {
        consistent: false,
        problems,
        ..
    }] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert!(
        problems.iter().any(|p| p.contains("no ..data")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("token is not a link")),
        "{problems:?}"
    );

    let mut pinned = layout("..v2", "c", 1);
    pinned.entries[0].kind = EntryKind::OtherLink {
        target: "..v1/ca.crt".into(),
    };
    let events = tracker.observe(&pinned, at(2));
    let [Event::Rotation { problems, .. }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("ca.crt links to ..v1/ca.crt"),
        "{problems:?}"
    );
}

#[test]
fn errors_are_reported_once_then_recovery() {
    let mut tracker = Tracker::new();
    tracker.start(&layout("..v1", "a", 1), at(0));

    let mut dangling = layout("..v1", "a", 1);
    dangling.data = DataLink::Dangling("..v1".into());
    dangling.entries[1].kind = EntryKind::Dangling {
        target: "..data/token".into(),
    };
    dangling.token = TokenState::Absent;
    let events = tracker.observe(&dangling, at(1));
    let [Event::Error { errors, .. }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(tracker.observe(&dangling, at(2)).is_empty(), "same errors");

    let mut invalid = layout("..v2", "x", 1);
    invalid.token = TokenState::Invalid("not a JWT: expected three parts".into());
    let events = tracker.observe(&invalid, at(3));
    assert!(
        matches!(&events[..], [Event::Error { errors, .. }] if errors[0].contains("token does not parse")),
        "{events:?}"
    );

    // Back with the old token: recovered, no rotation.
    let events = tracker.observe(&layout("..v3", "a", 1), at(4));
    assert!(
        matches!(&events[..], [Event::Recovered { jti: Some(j), .. }, Event::Update { .. }] if j == "a"),
        "{events:?}"
    );

    tracker.observe(&invalid, at(5));
    let events = tracker.observe(&layout("..v4", "b", 1), at(6));
    assert!(
        matches!(&events[..], [Event::Recovered { .. }, Event::Rotation { old_jti: Some(o), new_jti: Some(n), .. }] if o == "a" && n == "b"),
        "{events:?}"
    );
}

#[test]
fn layout_errors() {
    let mut missing_token = layout("..v1", "a", 1);
    missing_token.entries.truncate(1);
    missing_token.token = TokenState::Absent;
    let errors = missing_token.errors(false);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("token is in ..data but has no link")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e == "no token in the directory"),
        "{errors:?}"
    );

    let mut not_a_link = layout("..v1", "a", 1);
    not_a_link.data = DataLink::NotALink;
    assert_eq!(not_a_link.errors(true).len(), 1);

    let mut unreadable = layout("..v1", "a", 1);
    unreadable.token = TokenState::Unreadable("permission denied".into());
    assert_eq!(
        unreadable.errors(true),
        vec!["cannot read token: permission denied"]
    );

    let mut gone = empty();
    gone.exists = false;
    assert!(gone.errors(false).is_empty());
    assert_eq!(gone.errors(true).len(), 1);
}

#[test]
fn text_lines() {
    let mut tracker = Tracker::new();
    tracker.start(&layout("..v1", "a", 1), at(0));
    let events = tracker.observe(&layout("..v2", "b", 1), at(1));
    assert_eq!(
        render_text(&events[0]),
        "2023-11-14T22:13:21Z rotation old_jti=a new_jti=b iat=2023-11-14T22:13:20Z \
         exp=2023-11-14T22:23:20Z warnafter=2023-11-14T22:21:20Z consistent=yes \
         data=..v1->..v2 changed=token"
    );
    let error = Event::Error {
        time: at(2),
        errors: vec!["one".into(), "two".into()],
    };
    assert_eq!(render_text(&error), "2023-11-14T22:13:22Z error one; two");
    let events = tracker.observe(&layout("..v2", "c", 1), at(3));
    let line = render_text(&events[0]);
    assert!(line.contains("consistent=no"), "{line}");
    assert!(
        line.ends_with("problems: token changed without a ..data swap (written in place)"),
        "{line}"
    );
}

#[test]
fn json_objects_carry_the_required_fields() {
    let mut tracker = Tracker::new();
    tracker.start(&layout("..v1", "a", 1), at(0));
    let events = tracker.observe(&layout("..v2", "b", 1), at(1));
    let json = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(json["event"], "rotation");
    assert_eq!(json["time"], "2023-11-14T22:13:21Z");
    assert_eq!(json["old_jti"], "a");
    assert_eq!(json["new_jti"], "b");
    assert_eq!(json["iat"], "2023-11-14T22:13:20Z");
    assert_eq!(json["exp"], "2023-11-14T22:23:20Z");
    assert_eq!(json["warnafter"], "2023-11-14T22:21:20Z");
    assert_eq!(json["consistent"], true);
    assert_eq!(events[0].kind(), "rotation");
    assert!(!events[0].is_problem());
}

#[test]
fn exec_environment() {
    let mut tracker = Tracker::new();
    tracker.start(&layout("..v1", "a", 1), at(0));
    let events = tracker.observe(&layout("..v2", "b", 1), at(1));
    let env: BTreeMap<_, _> = exec_env(&events[0]).into_iter().collect();
    assert_eq!(env["PROJECTED_TOKEN_EVENT"], "rotation");
    assert_eq!(env["PROJECTED_TOKEN_JTI"], "b");
    assert_eq!(env["PROJECTED_TOKEN_OLD_JTI"], "a");
    assert_eq!(env["PROJECTED_TOKEN_ISSUED_AT"], "2023-11-14T22:13:20Z");
    assert_eq!(env["PROJECTED_TOKEN_EXPIRES_AT"], "2023-11-14T22:23:20Z");
    assert_eq!(env["PROJECTED_TOKEN_WARN_AFTER"], "2023-11-14T22:21:20Z");
    assert_eq!(env["PROJECTED_TOKEN_CONSISTENT"], "true");
    assert_eq!(env["PROJECTED_TOKEN_DATA_DIR"], "..v2");
    let json: serde_json::Value = serde_json::from_str(&env["PROJECTED_TOKEN_EVENT_JSON"]).unwrap();
    assert_eq!(json["new_jti"], "b");

    let error = Event::Error {
        time: at(2),
        errors: vec!["one".into(), "two".into()],
    };
    let env: BTreeMap<_, _> = exec_env(&error).into_iter().collect();
    assert_eq!(env["PROJECTED_TOKEN_EVENT"], "error");
    assert_eq!(env["PROJECTED_TOKEN_ERROR"], "one; two");
    assert!(!env.contains_key("PROJECTED_TOKEN_JTI"));
}

//! The ledger's tests: classification through the ledger, superseded uses, rejections, spans,
//! reports and bounded memory.

use super::*;
use crate::apiserver::usage::{RejectedUses, Rejection};

const SUBJECT: &str = "system:serviceaccount:default:app";

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn at_millis(millis: i64) -> Timestamp {
    Timestamp::from_millisecond(1_700_000_000_000 + millis).unwrap()
}

fn token_use(at: Timestamp, jti: &str) -> TokenUse {
    TokenUse {
        at,
        subject: SUBJECT.to_owned(),
        namespace: "default".to_owned(),
        service_account: "app".to_owned(),
        pod: Some("app-0".to_owned()),
        pod_uid: Some("pod-uid".to_owned()),
        jti: Some(jti.to_owned()),
        warn_after: None,
        issued_at: None,
        legacy: false,
        rejected: None,
        user_agent: Some("client-go/1.37".to_owned()),
    }
}

fn rotation(at: Timestamp, old: Option<&str>, new: &str) -> Rotation {
    Rotation {
        at,
        namespace: "default".to_owned(),
        pod: "app-0".to_owned(),
        service_account: "app".to_owned(),
        volume: "kube-api-access-abcde".to_owned(),
        path: "token".to_owned(),
        old_jti: old.map(str::to_owned),
        new_jti: Some(new.to_owned()),
    }
}

fn secs(seconds: i64) -> SignedDuration {
    SignedDuration::from_secs(seconds)
}

#[test]
fn classification_table() {
    struct Case {
        name: &'static str,
        rotations: Vec<Rotation>,
        token_use: TokenUse,
        classification: Classification,
        counted_as: UpstreamCount,
        superseded_after: Option<SignedDuration>,
        annotation: Option<&'static str>,
    }
    let with_warn = |use_at: Timestamp, warn: Timestamp, jti: &str| TokenUse {
        warn_after: Some(warn),
        ..token_use(use_at, jti)
    };
    let cases = vec![
        Case {
            name: "valid: warnafter not reached",
            rotations: vec![],
            token_use: with_warn(at(10), at(3607), "a"),
            classification: Classification::Valid,
            counted_as: UpstreamCount::Valid,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "at warnafter exactly: still valid",
            rotations: vec![],
            token_use: with_warn(at(3607), at(3607), "a"),
            classification: Classification::Valid,
            counted_as: UpstreamCount::Valid,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "half a second after warnafter: stale by 0 s, as now.Unix() - warnafter",
            rotations: vec![],
            token_use: with_warn(at_millis(3_607_500), at(3607), "a"),
            classification: Classification::Stale {
                seconds_after_warning: 0,
            },
            counted_as: UpstreamCount::Stale {
                seconds_after_warning: 0,
            },
            superseded_after: None,
            annotation: Some(
                "subject: system:serviceaccount:default:app, seconds after warning threshold: 0",
            ),
        },
        Case {
            name: "one second after warnafter: stale",
            rotations: vec![],
            token_use: with_warn(at(3608), at(3607), "a"),
            classification: Classification::Stale {
                seconds_after_warning: 1,
            },
            counted_as: UpstreamCount::Stale {
                seconds_after_warning: 1,
            },
            superseded_after: None,
            annotation: Some(
                "subject: system:serviceaccount:default:app, seconds after warning threshold: 1",
            ),
        },
        Case {
            name: "zero warnafter is absent",
            rotations: vec![],
            token_use: with_warn(at(10), Timestamp::UNIX_EPOCH, "a"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "legacy",
            rotations: vec![],
            token_use: TokenUse {
                legacy: true,
                jti: None,
                pod: None,
                pod_uid: None,
                ..token_use(at(10), "unused")
            },
            classification: Classification::Legacy,
            counted_as: UpstreamCount::Legacy,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "no warnafter: uncounted upstream",
            rotations: vec![],
            token_use: token_use(at(10), "a"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "superseded after one rotation",
            rotations: vec![rotation(at(100), Some("a"), "b")],
            token_use: token_use(at_millis(112_250), "a"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: Some(SignedDuration::from_millis(12_250)),
            annotation: None,
        },
        Case {
            name: "two rotations: the oldest token counts from its own replacement",
            rotations: vec![
                rotation(at(100), Some("a"), "b"),
                rotation(at(200), Some("b"), "c"),
            ],
            token_use: token_use(at(230), "a"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: Some(secs(130)),
            annotation: None,
        },
        Case {
            name: "two rotations: the middle token counts from the second",
            rotations: vec![
                rotation(at(100), Some("a"), "b"),
                rotation(at(200), Some("b"), "c"),
            ],
            token_use: token_use(at(230), "b"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: Some(secs(30)),
            annotation: None,
        },
        Case {
            name: "the newest token is not superseded",
            rotations: vec![rotation(at(100), Some("a"), "b")],
            token_use: token_use(at(230), "b"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "a use recorded before the rotation is not superseded",
            rotations: vec![rotation(at(100), Some("a"), "b")],
            token_use: token_use(at(99), "a"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "a rewrite that kept the token does not supersede it",
            rotations: vec![rotation(at(100), Some("a"), "a")],
            token_use: token_use(at(130), "a"),
            classification: Classification::NoWarnAfter,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: None,
            annotation: None,
        },
        Case {
            name: "stale and superseded",
            rotations: vec![rotation(at(2900), Some("a"), "b")],
            token_use: with_warn(at(3700), at(3607), "a"),
            classification: Classification::Stale {
                seconds_after_warning: 93,
            },
            counted_as: UpstreamCount::Stale {
                seconds_after_warning: 93,
            },
            superseded_after: Some(secs(800)),
            annotation: Some(
                "subject: system:serviceaccount:default:app, seconds after warning threshold: 93",
            ),
        },
        Case {
            name: "expired: classified and recorded, counted nowhere upstream",
            rotations: vec![rotation(at(2900), Some("a"), "b")],
            token_use: TokenUse {
                rejected: Some(Rejection::Expired),
                ..with_warn(at(4000), at(3607), "a")
            },
            classification: Classification::Stale {
                seconds_after_warning: 393,
            },
            counted_as: UpstreamCount::Uncounted,
            superseded_after: Some(secs(1100)),
            annotation: None,
        },
        Case {
            name: "signed by a dropped key: classified and recorded, counted nowhere upstream",
            rotations: vec![],
            token_use: TokenUse {
                rejected: Some(Rejection::UnknownKey),
                ..with_warn(at(100), at(3607), "a")
            },
            classification: Classification::Valid,
            counted_as: UpstreamCount::Uncounted,
            superseded_after: None,
            annotation: None,
        },
    ];
    for case in cases {
        let mut ledger = Ledger::new();
        for r in case.rotations {
            ledger.record_rotation(r);
        }
        let expired = case.token_use.expired();
        let rejected = case.token_use.rejected;
        let outcome = ledger.record_use(case.token_use);
        assert_eq!(outcome.classification, case.classification, "{}", case.name);
        assert_eq!(outcome.counted_as, case.counted_as, "{}", case.name);
        assert_eq!(
            outcome.superseded_after, case.superseded_after,
            "{}",
            case.name
        );
        assert_eq!(outcome.expired, expired, "{}", case.name);
        assert_eq!(outcome.rejected, rejected, "{}", case.name);
        assert_eq!(
            outcome.stale_annotation.as_deref(),
            case.annotation,
            "{}",
            case.name
        );
        let report = ledger.report(at(5000));
        assert_eq!(report.totals.counts.uses, 1, "{}", case.name);
        assert_eq!(
            report.totals.counts.expired,
            u64::from(expired),
            "{}",
            case.name
        );
        assert_eq!(
            report.totals.counts.superseded,
            u64::from(case.superseded_after.is_some()),
            "{}",
            case.name
        );
        assert_eq!(
            report.clients[0].counts.rejected.total(),
            u64::from(rejected.is_some()),
            "{}",
            case.name
        );
    }
}

#[test]
fn rejected_uses_are_counted_per_client_by_reason() {
    let mut ledger = Ledger::new();
    ledger.record_use(token_use(at(1), "a"));
    for second in 2..82 {
        ledger.record_use(TokenUse {
            rejected: Some(Rejection::UnknownKey),
            ..token_use(at(second), "a")
        });
    }
    ledger.record_use(TokenUse {
        rejected: Some(Rejection::Invalidated),
        ..token_use(at(90), "b")
    });
    ledger.record_unattributed_rejection();
    ledger.record_unattributed_rejection();
    let report = ledger.report(at(100));
    let client = &report.clients[0];
    assert_eq!(client.counts.uses, 82);
    assert_eq!(
        client.counts.rejected,
        RejectedUses {
            unknown_key: 80,
            invalidated: 1,
            ..RejectedUses::default()
        }
    );
    assert_eq!(client.counts.rejected.total(), 81);
    assert_eq!(
        client.counts.rejected.describe(),
        "80 unknown key, 1 invalidated"
    );
    assert_eq!(client.tokens[0].counts.rejected.unknown_key, 80);
    assert_eq!(
        client.recent_uses.last().map(|u| u.rejected),
        Some(Some(Rejection::Invalidated))
    );
    // Unattributed rejections belong to nobody: no client, only the totals.
    assert_eq!(report.clients.len(), 1);
    assert_eq!(report.totals.unattributed_rejections, 2);
    assert_eq!(report.totals.counts.rejected.total(), 81);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["clients"][0]["rejected"]["unknown_key"], 80);
    assert_eq!(json["totals"]["unattributed_rejections"], 2);
    assert_eq!(RejectedUses::default().describe(), "");
}

#[test]
fn a_replaced_token_left_in_time_is_a_worst_delay_of_zero_not_none() {
    let mut ledger = Ledger::new();
    ledger.record_use(token_use(at(1), "a"));
    ledger.record_rotation(rotation(at(10), Some("a"), "b"));
    ledger.record_use(token_use(at(11), "b"));
    let report = ledger.report(at(20));
    let client = &report.clients[0];
    assert_eq!(client.median_reload_delay_seconds, Some(0.0));
    assert_eq!(client.worst_reload_delay_seconds, Some(0.0));
    // Nothing replaced: none for both.
    let mut ledger = Ledger::new();
    ledger.record_use(token_use(at(1), "a"));
    let client = &ledger.report(at(20)).clients[0];
    assert_eq!(client.median_reload_delay_seconds, None);
    assert_eq!(client.worst_reload_delay_seconds, None);
}

#[test]
fn a_token_span_knows_the_lifetime_it_was_issued_for() {
    let mut ledger = Ledger::new();
    ledger.record_use(TokenUse {
        warn_after: Some(at(60)),
        issued_at: Some(at(0)),
        ..token_use(at(1), "a")
    });
    ledger.record_use(token_use(at(2), "b"));
    let report = ledger.report(at(20));
    let lifetimes: Vec<_> = report.clients[0]
        .tokens
        .iter()
        .map(|span| span.lifetime_seconds)
        .collect();
    assert_eq!(lifetimes, [Some(60), None]);
}

#[test]
fn token_spans_rotations_and_median_reload_delay() {
    let mut ledger = Ledger::new();
    // Another pod's rotations never show up on this client's timeline.
    ledger.record_rotation(Rotation {
        pod: "other-0".to_owned(),
        ..rotation(at(5), Some("x"), "y")
    });
    // Token a: replaced at 10, used until 13 (3 s late).
    ledger.record_use(token_use(at(1), "a"));
    ledger.record_use(token_use(at(9), "a"));
    ledger.record_rotation(rotation(at(10), Some("a"), "b"));
    ledger.record_use(token_use(at(13), "a"));
    // Token b: replaced at 20, last used at 19 (on time: 0 s).
    ledger.record_use(token_use(at(14), "b"));
    ledger.record_use(token_use(at(19), "b"));
    ledger.record_rotation(rotation(at(20), Some("b"), "c"));
    // Token c: replaced at 30, used until 37 (7 s late); d is current.
    ledger.record_use(token_use(at(21), "c"));
    ledger.record_rotation(rotation(at(30), Some("c"), "d"));
    ledger.record_use(token_use(at(37), "c"));
    ledger.record_use(token_use(at(38), "d"));

    let report = ledger.report(at(40));
    let client = &report.clients[0];
    type Span<'a> = (&'a str, i64, i64, u64, u64, Option<f64>);
    let spans: Vec<Span> = client
        .tokens
        .iter()
        .map(|s| {
            (
                s.jti.as_str(),
                s.first_use.as_second() - at(0).as_second(),
                s.last_use.as_second() - at(0).as_second(),
                s.counts.uses,
                s.counts.superseded,
                s.reload_delay_seconds,
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("a", 1, 13, 3, 1, Some(3.0)),
            ("b", 14, 19, 2, 0, Some(0.0)),
            ("c", 21, 37, 2, 1, Some(7.0)),
            ("d", 38, 38, 1, 0, None),
        ]
    );
    assert_eq!(client.tokens[1].superseded_at, Some(at(20)));
    assert_eq!(client.median_reload_delay_seconds, Some(3.0));
    assert_eq!(client.worst_reload_delay_seconds, Some(7.0));
    let marks: Vec<(i64, &str, Option<&str>)> = client
        .rotations
        .iter()
        .map(|m| {
            (
                m.at.as_second() - at(0).as_second(),
                m.old_jti.as_str(),
                m.new_jti.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [
            (10, "a", Some("b")),
            (20, "b", Some("c")),
            (30, "c", Some("d"))
        ]
    );
    assert_eq!(client.rotations[0].volume, "kube-api-access-abcde");
}

#[test]
fn median_of_an_even_number_of_delays_and_of_none() {
    let span = |delay: Option<f64>| TokenSpan {
        jti: "j".to_owned(),
        first_use: at(0),
        last_use: at(0),
        counts: UseCounts::default(),
        superseded_at: delay.map(|_| at(0)),
        reload_delay_seconds: delay,
        lifetime_seconds: None,
    };
    assert_eq!(median_reload_delay(&[span(None)]), None);
    assert_eq!(
        median_reload_delay(&[span(Some(4.0)), span(Some(1.0)), span(None)]),
        Some(2.5)
    );
}

#[test]
fn report_aggregates_per_client() {
    let mut ledger = Ledger::new();
    ledger.record_rotation(rotation(at(0), None, "a"));
    ledger.record_rotation(rotation(at(100), Some("a"), "b"));
    // Same pod and subject, two programs: two clients.
    let kubectl = |u: TokenUse| TokenUse {
        user_agent: Some("kubectl/v1.37.0".to_owned()),
        ..u
    };
    ledger.record_use(token_use(at(50), "a"));
    ledger.record_use(token_use(at(103), "a"));
    ledger.record_use(token_use(at(110), "a"));
    ledger.record_use(token_use(at(111), "b"));
    ledger.record_use(kubectl(token_use(at(60), "a")));
    ledger.record_use(kubectl(TokenUse {
        warn_after: Some(at(3607)),
        ..token_use(at(3610), "a")
    }));
    ledger.record_use(kubectl(TokenUse {
        warn_after: Some(at(3607)),
        ..token_use(at(3700), "a")
    }));

    let report = ledger.report(at(4000));
    assert_eq!(report.generated_at, at(4000));
    assert_eq!(report.clients.len(), 2);
    let go = &report.clients[0];
    assert_eq!(go.user_agent.as_deref(), Some("client-go/1.37"));
    assert_eq!(go.pod.as_deref(), Some("app-0"));
    assert_eq!(go.pod_uid.as_deref(), Some("pod-uid"));
    assert_eq!(go.namespace, "default");
    assert_eq!(go.service_account, "app");
    assert_eq!(
        go.counts,
        UseCounts {
            uses: 4,
            no_warn_after: 4,
            superseded: 2,
            ..UseCounts::default()
        }
    );
    assert_eq!(go.first_use, at(50));
    assert_eq!(go.last_use, at(111));
    assert_eq!(go.worst_reload_delay_seconds, Some(10.0));
    assert_eq!(go.worst_stale_seconds, None);
    assert_eq!(go.distinct_tokens, 2);
    assert_eq!(go.recent_uses.len(), 4);

    let kubectl = &report.clients[1];
    assert_eq!(kubectl.user_agent.as_deref(), Some("kubectl/v1.37.0"));
    assert_eq!(kubectl.counts.uses, 3);
    assert_eq!(kubectl.counts.stale, 2);
    assert_eq!(kubectl.counts.superseded, 2);
    assert_eq!(kubectl.worst_stale_seconds, Some(93));
    assert_eq!(kubectl.worst_reload_delay_seconds, Some(3600.0));
    assert_eq!(kubectl.distinct_tokens, 1);

    assert_eq!(report.totals.clients, 2);
    assert_eq!(report.totals.counts.uses, 7);
    assert_eq!(report.totals.counts.stale, 2);
    assert_eq!(report.totals.counts.superseded, 4);
    assert_eq!(report.totals.rotations, 2);
    assert_eq!(report.totals.replaced_tokens_tracked, 1);
}

#[test]
fn report_round_trips_through_json() {
    let mut ledger = Ledger::new();
    ledger.record_rotation(rotation(at(100), Some("a"), "b"));
    ledger.record_use(TokenUse {
        warn_after: Some(at(50)),
        ..token_use(at_millis(101_500), "a")
    });
    let report = ledger.report(at(200));
    let json = serde_json::to_value(&report).unwrap();
    let client = &json["clients"][0];
    assert_eq!(client["subject"], SUBJECT);
    assert_eq!(client["uses"], 1);
    assert_eq!(client["stale"], 1);
    assert_eq!(client["superseded"], 1);
    assert_eq!(client["worst_reload_delay_seconds"], 1.5);
    assert_eq!(client["worst_stale_seconds"], 51);
    assert_eq!(client["first_use"], "2023-11-14T22:15:01.5Z");
    assert_eq!(json["totals"]["uses"], 1);
    let back: UsageReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn memory_stays_bounded() {
    let limits = LedgerLimits::default();
    let mut ledger = Ledger::new();
    let mut previous = None;
    for i in 0..10_000 {
        let jti = format!("jti-{i}");
        ledger.record_rotation(rotation(at(i), previous.as_deref(), &jti));
        ledger.record_use(token_use(at(i), &jti));
        previous = Some(jti);
    }
    assert_eq!(
        ledger.replaced_tokens_tracked(),
        limits.replaced_tokens_per_path
    );
    let report = ledger.report(at(10_000));
    assert_eq!(report.clients.len(), 1);
    assert_eq!(report.clients[0].distinct_tokens, 10_000);
    assert_eq!(
        report.clients[0].recent_uses.len(),
        limits.recent_uses_per_client
    );
    assert_eq!(report.totals.rotations, 10_000);

    // Many pods and many clients: both capped, the least recent forgotten first.
    let limits = LedgerLimits {
        replaced_tokens_per_path: 2,
        paths: 3,
        clients: 5,
        tokens_per_client: 2,
        recent_uses_per_client: 1,
    };
    let mut ledger = Ledger::with_limits(limits);
    for pod in 0..20 {
        for i in 0..5 {
            ledger.record_rotation(Rotation {
                pod: format!("pod-{pod}"),
                ..rotation(
                    at(pod * 10 + i),
                    Some(&format!("{pod}-{i}")),
                    &format!("{pod}-{}", i + 1),
                )
            });
        }
        ledger.record_use(TokenUse {
            pod: Some(format!("pod-{pod}")),
            ..token_use(at(pod * 10), "x")
        });
    }
    assert_eq!(ledger.replaced_tokens_tracked(), 6);
    let report = ledger.report(at(1000));
    assert_eq!(report.clients.len(), 5);
    assert_eq!(report.clients[0].pod.as_deref(), Some("pod-15"));
    assert_eq!(report.totals.clients, 20);
    assert_eq!(report.totals.clients_forgotten, 15);
    assert_eq!(report.totals.counts.uses, 20);
}

#[test]
fn a_token_found_superseded_stays_superseded_after_the_path_forgets_it() {
    let mut ledger = Ledger::with_limits(LedgerLimits {
        replaced_tokens_per_path: 2,
        ..LedgerLimits::default()
    });
    ledger.record_rotation(rotation(at(100), Some("held"), "n0"));
    assert!(ledger
        .record_use(token_use(at(105), "held"))
        .superseded_after
        .is_some());
    let mut previous = "n0".to_owned();
    for i in 1..10 {
        let next = format!("n{i}");
        ledger.record_rotation(rotation(at(100 + i), Some(&previous), &next));
        previous = next;
    }
    let outcome = ledger.record_use(token_use(at(300), "held"));
    assert_eq!(outcome.superseded_after, Some(secs(200)));
    // Another client presenting the same old token was never seen with it: forgotten.
    let other = ledger.record_use(TokenUse {
        user_agent: Some("other".to_owned()),
        ..token_use(at(300), "held")
    });
    assert_eq!(other.superseded_after, None);
}

#[test]
fn repeated_rotation_event_keeps_the_first_time() {
    let mut ledger = Ledger::new();
    ledger.record_rotation(rotation(at(100), Some("a"), "b"));
    ledger.record_rotation(rotation(at(150), Some("a"), "b"));
    let outcome = ledger.record_use(token_use(at(160), "a"));
    assert_eq!(outcome.superseded_after, Some(secs(60)));
    assert_eq!(ledger.replaced_tokens_tracked(), 1);
}

//! The refresher's state machine in virtual time (tokio's paused clock): retries and their
//! backoff, Retry-After, control requests, the start spread, restarts and shutdown, against a
//! scripted token source and real volumes in a temporary directory. Steps of the wall clock are
//! in `wall_clock_tests`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::SignedDuration;
use tokio::time::Instant;

use super::test_fixture::{
    leftovers, read_token, seconds_between, Answer, Running, Setup, LIFETIME_SECONDS, WINDOW,
};
use super::{Backoff, Control};
use crate::clock::Clock;
use crate::source::SourceError;

/// Two wakes of the refresher may round a deadline up to the next millisecond each.
const SLACK: f64 = 0.01;

fn secs(seconds: i64) -> SignedDuration {
    SignedDuration::from_secs(seconds)
}

fn unavailable() -> Answer {
    Answer::Fail(SourceError::Unavailable("scripted outage".into()))
}

/// Seconds between consecutive requests, from the `from`-th on.
fn gaps(running: &Running, from: usize) -> Vec<f64> {
    let calls = running.source.calls();
    calls[from..]
        .windows(2)
        .map(|pair| seconds_between(pair[0].at, pair[1].at))
        .collect()
}

/// Seconds from a token's issue (status expiration less its lifetime) to its next refresh.
fn refresh_after_issue(event: &super::RotationEvent) -> f64 {
    let issued = event.status_expiration - secs(LIFETIME_SECONDS);
    event.next_refresh.duration_since(issued).as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn failed_requests_back_off_doubling_to_the_cap_and_keep_the_old_token() {
    fastrand::seed(7);
    let failures = 8;
    let mut script = vec![Answer::Grant];
    script.extend(std::iter::repeat_with(unavailable).take(failures));
    let running = Running::start(Setup {
        backoff: Backoff {
            initial: secs(1),
            cap: secs(8),
        },
        script,
        ..Setup::default()
    });
    running
        .wait_for_publications(1, Duration::from_secs(1))
        .await;
    let first = running.token(0);

    running.control.send(Control::RefreshAll).expect("control");
    running
        .wait_for_calls(1 + failures, Duration::from_secs(120))
        .await;
    assert_eq!(
        running.token(0),
        first,
        "the old token stays while it fails"
    );
    {
        let board = running.status.lock().expect("status");
        assert_eq!(
            board[0].failures.get("unavailable"),
            Some(&(failures as u64))
        );
        let error = board[0].last_error.as_deref().unwrap_or_default();
        assert!(error.contains("scripted outage"), "{error}");
        assert!(board[0].written, "still ready with the old token");
    }
    running
        .wait_for_publications(2, Duration::from_secs(60))
        .await;
    assert_ne!(running.token(0), first, "the first good answer is written");

    // The retry after the n-th failure waits at most 1, 2, 4, 8, 8, ... s (full jitter).
    let waits = gaps(&running, 1);
    assert_eq!(waits.len(), failures);
    for (n, wait) in waits.iter().enumerate() {
        let ceiling = (1_u64 << n.min(3)) as f64;
        assert!(
            *wait <= ceiling + SLACK,
            "retry {n} after {wait} s: {waits:?}"
        );
    }
    // The ceiling grew: the waits at the cap together exceed what the first ceiling allows.
    let capped: f64 = waits[4..].iter().sum();
    assert!(capped > 4.0, "no growth: {waits:?}");

    // A success resets the count: the next failure is retried within the first ceiling again.
    running.source.then([unavailable()]);
    running.control.send(Control::RefreshAll).expect("control");
    running
        .wait_for_publications(3, Duration::from_secs(30))
        .await;
    let calls = running.source.calls().len();
    let last = gaps(&running, calls - 2);
    assert!(last[0] <= 1.0 + SLACK, "after a success: {last:?}");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_under_the_backoff() {
    let throttled = || {
        Answer::Fail(SourceError::Throttled {
            message: "429 Too Many Requests".into(),
            retry_after: secs(30),
        })
    };
    let running = Running::start(Setup {
        backoff: Backoff {
            initial: secs(1),
            cap: secs(2),
        },
        script: vec![Answer::Grant, throttled(), throttled()],
        ..Setup::default()
    });
    running
        .wait_for_publications(1, Duration::from_secs(1))
        .await;
    running.control.send(Control::RefreshAll).expect("control");
    running
        .wait_for_publications(2, Duration::from_secs(90))
        .await;
    // Our own backoff would retry within 1 s, then 2 s; the server's 30 s win both times.
    let waits = gaps(&running, 1);
    assert_eq!(waits.len(), 2, "{waits:?}");
    for wait in &waits {
        assert!((30.0..=30.0 + SLACK).contains(wait), "{waits:?}");
    }
    let board = running.status.lock().expect("status").clone();
    assert_eq!(board[0].failures.get("throttled"), Some(&2));
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn refresh_requests_rotate_the_named_pod_or_every_pod_now() {
    let running = Running::start(Setup {
        pods: vec!["a", "b"],
        ..Setup::default()
    });
    running
        .wait_for_publications(2, Duration::from_secs(1))
        .await;
    let (a, b) = (running.token(0), running.token(1));
    tokio::time::sleep(Duration::from_secs(100)).await;

    // An unknown pod: nothing happens.
    let pod = |name: &str| Control::RefreshPod {
        namespace: "default".into(),
        name: name.into(),
    };
    running.control.send(pod("c")).expect("control");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running.source.calls().len(), 2);

    // `ctl rotate --pod default/a`: only a's token, at once.
    let asked = Instant::now();
    let asked_wall = running.clock.now();
    running.control.send(pod("a")).expect("control");
    running
        .wait_for_publications(3, Duration::from_secs(1))
        .await;
    let (at, event) = running.publications()[2].clone();
    assert_eq!(event.pod, "a");
    let calls = running.source.calls();
    assert_eq!(calls.len(), 3, "one request, for a's token");
    assert_eq!(calls[2].pod, "a");
    assert!(seconds_between(asked, at) <= SLACK);
    assert_eq!(event.scheduled_at, Some(asked_wall), "due when asked");
    assert_ne!(running.token(0), a);
    assert_eq!(running.token(1), b);

    // SIGHUP: every token.
    running.control.send(Control::RefreshAll).expect("control");
    running
        .wait_for_publications(5, Duration::from_secs(1))
        .await;
    let pods: Vec<String> = running.publications()[3..]
        .iter()
        .map(|(_, event)| event.pod.clone())
        .collect();
    assert_eq!(pods.len(), 2);
    assert!(pods.contains(&"a".to_owned()) && pods.contains(&"b".to_owned()));
    assert_ne!(running.token(1), b);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rewrite_restores_a_tampered_volume_with_the_token_in_hand() {
    let running = Running::start(Setup::default());
    running
        .wait_for_publications(1, Duration::from_secs(1))
        .await;
    let token = running.token(0);
    let link = running.dirs[0].join("token");
    std::fs::remove_file(&link).expect("remove link");
    std::fs::write(&link, "forged").expect("forge");

    running
        .control
        .send(Control::Rewrite { volume: 0 })
        .expect("control");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running.token(0), token, "put back with the same token");
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(running.source.calls().len(), 1, "no new request");
    assert_eq!(running.publications().len(), 1, "no rotation");
    assert!(leftovers(&running.dirs[0]).is_empty());
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_replaces_the_volume_a_previous_run_left() {
    let running = Running::start(Setup::default());
    running
        .wait_for_publications(1, Duration::from_secs(1))
        .await;
    let dir = running.dirs[0].clone();
    let old_version = std::fs::read_link(dir.join("..data")).expect("..data");
    let running = running.stop().await;

    // Like the kubelet after a restart, it asks for a new token rather than trusting the file:
    // it cannot tell whether the old one was revoked meanwhile.
    let running = running.restart(Setup::default());
    running
        .wait_for_publications(1, Duration::from_secs(1))
        .await;
    let (_, event) = running.publications()[0].clone();
    assert_eq!(event.old_jti, None);
    assert_eq!(event.scheduled_at, None, "a first write");
    assert_eq!(running.source.calls().len(), 1);
    let version = std::fs::read_link(dir.join("..data")).expect("..data");
    assert_ne!(version, old_version);
    assert!(!dir.join(&old_version).exists(), "the old version removed");
    assert!(leftovers(&dir).is_empty());
    assert!(!read_token(&dir).is_empty());
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_start_spread_puts_first_refreshes_before_the_kubelets_then_follows_it() {
    fastrand::seed(11);
    let pods = vec!["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"];
    let count = pods.len();
    let running = Running::start(Setup {
        pods,
        spread_start: true,
        ..Setup::default()
    });
    running
        .wait_for_publications(count, Duration::from_secs(1))
        .await;
    // First refreshes: from halfway to the kubelet's time (240 s of 480 s) up to it.
    let firsts: Vec<f64> = running
        .publications()
        .iter()
        .map(|(_, event)| refresh_after_issue(event))
        .collect();
    for first in &firsts {
        assert!((240.0..=480.0).contains(first), "{firsts:?}");
    }
    let earliest = firsts.iter().copied().fold(f64::MAX, f64::min);
    let latest = firsts.iter().copied().fold(f64::MIN, f64::max);
    assert!(latest - earliest > 60.0, "not spread: {firsts:?}");

    // Each comes when it said; the next ones follow the kubelet's rule.
    let start = running.publications()[0].0;
    tokio::time::sleep(Duration::from_secs(481)).await;
    let publications = running.publications();
    assert_eq!(publications.len(), 2 * count);
    for (at, event) in &publications[count..] {
        let first = &publications[..count]
            .iter()
            .find(|(_, first)| first.pod == event.pod)
            .expect("first publication")
            .1;
        let due = refresh_after_issue(first);
        assert!((seconds_between(start, *at) - due).abs() <= 0.1, "{due}");
        assert!(WINDOW.contains(&refresh_after_issue(event)));
    }
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_a_request_hangs_stops_at_once_and_keeps_the_old_token() {
    let running = Running::start(Setup {
        script: vec![Answer::Grant, Answer::Hang],
        ..Setup::default()
    });
    running
        .wait_for_publications(1, Duration::from_secs(1))
        .await;
    let token = running.token(0);
    running.control.send(Control::RefreshAll).expect("control");
    running.wait_for_calls(2, Duration::from_secs(1)).await;
    let stopping = Instant::now();
    let running = running.stop().await;
    assert!(seconds_between(stopping, Instant::now()) <= SLACK);
    assert_eq!(running.token(0), token);
    assert_eq!(running.publications().len(), 1);
    assert!(leftovers(&running.dirs[0]).is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_writes_finishes_them_whole() {
    let pods = vec!["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
    let count = pods.len();
    // Shut down as the first rotation after the start is published: the writes of the other
    // volumes (fsync on: blocking threads) are in flight or about to start.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop = Arc::new(Mutex::new(Some(stop)));
    let mut running = Running::start_until(
        Setup {
            pods,
            fsync: true,
            on_rotation: Some(Box::new(move |published| {
                if published == count + 1 {
                    if let Some(stop) = stop.lock().expect("stop lock").take() {
                        let _ = stop.send(());
                    }
                }
            })),
            ..Setup::default()
        },
        async {
            let _ = stopped.await;
        },
    );
    running
        .wait_for_publications(count, Duration::from_secs(5))
        .await;
    running.control.send(Control::RefreshAll).expect("control");
    running.finished().await;

    // Each volume holds whole the token last published for it (or its first one, when its
    // answer was abandoned), and nothing half-written.
    let publications = running.publications();
    assert!(publications.len() > count, "the rotation was published");
    for (index, dir) in running.dirs.iter().enumerate() {
        let pod = format!("p{index}");
        let last = publications
            .iter()
            .rev()
            .find(|(_, event)| event.pod == pod)
            .and_then(|(_, event)| event.new_jti.clone())
            .expect("published once at least");
        assert_eq!(read_token(dir), format!("token-{last}"), "{pod}");
        assert!(leftovers(dir).is_empty(), "{pod}: {:?}", leftovers(dir));
    }
}

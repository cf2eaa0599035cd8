//! The refresher under steps of the wall clock, on tokio's paused time: a wall clock that follows
//! the paused monotonic clock plus steps the test sets, a scripted token source, real files.

use std::time::Duration;

use jiff::SignedDuration;
use tokio::time::Instant;

use super::test_fixture::{seconds_between, Running, Setup, LIFETIME_SECONDS, WINDOW};
use crate::clock::Clock;

/// A refresher of one 600 s token, once its first token is published.
async fn started() -> Running {
    let running = Running::start(Setup::default());
    running
        .wait_for_publications(1, Duration::from_secs(1))
        .await;
    running
}

#[tokio::test(start_paused = true)]
async fn a_step_forward_is_noticed_within_thirty_seconds() {
    let running = started().await;
    let (issued, first) = running.publications()[0].clone();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(running.publications().len(), 1, "nothing due yet");

    // A laptop resumed after an hour (or NTP set the clock forward): the token is past its
    // lifetime by the wall clock, as the API server sees it.
    running.clock.step(SignedDuration::from_hours(1));
    let stepped = Instant::now();
    running
        .wait_for_publications(2, Duration::from_secs(30))
        .await;
    let publications = running.publications();
    assert_eq!(
        publications.len(),
        2,
        "the token due after the step was not refreshed within 30 s"
    );
    let (at, second) = &publications[1];
    assert!(
        seconds_between(stepped, *at) <= 11.0,
        "refreshed {} s after the step",
        seconds_between(stepped, *at)
    );
    assert_eq!(second.old_jti, first.new_jti);
    // The next refresh follows the new token, by the stepped clock.
    let issued_now = second.status_expiration - SignedDuration::from_secs(LIFETIME_SECONDS);
    let next = second.next_refresh.duration_since(issued_now).as_secs_f64();
    assert!(WINDOW.contains(&next), "next refresh after {next} s");
    assert!(seconds_between(issued, *at) < 100.0);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_back_never_delays_the_refresh_past_the_real_lifetime() {
    let running = started().await;
    let (issued, first) = running.publications()[0].clone();
    tokio::time::sleep(Duration::from_secs(300)).await;
    // NTP sets the clock back by 200 s: it now reads 100 s after the issue time. By the wall
    // clock alone the refresh would come 80 s after the token's real end.
    running.clock.step(-SignedDuration::from_secs(200));
    running
        .wait_for_publications(2, Duration::from_secs(*WINDOW.end() as u64 - 300 + 1))
        .await;
    let publications = running.publications();
    assert_eq!(
        publications.len(),
        2,
        "not refreshed within the kubelet's window of the token's real lifetime"
    );
    let (at, second) = &publications[1];
    let age = seconds_between(issued, *at);
    assert!(
        (*WINDOW.start()..=*WINDOW.end() + 0.5).contains(&age),
        "refreshed {age} s after issue, outside the kubelet's window"
    );
    assert_eq!(second.old_jti, first.new_jti);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_back_before_the_issue_time_refreshes_at_once() {
    let running = started().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Set back by an hour: the token's issue time lies in the clock's future, and a verifier
    // on this clock would reject it (not before its `nbf`).
    running.clock.step(-SignedDuration::from_hours(1));
    let stepped = Instant::now();
    running
        .wait_for_publications(2, Duration::from_secs(30))
        .await;
    let publications = running.publications();
    assert_eq!(publications.len(), 2, "not refreshed within 30 s");
    let (at, second) = &publications[1];
    assert!(
        seconds_between(stepped, *at) <= 11.0,
        "refreshed {} s after the step",
        seconds_between(stepped, *at)
    );
    // The new token is issued by the stepped clock, and its refresh follows the kubelet's rule.
    let issued_now = second.status_expiration - SignedDuration::from_secs(LIFETIME_SECONDS);
    assert!(issued_now <= running.clock.now());
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert_eq!(running.publications().len(), 2, "refreshed once, not again");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_steps_the_refresh_comes_in_the_kubelets_window_only() {
    let running = started().await;
    let (issued, _) = running.publications()[0].clone();
    // The bounded sleeps wake the refresher every 10 s; none of them refreshes early.
    tokio::time::sleep(Duration::from_secs(*WINDOW.start() as u64 - 1)).await;
    assert_eq!(running.publications().len(), 1, "refreshed early");
    running
        .wait_for_publications(
            2,
            Duration::from_secs((*WINDOW.end() - *WINDOW.start()) as u64 + 2),
        )
        .await;
    let publications = running.publications();
    assert_eq!(publications.len(), 2);
    let age = seconds_between(issued, publications[1].0);
    assert!(
        (*WINDOW.start()..=*WINDOW.end() + 0.5).contains(&age),
        "refreshed {age} s after issue"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_back_never_delays_a_retry_before_the_first_token() {
    use super::test_fixture::Answer;
    use super::Backoff;
    use crate::source::SourceError;

    // The first request fails: no token in hand, a retry within the backoff's 10 s.
    let running = Running::start(Setup {
        backoff: Backoff {
            initial: SignedDuration::from_secs(10),
            cap: SignedDuration::from_secs(10),
        },
        script: vec![Answer::Fail(SourceError::Unavailable("down".into()))],
        ..Setup::default()
    });
    running.wait_for_calls(1, Duration::from_secs(1)).await;
    let failed = running.source.calls()[0].at;
    // Set back by an hour at once: by the wall clock the retry would wait an hour more.
    running.clock.step(-SignedDuration::from_hours(1));
    running
        .wait_for_publications(1, Duration::from_secs(30))
        .await;
    let publications = running.publications();
    assert_eq!(publications.len(), 1, "the retry was delayed by the step");
    let retried = running.source.calls()[1].at;
    assert!(
        seconds_between(failed, retried) <= 10.01,
        "retried {} s after the failure",
        seconds_between(failed, retried)
    );
    running.stop().await;
}

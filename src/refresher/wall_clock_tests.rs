//! The refresher under steps of the wall clock, on tokio's paused time: a wall clock that follows
//! the paused monotonic clock plus steps the test sets, a scripted token source, real files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

use super::{ProjectedVolume, Refresher, RotationEvent};
use crate::clock::Clock;
use crate::projection::spec::{plan_volume, token_volume_source, DataSources, PodInfo};
use crate::projection::{AtomicWriter, WriterOptions};
use crate::source::{SourceError, TokenGrant, TokenRequest, TokenSource};

const LIFETIME_SECONDS: i64 = 600;
/// The kubelet's refresh window of a 600 s token, in seconds after its issue: 80 % of it,
/// brought forward by up to 9 s of jitter.
const WINDOW: std::ops::RangeInclusive<u64> = 471..=480;

/// The wall clock as the paused monotonic clock moves it, plus the steps the test makes.
struct SteppingClock {
    start: Timestamp,
    origin: Instant,
    stepped: Mutex<SignedDuration>,
}

impl SteppingClock {
    fn new() -> Self {
        Self {
            start: Timestamp::from_second(1_700_000_000).expect("timestamp"),
            origin: Instant::now(),
            stepped: Mutex::new(SignedDuration::ZERO),
        }
    }

    fn step(&self, by: SignedDuration) {
        *self.stepped.lock().expect("clock lock") += by;
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> Timestamp {
        let passed = SignedDuration::try_from(self.origin.elapsed()).expect("elapsed");
        let stepped = *self.stepped.lock().expect("clock lock");
        self.start + passed + stepped
    }
}

/// Grants tokens issued at the clock's now, as an API server sharing that clock would.
struct ScriptedSource {
    clock: Arc<SteppingClock>,
    issued: AtomicU64,
}

impl TokenSource for ScriptedSource {
    async fn request_token(&self, request: &TokenRequest) -> Result<TokenGrant, SourceError> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let seconds = request.expiration_seconds;
        Ok(TokenGrant {
            token: format!("token-{n}"),
            expiration_timestamp: self.clock.now() + SignedDuration::from_secs(seconds),
            expiration_seconds: seconds,
            jwt_expiry: None,
            warn_after: None,
            jwt_issued_at: None,
            jti: Some(n.to_string()),
        })
    }
}

/// A publication, with when it happened on the monotonic clock.
type Published = Arc<Mutex<Vec<(Instant, RotationEvent)>>>;

/// A refresher of one 600 s token in a temporary directory, running; its publications.
struct Running {
    clock: Arc<SteppingClock>,
    published: Published,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Self {
        let clock = Arc::new(SteppingClock::new());
        let dir = tempfile::tempdir().expect("temp dir");
        let pod = PodInfo {
            namespace: "default".into(),
            name: "pod".into(),
            uid: "uid".into(),
            service_account: "default".into(),
            ..PodInfo::default()
        };
        let source = token_volume_source(None, LIFETIME_SECONDS);
        let plan = plan_volume("token", "token", &source, &pod, &DataSources::default())
            .expect("volume plan");
        let writer = AtomicWriter::new(
            dir.path(),
            WriterOptions {
                fsync: false,
                fs_group: None,
            },
        );
        let source = ScriptedSource {
            clock: clock.clone(),
            issued: AtomicU64::new(0),
        };
        let published: Published = Arc::default();
        let hook = published.clone();
        let refresher = Refresher::new(
            Arc::new(source),
            clock.clone(),
            vec![ProjectedVolume { pod, plan, writer }],
        )
        .on_rotation(move |event| {
            hook.lock()
                .expect("events lock")
                .push((Instant::now(), event.clone()));
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            refresher
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("refresher");
        });
        let running = Self {
            clock,
            published,
            stop: Some(stop),
            task,
            _dir: dir,
        };
        running
            .wait_for_publications(1, Duration::from_secs(1))
            .await;
        running
    }

    fn publications(&self) -> Vec<(Instant, RotationEvent)> {
        self.published.lock().expect("events lock").clone()
    }

    /// Lets paused time run until `count` tokens were published, for at most `within`.
    async fn wait_for_publications(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.publications().len() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("refresher task");
    }
}

fn seconds_between(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn a_step_forward_is_noticed_within_thirty_seconds() {
    let running = Running::start().await;
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
    assert!(
        (471.0..=480.0).contains(&next),
        "next refresh after {next} s"
    );
    assert!(seconds_between(issued, *at) < 100.0);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_back_never_delays_the_refresh_past_the_real_lifetime() {
    let running = Running::start().await;
    let (issued, first) = running.publications()[0].clone();
    tokio::time::sleep(Duration::from_secs(300)).await;
    // NTP sets the clock back by 200 s: it now reads 100 s after the issue time. By the wall
    // clock alone the refresh would come 80 s after the token's real end.
    running.clock.step(-SignedDuration::from_secs(200));
    running
        .wait_for_publications(2, Duration::from_secs(*WINDOW.end() - 300 + 1))
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
        (*WINDOW.start() as f64..=*WINDOW.end() as f64 + 0.5).contains(&age),
        "refreshed {age} s after issue, outside the kubelet's window"
    );
    assert_eq!(second.old_jti, first.new_jti);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_back_before_the_issue_time_refreshes_at_once() {
    let running = Running::start().await;
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
    let running = Running::start().await;
    let (issued, _) = running.publications()[0].clone();
    // The bounded sleeps wake the refresher every 10 s; none of them refreshes early.
    tokio::time::sleep(Duration::from_secs(*WINDOW.start() - 1)).await;
    assert_eq!(running.publications().len(), 1, "refreshed early");
    running
        .wait_for_publications(2, Duration::from_secs(*WINDOW.end() - *WINDOW.start() + 2))
        .await;
    let publications = running.publications();
    assert_eq!(publications.len(), 2);
    let age = seconds_between(issued, publications[1].0);
    assert!(
        (*WINDOW.start() as f64..=*WINDOW.end() as f64 + 0.5).contains(&age),
        "refreshed {age} s after issue"
    );
    running.stop().await;
}

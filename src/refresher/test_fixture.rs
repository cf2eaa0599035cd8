//! A running refresher in virtual time, for the scheduler's tests: tokio's paused clock for the
//! monotonic one, a wall clock that follows it plus the steps a test makes, a token source that
//! answers from a script and records each request, and real volumes in a temporary directory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::{Backoff, Control, ProjectedVolume, Refresher, RotationEvent, StatusBoard};
use crate::clock::Clock;
use crate::projection::spec::{plan_volume, token_volume_source, DataSources, PodInfo};
use crate::projection::{AtomicWriter, WriterOptions};
use crate::source::{SourceError, TokenGrant, TokenRequest, TokenSource};

/// The lifetime every test token asks for: the kubelet refreshes it 471 to 480 s after issue.
pub const LIFETIME_SECONDS: i64 = 600;
/// The kubelet's refresh window of a [`LIFETIME_SECONDS`] token, in seconds after its issue.
pub const WINDOW: std::ops::RangeInclusive<f64> = 471.0..=480.0;

/// How often a test looks for what it waits for, in virtual time.
const POLL: Duration = Duration::from_millis(5);

/// The wall clock as the paused monotonic clock moves it, plus the steps the test makes (a
/// `ManualClock` would stand still while virtual time passes).
pub struct SteppingClock {
    start: Timestamp,
    origin: Instant,
    stepped: Mutex<SignedDuration>,
}

impl SteppingClock {
    pub fn new() -> Self {
        Self {
            start: Timestamp::from_second(1_700_000_000).expect("timestamp"),
            origin: Instant::now(),
            stepped: Mutex::new(SignedDuration::ZERO),
        }
    }

    /// Sets the wall clock forward (positive) or back, as NTP or a resume would.
    pub fn step(&self, by: SignedDuration) {
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

/// One scripted answer to a token request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A token issued now (by the wall clock) for the lifetime asked.
    Grant,
    /// This failure.
    Fail(SourceError),
    /// No answer ever (a server that hangs).
    Hang,
}

/// A token request as the source saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub pod: String,
}

/// Answers requests from a script, in order, then grants; records every request.
pub struct ScriptedSource {
    clock: Arc<SteppingClock>,
    script: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<Call>>,
}

/// Tokens issued by every scripted source of the test binary: each token is new, also after a
/// restart (a payload the volume already holds is not published again).
static ISSUED: AtomicU64 = AtomicU64::new(0);

impl ScriptedSource {
    /// Appends answers to the script.
    pub fn then(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().expect("script lock").extend(answers);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }
}

impl TokenSource for ScriptedSource {
    async fn request_token(&self, request: &TokenRequest) -> Result<TokenGrant, SourceError> {
        let pod = request.bound_pod.as_ref().map(|pod| pod.name.clone());
        self.calls.lock().expect("calls lock").push(Call {
            at: Instant::now(),
            pod: pod.unwrap_or_default(),
        });
        let answer = self.script.lock().expect("script lock").pop_front();
        match answer.unwrap_or(Answer::Grant) {
            Answer::Grant => {}
            Answer::Fail(err) => return Err(err),
            Answer::Hang => std::future::pending().await,
        }
        let n = ISSUED.fetch_add(1, Ordering::Relaxed) + 1;
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

/// How to build the refresher under test.
pub struct Setup {
    /// One volume per pod, in the `default` namespace.
    pub pods: Vec<&'static str>,
    pub backoff: Backoff,
    pub spread_start: bool,
    /// fsync on: writes run on blocking threads (off: inline).
    pub fsync: bool,
    /// Answers for the first requests (the first projection's included).
    pub script: Vec<Answer>,
    /// Called after each publication, with how many there were so far.
    pub on_rotation: Option<Box<dyn Fn(usize) + Send + Sync>>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            pods: vec!["pod"],
            backoff: Backoff::default(),
            spread_start: false,
            fsync: false,
            script: Vec::new(),
            on_rotation: None,
        }
    }
}

/// A publication, with when it happened on the monotonic clock.
pub type Published = Arc<Mutex<Vec<(Instant, RotationEvent)>>>;

/// A refresher running on its own task, and what it did.
pub struct Running {
    pub clock: Arc<SteppingClock>,
    pub source: Arc<ScriptedSource>,
    pub control: UnboundedSender<Control>,
    pub status: StatusBoard,
    published: Published,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// Each volume's directory, in the order of `Setup::pods`.
    pub dirs: Vec<PathBuf>,
    _root: tempfile::TempDir,
}

impl Running {
    /// Starts the refresher; returns at once (the first projection runs on its task).
    pub fn start(setup: Setup) -> Self {
        Self::start_until(setup, std::future::pending())
    }

    /// Starts the refresher, which shuts down when `shutdown` completes (or on `stop`).
    pub fn start_until(
        setup: Setup,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), setup, shutdown)
    }

    /// Starts a new refresher over the volumes this one left (after `stop`): a restart.
    pub fn restart(self, setup: Setup) -> Self {
        Self::start_in(self._root, setup, std::future::pending())
    }

    fn start_in(
        root: tempfile::TempDir,
        setup: Setup,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        let clock = Arc::new(SteppingClock::new());
        let source = Arc::new(ScriptedSource {
            clock: clock.clone(),
            script: Mutex::new(setup.script.into()),
            calls: Mutex::default(),
        });
        let mut dirs = Vec::new();
        let volumes = setup
            .pods
            .iter()
            .map(|name| {
                let dir = root.path().join(name);
                // The volume's mount point exists before the kubelet writes it.
                std::fs::create_dir_all(&dir).expect("volume dir");
                dirs.push(dir.clone());
                volume(name, &dir, setup.fsync)
            })
            .collect();
        let published: Published = Arc::default();
        let hook = published.clone();
        let then = setup.on_rotation;
        let mut refresher = Refresher::new(source.clone(), clock.clone(), volumes)
            .with_backoff(setup.backoff)
            .on_rotation(move |event| {
                let mut published = hook.lock().expect("events lock");
                published.push((Instant::now(), event.clone()));
                if let Some(then) = &then {
                    then(published.len());
                }
            });
        if setup.spread_start {
            refresher = refresher.spread_start();
        }
        let control = refresher.control();
        let status = refresher.status_board();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                tokio::select! {
                    _ = stopped => {}
                    () = shutdown => {}
                }
            };
            refresher.run(shutdown).await.expect("refresher");
        });
        Self {
            clock,
            source,
            control,
            status,
            published,
            stop: Some(stop),
            task,
            dirs,
            _root: root,
        }
    }

    pub fn publications(&self) -> Vec<(Instant, RotationEvent)> {
        self.published.lock().expect("events lock").clone()
    }

    /// Lets virtual time run until `count` tokens were published, for at most `within`.
    pub async fn wait_for_publications(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.publications().len() < count && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lets virtual time run until the source saw `count` requests, for at most `within`.
    pub async fn wait_for_calls(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.source.calls().len() < count && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }

    /// The token in volume `index` as a reader gets it.
    pub fn token(&self, index: usize) -> String {
        read_token(&self.dirs[index])
    }

    /// Shuts the refresher down and waits for its end (within a virtual minute).
    pub async fn stop(mut self) -> Self {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finished().await;
        self
    }

    /// Waits for the refresher's own end (its `shutdown` completed), within a virtual minute.
    pub async fn finished(&mut self) {
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the refresher did not stop")
            .expect("refresher task");
    }
}

/// The kube-api-access-like volume of pod `name` (one 600 s token) written to `dir`.
fn volume(name: &str, dir: &Path, fsync: bool) -> ProjectedVolume {
    let pod = PodInfo {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        service_account: "default".into(),
        ..PodInfo::default()
    };
    let source = token_volume_source(None, LIFETIME_SECONDS);
    let plan = plan_volume("token", "token", &source, &pod, &DataSources::default()).expect("plan");
    let writer = AtomicWriter::new(
        dir,
        WriterOptions {
            fsync,
            fs_group: None,
        },
    );
    ProjectedVolume { pod, plan, writer }
}

pub fn read_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("token")).expect("token file")
}

/// Entries of `dir` that no complete volume holds: staging links, or version directories other
/// than the one `..data` points to.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let current = std::fs::read_link(dir.join("..data")).expect("..data link");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("volume dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy().into_owned();
        let published = name == "..data" || Path::new(&name) == current;
        if name.starts_with("..") && !published {
            found.push(name);
        }
    }
    found
}

/// Seconds from `from` to `to` on the monotonic clock.
pub fn seconds_between(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64()
}

//! `watch`: what a client library sees of a projected directory over time.
//!
//! [`snapshot`] reads a directory the way a careful client does (resolve `..data` once, read
//! through it); [`Tracker`] compares successive snapshots and decides which [`Event`]s happened:
//! a token rotation, a payload update without a new token, a broken layout, a recovery. The
//! tracker and the rendering are pure: snapshots and `now` are passed in.

pub mod readiness;
pub mod snapshot;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::projection::atomic_writer::DATA_DIR_NAME;

/// What `..data` is in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataLink {
    /// No `..data`: not (yet) a kubelet layout.
    Absent,
    /// A link to this version directory, which exists.
    Version(String),
    /// A link whose target does not exist.
    Dangling(String),
    /// Something that is not a symbolic link.
    NotALink,
    /// It could not be read (the message says why).
    Unreadable(String),
}

/// How a user-visible entry (`token`, `ca.crt`, ...) reaches its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// `name -> ..data/...`, and the target exists in the version `..data` points to: it
    /// changes with every `..data` swap, as the kubelet's links do.
    ThroughData,
    /// A link whose target does not exist.
    Dangling { target: String },
    /// A link that does not go through `..data` (e.g. straight into one version directory, or
    /// elsewhere): it does not follow swaps.
    OtherLink { target: String },
    /// A regular file or directory: it changes only when written in place.
    Plain,
}

/// One user-visible entry of the directory (names starting with `..` belong to the writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    /// SHA-256 of the file's content as read through the snapshot's `..data` version; `None`
    /// for directories, dangling links and unreadable files.
    pub digest: Option<[u8; 32]>,
    /// What the entry resolves to when that is neither a regular file nor a directory (`a
    /// FIFO`, `a socket`, `a device file`): a client opening it would wait or fail. Not read.
    pub not_regular: Option<&'static str>,
}

/// The token file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// No such entry.
    Absent,
    /// The entry exists but reading it failed (the message says why).
    Unreadable(String),
    /// The entry is not a regular file (`a FIFO`, `a directory`, ...), so it was not opened.
    NotRegular(&'static str),
    /// Read, but not a JWT (the message says which part is wrong, never quotes the token).
    Invalid(String),
    Valid(TokenInfo),
}

/// What `watch` keeps of a token: its claims of interest and a digest to tell tokens apart
/// (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub digest: [u8; 32],
    pub jti: Option<String>,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub warn_after: Option<Timestamp>,
}

/// One reading of the directory, made through a single resolution of `..data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Whether the directory exists at all.
    pub exists: bool,
    pub data: DataLink,
    /// User-visible entries, sorted by name.
    pub entries: Vec<Entry>,
    /// Top-level names inside the version directory `..data` points to (empty without one).
    pub version_names: Vec<String>,
    /// The token's path inside the directory (for messages).
    pub token_path: String,
    pub token: TokenState,
}

impl Snapshot {
    /// The version directory, when `..data` resolves.
    pub fn version(&self) -> Option<&str> {
        match &self.data {
            DataLink::Version(v) => Some(v),
            _ => None,
        }
    }

    /// What makes this layout unusable for a client right now. `had_token`: a token was seen
    /// before, so its absence is a failure rather than a directory still being set up.
    pub fn errors(&self, had_token: bool) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.exists {
            if had_token {
                errors.push("the directory does not exist any more".to_owned());
            }
            return errors;
        }
        match &self.data {
            DataLink::Dangling(target) => errors.push(format!(
                "{DATA_DIR_NAME} is a dangling symlink to {target}"
            )),
            DataLink::NotALink => errors.push(format!(
                "{DATA_DIR_NAME} is not a symbolic link (the kubelet's is a link to a version directory)"
            )),
            DataLink::Unreadable(why) => errors.push(format!("cannot read {DATA_DIR_NAME}: {why}")),
            DataLink::Absent | DataLink::Version(_) => {}
        }
        for entry in &self.entries {
            if let EntryKind::Dangling { target } = &entry.kind {
                errors.push(format!("{} is a dangling symlink to {target}", entry.name));
            }
            // The token's own entry is reported with the token, below.
            if let Some(kind) = entry.not_regular.filter(|_| entry.name != self.token_path) {
                errors.push(format!("{} is {kind}, not a regular file", entry.name));
            }
        }
        // A name of the version with no user-visible link: clients cannot open it.
        for name in &self.version_names {
            if !self.entries.iter().any(|e| &e.name == name) {
                errors.push(format!(
                    "{name} is in {DATA_DIR_NAME} but has no link {name} -> {DATA_DIR_NAME}/{name}"
                ));
            }
        }
        let dangling_token = self.entries.iter().any(|e| {
            top_level(&self.token_path) == e.name && matches!(e.kind, EntryKind::Dangling { .. })
        });
        match &self.token {
            TokenState::Absent if dangling_token => {}
            TokenState::Absent => {
                // Before any token, an empty directory or one without `..data` is being set up.
                if had_token || self.data != DataLink::Absent {
                    errors.push(format!("no {} in the directory", self.token_path));
                }
            }
            TokenState::Unreadable(why) => {
                errors.push(format!("cannot read {}: {why}", self.token_path))
            }
            TokenState::NotRegular(kind) => {
                errors.push(format!("{} is {kind}, not a regular file", self.token_path))
            }
            TokenState::Invalid(why) => errors.push(format!(
                "{} does not parse as a token: {why}",
                self.token_path
            )),
            TokenState::Valid(_) => {}
        }
        errors
    }

    /// Why the visible files do not all change together with `..data` (empty when they do).
    fn layout_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.data == DataLink::Absent {
            problems.push(format!(
                "no {DATA_DIR_NAME}: files are not swapped together, a reader may mix old and new"
            ));
        }
        for entry in &self.entries {
            match &entry.kind {
                EntryKind::ThroughData | EntryKind::Dangling { .. } => {}
                EntryKind::OtherLink { target } => problems.push(format!(
                    "{} links to {target}, not through {DATA_DIR_NAME}: it does not follow swaps",
                    entry.name
                )),
                EntryKind::Plain => problems.push(format!(
                    "{} is not a link into {DATA_DIR_NAME}: it does not change with the payload",
                    entry.name
                )),
            }
        }
        problems
    }

    fn digests(&self) -> BTreeMap<&str, Option<[u8; 32]>> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.digest))
            .collect()
    }
}

/// The first path element: the user-visible entry a payload path lives under.
pub fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// What happened between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A new token (different bytes) is readable.
    Rotation {
        time: Timestamp,
        /// `None` when no token was seen before (the directory's first token).
        old_jti: Option<String>,
        new_jti: Option<String>,
        iat: Option<Timestamp>,
        exp: Option<Timestamp>,
        warnafter: Option<Timestamp>,
        /// Every file of the payload changed together: one `..data` swap, every visible name a
        /// link through `..data`, nothing written in place.
        consistent: bool,
        old_data_dir: Option<String>,
        new_data_dir: Option<String>,
        /// Visible names whose content (or presence) changed.
        changed: Vec<String>,
        /// Why `consistent` is false.
        problems: Vec<String>,
    },
    /// The payload changed but the token did not (e.g. a new `ca.crt`).
    Update {
        time: Timestamp,
        jti: Option<String>,
        consistent: bool,
        old_data_dir: Option<String>,
        new_data_dir: Option<String>,
        changed: Vec<String>,
        problems: Vec<String>,
    },
    /// The layout is unusable for a client (reported once per distinct set of errors).
    Error {
        time: Timestamp,
        errors: Vec<String>,
    },
    /// A usable layout again after errors.
    Recovered {
        time: Timestamp,
        jti: Option<String>,
        data_dir: Option<String>,
    },
}

impl Event {
    /// The `event` field of the JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Rotation { .. } => "rotation",
            Event::Update { .. } => "update",
            Event::Error { .. } => "error",
            Event::Recovered { .. } => "recovered",
        }
    }

    pub fn is_rotation(&self) -> bool {
        matches!(self, Event::Rotation { .. })
    }

    /// An error event, or a change whose files did not change together.
    pub fn is_problem(&self) -> bool {
        match self {
            Event::Rotation { consistent, .. } | Event::Update { consistent, .. } => !consistent,
            Event::Error { .. } => true,
            Event::Recovered { .. } => false,
        }
    }
}

/// The last usable state: what a change is measured against.
#[derive(Debug, Clone)]
struct Good {
    token: TokenInfo,
    version: Option<String>,
    digests: BTreeMap<String, Option<[u8; 32]>>,
}

/// Turns successive snapshots of one directory into events.
#[derive(Debug, Default)]
pub struct Tracker {
    last_good: Option<Good>,
    /// The errors last reported; empty while the layout is usable.
    errors: Vec<String>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a token has been seen (so its absence is an error).
    pub fn had_token(&self) -> bool {
        self.last_good.is_some()
    }

    /// The token last seen in a usable layout.
    pub fn current(&self) -> Option<&TokenInfo> {
        self.last_good.as_ref().map(|g| &g.token)
    }

    /// The first snapshot: a usable one becomes the baseline without an event (the token that
    /// was there when watching began is no rotation); a broken one is reported.
    pub fn start(&mut self, snapshot: &Snapshot, now: Timestamp) -> Vec<Event> {
        let errors = snapshot.errors(false);
        if !errors.is_empty() {
            self.errors = errors.clone();
            return vec![Event::Error { time: now, errors }];
        }
        if let TokenState::Valid(token) = &snapshot.token {
            self.last_good = Some(good(snapshot, token));
        }
        Vec::new()
    }

    /// Every event between the previous snapshot and this one.
    pub fn observe(&mut self, snapshot: &Snapshot, now: Timestamp) -> Vec<Event> {
        let errors = snapshot.errors(self.had_token());
        if !errors.is_empty() {
            if errors == self.errors {
                return Vec::new();
            }
            self.errors = errors.clone();
            return vec![Event::Error { time: now, errors }];
        }
        let TokenState::Valid(token) = &snapshot.token else {
            // Still being set up (no token yet, and nothing wrong with that).
            self.errors.clear();
            return Vec::new();
        };
        let mut events = Vec::new();
        if !std::mem::take(&mut self.errors).is_empty() {
            events.push(Event::Recovered {
                time: now,
                jti: token.jti.clone(),
                data_dir: snapshot.version().map(str::to_owned),
            });
        }
        let new = good(snapshot, token);
        let old_version = self.last_good.as_ref().and_then(|g| g.version.clone());
        let changed = match &self.last_good {
            Some(old) => changed_names(&old.digests, &new.digests),
            None => new.digests.keys().cloned().collect(),
        };
        let swapped = self
            .last_good
            .as_ref()
            .is_none_or(|old| old.version != new.version);
        let token_changed = self
            .last_good
            .as_ref()
            .is_none_or(|old| old.token.digest != token.digest);

        let mut problems = snapshot.layout_problems();
        if !swapped && !changed.is_empty() && snapshot.data != DataLink::Absent {
            problems.insert(
                0,
                format!(
                    "{} changed without a {DATA_DIR_NAME} swap (written in place)",
                    changed.join(", ")
                ),
            );
        }
        if token_changed {
            events.push(Event::Rotation {
                time: now,
                old_jti: self.last_good.as_ref().and_then(|g| g.token.jti.clone()),
                new_jti: token.jti.clone(),
                iat: token.issued_at,
                exp: token.expires_at,
                warnafter: token.warn_after,
                consistent: problems.is_empty(),
                old_data_dir: old_version,
                new_data_dir: new.version.clone(),
                changed,
                problems,
            });
        } else if swapped || !changed.is_empty() {
            events.push(Event::Update {
                time: now,
                jti: token.jti.clone(),
                consistent: problems.is_empty(),
                old_data_dir: old_version,
                new_data_dir: new.version.clone(),
                changed,
                problems,
            });
        }
        self.last_good = Some(new);
        events
    }
}

fn good(snapshot: &Snapshot, token: &TokenInfo) -> Good {
    Good {
        token: token.clone(),
        version: snapshot.version().map(str::to_owned),
        digests: snapshot
            .digests()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

/// Names added, removed, or with different content.
fn changed_names(
    old: &BTreeMap<String, Option<[u8; 32]>>,
    new: &BTreeMap<String, Option<[u8; 32]>>,
) -> Vec<String> {
    let mut names: Vec<String> = new
        .iter()
        .filter(|(name, digest)| old.get(*name) != Some(digest))
        .map(|(name, _)| name.clone())
        .collect();
    names.extend(old.keys().filter(|n| !new.contains_key(*n)).cloned());
    names.sort();
    names
}

/// The environment of `watch --exec` for one event (the command adds the directory and token
/// path). Times are RFC 3339; absent values are left unset rather than empty.
pub fn exec_env(event: &Event) -> Vec<(&'static str, String)> {
    let mut env = vec![("PROJECTED_TOKEN_EVENT", event.kind().to_owned())];
    if let Ok(json) = serde_json::to_string(event) {
        env.push(("PROJECTED_TOKEN_EVENT_JSON", json));
    }
    let mut set = |name: &'static str, value: Option<String>| {
        if let Some(value) = value {
            env.push((name, value));
        }
    };
    let time = |t: &Option<Timestamp>| t.map(|t| t.to_string());
    match event {
        Event::Rotation {
            old_jti,
            new_jti,
            iat,
            exp,
            warnafter,
            consistent,
            new_data_dir,
            ..
        } => {
            set("PROJECTED_TOKEN_JTI", new_jti.clone());
            set("PROJECTED_TOKEN_OLD_JTI", old_jti.clone());
            set("PROJECTED_TOKEN_ISSUED_AT", time(iat));
            set("PROJECTED_TOKEN_EXPIRES_AT", time(exp));
            set("PROJECTED_TOKEN_WARN_AFTER", time(warnafter));
            set("PROJECTED_TOKEN_CONSISTENT", Some(consistent.to_string()));
            set("PROJECTED_TOKEN_DATA_DIR", new_data_dir.clone());
        }
        Event::Update {
            jti,
            consistent,
            new_data_dir,
            ..
        } => {
            set("PROJECTED_TOKEN_JTI", jti.clone());
            set("PROJECTED_TOKEN_CONSISTENT", Some(consistent.to_string()));
            set("PROJECTED_TOKEN_DATA_DIR", new_data_dir.clone());
        }
        Event::Error { errors, .. } => set("PROJECTED_TOKEN_ERROR", Some(errors.join("; "))),
        Event::Recovered { jti, data_dir, .. } => {
            set("PROJECTED_TOKEN_JTI", jti.clone());
            set("PROJECTED_TOKEN_DATA_DIR", data_dir.clone());
        }
    }
    env
}

/// One line of `watch`'s text output (no newline). Never contains a token.
pub fn render_text(event: &Event) -> String {
    let time = |t: &Option<Timestamp>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
    let text = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let list = |names: &[String]| {
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(",")
        }
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let problems = |p: &[String]| {
        if p.is_empty() {
            String::new()
        } else {
            format!(" problems: {}", p.join("; "))
        }
    };
    match event {
        Event::Rotation {
            time: at,
            old_jti,
            new_jti,
            iat,
            exp,
            warnafter,
            consistent,
            old_data_dir,
            new_data_dir,
            changed,
            problems: p,
        } => format!(
            "{at} rotation old_jti={} new_jti={} iat={} exp={} warnafter={} consistent={} data={}->{} changed={}{}",
            text(old_jti),
            text(new_jti),
            time(iat),
            time(exp),
            time(warnafter),
            yes_no(*consistent),
            text(old_data_dir),
            text(new_data_dir),
            list(changed),
            problems(p),
        ),
        Event::Update {
            time: at,
            jti,
            consistent,
            old_data_dir,
            new_data_dir,
            changed,
            problems: p,
        } => format!(
            "{at} update jti={} consistent={} data={}->{} changed={}{}",
            text(jti),
            yes_no(*consistent),
            text(old_data_dir),
            text(new_data_dir),
            list(changed),
            problems(p),
        ),
        Event::Error { time: at, errors } => format!("{at} error {}", errors.join("; ")),
        Event::Recovered {
            time: at,
            jti,
            data_dir,
        } => format!("{at} recovered jti={} data={}", text(jti), text(data_dir)),
    }
}

#[cfg(test)]
mod tests;

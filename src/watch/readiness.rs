//! Whether a projected directory is usable by a client right now: `probe --dir`'s verdict, from
//! one [`Snapshot`] and `now` (pure; the snapshot is read elsewhere).

use jiff::Timestamp;

use super::{DataLink, Snapshot, TokenState};
use crate::projection::atomic_writer::DATA_DIR_NAME;

/// Files an in-cluster client reads besides the token; where the volume has them, they must be
/// readable too (a client that finds the token but not `ca.crt` still fails).
const COMPANION_FILES: [&str; 2] = ["ca.crt", "namespace"];

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A client can start now: the token and its companions are readable through one version.
    Ready {
        jti: Option<String>,
        /// The effective expiry: the earlier of `exp` and `warnafter`; `None` for a token with
        /// neither (a legacy Secret-based token never expires).
        expires_at: Option<Timestamp>,
    },
    /// Why not, in one line (never the token's content).
    NotReady(String),
}

/// `probe --dir`'s rule: the kubelet's layout (`..data` resolving to a version), no broken name,
/// the token a JWT before its effective expiry (the earlier of `exp` and `warnafter`), `ca.crt` and `namespace` readable where present.
pub fn readiness(snapshot: &Snapshot, now: Timestamp) -> Readiness {
    if !snapshot.exists {
        return Readiness::NotReady("the directory does not exist (yet)".to_owned());
    }
    if snapshot.data == DataLink::Absent {
        return Readiness::NotReady(format!(
            "no {DATA_DIR_NAME} yet: the first write has not finished (a kubelet-style writer \
             swaps {DATA_DIR_NAME} in last)"
        ));
    }
    // Layout errors and the token's own (absent, unreadable, not a JWT), as `watch` reports them;
    // `had_token` so that a missing token counts as one.
    let errors = snapshot.errors(true);
    if !errors.is_empty() {
        return Readiness::NotReady(errors.join("; "));
    }
    let TokenState::Valid(token) = &snapshot.token else {
        // `errors` reports every other state; kept in case it changes.
        return Readiness::NotReady(format!("no usable {}", snapshot.token_path));
    };
    // The effective expiry, as the sidecar's `/readyz` has it: an extended token (the 3607
    // extension) stays accepted until `exp`, but past `warnafter` every use is a stale one.
    let end = match (token.expires_at, token.warn_after) {
        (Some(exp), Some(warn)) => Some(exp.min(warn)),
        (exp, warn) => exp.or(warn),
    };
    if let Some(end) = end.filter(|end| *end <= now) {
        let what = if token.warn_after == Some(end) && token.expires_at != Some(end) {
            "passed its warnafter"
        } else {
            "expired"
        };
        return Readiness::NotReady(format!(
            "{} {what} at {end} (now {now}): the writer has not replaced it",
            snapshot.token_path
        ));
    }
    for name in COMPANION_FILES {
        let unreadable = snapshot
            .entries
            .iter()
            .any(|e| e.name == name && e.digest.is_none());
        if unreadable {
            return Readiness::NotReady(format!("{name} is not a readable file"));
        }
    }
    Readiness::Ready {
        jti: token.jti.clone(),
        expires_at: end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Entry, EntryKind, TokenInfo};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("timestamp")
    }

    fn linked(name: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            kind: EntryKind::ThroughData,
            digest: Some([7; 32]),
            not_regular: None,
        }
    }

    fn token(expires_at: Option<i64>) -> TokenState {
        extended(expires_at, None)
    }

    fn extended(expires_at: Option<i64>, warn_after: Option<i64>) -> TokenState {
        TokenState::Valid(TokenInfo {
            digest: [1; 32],
            jti: Some("jti-1".to_owned()),
            issued_at: Some(at(1_000)),
            expires_at: expires_at.map(at),
            warn_after: warn_after.map(at),
        })
    }

    /// What the emulator writes: `..data`, `ca.crt`, `namespace`, `token`, expiring at 2000.
    fn written() -> Snapshot {
        Snapshot {
            exists: true,
            data: DataLink::Version("..2026_01_01_00_00_00.1".to_owned()),
            entries: vec![linked("ca.crt"), linked("namespace"), linked("token")],
            version_names: vec!["ca.crt".into(), "namespace".into(), "token".into()],
            token_path: "token".to_owned(),
            token: token(Some(2_000)),
        }
    }

    fn reason(snapshot: &Snapshot, now: i64) -> String {
        match readiness(snapshot, at(now)) {
            Readiness::NotReady(why) => why,
            ready => panic!("expected not ready, got {ready:?}"),
        }
    }

    #[test]
    fn a_written_volume_with_a_live_token_is_ready() {
        assert_eq!(
            readiness(&written(), at(1_500)),
            Readiness::Ready {
                jti: Some("jti-1".to_owned()),
                expires_at: Some(at(2_000)),
            }
        );
        // A legacy token has no `exp`: never expired.
        let mut legacy = written();
        legacy.token = token(None);
        assert!(matches!(
            readiness(&legacy, at(1_000_000)),
            Readiness::Ready {
                expires_at: None,
                ..
            }
        ));
        // A volume with only the token (e.g. a sidecar's `--pod` volume) needs no companions.
        let mut alone = written();
        alone.entries = vec![linked("token")];
        alone.version_names = vec!["token".into()];
        assert!(matches!(
            readiness(&alone, at(1_500)),
            Readiness::Ready { .. }
        ));
    }

    #[test]
    fn before_the_first_write_it_is_not_ready() {
        let mut missing = written();
        missing.exists = false;
        assert!(reason(&missing, 1_500).contains("does not exist"));

        let empty = Snapshot {
            exists: true,
            data: DataLink::Absent,
            entries: Vec::new(),
            version_names: Vec::new(),
            token_path: "token".to_owned(),
            token: TokenState::Absent,
        };
        assert!(reason(&empty, 1_500).contains("no ..data yet"));

        // A plain token file without `..data` is not the kubelet layout either.
        let mut plain = written();
        plain.data = DataLink::Absent;
        plain.version_names.clear();
        assert!(reason(&plain, 1_500).contains("no ..data yet"));
    }

    #[test]
    fn an_expired_token_is_not_ready() {
        assert!(reason(&written(), 2_000).contains("token expired at"));
        assert!(reason(&written(), 2_001).contains("the writer has not replaced it"));
        assert!(matches!(
            readiness(&written(), at(1_999)),
            Readiness::Ready { .. }
        ));
    }

    #[test]
    fn an_extended_token_past_its_warnafter_is_not_ready() {
        // The 3607 extension: `exp` a year out, `warnafter` at the nominal expiry.
        let mut snapshot = written();
        snapshot.token = extended(Some(1_000 + 31_536_000), Some(4_607));
        assert_eq!(
            readiness(&snapshot, at(4_606)),
            Readiness::Ready {
                jti: Some("jti-1".to_owned()),
                expires_at: Some(at(4_607)),
            }
        );
        let why = reason(&snapshot, 4_607);
        assert!(why.starts_with("token passed its warnafter at"), "{why}");
        // A `warnafter` after `exp` (not what an issuer writes) does not extend it.
        snapshot.token = extended(Some(2_000), Some(3_000));
        assert!(reason(&snapshot, 2_500).starts_with("token expired at"));
    }

    #[test]
    fn a_bad_token_or_layout_is_not_ready_and_says_why() {
        let mut absent = written();
        absent.token = TokenState::Absent;
        absent.entries.pop();
        absent.version_names.pop();
        assert_eq!(reason(&absent, 1_500), "no token in the directory");

        let mut invalid = written();
        invalid.token = TokenState::Invalid("not three parts".to_owned());
        assert_eq!(
            reason(&invalid, 1_500),
            "token does not parse as a token: not three parts"
        );

        let mut unreadable = written();
        unreadable.token = TokenState::Unreadable("permission denied".to_owned());
        assert!(reason(&unreadable, 1_500).contains("cannot read token"));

        let mut dangling = written();
        dangling.data = DataLink::Dangling("..gone".to_owned());
        assert!(reason(&dangling, 1_500).contains("..data is a dangling symlink"));

        let mut no_ca = written();
        no_ca.entries[0].digest = None;
        assert_eq!(reason(&no_ca, 1_500), "ca.crt is not a readable file");

        let mut no_namespace = written();
        no_namespace.entries[1].digest = None;
        assert_eq!(
            reason(&no_namespace, 1_500),
            "namespace is not a readable file"
        );
    }
}

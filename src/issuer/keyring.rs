//! The signing key in use and the keys tokens are verified with, which change when the key is
//! rotated at run time (`ctl rotate-key`).
//!
//! A rotation makes a new key the signing key; the old one stays published (in the JWKS, and so
//! accepted) until the end of its grace period, or is dropped at once to simulate a bad rollout.
//! Which keys are published at a time `t` is a pure function of the ring ([`published_jwks`]);
//! the verification [`KeySet`] and the JWKS bytes are rebuilt only when that set changes.

use std::sync::{Arc, RwLock};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::jwks::jwk_set_json;
use super::keys::{Jwk, SigningKey};
use super::mint::Issuer;
use super::verify::{KeySet, VerifyError};

/// How many retired keys the ring remembers (for status); older ones are forgotten once dropped.
const REMEMBERED_RETIRED_KEYS: usize = 16;

/// A former signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    pub jwk: Jwk,
    pub retired_at: Timestamp,
    /// The end of its grace period: published (and accepted) while `now < published_until`.
    pub published_until: Timestamp,
}

impl RetiredKey {
    pub fn is_published(&self, now: Timestamp) -> bool {
        now < self.published_until
    }
}

/// The keys published at `now`, in the JWKS's order: the signing key, the retired keys still in
/// their grace period (newest first), then the extra verification keys. A kid appears once.
pub fn published_jwks<'a>(
    current: &'a Jwk,
    retired: &'a [RetiredKey],
    extra: &'a [Jwk],
    now: Timestamp,
) -> Vec<&'a Jwk> {
    let mut keys = vec![current];
    let in_grace = retired
        .iter()
        .rev()
        .filter(|r| r.is_published(now))
        .map(|r| &r.jwk);
    for jwk in in_grace.chain(extra) {
        if !keys.iter().any(|k| k.kid == jwk.kid) {
            keys.push(jwk);
        }
    }
    keys
}

/// The published keys, prepared: for verification, and as the JWKS bytes.
#[derive(Debug)]
pub struct Published {
    pub kids: Vec<String>,
    pub keys: KeySet,
    /// `/openid/v1/jwks`, in upstream's field order.
    pub jwks_json: String,
    /// The JOSE algorithms of the published keys, deduplicated, in key order.
    pub algorithms: Vec<String>,
}

impl Published {
    fn build(jwks: &[&Jwk]) -> Result<Self, VerifyError> {
        let owned: Vec<Jwk> = jwks.iter().map(|&k| k.clone()).collect();
        let jwks_json = jwk_set_json(&owned);
        let document = serde_json::from_str(&jwks_json)
            .map_err(|e| VerifyError::Jwks(format!("re-reading our own JWKS: {e}")))?;
        let mut algorithms: Vec<String> = Vec::new();
        for jwk in jwks {
            if !algorithms.contains(&jwk.alg) {
                algorithms.push(jwk.alg.clone());
            }
        }
        Ok(Self {
            kids: jwks.iter().map(|k| k.kid.clone()).collect(),
            keys: KeySet::from_jwks(&document)?,
            jwks_json,
            algorithms,
        })
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    pub old_kid: String,
    pub new_kid: String,
    pub algorithm: String,
    /// When the old key leaves the JWKS (`at` itself when it was dropped at once).
    pub old_published_until: Timestamp,
}

/// The ring's state for status reports. Never key material beyond public kids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRingStatus {
    pub current: KeyStatus,
    pub retired: Vec<KeyStatus>,
    /// `--extra-verification-keys`: published for as long as the process runs.
    pub extra: Vec<KeyStatus>,
    /// Kids in the JWKS now.
    pub published: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub kid: String,
    pub algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_until: Option<Timestamp>,
    pub published: bool,
}

struct Ring {
    issuer: Arc<Issuer>,
    retired: Vec<RetiredKey>,
    extra: Vec<Jwk>,
    /// The prepared keys of the last published set; rebuilt when the set of kids changes.
    cache: Arc<Published>,
    /// The same for the remembered former keys no longer published.
    dropped_cache: Arc<Published>,
}

/// The issuer (with its current signing key) and the published keys, shared by the token
/// source, minting and verification.
pub struct KeyRing {
    ring: RwLock<Ring>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.read();
        f.debug_struct("KeyRing")
            .field("current", &ring.issuer.key.kid())
            .field("retired", &ring.retired.len())
            .field("extra", &ring.extra.len())
            .finish()
    }
}

impl KeyRing {
    /// A ring signing with `issuer`'s key and also accepting `extra` keys.
    pub fn new(issuer: Issuer, extra: Vec<Jwk>) -> Result<Self, VerifyError> {
        let jwks = published_jwks(
            issuer.key.public_jwk_ref(),
            &[],
            &extra,
            Timestamp::UNIX_EPOCH,
        );
        let cache = Arc::new(Published::build(&jwks)?);
        let dropped_cache = Arc::new(Published::build(&[])?);
        Ok(Self {
            ring: RwLock::new(Ring {
                issuer: Arc::new(issuer),
                retired: Vec::new(),
                extra,
                cache,
                dropped_cache,
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        // The ring is plain data; a panic while it was held cannot leave it half-changed in a
        // way that matters more than refusing every request would.
        self.ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Ring> {
        self.ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The issuer to mint with now (its key is the current signing key).
    pub fn issuer(&self) -> Arc<Issuer> {
        self.read().issuer.clone()
    }

    /// The keys published at `now`, prepared for verification. Called for every request: it
    /// only compares kids unless the published set changed.
    pub fn published(&self, now: Timestamp) -> Arc<Published> {
        let fresh = {
            let ring = self.read();
            let current = ring.issuer.key.public_jwk_ref();
            let jwks = published_jwks(current, &ring.retired, &ring.extra, now);
            if same_kids(&jwks, &ring.cache.kids) {
                return ring.cache.clone();
            }
            // Every key of the set was prepared once already, so this cannot fail in practice;
            // if it did, the previous set is better than none.
            match Published::build(&jwks) {
                Ok(fresh) => Arc::new(fresh),
                Err(_) => return ring.cache.clone(),
            }
        };
        // Another request may have rebuilt it meanwhile; either result is the same set.
        self.write().cache = fresh.clone();
        fresh
    }

    /// Whether `token`'s signature verifies with a former signing key the ring still remembers
    /// (the last 16) but no longer publishes at `now`: dropped at once (`--grace 0`) or past its
    /// grace period. Such a token is ours, though rejected, so its use can be accounted to its
    /// client. Only the signature is checked: the caller decides what else to believe.
    pub fn signed_by_dropped_key(&self, token: &str, now: Timestamp) -> bool {
        let dropped = {
            let ring = self.read();
            let current = ring.issuer.key.public_jwk_ref();
            let published = published_jwks(current, &ring.retired, &ring.extra, now);
            let dropped: Vec<&Jwk> = ring
                .retired
                .iter()
                .map(|r| &r.jwk)
                .filter(|jwk| !published.iter().any(|p| p.kid == jwk.kid))
                .collect();
            if dropped.is_empty() {
                return false;
            }
            if same_kids(&dropped, &ring.dropped_cache.kids) {
                return ring.dropped_cache.keys.verify_signature(token).is_ok();
            }
            match Published::build(&dropped) {
                Ok(fresh) => Arc::new(fresh),
                Err(_) => return false,
            }
        };
        let verified = dropped.keys.verify_signature(token).is_ok();
        self.write().dropped_cache = dropped;
        verified
    }

    /// Makes `key` the signing key at `now`; the old key stays published for `grace` (zero or
    /// negative: dropped at once, so its tokens stop authenticating).
    pub fn rotate(&self, key: SigningKey, grace: SignedDuration, now: Timestamp) -> KeyRotation {
        let mut ring = self.write();
        let old = ring.issuer.key.clone();
        let published_until = now
            .checked_add(grace.max(SignedDuration::ZERO))
            .unwrap_or(Timestamp::MAX);
        let new_kid = key.kid().to_owned();
        let algorithm = key.algorithm().jose_name().to_owned();
        ring.issuer = Arc::new(Issuer::new(ring.issuer.config.clone(), Arc::new(key)));
        ring.retired.push(RetiredKey {
            jwk: old.public_jwk(),
            retired_at: now,
            published_until,
        });
        if ring.retired.len() > REMEMBERED_RETIRED_KEYS {
            // Forget the oldest key no longer published (never one still in its grace period).
            if let Some(index) = ring.retired.iter().position(|r| !r.is_published(now)) {
                ring.retired.remove(index);
            }
        }
        KeyRotation {
            old_kid: old.kid().to_owned(),
            new_kid,
            algorithm,
            old_published_until: published_until,
        }
    }

    /// The current, retired and extra keys at `now`.
    pub fn status(&self, now: Timestamp) -> KeyRingStatus {
        let ring = self.read();
        let current_jwk = ring.issuer.key.public_jwk();
        let published: Vec<String> = published_jwks(&current_jwk, &ring.retired, &ring.extra, now)
            .into_iter()
            .map(|k| k.kid.clone())
            .collect();
        let is_published = |kid: &str| published.iter().any(|k| k == kid);
        KeyRingStatus {
            current: KeyStatus {
                kid: current_jwk.kid.clone(),
                algorithm: current_jwk.alg.clone(),
                retired_at: None,
                published_until: None,
                published: true,
            },
            retired: ring
                .retired
                .iter()
                .rev()
                .map(|r| KeyStatus {
                    kid: r.jwk.kid.clone(),
                    algorithm: r.jwk.alg.clone(),
                    retired_at: Some(r.retired_at),
                    published_until: Some(r.published_until),
                    published: is_published(&r.jwk.kid),
                })
                .collect(),
            extra: ring
                .extra
                .iter()
                .map(|k| KeyStatus {
                    kid: k.kid.clone(),
                    algorithm: k.alg.clone(),
                    retired_at: None,
                    published_until: None,
                    published: true,
                })
                .collect(),
            published,
        }
    }
}

fn same_kids(jwks: &[&Jwk], kids: &[String]) -> bool {
    jwks.len() == kids.len() && jwks.iter().zip(kids).all(|(k, kid)| &k.kid == kid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::{IssuerConfig, KeyAlgorithm, DEFAULT_ISSUER};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn key() -> SigningKey {
        SigningKey::generate(KeyAlgorithm::Es256).unwrap()
    }

    fn ring(extra: Vec<Jwk>) -> (KeyRing, String) {
        let first = key();
        let kid = first.kid().to_owned();
        let issuer = Issuer::new(IssuerConfig::new(DEFAULT_ISSUER), Arc::new(first));
        (KeyRing::new(issuer, extra).unwrap(), kid)
    }

    fn jwk(kid: &str) -> Jwk {
        Jwk {
            key_use: "sig".into(),
            kty: "EC".into(),
            kid: kid.into(),
            crv: Some("P-256".into()),
            alg: "ES256".into(),
            x: None,
            y: None,
            n: None,
            e: None,
        }
    }

    #[test]
    fn published_keys_follow_the_grace_periods() {
        let retired = vec![
            RetiredKey {
                jwk: jwk("oldest"),
                retired_at: at(0),
                published_until: at(10),
            },
            RetiredKey {
                jwk: jwk("older"),
                retired_at: at(5),
                published_until: at(30),
            },
        ];
        let kids = |now| -> Vec<String> {
            let (current, extra) = (jwk("now"), [jwk("extra")]);
            published_jwks(&current, &retired, &extra, now)
                .into_iter()
                .map(|k| k.kid.clone())
                .collect()
        };
        assert_eq!(kids(at(9)), ["now", "older", "oldest", "extra"]);
        // The end of a grace period is exclusive.
        assert_eq!(kids(at(10)), ["now", "older", "extra"]);
        assert_eq!(kids(at(30)), ["now", "extra"]);
        // A kid is listed once even when it is also an extra key.
        let (current, extra) = (jwk("now"), [jwk("now")]);
        let same = published_jwks(&current, &[], &extra, at(0));
        assert_eq!(same.len(), 1);
    }

    #[test]
    fn rotation_with_grace_keeps_the_old_key_until_it_ends() {
        let (ring, first_kid) = ring(Vec::new());
        let rotation = ring.rotate(key(), SignedDuration::from_secs(30), at(100));
        assert_eq!(rotation.old_kid, first_kid);
        assert_eq!(rotation.old_published_until, at(130));
        assert_eq!(ring.issuer().key.kid(), rotation.new_kid);
        assert_eq!(
            ring.published(at(129)).kids,
            [rotation.new_kid.clone(), first_kid.clone()]
        );
        assert_eq!(
            ring.published(at(130)).kids,
            std::slice::from_ref(&rotation.new_kid)
        );
        let status = ring.status(at(130));
        assert_eq!(status.current.kid, rotation.new_kid);
        assert_eq!(status.retired[0].kid, first_kid);
        assert!(!status.retired[0].published);
        assert_eq!(status.published, [rotation.new_kid]);
    }

    #[test]
    fn rotation_without_grace_drops_the_old_key_at_once_and_its_tokens_fail() {
        let (ring, first_kid) = ring(Vec::new());
        let config = IssuerConfig::new(DEFAULT_ISSUER);
        let old_issuer = ring.issuer();
        let sa = crate::issuer::ServiceAccountRef {
            namespace: "ns".into(),
            name: "app".into(),
            uid: "uid".into(),
        };
        let request = config
            .validate(&crate::issuer::TokenRequestSpec::default())
            .unwrap();
        let old_token = old_issuer.mint(&sa, &request, at(0)).unwrap().token;
        let audiences = config.api_audiences.clone();
        let issuers = [DEFAULT_ISSUER.to_owned()];
        assert!(ring
            .published(at(1))
            .keys
            .verify_bound(&old_token, &issuers, &audiences, at(1))
            .is_ok());

        let rotation = ring.rotate(key(), SignedDuration::ZERO, at(1));
        assert_eq!(rotation.old_published_until, at(1));
        let published = ring.published(at(1));
        assert_eq!(published.kids, std::slice::from_ref(&rotation.new_kid));
        assert!(matches!(
            published
                .keys
                .verify_bound(&old_token, &issuers, &audiences, at(1)),
            Err(VerifyError::NoMatchingKey { .. })
        ));
        let new_token = ring.issuer().mint(&sa, &request, at(1)).unwrap().token;
        assert!(published
            .keys
            .verify_bound(&new_token, &issuers, &audiences, at(1))
            .is_ok());
        assert!(!published.jwks_json.contains(&first_kid));
        // Rejected, but recognisably ours: signed by the key just dropped.
        assert!(ring.signed_by_dropped_key(&old_token, at(1)));
        assert!(!ring.signed_by_dropped_key(&new_token, at(1)));
    }

    #[test]
    fn only_a_signature_of_a_dropped_key_is_recognised() {
        let (ring, _) = ring(Vec::new());
        let config = IssuerConfig::new(DEFAULT_ISSUER);
        let sa = crate::issuer::ServiceAccountRef {
            namespace: "ns".into(),
            name: "app".into(),
            uid: "uid".into(),
        };
        let request = config
            .validate(&crate::issuer::TokenRequestSpec::default())
            .unwrap();
        let first = ring.issuer().mint(&sa, &request, at(0)).unwrap().token;
        // Nothing dropped yet; then a key in its grace period is published, not dropped.
        assert!(!ring.signed_by_dropped_key(&first, at(0)));
        ring.rotate(key(), SignedDuration::from_secs(10), at(0));
        assert!(!ring.signed_by_dropped_key(&first, at(5)));
        assert!(ring.signed_by_dropped_key(&first, at(10)));
        // The same claims and kid under another key's signature: a forgery, not ours.
        let stranger = Issuer::new(config.clone(), Arc::new(key()));
        let forged = stranger.mint(&sa, &request, at(0)).unwrap().token;
        let header = first.split('.').next().unwrap();
        let mut parts = forged.splitn(2, '.');
        parts.next();
        let forged_with_our_kid = format!("{header}.{}", parts.next().unwrap());
        assert!(!ring.signed_by_dropped_key(&forged_with_our_kid, at(10)));
        assert!(!ring.signed_by_dropped_key(&forged, at(10)));
        assert!(!ring.signed_by_dropped_key("not.a.token", at(10)));
    }

    #[test]
    fn extra_keys_stay_and_algorithms_are_listed_once() {
        let extra = key().public_jwk();
        let (ring, _) = ring(vec![extra.clone()]);
        let rotation = ring.rotate(
            SigningKey::generate(KeyAlgorithm::Rs256).unwrap(),
            SignedDuration::from_secs(5),
            at(0),
        );
        assert_eq!(rotation.algorithm, "RS256");
        let published = ring.published(at(1));
        assert_eq!(published.kids.len(), 3);
        assert_eq!(published.algorithms, ["RS256", "ES256"]);
        assert_eq!(ring.published(at(10)).kids.last().unwrap(), &extra.kid);
    }

    #[test]
    fn many_rotations_remember_a_bounded_number_of_retired_keys() {
        let (ring, _) = ring(Vec::new());
        for i in 0..(REMEMBERED_RETIRED_KEYS as i64 + 5) {
            ring.rotate(key(), SignedDuration::ZERO, at(i));
        }
        assert_eq!(ring.status(at(100)).retired.len(), REMEMBERED_RETIRED_KEYS);
    }
}

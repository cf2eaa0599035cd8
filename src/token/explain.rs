//! `inspect`'s explanation of a token: pure, from a decoded token and `now`.
//!
//! The refresh window is what a kubelet would do with this token. The kubelet never reads the
//! JWT: it works from the TokenRequest answer, whose requested lifetime we reconstruct as
//! `(warnafter, or else exp) - iat`: for an extended 3607 token that is 3607 s, not a year.

use jiff::{SignedDuration, Timestamp};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::claim_time::{Beyond, ClaimTime};
use super::claims::{EXPIRATION_EXTENSION_SECONDS, WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS};
use super::decode::{DecodedToken, TokenKind, LEGACY_CLAIM_PREFIX};
use super::refresh::{RefreshReason, TokenLifetime, MAX_TTL};

/// The extension EKS applies instead of upstream's year.
const EKS_EXTENSION_SECONDS: i64 = 90 * 24 * 3600;

/// Everything `inspect` prints, as one serialisable value (`--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// `bound`, `legacy` or `other`.
    pub kind: TokenKind,
    /// The decoded JOSE header.
    pub header: Map<String, Value>,
    /// The decoded claims, as they are.
    pub claims: Map<String, Value>,
    pub algorithm: Option<String>,
    pub key_id: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub audiences: Vec<String>,
    pub namespace: Option<String>,
    pub service_account: Option<ObjectView>,
    /// The pod, secret or node a bound token is tied to.
    pub bound_object: Option<BoundObjectView>,
    /// The node of a pod-bound token (recent kube-apiservers add it).
    pub node: Option<ObjectView>,
    /// The Secret a legacy token was read from.
    pub secret_name: Option<String>,
    pub jti: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub issued_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub not_before: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub warn_after: Option<Timestamp>,
    /// Time claims past the dates shown (their fields above are then null), e.g. `exp` =
    /// 2^63-1: a token that does not expire in practice, not one without `exp`.
    pub out_of_range: Vec<OutOfRangeClaim>,
    /// `exp - iat`: how long the JWT itself is accepted.
    pub lifetime_seconds: Option<i64>,
    /// `(warnafter, or else exp) - iat`: the lifetime the client asked for.
    pub requested_lifetime_seconds: Option<i64>,
    /// The token carries `warnafter` and its `exp` lies beyond it (the 3607 extension).
    pub extended_expiration: bool,
    /// When the token's useful life ends: the earlier of `exp` and `warnafter`.
    #[serde(serialize_with = "rfc3339_opt")]
    pub effective_expiry: Option<Timestamp>,
    /// When a kubelet would refresh this token (bound tokens with `iat` and `exp` only).
    pub refresh_window: Option<RefreshWindowView>,
    /// The `now` the status is relative to.
    #[serde(serialize_with = "rfc3339")]
    pub checked_at: Timestamp,
    pub status: Status,
    /// The signature check, when one was asked for (`--jwks`); filled in by the command.
    pub signature: Option<SignatureCheck>,
    /// The same facts in plain words, one sentence or two per line.
    pub explanation: Vec<String>,
}

/// A time claim whose value no date here can show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutOfRangeClaim {
    /// `exp`, `iat`, `nbf` or `kubernetes.io.warnafter`.
    pub claim: String,
    /// Unix seconds, as the token has them.
    pub seconds: i64,
    /// `after` the last date (9999-12-30T22:00:00Z) or `before` the first.
    pub beyond: Beyond,
}

impl Inspection {
    /// The value of `claim` when it lies past the dates shown.
    fn out_of_range(&self, claim: &str) -> Option<ClaimTime> {
        self.out_of_range
            .iter()
            .find(|c| c.claim == claim)
            .map(|c| ClaimTime::OutOfRange {
                seconds: c.seconds,
                beyond: c.beyond,
            })
    }
}

/// A `{name, uid}` reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectView {
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// The object a bound token is tied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundObjectView {
    /// `pod`, `secret` or `node`.
    pub kind: String,
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// The span in which a kubelet would refresh the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RefreshWindowView {
    /// With the largest jitter (9 s early).
    #[serde(serialize_with = "rfc3339")]
    pub earliest: Timestamp,
    /// With no jitter.
    #[serde(serialize_with = "rfc3339")]
    pub latest: Timestamp,
    /// `eighty_percent` or `max_ttl`: which rule sets the time.
    pub reason: RefreshReason,
}

/// Where the token stands at `checked_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, and not past `warnafter`.
    Valid,
    /// Past `warnafter`: still accepted, but every use is counted as stale.
    Stale,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
}

/// Result of verifying the signature against a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    pub verified: bool,
    /// The `kid` of the key that verified it.
    pub key_id: Option<String>,
    /// Why verification failed.
    pub error: Option<String>,
}

fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

fn rfc3339_opt<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_none(),
    }
}

/// Builds the explanation of `token` as seen at `now`.
pub fn explain(token: &DecodedToken, now: Timestamp) -> Inspection {
    // Claims are whole seconds; so is every time we print.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let mut notes = Vec::new();
    let mut out_of_range = Vec::new();
    let mut time_claim = |name: &str, seconds: Option<i64>| {
        let claim = ClaimTime::from_seconds(seconds?);
        if let ClaimTime::OutOfRange { seconds, beyond } = claim {
            // `exp` gets its own lines; the others are only left out of the lifetime.
            if name != "exp" {
                notes.push(format!(
                    "The {name} claim: {}; no lifetime is derived from it.",
                    claim.describe()
                ));
            }
            out_of_range.push(OutOfRangeClaim {
                claim: name.to_owned(),
                seconds,
                beyond,
            });
        }
        Some(claim)
    };
    let iat_claim = time_claim("iat", token.numeric_claim("iat"));
    let nbf_claim = time_claim("nbf", token.numeric_claim("nbf"));
    let exp_claim = time_claim("exp", token.numeric_claim("exp"));
    let warn_claim = time_claim("kubernetes.io.warnafter", token.warn_after());
    let issued_at = iat_claim.and_then(ClaimTime::date);
    let not_before = nbf_claim.and_then(ClaimTime::date);
    let expires_at = exp_claim.and_then(ClaimTime::date);
    let warn_after = warn_claim.and_then(ClaimTime::date);

    let seconds_between =
        |from: Option<Timestamp>, to: Option<Timestamp>| Some(secs_between(from?, to?));
    let lifetime_seconds = seconds_between(issued_at, expires_at);
    let requested_lifetime_seconds = seconds_between(issued_at, warn_after.or(expires_at));
    let extended_expiration = matches!((warn_after, expires_at), (Some(w), Some(e)) if e > w);
    let effective_expiry = match exp_claim {
        Some(ClaimTime::At(exp)) => Some(warn_after.map_or(exp, |w| w.min(exp))),
        // Past the last date: warnafter, if any, is where its useful life ends.
        Some(ClaimTime::OutOfRange {
            beyond: Beyond::After,
            ..
        }) => warn_after,
        _ => None,
    };

    let refresh_window = match (
        token.kind,
        issued_at,
        expires_at,
        requested_lifetime_seconds,
    ) {
        (TokenKind::Bound, Some(iat), Some(exp), Some(requested)) if requested > 0 => {
            let requested = SignedDuration::from_secs(requested);
            // The status expiration a TokenRequest answer would have carried.
            let status_expiration = iat.checked_add(requested).unwrap_or(exp);
            let window =
                TokenLifetime::from_grant(status_expiration, requested, Some(exp), warn_after)
                    .refresh_window();
            Some(RefreshWindowView {
                earliest: window.earliest,
                latest: window.latest,
                reason: window.reason,
            })
        }
        _ => None,
    };

    // Claims past the shown dates compare as the first or last date, as later or earlier than
    // any other, the way kube-apiserver compares them.
    let clamped = |claim: Option<ClaimTime>| claim.map(ClaimTime::clamped);
    let status = match (clamped(exp_claim), clamped(nbf_claim), clamped(warn_claim)) {
        (Some(exp), _, _) if now > exp => Status::Expired,
        (_, Some(nbf), _) if now < nbf => Status::NotYetValid,
        (_, _, Some(warn)) if now > warn => Status::Stale,
        _ => Status::Valid,
    };

    let k8s = token.kubernetes_claim();
    let object = |name: &str| k8s.and_then(|k| k.get(name)).and_then(object_view);
    let bound_object = ["pod", "secret", "node"].into_iter().find_map(|kind| {
        object(kind).map(|o| BoundObjectView {
            kind: kind.to_owned(),
            name: o.name,
            uid: o.uid,
        })
    });
    // A pod-bound token names its node too; that is not what it is bound to.
    let node = match &bound_object {
        Some(b) if b.kind == "pod" => object("node"),
        _ => None,
    };
    let legacy = |suffix: &str| {
        token
            .string_claim(&format!("{LEGACY_CLAIM_PREFIX}{suffix}"))
            .map(str::to_owned)
    };
    let (namespace, service_account, secret_name) = match token.kind {
        TokenKind::Legacy => {
            let name = legacy("service-account.name");
            let uid = legacy("service-account.uid");
            let sa = (name.is_some() || uid.is_some()).then_some(ObjectView { name, uid });
            (legacy("namespace"), sa, legacy("secret.name"))
        }
        _ => (
            k8s.and_then(|k| k.get("namespace"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            object("serviceaccount"),
            None,
        ),
    };

    let mut inspection = Inspection {
        kind: token.kind,
        header: token.header.clone(),
        claims: token.claims.clone(),
        algorithm: token.header_str("alg").map(str::to_owned),
        key_id: token.header_str("kid").map(str::to_owned),
        issuer: token.string_claim("iss").map(str::to_owned),
        subject: token.string_claim("sub").map(str::to_owned),
        audiences: token.audiences(),
        namespace,
        service_account,
        bound_object,
        node,
        secret_name,
        jti: token.string_claim("jti").map(str::to_owned),
        issued_at,
        not_before,
        expires_at,
        warn_after,
        out_of_range,
        lifetime_seconds,
        requested_lifetime_seconds,
        extended_expiration,
        effective_expiry,
        refresh_window,
        checked_at: now,
        status,
        signature: None,
        explanation: Vec::new(),
    };
    let mut lines = explanation(&inspection);
    lines.extend(notes);
    inspection.explanation = lines;
    inspection
}

fn object_view(value: &Value) -> Option<ObjectView> {
    let map = value.as_object()?;
    let field = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(ObjectView {
        name: field("name"),
        uid: field("uid"),
    })
}

/// The plain-words lines: what the token is, its lifetime, its refresh, where it stands.
fn explanation(i: &Inspection) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(kind_line(i));
    if i.algorithm.as_deref() == Some("none") {
        lines.push(
            "The header says alg \"none\": the token is unsigned and no server accepts it.".into(),
        );
    }
    lifetime_lines(i, &mut lines);
    lines.push(status_line(i));
    lines
}

fn kind_line(i: &Inspection) -> String {
    let ns_name = |name: Option<&str>| match (i.namespace.as_deref(), name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        (_, None) => "(unnamed)".to_owned(),
    };
    let sa = ns_name(i.service_account.as_ref().and_then(|s| s.name.as_deref()));
    match i.kind {
        TokenKind::Bound => {
            let bound = match &i.bound_object {
                Some(b) => {
                    let name = b.name.as_deref().unwrap_or("(unnamed)");
                    format!(
                        ", bound to {} {name}; it stops working when that {} or the service account \
                         is deleted",
                        b.kind, b.kind
                    )
                }
                None => {
                    ", bound to no object; it stops working when the service account is deleted"
                        .to_owned()
                }
            };
            format!(
                "A bound service account token (issued by kube-apiserver's TokenRequest API) for \
                 service account {sa}{bound}."
            )
        }
        TokenKind::Legacy => {
            let secret = match &i.secret_name {
                Some(s) => format!(" read from the Secret {}", ns_name(Some(s))),
                None => String::new(),
            };
            format!(
                "A legacy secret-based service account token for {sa}{secret}. Legacy tokens never \
                 expire: they have no exp and stay valid until the Secret or the service account is \
                 deleted. Projected (bound) tokens replace them."
            )
        }
        TokenKind::Other => {
            "Not a Kubernetes service account token: it has no kubernetes.io claim \
                             and its issuer is not kubernetes/serviceaccount. No kubelet refresh \
                             applies to it."
                .to_owned()
        }
    }
}

fn lifetime_lines(i: &Inspection, lines: &mut Vec<String>) {
    let Some(exp) = i.expires_at else {
        match i.out_of_range("exp") {
            Some(
                far @ ClaimTime::OutOfRange {
                    beyond: Beyond::After,
                    ..
                },
            ) => lines.push(format!(
                "Its exp claim: {}. kube-apiserver accepts it until then: in practice it never \
                 expires.",
                far.describe()
            )),
            Some(early) => lines.push(format!(
                "Its exp claim: {}. It expired before any date shown here.",
                early.describe()
            )),
            None if i.kind != TokenKind::Legacy => {
                lines.push("It has no exp claim: it never expires.".into())
            }
            None => {}
        }
        return;
    };
    let Some(iat) = i.issued_at else {
        lines.push(format!(
            "It expires at {exp}. It has no iat claim, so its lifetime and a kubelet's refresh \
             time cannot be derived."
        ));
        return;
    };
    let requested = i.requested_lifetime_seconds.unwrap_or_default();
    if let (true, Some(warn), Some(lifetime)) =
        (i.extended_expiration, i.warn_after, i.lifetime_seconds)
    {
        let extension = extension_words(lifetime);
        if requested == WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS {
            lines.push(format!(
                "Its exp ({exp}) is {extension} after it was issued, although it was requested \
                 for 3607 s ({}). 3607 s is the marker lifetime of the default kube-api-access \
                 volume: kube-apiserver (--service-account-extend-token-expiration, on by default) \
                 extended this 3607 s token to {extension} so that clients that read the token \
                 once and never reload it keep working.",
                human(requested)
            ));
        } else {
            lines.push(format!(
                "Its exp ({exp}) is {extension} after it was issued, beyond its warnafter: the \
                 issuer extended a token requested for {requested} s ({}).",
                human(requested)
            ));
        }
        lines.push(format!(
            "After warnafter ({warn}, {} after issue) kube-apiserver still accepts it but counts \
             every use as stale: the audit annotation authentication.k8s.io/stale-token and the \
             metric serviceaccount_stale_tokens_total. Treat warnafter as its real expiry.",
            human(requested)
        ));
    } else if iat >= exp {
        lines.push(format!(
            "Its exp ({exp}) is not after its iat ({iat}): it was never usable."
        ));
    } else {
        lines.push(format!(
            "It was issued for {requested} s ({}) and expires at {exp}.",
            human(requested)
        ));
        if i.warn_after.is_some() {
            lines.push(
                "It carries a warnafter claim but its exp is not beyond it: not an extended token."
                    .into(),
            );
        }
    }
    if let Some(window) = i.refresh_window {
        let rule = match window.reason {
            RefreshReason::EightyPercent => format!(
                "at 80% of {requested} s, once less than 20% of that requested lifetime remains"
            ),
            RefreshReason::MaxTtl => format!(
                "{} hours after issue, since it refreshes every token at least that often",
                MAX_TTL.as_hours()
            ),
        };
        let kubelet_reads = if i.extended_expiration {
            "The kubelet does not read the JWT's exp: it"
        } else {
            "A kubelet"
        };
        lines.push(format!(
            "{kubelet_reads} refreshes this token {rule}: at {} ({} after issue), or up to 9 s \
             earlier with its jitter (from {}), and writes the new token into the volume. \
             Clients should re-read the file (client-go does about every minute).",
            window.latest,
            human(secs_between(iat, window.latest)),
            window.earliest,
        ));
    }
}

fn status_line(i: &Inspection) -> String {
    let now = i.checked_at;
    let ago = |t: Timestamp| human(secs_between(t, now));
    match i.status {
        Status::Expired => {
            let exp = match (i.expires_at, i.out_of_range("exp")) {
                (Some(e), _) => Some(format!(" at {e} ({} ago)", ago(e))),
                (None, Some(early)) => Some(format!(" (exp {})", early.describe())),
                (None, None) => None,
            };
            let rejection = if i.kind == TokenKind::Other {
                ""
            } else {
                " kube-apiserver rejects it (\"service account token has expired\", after a 60 s \
                 allowance for clock skew)."
            };
            format!(
                "At {now} it has expired{}.{rejection}",
                exp.unwrap_or_default()
            )
        }
        Status::NotYetValid => {
            let nbf = match (i.not_before, i.out_of_range("nbf")) {
                (Some(n), _) => Some(format!(": nbf is {n} (in {})", human(secs_between(now, n)))),
                (None, Some(far)) => Some(format!(": nbf {}", far.describe())),
                (None, None) => None,
            };
            format!("At {now} it is not valid yet{}.", nbf.unwrap_or_default())
        }
        Status::Stale => {
            let since = i
                .warn_after
                .map(|w| format!(" since {w} ({} ago)", ago(w)))
                .unwrap_or_default();
            let left = i
                .expires_at
                .map(|e| format!(" until {e} ({} left)", human(secs_between(now, e))))
                .unwrap_or_default();
            format!(
                "At {now} it is stale{since}: still accepted{left}, but every use is counted as \
                 stale."
            )
        }
        Status::Valid => match i.effective_expiry {
            Some(end) => format!(
                "At {now} it is valid, for {} more (until {end}).",
                human(secs_between(now, end))
            ),
            None => match i.out_of_range("exp") {
                Some(far) => format!(
                    "At {now} it is valid (exp {}: in practice it never expires).",
                    far.describe()
                ),
                None => format!("At {now} it is valid (it never expires)."),
            },
        },
    }
}

/// Whole seconds from `from` to `to` (negative when `to` is earlier).
fn secs_between(from: Timestamp, to: Timestamp) -> i64 {
    to.duration_since(from).as_secs()
}

/// "one year", "90 days" and the like, for the length of an extended lifetime.
fn extension_words(seconds: i64) -> String {
    match seconds {
        EXPIRATION_EXTENSION_SECONDS => format!("one year ({seconds} s)"),
        EKS_EXTENSION_SECONDS => format!("90 days ({seconds} s, as on EKS)"),
        _ => format!("{} ({seconds} s)", human(seconds)),
    }
}

/// A compact duration: `365d`, `1h 7s`, `48m 6s`, `0s`.
pub fn human(seconds: i64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let sign = if seconds < 0 { "-" } else { "" };
    let mut rest = seconds.unsigned_abs();
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n}{unit}"));
        }
    }
    format!("{sign}{}", parts.join(" "))
}

/// The human-readable table and plain-words explanation.
pub fn render_text(inspection: &Inspection) -> String {
    let i = inspection;
    let mut rows: Vec<(&str, String)> = Vec::new();
    let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let kind = match i.kind {
        TokenKind::Bound => "bound (TokenRequest)",
        TokenKind::Legacy => "legacy (secret-based)",
        TokenKind::Other => "other (not a Kubernetes service account token)",
    };
    rows.push(("Kind", kind.to_owned()));
    rows.push(("Algorithm", or_dash(i.algorithm.as_deref())));
    rows.push(("Key ID", or_dash(i.key_id.as_deref())));
    rows.push(("Issuer", or_dash(i.issuer.as_deref())));
    rows.push(("Subject", or_dash(i.subject.as_deref())));
    let audiences = if i.audiences.is_empty() {
        "-".to_owned()
    } else {
        i.audiences.join(", ")
    };
    rows.push(("Audiences", audiences));
    rows.push(("Namespace", or_dash(i.namespace.as_deref())));
    let named = |o: &ObjectView| with_uid(o.name.as_deref(), o.uid.as_deref());
    rows.push((
        "Service account",
        i.service_account.as_ref().map_or("-".into(), named),
    ));
    if i.kind == TokenKind::Legacy {
        rows.push(("Secret", or_dash(i.secret_name.as_deref())));
    } else {
        let bound = i.bound_object.as_ref().map_or("-".into(), |b| {
            format!(
                "{} {}",
                b.kind,
                with_uid(b.name.as_deref(), b.uid.as_deref())
            )
        });
        rows.push(("Bound to", bound));
        if let Some(node) = &i.node {
            rows.push(("Node", named(node)));
        }
    }
    rows.push(("JWT ID", or_dash(i.jti.as_deref())));

    let time = |t: Option<Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
    // A claim past the shown dates: its number, and which end it is past.
    let claim_time = |t: Option<Timestamp>, claim: &str| match (t, i.out_of_range(claim)) {
        (None, Some(far)) => format!("out of range: {}", far.describe()),
        (t, _) => time(t),
    };
    let after_issue = |t: Option<Timestamp>, claim: &str| match (t, i.issued_at) {
        (Some(t), Some(iat)) => format!("{t} ({} after issue)", human(secs_between(iat, t))),
        (t, _) => claim_time(t, claim),
    };
    rows.push(("Issued at", claim_time(i.issued_at, "iat")));
    rows.push(("Not before", claim_time(i.not_before, "nbf")));
    let expires = match i.expires_at {
        None if i.out_of_range("exp").is_none() => "never (no exp claim)".to_owned(),
        Some(_) if i.extended_expiration => {
            format!("{} (extended)", after_issue(i.expires_at, "exp"))
        }
        _ => after_issue(i.expires_at, "exp"),
    };
    rows.push(("Expires at", expires));
    const WARN_AFTER: &str = "kubernetes.io.warnafter";
    if i.warn_after.is_some() || i.out_of_range(WARN_AFTER).is_some() {
        rows.push(("Warn after", after_issue(i.warn_after, WARN_AFTER)));
    }
    let lifetime = match (i.lifetime_seconds, i.requested_lifetime_seconds) {
        (Some(l), Some(r)) if l != r => {
            format!(
                "{l} s ({}) in the JWT; requested {r} s ({})",
                human(l),
                human(r)
            )
        }
        (Some(l), _) => format!("{l} s ({})", human(l)),
        (None, _) => "-".to_owned(),
    };
    rows.push(("Lifetime", lifetime));
    rows.push(("Effective expiry", time(i.effective_expiry)));
    let refresh = i.refresh_window.map_or("-".to_owned(), |w| {
        let rule = match w.reason {
            RefreshReason::EightyPercent => "80% of the requested lifetime",
            RefreshReason::MaxTtl => "24 h maximum age",
        };
        format!("{} .. {} ({rule})", w.earliest, w.latest)
    });
    rows.push(("Kubelet refresh", refresh));
    let status = match i.status {
        Status::Valid => "valid",
        Status::Stale => "stale (past warnafter, still accepted)",
        Status::Expired => "expired",
        Status::NotYetValid => "not yet valid",
    };
    rows.push(("Status", format!("{status} (checked at {})", i.checked_at)));
    let signature = match &i.signature {
        None => "not checked (pass --jwks to verify)".to_owned(),
        Some(SignatureCheck {
            verified: true,
            key_id,
            ..
        }) => format!("verified with key {}", key_id.as_deref().unwrap_or("-")),
        Some(SignatureCheck { error, .. }) => {
            format!(
                "INVALID: {}",
                error.as_deref().unwrap_or("verification failed")
            )
        }
    };
    rows.push(("Signature", signature));

    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
    }
    out.push_str("\nExplanation:\n");
    for line in &i.explanation {
        out.push_str(&format!("  - {line}\n"));
    }
    for (title, map) in [("Header", &i.header), ("Claims", &i.claims)] {
        // Pretty JSON of a map of JSON values cannot fail to serialise.
        let json = serde_json::to_string_pretty(map).unwrap_or_default();
        out.push_str(&format!("\n{title}:\n"));
        for line in json.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

fn with_uid(name: Option<&str>, uid: Option<&str>) -> String {
    match (name, uid) {
        (Some(n), Some(u)) => format!("{n} (uid {u})"),
        (Some(n), None) => n.to_owned(),
        (None, Some(u)) => format!("(no name) (uid {u})"),
        (None, None) => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::decode::decode;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    const IAT: i64 = 1_700_000_000;
    const ISS: &str = "https://kubernetes.default.svc.cluster.local";

    fn token(claims: Value) -> DecodedToken {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        decode(&format!(
            "{}.{}.c2ln",
            part(&json!({"alg": "RS256", "kid": "kid-1"})),
            part(&claims)
        ))
        .unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn extended(exp_after: i64) -> DecodedToken {
        token(json!({
            "aud": [ISS],
            "exp": IAT + exp_after,
            "iat": IAT,
            "iss": ISS,
            "jti": "j-1",
            "kubernetes.io": {
                "namespace": "default",
                "node": {"name": "node-1", "uid": "nu"},
                "pod": {"name": "app-1", "uid": "pu"},
                "serviceaccount": {"name": "default", "uid": "su"},
                "warnafter": IAT + 3607
            },
            "nbf": IAT,
            "sub": "system:serviceaccount:default:default"
        }))
    }

    fn legacy() -> DecodedToken {
        token(json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "default",
            "kubernetes.io/serviceaccount/secret.name": "default-token-abcde",
            "kubernetes.io/serviceaccount/service-account.name": "default",
            "kubernetes.io/serviceaccount/service-account.uid": "su",
            "sub": "system:serviceaccount:default:default"
        }))
    }

    #[test]
    fn extended_3607_token() {
        let i = explain(&extended(31_536_000), at(IAT + 60));
        assert_eq!(i.kind, TokenKind::Bound);
        assert_eq!(i.issued_at, Some(at(IAT)));
        assert_eq!(i.expires_at, Some(at(IAT + 31_536_000)));
        assert_eq!(i.warn_after, Some(at(IAT + 3607)));
        assert!(i.extended_expiration);
        assert_eq!(i.lifetime_seconds, Some(31_536_000));
        assert_eq!(i.requested_lifetime_seconds, Some(3607));
        assert_eq!(i.effective_expiry, Some(at(IAT + 3607)));
        let window = i.refresh_window.unwrap();
        // 80% of 3607 s, not of a year.
        assert_eq!(window.latest, at(IAT + 2886));
        assert_eq!(window.earliest, at(IAT + 2886 - 9));
        assert_eq!(window.reason, RefreshReason::EightyPercent);
        assert_eq!(i.status, Status::Valid);
        assert_eq!(i.namespace.as_deref(), Some("default"));
        assert_eq!(
            i.bound_object,
            Some(BoundObjectView {
                kind: "pod".into(),
                name: Some("app-1".into()),
                uid: Some("pu".into())
            })
        );
        assert_eq!(
            i.node.as_ref().and_then(|n| n.name.as_deref()),
            Some("node-1")
        );
        assert_eq!(
            i.service_account.as_ref().and_then(|s| s.uid.as_deref()),
            Some("su")
        );
        assert_eq!(i.jti.as_deref(), Some("j-1"));
        let words = i.explanation.join("\n");
        assert!(words.contains("one year"), "{words}");
        assert!(words.contains("extended this 3607 s token"), "{words}");
        assert!(words.contains("never reload"), "{words}");
        assert!(words.contains("stale"), "{words}");
        assert!(words.contains("80% of 3607 s"), "{words}");
    }

    #[test]
    fn json_shape_uses_rfc3339_utc_strings() {
        let i = explain(&extended(31_536_000), at(IAT + 60));
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(v["issued_at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["expires_at"], "2024-11-13T22:13:20Z");
        assert_eq!(v["warn_after"], "2023-11-14T23:13:27Z");
        assert_eq!(v["effective_expiry"], "2023-11-14T23:13:27Z");
        assert_eq!(v["refresh_window"]["earliest"], "2023-11-14T23:01:17Z");
        assert_eq!(v["refresh_window"]["latest"], "2023-11-14T23:01:26Z");
        assert_eq!(v["refresh_window"]["reason"], "eighty_percent");
        assert_eq!(v["kind"], "bound");
        assert_eq!(v["status"], "valid");
        assert_eq!(v["extended_expiration"], true);
        assert_eq!(v["header"]["kid"], "kid-1");
        assert_eq!(v["claims"]["jti"], "j-1");
        assert!(v["signature"].is_null());
    }

    #[test]
    fn checked_at_is_whole_seconds() {
        let now = Timestamp::from_millisecond((IAT + 60) * 1000 + 478).unwrap();
        let v = serde_json::to_value(explain(&extended(31_536_000), now)).unwrap();
        assert_eq!(v["checked_at"], "2023-11-14T22:14:20Z");
    }

    #[test]
    fn eks_90_day_extension_is_named() {
        let i = explain(&extended(EKS_EXTENSION_SECONDS), at(IAT));
        assert!(i.extended_expiration);
        assert_eq!(i.refresh_window.unwrap().latest, at(IAT + 2886));
        assert!(i.explanation.join("\n").contains("90 days"));
    }

    #[test]
    fn status_moves_from_valid_to_stale_to_expired() {
        let t = extended(31_536_000);
        assert_eq!(explain(&t, at(IAT + 3607)).status, Status::Valid);
        let stale = explain(&t, at(IAT + 3608));
        assert_eq!(stale.status, Status::Stale);
        assert!(stale.explanation.join("\n").contains("it is stale since"));
        assert_eq!(explain(&t, at(IAT + 31_536_000)).status, Status::Stale);
        let expired = explain(&t, at(IAT + 31_536_001));
        assert_eq!(expired.status, Status::Expired);
        assert!(expired.explanation.join("\n").contains("has expired"));
        assert_eq!(explain(&t, at(IAT - 1)).status, Status::NotYetValid);
    }

    #[test]
    fn plain_bound_token() {
        let t = token(json!({
            "aud": ["vault"], "exp": IAT + 3600, "iat": IAT, "iss": ISS, "nbf": IAT,
            "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u"},
                              "secret": {"name": "s", "uid": "su"}},
            "sub": "system:serviceaccount:ns:sa"
        }));
        let i = explain(&t, at(IAT + 10));
        assert!(!i.extended_expiration);
        assert_eq!(i.requested_lifetime_seconds, Some(3600));
        assert_eq!(i.effective_expiry, Some(at(IAT + 3600)));
        assert_eq!(i.refresh_window.unwrap().latest, at(IAT + 2880));
        assert_eq!(
            i.bound_object.as_ref().map(|b| b.kind.as_str()),
            Some("secret")
        );
        assert_eq!(i.node, None);
        assert!(
            i.explanation[0].contains("bound to secret s"),
            "{:?}",
            i.explanation
        );
    }

    #[test]
    fn long_token_is_refreshed_after_a_day() {
        let t = token(json!({
            "exp": IAT + 172_800, "iat": IAT,
            "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa"}}
        }));
        let i = explain(&t, at(IAT));
        assert!(i.explanation.join("\n").contains("24 hours after issue"));
        let w = i.refresh_window.unwrap();
        assert_eq!(w.reason, RefreshReason::MaxTtl);
        assert_eq!(w.latest, at(IAT + 86_400));
    }

    #[test]
    fn legacy_token_never_expires() {
        let i = explain(&legacy(), at(IAT));
        assert_eq!(i.kind, TokenKind::Legacy);
        assert_eq!(i.expires_at, None);
        assert_eq!(i.effective_expiry, None);
        assert_eq!(i.refresh_window, None);
        assert!(!i.extended_expiration);
        assert_eq!(i.status, Status::Valid);
        assert_eq!(i.namespace.as_deref(), Some("default"));
        assert_eq!(i.secret_name.as_deref(), Some("default-token-abcde"));
        assert_eq!(
            i.service_account.as_ref().and_then(|s| s.name.as_deref()),
            Some("default")
        );
        assert_eq!(i.bound_object, None);
        let words = i.explanation.join("\n");
        assert!(words.contains("Legacy tokens never expire"), "{words}");
        let v = serde_json::to_value(&i).unwrap();
        assert!(v["expires_at"].is_null());
        assert!(v["refresh_window"].is_null());
        assert_eq!(v["kind"], "legacy");
    }

    #[test]
    fn other_jwt_has_no_refresh_window() {
        let t = token(json!({"iss": "https://idp.example", "sub": "u", "aud": "x",
                             "iat": IAT, "exp": IAT + 600}));
        let i = explain(&t, at(IAT + 601));
        assert_eq!(i.kind, TokenKind::Other);
        assert_eq!(i.refresh_window, None);
        assert_eq!(i.effective_expiry, Some(at(IAT + 600)));
        assert_eq!(i.status, Status::Expired);
        assert_eq!(i.audiences, vec!["x"]);
        assert!(!i.explanation.join("\n").contains("kube-apiserver rejects"));
    }

    #[test]
    fn missing_iat_gives_no_window_but_keeps_expiry() {
        let t = token(json!({"exp": IAT + 600,
                             "kubernetes.io": {"serviceaccount": {"name": "sa"}}}));
        let i = explain(&t, at(IAT));
        assert_eq!(i.refresh_window, None);
        assert_eq!(i.effective_expiry, Some(at(IAT + 600)));
        assert!(i.explanation.join("\n").contains("no iat claim"));
    }

    #[test]
    fn an_exp_past_the_last_date_is_shown_as_such_not_as_missing() {
        let t = token(json!({"exp": i64::MAX, "iat": IAT,
                             "kubernetes.io": {"serviceaccount": {"name": "sa"}}}));
        let i = explain(&t, at(IAT));
        assert_eq!(i.expires_at, None);
        assert_eq!(
            i.out_of_range,
            [OutOfRangeClaim {
                claim: "exp".into(),
                seconds: i64::MAX,
                beyond: Beyond::After
            }]
        );
        assert_eq!(i.status, Status::Valid);
        let text = render_text(&i);
        assert!(
            text.contains(
                "Expires at:       out of range: 9223372036854775807 is after \
                 9999-12-30T22:00:00Z, the last date shown here"
            ),
            "{text}"
        );
        assert!(text.contains("in practice it never expires"), "{text}");
        assert!(!text.contains("no exp claim"), "{text}");
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(
            json["out_of_range"],
            json!([{"claim": "exp", "seconds": i64::MAX, "beyond": "after"}])
        );

        // Long before the first date: expired, not valid.
        let t = token(json!({"exp": i64::MIN, "iat": IAT}));
        let i = explain(&t, at(IAT));
        assert_eq!(i.status, Status::Expired);
        let text = render_text(&i);
        assert!(
            text.contains("out of range: -9223372036854775808 is before"),
            "{text}"
        );
        assert!(
            text.contains("It expired before any date shown here"),
            "{text}"
        );

        // A far warnafter never makes the token stale; a far nbf keeps it not yet valid.
        let t = token(json!({"exp": IAT + 600, "iat": IAT, "nbf": i64::MAX,
                             "kubernetes.io": {"warnafter": i64::MAX}}));
        let i = explain(&t, at(IAT + 60));
        assert_eq!(i.status, Status::NotYetValid);
        let text = render_text(&i);
        assert!(
            text.contains("Not before:       out of range: 9223372036854775807"),
            "{text}"
        );
        assert!(text.contains("Warn after:       out of range"), "{text}");
        assert!(
            text.contains("The nbf claim: 9223372036854775807 is after"),
            "{text}"
        );
    }

    #[test]
    fn text_rendering_has_the_table_and_the_extension() {
        let mut i = explain(&extended(31_536_000), at(IAT + 60));
        let text = render_text(&i);
        assert!(text.contains("Kind:"), "{text}");
        assert!(text.contains("bound (TokenRequest)"), "{text}");
        assert!(
            text.contains("2024-11-13T22:13:20Z (365d after issue) (extended)"),
            "{text}"
        );
        assert!(text.contains("Warn after:"), "{text}");
        assert!(text.contains("pod app-1 (uid pu)"), "{text}");
        assert!(
            text.contains("31536000 s (365d) in the JWT; requested 3607 s (1h 7s)"),
            "{text}"
        );
        assert!(
            text.contains("2023-11-14T23:01:17Z .. 2023-11-14T23:01:26Z"),
            "{text}"
        );
        assert!(text.contains("one year"), "{text}");
        assert!(text.contains("not checked"), "{text}");
        i.signature = Some(SignatureCheck {
            verified: false,
            key_id: None,
            error: Some("bad signature".into()),
        });
        assert!(render_text(&i).contains("INVALID: bad signature"));

        let legacy = render_text(&explain(&legacy(), at(IAT)));
        assert!(legacy.contains("legacy (secret-based)"), "{legacy}");
        assert!(legacy.contains("never (no exp claim)"), "{legacy}");
        assert!(legacy.contains("default-token-abcde"), "{legacy}");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(3607), "1h 7s");
        assert_eq!(human(2886), "48m 6s");
        assert_eq!(human(31_536_000), "365d");
        assert_eq!(human(-61), "-1m 1s");
    }
}

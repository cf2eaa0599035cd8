//! The audit log: one JSON object per line in the `audit.k8s.io/v1` `Event` shape at level
//! `Metadata`, so upstream's queries work unchanged, e.g.
//! `jq -r 'select(.annotations["authentication.k8s.io/stale-token"]) | [.user.username,
//! .annotations["authentication.k8s.io/stale-token"]] | @tsv' audit.log`.
//!
//! Events never carry a token: `Metadata` level has no request or response bodies, and the
//! credential is named by its jti only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::classify::{TokenUse, UseOutcome};

pub const API_VERSION: &str = "audit.k8s.io/v1";
pub const KIND: &str = "Event";
pub const LEVEL_METADATA: &str = "Metadata";
pub const STAGE_RESPONSE_COMPLETE: &str = "ResponseComplete";

/// Annotation keys: upstream's, then ours.
pub mod annotation {
    /// Value: `subject: <sub>, seconds after warning threshold: <N>`.
    pub const STALE_TOKEN: &str = "authentication.k8s.io/stale-token";
    /// Value: the subject.
    pub const LEGACY_TOKEN: &str = "authentication.k8s.io/legacy-token";
    /// Value: `allow` or `forbid`.
    pub const AUTHORIZATION_DECISION: &str = "authorization.k8s.io/decision";
    pub const AUTHORIZATION_REASON: &str = "authorization.k8s.io/reason";
    /// Value: `JTI=<jti>` of a token the request issued.
    pub const ISSUED_CREDENTIAL_ID: &str = "authentication.kubernetes.io/issued-credential-id";
    /// Ours. Value: `subject: <sub>, seconds after rotation: <N.NNN>`.
    pub const SUPERSEDED_TOKEN: &str = "projected-token/superseded-token";
    /// Ours. Value: the subject; the request was answered 401.
    pub const EXPIRED_TOKEN: &str = "projected-token/expired-token";
    /// Ours. Which control a request was (`rotate-tokens`, `rotate-signing-key`, `outage`,
    /// `end-outage`, `lifetime`, `revoke-pod`).
    pub const CONTROL: &str = "projected-token/control";
    /// Ours. What the control did, in words (kids, times, volumes; never a token).
    pub const CONTROL_DETAILS: &str = "projected-token/control-details";
}

/// `JTI=<jti>`: how upstream names a credential in audit annotations and user extra.
pub fn credential_id(jti: &str) -> String {
    format!("JTI={jti}")
}

/// `audit.k8s.io/v1` `Event`, with the fields `Metadata` level fills, in upstream's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Kubernetes verb (`create`, `get`, `list`, ...) or the lower-case HTTP method for
    /// non-resource URLs.
    pub verb: String,
    pub user: UserInfo,
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    #[serde(with = "micro_time")]
    pub request_received_timestamp: Timestamp,
    #[serde(with = "micro_time")]
    pub stage_timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `authentication.k8s.io/v1` `UserInfo`, in upstream's field order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// `audit.k8s.io/v1` `ObjectReference`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Empty for the core group, and then left out, as upstream.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The `metav1.Status` upstream puts in `responseStatus`: `{"metadata":{},"code":200}` on success,
/// with `status`, `message` and `reason` on failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub code: u16,
}

impl AuditEvent {
    /// A `Metadata`-level `ResponseComplete` event with a fresh audit ID; the caller fills in the
    /// user, source, object and response.
    pub fn new(
        verb: impl Into<String>,
        request_uri: impl Into<String>,
        received_at: Timestamp,
    ) -> Self {
        Self {
            kind: KIND.to_owned(),
            api_version: API_VERSION.to_owned(),
            level: LEVEL_METADATA.to_owned(),
            audit_id: uuid::Uuid::new_v4().to_string(),
            stage: STAGE_RESPONSE_COMPLETE.to_owned(),
            request_uri: request_uri.into(),
            verb: verb.into(),
            user: UserInfo::default(),
            source_ips: Vec::new(),
            user_agent: None,
            object_ref: None,
            response_status: None,
            request_received_timestamp: received_at,
            stage_timestamp: received_at,
            annotations: BTreeMap::new(),
        }
    }

    /// Sets the response code and when the response completed.
    pub fn complete(&mut self, code: u16, completed_at: Timestamp) {
        self.response_status = Some(ResponseStatus {
            code,
            ..ResponseStatus::default()
        });
        self.stage_timestamp = completed_at;
    }

    pub fn annotate(&mut self, key: &str, value: impl Into<String>) {
        self.annotations.insert(key.to_owned(), value.into());
    }

    /// The annotations a token use earns: upstream's stale and legacy ones when upstream would add
    /// them, and ours for superseded and expired tokens.
    pub fn annotate_token_use(&mut self, token_use: &TokenUse, outcome: &UseOutcome) {
        if let Some(stale) = &outcome.stale_annotation {
            self.annotate(annotation::STALE_TOKEN, stale.clone());
        }
        if token_use.legacy {
            self.annotate(annotation::LEGACY_TOKEN, token_use.subject.clone());
        }
        if let Some(delay) = outcome.superseded_after {
            self.annotate(
                annotation::SUPERSEDED_TOKEN,
                format!(
                    "subject: {}, seconds after rotation: {:.3}",
                    token_use.subject,
                    delay.as_secs_f64()
                ),
            );
        }
        if outcome.expired {
            self.annotate(annotation::EXPIRED_TOKEN, token_use.subject.clone());
        }
    }

    /// One line of the log, newline included.
    pub fn to_json_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

/// `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits.
mod micro_time {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{at:.6}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}: {source}; give a writable file (--audit-log)")]
    Open {
        path: PathBuf,
        #[source]
        source: crate::private_files::PrivateFileError,
    },
    #[error("cannot serialise audit event {audit_id}: {source}")]
    Serialize {
        audit_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write audit event {audit_id} to {path}: {source}")]
    Write {
        audit_id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Appends events to a file, one line each.
///
/// Writes go straight to the file under a `std::sync::Mutex`, one `write(2)` per line, no fsync:
/// a line is a few hundred bytes into the page cache, microseconds, so the lock is never held
/// long enough to matter to the async workers, and lines reach the file in order and without
/// loss. A writer task behind a channel would add buffering, a shutdown flush and a drop policy
/// for little gain at this scale. (On a filesystem that can stall, such as a hung network mount,
/// requests would stall with it: keep the log on local disk.)
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    /// Set after a failed write, so a full disk logs one warning, not one per request.
    failing: AtomicBool,
}

impl AuditLog {
    /// Opens (creating, mode 0600) `path` for appending; never through a link, and never a
    /// file someone else owns.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = crate::private_files::open_append(path).map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            failing: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event; a failure is logged (once until writes succeed again) and otherwise
    /// ignored: auditing never fails a request.
    pub fn record(&self, event: &AuditEvent) {
        match self.try_record(event) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "audit log writes work again");
                }
            }
            Err(err) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "audit event lost; later failures are not logged until a write succeeds");
                }
            }
        }
    }

    /// Writes one event and reports a failure.
    pub fn try_record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        // Serialise before taking the lock, so the lock covers only the write.
        let line = event
            .to_json_line()
            .map_err(|source| AuditError::Serialize {
                audit_id: event.audit_id.clone(),
                source,
            })?;
        // A panic elsewhere while holding the lock leaves the file itself usable.
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line).map_err(|source| AuditError::Write {
            audit_id: event.audit_id.clone(),
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::ledger::{Ledger, Rotation};
    use serde_json::{json, Value};

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_microsecond(1_700_000_000_000_000 + micros).unwrap()
    }

    fn token_request_event() -> AuditEvent {
        let mut event = AuditEvent::new(
            "create",
            "/api/v1/namespaces/default/serviceaccounts/app/token",
            at(123_456),
        );
        event.audit_id = "6f1c1b2e-0d7a-4b0e-9d55-3c1b8f2f4a10".to_owned();
        event.user = UserInfo {
            username: "system:serviceaccount:default:app".to_owned(),
            uid: "sa-uid".to_owned(),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                "system:serviceaccounts:default".to_owned(),
                "system:authenticated".to_owned(),
            ],
            extra: BTreeMap::from([(
                "authentication.kubernetes.io/credential-id".to_owned(),
                vec![credential_id("old-jti")],
            )]),
        };
        event.source_ips = vec!["127.0.0.1".to_owned()];
        event.user_agent = Some("kubelet/v1.37.0".to_owned());
        event.object_ref = Some(ObjectReference {
            resource: "serviceaccounts".to_owned(),
            namespace: "default".to_owned(),
            name: "app".to_owned(),
            api_version: "v1".to_owned(),
            subresource: "token".to_owned(),
            ..ObjectReference::default()
        });
        event.complete(201, at(2_000_000));
        event.annotate(annotation::AUTHORIZATION_DECISION, "allow");
        event.annotate(annotation::AUTHORIZATION_REASON, "");
        event.annotate(annotation::ISSUED_CREDENTIAL_ID, credential_id("new-jti"));
        event
    }

    #[test]
    fn event_serialises_with_upstream_field_names() {
        let value: Value = serde_json::to_value(token_request_event()).unwrap();
        assert_eq!(
            value,
            json!({
                "kind": "Event",
                "apiVersion": "audit.k8s.io/v1",
                "level": "Metadata",
                "auditID": "6f1c1b2e-0d7a-4b0e-9d55-3c1b8f2f4a10",
                "stage": "ResponseComplete",
                "requestURI": "/api/v1/namespaces/default/serviceaccounts/app/token",
                "verb": "create",
                "user": {
                    "username": "system:serviceaccount:default:app",
                    "uid": "sa-uid",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/credential-id": ["JTI=old-jti"]}
                },
                "sourceIPs": ["127.0.0.1"],
                "userAgent": "kubelet/v1.37.0",
                "objectRef": {
                    "resource": "serviceaccounts",
                    "namespace": "default",
                    "name": "app",
                    "apiVersion": "v1",
                    "subresource": "token"
                },
                "responseStatus": {"metadata": {}, "code": 201},
                "requestReceivedTimestamp": "2023-11-14T22:13:20.123456Z",
                "stageTimestamp": "2023-11-14T22:13:22.000000Z",
                "annotations": {
                    "authentication.kubernetes.io/issued-credential-id": "JTI=new-jti",
                    "authorization.k8s.io/decision": "allow",
                    "authorization.k8s.io/reason": ""
                }
            })
        );
        // Field order as upstream writes it.
        let line = String::from_utf8(token_request_event().to_json_line().unwrap()).unwrap();
        assert!(line.starts_with(
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"#
        ));
        assert!(line.ends_with("}\n") && !line.trim_end().contains('\n'));
        let back: AuditEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, token_request_event());
    }

    #[test]
    fn stale_token_query_selects_the_stale_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();

        let mut ledger = Ledger::new();
        ledger.record_rotation(Rotation {
            at: at(0),
            namespace: "default".to_owned(),
            pod: "app-0".to_owned(),
            service_account: "app".to_owned(),
            volume: "kube-api-access-abcde".to_owned(),
            path: "token".to_owned(),
            old_jti: Some("old".to_owned()),
            new_jti: Some("new".to_owned()),
        });
        let fresh_use = TokenUse {
            at: at(1_000_000),
            subject: "system:serviceaccount:default:app".to_owned(),
            namespace: "default".to_owned(),
            service_account: "app".to_owned(),
            pod: Some("app-0".to_owned()),
            pod_uid: None,
            jti: Some("new".to_owned()),
            warn_after: Some(at(3_607_000_000)),
            issued_at: None,
            legacy: false,
            rejected: None,
            user_agent: Some("app/1.0".to_owned()),
        };
        let stale_use = TokenUse {
            at: at(3_700_000_000),
            jti: Some("old".to_owned()),
            ..fresh_use.clone()
        };
        for token_use in [fresh_use, stale_use] {
            let outcome = ledger.record_use(token_use.clone());
            let mut event = AuditEvent::new("get", "/api/v1/namespaces/default/pods", token_use.at);
            event.user.username = token_use.subject.clone();
            event.complete(200, token_use.at);
            event.annotate_token_use(&token_use, &outcome);
            log.record(&event);
        }
        drop(log);

        // jq -r 'select(.annotations["authentication.k8s.io/stale-token"])
        //        | [.user.username, .annotations["authentication.k8s.io/stale-token"]] | @tsv'
        let text = std::fs::read_to_string(&path).unwrap();
        let selected: Vec<String> = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter_map(|event| {
                let stale = event["annotations"][annotation::STALE_TOKEN].as_str()?;
                Some(format!("{}\t{stale}", event["user"]["username"].as_str()?))
            })
            .collect();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(
            selected,
            ["system:serviceaccount:default:app\tsubject: system:serviceaccount:default:app, seconds after warning threshold: 93"]
        );
        assert!(text.contains(
            r#""projected-token/superseded-token":"subject: system:serviceaccount:default:app, seconds after rotation: 3700.000""#
        ));
    }

    #[test]
    fn open_failure_names_the_flag() {
        let err = AuditLog::open(Path::new("/nonexistent-dir/audit.log")).unwrap_err();
        assert!(err.to_string().contains("--audit-log"), "{err}");
    }
}

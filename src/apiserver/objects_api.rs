//! `GET` of the emulator's service accounts and pods, listed and one by one, so that `kubectl get
//! sa` and `kubectl get pods` show what tokens are bound to; `DELETE` of a pod, which revokes its
//! tokens. Admin only, as under upstream's default RBAC no service account may read these.
//!
//! kubectl asks for a `meta.k8s.io` Table (`Accept: ...;as=Table;g=meta.k8s.io`) and prints its
//! rows; every other client gets the object or its list as JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit;
use super::authn::lock;
use super::request::{admin_reason, json_response, respond, ApiState, RequestContext};
use super::status::ApiError;
use crate::issuer::objects::{Listed, StoredObject, StoredPod};

/// The query parameters a list or get may carry; the rest (`limit`, `resourceVersion`, ...) are
/// accepted and ignored, as every item fits in one page.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadQuery {
    #[serde(default)]
    label_selector: String,
    #[serde(default)]
    field_selector: String,
    #[serde(default)]
    include_object: Option<String>,
}

/// The two kinds the read API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    ServiceAccounts,
    Pods,
}

impl Resource {
    fn plural(self) -> &'static str {
        match self {
            Self::ServiceAccounts => "serviceaccounts",
            Self::Pods => "pods",
        }
    }

    /// The fields `fieldSelector` may name, as upstream's field label conversion allows
    /// (a subset for pods: the ones the emulator keeps).
    fn selectable_fields(self) -> &'static [&'static str] {
        match self {
            Self::ServiceAccounts => &["metadata.name", "metadata.namespace"],
            Self::Pods => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.phase",
            ],
        }
    }
}

/// The phase every emulated pod reports: tokens are projected for it, so it runs.
const POD_PHASE: &str = "Running";

/// `GET` of service accounts: every namespace's, one namespace's, or one by name (the route's
/// `{namespace}` and `{name}` parameters, where it has them).
pub async fn read_service_accounts(
    state: State<Arc<ApiState>>,
    params: Option<Path<HashMap<String, String>>>,
    query: Query<ReadQuery>,
    headers: HeaderMap,
    ctx: RequestContext,
) -> Response {
    let params = params.map(|Path(p)| p).unwrap_or_default();
    read(
        state,
        ctx,
        &headers,
        Resource::ServiceAccounts,
        &params,
        &query,
    )
}

/// `GET` of pods, as [`read_service_accounts`].
pub async fn read_pods(
    state: State<Arc<ApiState>>,
    params: Option<Path<HashMap<String, String>>>,
    query: Query<ReadQuery>,
    headers: HeaderMap,
    ctx: RequestContext,
) -> Response {
    let params = params.map(|Path(p)| p).unwrap_or_default();
    read(state, ctx, &headers, Resource::Pods, &params, &query)
}

/// One list (no `name`) or get, authorized, filtered and rendered as the client asked.
fn read(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    headers: &HeaderMap,
    resource: Resource,
    params: &HashMap<String, String>,
    query: &ReadQuery,
) -> Response {
    let namespace = params.get("namespace").map(String::as_str);
    let name = params.get("name").map(String::as_str);
    ctx.object_ref = Some(audit::ObjectReference {
        resource: resource.plural().into(),
        namespace: namespace.unwrap_or_default().into(),
        name: name.unwrap_or_default().into(),
        api_version: "v1".into(),
        ..audit::ObjectReference::default()
    });
    let verb = if name.is_some() { "get" } else { "list" };
    let result = state.caller(&mut ctx).and_then(|caller| {
        if !caller.is_admin() {
            ApiState::forbid(&mut ctx);
            return Err(ApiError::forbidden_resource(
                &caller.username(),
                verb,
                resource.plural(),
                None,
                "",
                namespace,
                name.unwrap_or_default(),
            ));
        }
        ApiState::allow(&mut ctx, admin_reason(&caller));
        if let Some(name) = name {
            ApiError::check_name_parameter(name)?;
        }
        let filter = Filter::parse(resource, query)?;
        let table = table_version(headers);
        let now = state.clock.now();
        let objects = lock(&state.objects);
        let rows: Vec<Row> = match resource {
            Resource::ServiceAccounts => objects
                .list_service_accounts(namespace)
                .iter()
                .map(Row::service_account)
                .collect(),
            Resource::Pods => objects.list_pods(namespace).iter().map(Row::pod).collect(),
        };
        drop(objects);
        let rows: Vec<Row> = match name {
            Some(name) => {
                let found = rows.into_iter().find(|r| r.name() == Some(name));
                vec![found.ok_or_else(|| ApiError::not_found(resource.plural(), name))?]
            }
            None => rows.into_iter().filter(|r| filter.matches(r)).collect(),
        };
        let body = match table {
            Some(version) => render_table(resource, &rows, now, version, query),
            None if name.is_some() => rows
                .into_iter()
                .next()
                .map(Row::into_json)
                .unwrap_or_default(),
            None => list(resource, rows),
        };
        Ok(json_response(StatusCode::OK, &body))
    });
    respond(&state, ctx, result)
}

/// The `meta.k8s.io` version of the Table the client accepts, if it asked for one.
fn table_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let mut best = None;
    for clause in accept.split(',') {
        let params: Vec<&str> = clause.split(';').map(str::trim).collect();
        let has = |p: &str| params.iter().any(|q| q.eq_ignore_ascii_case(p));
        if !has("as=Table") || !has("g=meta.k8s.io") {
            continue;
        }
        if has("v=v1") {
            return Some("v1");
        }
        if has("v=v1beta1") {
            best = Some("v1beta1");
        }
    }
    best
}

/// A stored object as an API object.
#[derive(Debug, Clone)]
enum Row {
    ServiceAccount(Box<ServiceAccount>),
    Pod(Box<Pod>),
}

fn meta(namespace: &str, name: &str, uid: &str, created: Option<Timestamp>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        uid: Some(uid.to_owned()),
        creation_timestamp: created.map(Time),
        ..ObjectMeta::default()
    }
}

impl Row {
    fn service_account(listed: &Listed<'_, StoredObject>) -> Self {
        Self::ServiceAccount(Box::new(ServiceAccount {
            metadata: meta(
                listed.namespace,
                listed.name,
                &listed.object.uid,
                listed.created,
            ),
            ..ServiceAccount::default()
        }))
    }

    fn pod(listed: &Listed<'_, StoredPod>) -> Self {
        let pod = listed.object;
        Self::Pod(Box::new(Pod {
            metadata: meta(listed.namespace, listed.name, &pod.uid, listed.created),
            spec: Some(PodSpec {
                service_account_name: Some(pod.service_account.clone()),
                node_name: pod.node_name.clone(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(POD_PHASE.into()),
                ..PodStatus::default()
            }),
        }))
    }

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::ServiceAccount(sa) => &sa.metadata,
            Self::Pod(pod) => &pod.metadata,
        }
    }

    fn name(&self) -> Option<&str> {
        self.metadata().name.as_deref()
    }

    /// The value of a selectable field (see [`Resource::selectable_fields`]).
    fn field(&self, field: &str) -> Option<&str> {
        let meta = self.metadata();
        match (self, field) {
            (_, "metadata.name") => meta.name.as_deref(),
            (_, "metadata.namespace") => meta.namespace.as_deref(),
            (Self::Pod(pod), "spec.nodeName") => pod.spec.as_ref()?.node_name.as_deref(),
            (Self::Pod(pod), "spec.serviceAccountName") => {
                pod.spec.as_ref()?.service_account_name.as_deref()
            }
            (Self::Pod(_), "status.phase") => Some(POD_PHASE),
            _ => None,
        }
    }

    fn into_json(self) -> Value {
        let value = match self {
            Self::ServiceAccount(sa) => serde_json::to_value(sa),
            Self::Pod(pod) => serde_json::to_value(pod),
        };
        value.unwrap_or_default()
    }
}

/// A `fieldSelector`: `field=value`, `field==value` or `field!=value` terms joined by commas.
#[derive(Debug, Default)]
struct Filter {
    terms: Vec<(String, bool, String)>,
}

impl Filter {
    fn parse(resource: Resource, query: &ReadQuery) -> Result<Self, ApiError> {
        // The emulator keeps no labels: a selector could only be answered wrongly.
        if !query.label_selector.trim().is_empty() {
            return Err(ApiError::bad_request(format!(
                "labelSelector {:?}: the emulator keeps no labels of {}; list without a label selector",
                query.label_selector,
                resource.plural()
            )));
        }
        let mut terms = Vec::new();
        for term in query.field_selector.split(',').map(str::trim) {
            if term.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {term:?}: want field=value, field==value or field!=value"
                )));
            };
            let field = field.trim();
            if !resource.selectable_fields().contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self { terms })
    }

    fn matches(&self, row: &Row) -> bool {
        self.terms
            .iter()
            .all(|(field, equal, value)| (row.field(field) == Some(value.as_str())) == *equal)
    }
}

/// A `ServiceAccountList` or `PodList`.
fn list(resource: Resource, rows: Vec<Row>) -> Value {
    let kind = match resource {
        Resource::ServiceAccounts => "ServiceAccountList",
        Resource::Pods => "PodList",
    };
    let items: Vec<Value> = rows.into_iter().map(Row::into_json).collect();
    json!({"kind": kind, "apiVersion": "v1", "metadata": {}, "items": items})
}

/// A `meta.k8s.io` Table with upstream's columns for the resource (its printers), one row per
/// object, each carrying the object's metadata unless `includeObject=None`.
fn render_table(
    resource: Resource,
    rows: &[Row],
    now: Timestamp,
    version: &str,
    query: &ReadQuery,
) -> Value {
    let column = |name: &str, kind: &str, format: &str, priority: u8| json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority});
    let columns = match resource {
        Resource::ServiceAccounts => vec![
            column("Name", "string", "name", 0),
            column("Secrets", "integer", "", 0),
            column("Age", "string", "", 0),
        ],
        Resource::Pods => vec![
            column("Name", "string", "name", 0),
            column("Ready", "string", "", 0),
            column("Status", "string", "", 0),
            column("Restarts", "string", "", 0),
            column("Age", "string", "", 0),
            column("IP", "string", "", 1),
            column("Node", "string", "", 1),
            column("Nominated Node", "string", "", 1),
            column("Readiness Gates", "string", "", 1),
        ],
    };
    let include = query.include_object.as_deref().unwrap_or("Metadata");
    let table_rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            let meta = row.metadata();
            let age = meta
                .creation_timestamp
                .as_ref()
                .map(|created| human_duration(now.duration_since(created.0).as_secs()))
                .unwrap_or_else(|| "<unknown>".into());
            let name = meta.name.clone().unwrap_or_default();
            let cells = match row {
                Row::ServiceAccount(_) => json!([name, 0, age]),
                Row::Pod(pod) => {
                    let node = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_else(|| "<none>".into());
                    json!([name, "0/0", POD_PHASE, "0", age, "<none>", node, "<none>", "<none>"])
                }
            };
            let object = match include {
                "None" => Value::Null,
                "Object" => row.clone().into_json(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": format!("meta.k8s.io/{version}"),
                    "metadata": meta,
                }),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": {},
        "columnDefinitions": columns,
        "rows": table_rows,
    })
}

/// An age as kubectl prints it (apimachinery's `HumanDuration`): about two or three
/// significant figures, `<invalid>` for a time more than a second in the future.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    let minutes = seconds / 60;
    if minutes < 10 {
        return with(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    if hours < 24 * 365 * 8 {
        return with(days / 365, "y", days % 365, "d");
    }
    format!("{}y", days / 365)
}

/// `DELETE /api/v1/namespaces/{ns}/pods/{name}` (admin only): tokens bound to the pod stop
/// authenticating at once, as upstream once the object is gone. Answers the deleted pod.
pub async fn delete_pod(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    mut ctx: RequestContext,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "pods".into(),
        namespace: namespace.clone(),
        name: name.clone(),
        api_version: "v1".into(),
        ..audit::ObjectReference::default()
    });
    let result = state.caller(&mut ctx).and_then(|caller| {
        if !caller.is_admin() {
            ApiState::forbid(&mut ctx);
            return Err(ApiError::forbidden_resource(
                &caller.username(),
                "delete",
                "pods",
                None,
                "",
                Some(&namespace),
                &name,
            ));
        }
        ApiState::allow(&mut ctx, admin_reason(&caller));
        // As upstream's storage: a name it cannot key is a bad request; any other name that no
        // pod has (an invalid one never does) is not found.
        ApiError::check_name_parameter(&name)?;
        // Deleting a pod is how its tokens are revoked (`ctl revoke`).
        ctx.annotations
            .insert(audit::annotation::CONTROL.into(), "revoke-pod".into());
        let deleted = lock(&state.objects)
            .delete_pod(&namespace, &name)
            .ok_or_else(|| ApiError::not_found("pods", &name))?;
        ctx.annotations.insert(
            audit::annotation::CONTROL_DETAILS.into(),
            format!(
                "pod {namespace}/{name} (uid {}) deleted: its tokens no longer authenticate",
                deleted.uid
            ),
        );
        let pod = k8s_openapi::api::core::v1::Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(deleted.uid),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                service_account_name: Some(deleted.service_account),
                node_name: deleted.node_name,
                ..Default::default()
            }),
            status: None,
        };
        tracing::info!(namespace = %namespace, pod = %name, "pod deleted; its tokens no longer authenticate");
        Ok(json_response(StatusCode::OK, &pod))
    });
    respond(&state, ctx, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600 + 59, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (9 * 86400 + 3600, "9d"),
            (3 * 365 * 86400 + 10 * 86400, "3y10d"),
            (9 * 365 * 86400 + 10 * 86400, "9y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds}s");
        }
    }

    #[test]
    fn tables_are_served_to_clients_that_ask_for_them() {
        let with_accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().expect("header"));
            table_version(&headers)
        };
        // What kubectl 1.37 sends for `get`.
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(with_accept(kubectl), Some("v1"));
        assert_eq!(
            with_accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            Some("v1beta1")
        );
        assert_eq!(with_accept("application/json"), None);
        assert_eq!(with_accept("application/json;as=Table;v=v1;g=apps"), None);
        assert_eq!(table_version(&HeaderMap::new()), None);
    }

    fn query(field_selector: &str, label_selector: &str) -> ReadQuery {
        ReadQuery {
            field_selector: field_selector.into(),
            label_selector: label_selector.into(),
            include_object: None,
        }
    }

    #[test]
    fn field_selectors_filter_on_the_fields_upstream_allows() {
        let pod = StoredPod {
            uid: "u".into(),
            service_account: "builder".into(),
            node_name: Some("worker-1".into()),
        };
        let row = Row::pod(&Listed {
            namespace: "ci",
            name: "web",
            object: &pod,
            created: None,
        });
        let matches = |selector: &str| {
            Filter::parse(Resource::Pods, &query(selector, ""))
                .map(|f| f.matches(&row))
                .map_err(|e| e.message)
        };
        assert_eq!(matches(""), Ok(true));
        assert_eq!(matches("metadata.name=web"), Ok(true));
        assert_eq!(
            matches("metadata.name==web,spec.nodeName=worker-1"),
            Ok(true)
        );
        assert_eq!(matches("spec.nodeName!=worker-1"), Ok(false));
        assert_eq!(matches("status.phase=Running"), Ok(true));
        assert_eq!(matches("metadata.namespace=default"), Ok(false));
        let unsupported = matches("spec.hostNetwork=true").unwrap_err();
        assert!(
            unsupported.contains("field label not supported: spec.hostNetwork"),
            "{unsupported}"
        );
        assert!(Filter::parse(Resource::ServiceAccounts, &query("spec.nodeName=x", "")).is_err());
        assert!(matches("metadata.name").is_err());
        let labels = Filter::parse(Resource::Pods, &query("", "app=web")).unwrap_err();
        assert!(labels.message.contains("keeps no labels"), "{labels:?}");
    }

    #[test]
    fn tables_have_upstreams_columns_and_cells() {
        let created = Timestamp::from_second(1_000).expect("timestamp");
        let now = Timestamp::from_second(1_000 + 3 * 3600 + 5 * 60).expect("timestamp");
        let sa = StoredObject {
            uid: "sa-uid".into(),
        };
        let pod = StoredPod {
            uid: "pod-uid".into(),
            service_account: "default".into(),
            node_name: Some("emulated-node".into()),
        };
        let accounts = render_table(
            Resource::ServiceAccounts,
            &[Row::service_account(&Listed {
                namespace: "default",
                name: "default",
                object: &sa,
                created: Some(created),
            })],
            now,
            "v1",
            &ReadQuery::default(),
        );
        assert_eq!(accounts["kind"], "Table");
        assert_eq!(accounts["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> = accounts["columnDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "Secrets", "Age"]);
        assert_eq!(accounts["rows"][0]["cells"], json!(["default", 0, "3h5m"]));
        assert_eq!(accounts["rows"][0]["object"]["metadata"]["uid"], "sa-uid");
        let pods = render_table(
            Resource::Pods,
            &[Row::pod(&Listed {
                namespace: "default",
                name: "emulated-pod",
                object: &pod,
                created: None,
            })],
            now,
            "v1",
            &ReadQuery::default(),
        );
        assert_eq!(
            pods["rows"][0]["cells"],
            json!([
                "emulated-pod",
                "0/0",
                "Running",
                "0",
                "<unknown>",
                "<none>",
                "emulated-node",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(pods["columnDefinitions"][6]["priority"], 1);
    }
}

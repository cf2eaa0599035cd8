//! The objects tokens are issued for and bound to: service accounts, pods, secrets and nodes,
//! held in memory as the emulator's stand-in for etcd.
//!
//! Objects are either declared up front (`--objects FILE`, ordinary manifests) or created on
//! first use (the default, convenient for tests; `--no-auto-create` turns it off). Every stored
//! name is one kube-apiserver would accept (a DNS-1123 label for a namespace, a DNS-1123 subdomain
//! for the objects): manifests with other names are refused, and a lookup of such a name finds
//! nothing and creates nothing, as no such object can exist upstream. Pure data: no I/O; the
//! caller parses files, supplies random uids and, for creation timestamps, a clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use serde::Deserialize;

use crate::clock::Clock;
use crate::names::{check_namespace, check_object_name, is_dns1123_label, is_dns1123_subdomain};

/// A namespaced object's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub uid: String,
}

/// What tokens need to know of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPod {
    pub uid: String,
    pub service_account: String,
    pub node_name: Option<String>,
}

/// A manifest that could not be used, naming the document and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {document}: {message}")]
pub struct ManifestError {
    /// 1-based position in the multi-document file.
    pub document: usize,
    pub message: String,
}

type Key = (String, String);

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// Whether an object `namespace/name` could exist upstream (so may be created on first use).
fn valid_namespaced(namespace: &str, name: &str) -> bool {
    is_dns1123_label(namespace) && is_dns1123_subdomain(name)
}

/// The entry for `key`, created by `make` when missing and `create` is true.
fn ensure<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    key: K,
    create: bool,
    make: impl FnOnce() -> V,
) -> Option<&V> {
    use std::collections::hash_map::Entry;
    match map.entry(key) {
        Entry::Occupied(entry) => Some(entry.into_mut()),
        Entry::Vacant(entry) if create => Some(entry.insert(make())),
        Entry::Vacant(_) => None,
    }
}

/// Records when an object was first stored (its `creationTimestamp`), by uid, when there is a
/// clock to ask. Kept apart from the objects so a lookup that finds one costs no clock read.
#[derive(Default)]
struct CreationTimes {
    clock: Option<Arc<dyn Clock>>,
    by_uid: HashMap<String, Timestamp>,
}

impl std::fmt::Debug for CreationTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.by_uid.iter()).finish()
    }
}

impl CreationTimes {
    /// Notes `uid` as created now unless it is known (no allocation when it is).
    fn note(&mut self, uid: &str) {
        if let Some(clock) = &self.clock {
            if !self.by_uid.contains_key(uid) {
                self.by_uid.insert(uid.to_owned(), clock.now());
            }
        }
    }

    fn set(&mut self, uid: &str, at: Timestamp) {
        self.by_uid.insert(uid.to_owned(), at);
    }

    fn get(&self, uid: &str) -> Option<Timestamp> {
        self.by_uid.get(uid).copied()
    }
}

/// One stored object with its names and creation time, as the read API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<'a, T> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a T,
    pub created: Option<Timestamp>,
}

/// The in-memory object store.
#[derive(Debug, Default)]
pub struct ObjectStore {
    auto_create: bool,
    created: CreationTimes,
    service_accounts: HashMap<Key, StoredObject>,
    pods: HashMap<Key, StoredPod>,
    secrets: HashMap<Key, StoredObject>,
    nodes: HashMap<String, StoredObject>,
    /// Uids of deleted pods, so that auto-creation never brings one back for an old token.
    deleted_pod_uids: HashSet<String>,
}

impl ObjectStore {
    /// An empty store; with `auto_create`, lookups through the `ensure_*` methods create what is
    /// missing.
    pub fn new(auto_create: bool) -> Self {
        Self {
            auto_create,
            ..Self::default()
        }
    }

    /// Objects stored from now on get their creation time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.created.clock = Some(clock);
        self
    }

    pub fn auto_create(&self) -> bool {
        self.auto_create
    }

    /// The service accounts of `namespace` (all namespaces: `None`), sorted by namespace and
    /// name as upstream's storage lists them.
    pub fn list_service_accounts(&self, namespace: Option<&str>) -> Vec<Listed<'_, StoredObject>> {
        self.listed(&self.service_accounts, namespace, |o| &o.uid)
    }

    /// The pods of `namespace` (all namespaces: `None`), sorted by namespace and name.
    pub fn list_pods(&self, namespace: Option<&str>) -> Vec<Listed<'_, StoredPod>> {
        self.listed(&self.pods, namespace, |p| &p.uid)
    }

    /// When the object with `uid` was stored, if a clock or its manifest said.
    pub fn created(&self, uid: &str) -> Option<Timestamp> {
        self.created.get(uid)
    }

    fn listed<'a, T>(
        &'a self,
        map: &'a HashMap<Key, T>,
        namespace: Option<&str>,
        uid: impl Fn(&T) -> &String,
    ) -> Vec<Listed<'a, T>> {
        let mut listed: Vec<Listed<'a, T>> = map
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .map(|((ns, name), object)| Listed {
                namespace: ns,
                name,
                object,
                created: self.created.get(uid(object)),
            })
            .collect();
        listed.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
        listed
    }

    pub fn service_account(&self, namespace: &str, name: &str) -> Option<&StoredObject> {
        self.service_accounts.get(&key(namespace, name))
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&StoredPod> {
        self.pods.get(&key(namespace, name))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&StoredObject> {
        self.secrets.get(&key(namespace, name))
    }

    pub fn node(&self, name: &str) -> Option<&StoredObject> {
        self.nodes.get(name)
    }

    /// The service account, created with `new_uid` when missing, auto-creation is on and the
    /// names are valid.
    pub fn ensure_service_account(
        &mut self,
        namespace: &str,
        name: &str,
        new_uid: impl FnOnce() -> String,
    ) -> Option<&StoredObject> {
        let create = self.auto_create && valid_namespaced(namespace, name);
        let found = ensure(
            &mut self.service_accounts,
            key(namespace, name),
            create,
            || StoredObject { uid: new_uid() },
        );
        found.inspect(|o| self.created.note(&o.uid))
    }

    /// The pod, created when missing, auto-creation is on and the names are valid: it runs as
    /// `service_account` and takes `uid` when the caller named one (so a bound reference with a
    /// uid matches).
    pub fn ensure_pod(
        &mut self,
        namespace: &str,
        name: &str,
        service_account: &str,
        uid: impl FnOnce() -> String,
    ) -> Option<&StoredPod> {
        let create = self.auto_create
            && valid_namespaced(namespace, name)
            && is_dns1123_subdomain(service_account);
        let found = ensure(&mut self.pods, key(namespace, name), create, || StoredPod {
            uid: uid(),
            service_account: service_account.to_owned(),
            node_name: None,
        });
        found.inspect(|p| self.created.note(&p.uid))
    }

    /// The secret, created when missing, auto-creation is on and the names are valid.
    pub fn ensure_secret(
        &mut self,
        namespace: &str,
        name: &str,
        uid: impl FnOnce() -> String,
    ) -> Option<&StoredObject> {
        let create = self.auto_create && valid_namespaced(namespace, name);
        ensure(&mut self.secrets, key(namespace, name), create, || {
            StoredObject { uid: uid() }
        })
    }

    /// The node, created when missing, auto-creation is on and the name is valid.
    pub fn ensure_node(
        &mut self,
        name: &str,
        uid: impl FnOnce() -> String,
    ) -> Option<&StoredObject> {
        let create = self.auto_create && is_dns1123_subdomain(name);
        ensure(&mut self.nodes, name.to_owned(), create, || StoredObject {
            uid: uid(),
        })
    }

    /// Declares (or replaces) a service account. The `put_*` methods trust their caller to have
    /// checked the names (as `load_manifests` and `emulate`'s pods do).
    pub fn put_service_account(&mut self, namespace: &str, name: &str, uid: String) {
        self.created.note(&uid);
        self.service_accounts
            .insert(key(namespace, name), StoredObject { uid });
    }

    /// Declares (or replaces) a pod.
    pub fn put_pod(&mut self, namespace: &str, name: &str, pod: StoredPod) {
        self.created.note(&pod.uid);
        self.pods.insert(key(namespace, name), pod);
    }

    pub fn put_secret(&mut self, namespace: &str, name: &str, uid: String) {
        self.secrets
            .insert(key(namespace, name), StoredObject { uid });
    }

    pub fn put_node(&mut self, name: &str, uid: String) {
        self.nodes.insert(name.to_owned(), StoredObject { uid });
    }

    /// Deletes a pod: tokens bound to it stop authenticating, as upstream once the object is gone.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> Option<StoredPod> {
        let removed = self.pods.remove(&key(namespace, name))?;
        self.deleted_pod_uids.insert(removed.uid.clone());
        Some(removed)
    }

    /// Whether a pod with this uid was deleted (a new pod of the same name has another uid).
    pub fn pod_was_deleted(&self, uid: &str) -> bool {
        self.deleted_pod_uids.contains(uid)
    }

    /// Loads a multi-document YAML (or JSON) file of ServiceAccount, Pod, Secret and Node
    /// manifests, as `kubectl get -o yaml` prints them, or a `List` of them. Objects without a
    /// `metadata.uid` get one from `new_uid`; a missing namespace is `default`.
    pub fn load_manifests(
        &mut self,
        text: &str,
        mut new_uid: impl FnMut() -> String,
    ) -> Result<usize, ManifestError> {
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(text).map_err(|e| ManifestError {
                document: 1,
                message: format!("not YAML: {e}"),
            })?;
        let mut loaded = 0;
        for (index, document) in documents.into_iter().enumerate() {
            let at = |message: String| ManifestError {
                document: index + 1,
                message,
            };
            if document.is_null() {
                continue;
            }
            let items = if document.get("kind").and_then(|k| k.as_str()) == Some("List") {
                document
                    .get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .ok_or_else(|| at("a List needs an `items` array".into()))?
            } else {
                vec![document]
            };
            for item in items {
                self.load_object(item, &mut new_uid).map_err(at)?;
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    fn load_object(
        &mut self,
        object: serde_json::Value,
        new_uid: &mut impl FnMut() -> String,
    ) -> Result<(), String> {
        let kind = object
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        fn parse<T: for<'de> Deserialize<'de>>(
            kind: &str,
            object: serde_json::Value,
        ) -> Result<T, String> {
            serde_json::from_value(object).map_err(|e| format!("{kind}: {e}"))
        }
        // Names as upstream's ValidateObjectMeta checks them on create, so that nothing is
        // stored that kube-apiserver would refuse.
        fn identity(
            kind: &str,
            meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            new_uid: &mut impl FnMut() -> String,
        ) -> Result<(String, String, String), String> {
            let name = meta
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("{kind}: metadata.name is required"))?;
            check_object_name("metadata.name", &name).map_err(|e| format!("{kind} {e}"))?;
            let namespace = meta
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_owned());
            // A Node has no namespace; one given is ignored, as upstream clears it.
            if kind != "Node" {
                check_namespace("metadata.namespace", &namespace)
                    .map_err(|e| format!("{kind} {e}"))?;
            }
            let uid = meta
                .uid
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(new_uid);
            Ok((namespace, name, uid))
        }
        let meta = match kind.as_str() {
            "ServiceAccount" => {
                let sa: ServiceAccount = parse(&kind, object)?;
                let (namespace, name, uid) = identity(&kind, &sa.metadata, new_uid)?;
                self.put_service_account(&namespace, &name, uid.clone());
                (uid, sa.metadata.creation_timestamp)
            }
            "Pod" => {
                let pod: Pod = parse(&kind, object)?;
                let (namespace, name, uid) = identity(&kind, &pod.metadata, new_uid)?;
                let spec = pod.spec.as_ref();
                let service_account = spec
                    .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".to_owned());
                check_object_name("spec.serviceAccountName", &service_account)
                    .map_err(|e| format!("{kind} {e}"))?;
                let node_name = spec
                    .and_then(|s| s.node_name.clone())
                    .filter(|n| !n.is_empty());
                if let Some(node) = &node_name {
                    check_object_name("spec.nodeName", node).map_err(|e| format!("{kind} {e}"))?;
                }
                self.put_pod(
                    &namespace,
                    &name,
                    StoredPod {
                        uid: uid.clone(),
                        service_account,
                        node_name,
                    },
                );
                (uid, pod.metadata.creation_timestamp)
            }
            "Secret" => {
                let secret: Secret = parse(&kind, object)?;
                let (namespace, name, uid) = identity(&kind, &secret.metadata, new_uid)?;
                self.put_secret(&namespace, &name, uid.clone());
                (uid, secret.metadata.creation_timestamp)
            }
            "Node" => {
                let node: Node = parse(&kind, object)?;
                let (_, name, uid) = identity(&kind, &node.metadata, new_uid)?;
                self.put_node(&name, uid.clone());
                (uid, node.metadata.creation_timestamp)
            }
            "" => return Err("`kind` is missing".into()),
            other => {
                return Err(format!(
                    "kind {other:?} is not kept by the emulator; give ServiceAccount, Pod, Secret or Node manifests"
                ))
            }
        };
        // A manifest's own creationTimestamp wins over the time it was loaded.
        if let (uid, Some(created)) = meta {
            self.created.set(&uid, created.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("uid-{n}")
        }
    }

    #[test]
    fn auto_create_makes_missing_objects_once() {
        let mut store = ObjectStore::new(true);
        let mut uid = counter();
        let first = store.ensure_service_account("ns", "sa", &mut uid).cloned();
        let again = store.ensure_service_account("ns", "sa", &mut uid).cloned();
        assert_eq!(
            first,
            Some(StoredObject {
                uid: "uid-1".into()
            })
        );
        assert_eq!(again, first);
        let pod = store
            .ensure_pod("ns", "p", "sa", || "given".into())
            .cloned();
        assert_eq!(
            pod.map(|p| (p.uid, p.service_account)),
            Some(("given".into(), "sa".into()))
        );
    }

    #[test]
    fn without_auto_create_missing_objects_stay_missing() {
        let mut store = ObjectStore::new(false);
        assert!(store
            .ensure_service_account("ns", "sa", || "x".into())
            .is_none());
        assert!(store.ensure_pod("ns", "p", "sa", || "x".into()).is_none());
        assert!(store.ensure_secret("ns", "s", || "x".into()).is_none());
        assert!(store.ensure_node("n", || "x".into()).is_none());
        assert!(store.service_account("ns", "sa").is_none());
    }

    #[test]
    fn invalid_names_are_never_created() {
        let mut store = ObjectStore::new(true);
        let long = "x".repeat(300);
        // `a` + `b:c` and `a:b` + `c` would both be system:serviceaccount:a:b:c.
        for (namespace, name) in [
            ("a", "b:c"),
            ("a:b", "c"),
            ("ns", "App"),
            ("ns", ".."),
            ("ns", "a\0b"),
            ("ns", "ünï"),
            ("ns", long.as_str()),
            ("NS", "app"),
            ("", "app"),
            ("ns", ""),
        ] {
            assert!(
                store
                    .ensure_service_account(namespace, name, || "x".into())
                    .is_none(),
                "{namespace}/{name}"
            );
            assert!(store
                .ensure_pod(namespace, name, "sa", || "x".into())
                .is_none());
            assert!(store
                .ensure_secret(namespace, name, || "x".into())
                .is_none());
            assert!(store.service_account(namespace, name).is_none());
        }
        assert!(store
            .ensure_pod("ns", "p", "Bad:SA", || "x".into())
            .is_none());
        assert!(store.ensure_node("Node_1", || "x".into()).is_none());
        assert!(store.service_accounts.is_empty() && store.pods.is_empty());
        assert!(store.secrets.is_empty() && store.nodes.is_empty());
        // Valid names still are.
        assert!(store
            .ensure_service_account("a", "b.c", || "x".into())
            .is_some());
        assert!(store.ensure_node("node-1", || "x".into()).is_some());
    }

    #[test]
    fn manifests_with_invalid_names_are_refused_naming_the_field() {
        let cases = [
            ("kind: ServiceAccount\nmetadata: {name: \"b:c\", namespace: a}\n", "ServiceAccount metadata.name: Invalid value: \"b:c\": a lowercase RFC 1123 subdomain"),
            ("kind: ServiceAccount\nmetadata: {name: c, namespace: \"a:b\"}\n", "ServiceAccount metadata.namespace: Invalid value: \"a:b\": a lowercase RFC 1123 label"),
            ("kind: Pod\nmetadata: {name: web, namespace: ns}\nspec: {serviceAccountName: Builder, containers: []}\n", "Pod spec.serviceAccountName: Invalid value: \"Builder\""),
            ("kind: Pod\nmetadata: {name: web, namespace: ns}\nspec: {nodeName: \"w/1\", containers: []}\n", "Pod spec.nodeName: Invalid value: \"w/1\""),
            ("kind: Secret\nmetadata: {name: s, namespace: a.b}\n", "Secret metadata.namespace: Invalid value: \"a.b\": must not contain dots"),
            ("kind: Node\nmetadata: {name: Worker}\n", "Node metadata.name: Invalid value: \"Worker\""),
        ];
        for (text, expected) in cases {
            let mut store = ObjectStore::new(false);
            let text = format!("kind: ServiceAccount\nmetadata: {{name: fine}}\n---\n{text}");
            let err = store.load_manifests(&text, counter()).unwrap_err();
            assert_eq!(err.document, 2, "{err}");
            assert!(err.message.starts_with(expected), "{err}");
        }
        // A node's namespace is ignored, not checked.
        let mut store = ObjectStore::new(false);
        let text = "kind: Node\nmetadata: {name: worker-1, namespace: \"x:y\"}\n";
        assert_eq!(store.load_manifests(text, counter()), Ok(1));
    }

    #[test]
    fn manifests_load_every_kind_and_lists() {
        let text = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: builder, namespace: ci, uid: sa-uid}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: ci}
spec:
  serviceAccountName: builder
  nodeName: worker-1
  containers: [{name: app, image: app}]
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Secret, metadata: {name: s1, uid: secret-uid}}
- {apiVersion: v1, kind: Node, metadata: {name: worker-1}}
"#;
        let mut store = ObjectStore::new(false);
        assert_eq!(store.load_manifests(text, counter()), Ok(4));
        assert_eq!(
            store
                .service_account("ci", "builder")
                .map(|s| s.uid.as_str()),
            Some("sa-uid")
        );
        let pod = store.pod("ci", "web").cloned();
        assert_eq!(
            pod,
            Some(StoredPod {
                uid: "uid-1".into(),
                service_account: "builder".into(),
                node_name: Some("worker-1".into()),
            })
        );
        assert_eq!(
            store.secret("default", "s1").map(|s| s.uid.as_str()),
            Some("secret-uid")
        );
        assert_eq!(
            store.node("worker-1").map(|n| n.uid.as_str()),
            Some("uid-2")
        );
        assert!(store.delete_pod("ci", "web").is_some());
        assert!(store.pod("ci", "web").is_none());
    }

    #[test]
    fn bad_manifests_name_the_document_and_the_problem() {
        let mut store = ObjectStore::new(false);
        let err = store
            .load_manifests("kind: ServiceAccount\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: d}\n", counter())
            .unwrap_err();
        assert_eq!(err.document, 2);
        assert!(err.message.contains("Deployment"), "{err}");
        let err = store
            .load_manifests("kind: Pod\nmetadata: {namespace: x}\n", counter())
            .unwrap_err();
        assert!(
            err.to_string().contains("metadata.name is required"),
            "{err}"
        );
        let err = store
            .load_manifests("apiVersion: v1\n", counter())
            .unwrap_err();
        assert!(err.message.contains("`kind` is missing"), "{err}");
    }
}

//! Many pods at once (`emulate --pods`): Pod manifests out of multi-document YAML or JSON, the
//! checks a set of pods must pass before each gets its own directories (names usable as
//! directory names, unique `namespace/name` and uid), and where a pod's volumes go.
//!
//! Pure: text and already-parsed pods in, pods or errors out. Reading files is the caller's job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::int_fields::DocumentInts;
use super::spec::{manifest_yaml_options, PodInfo};
use crate::names::{check_object_name, is_dns1123_label, is_dns1123_subdomain};

/// One Pod out of a manifest file.
#[derive(Debug, Clone)]
pub struct PodDocument {
    /// 1-based index of the YAML document in its file (empty documents are not counted).
    pub document: usize,
    /// Index in the document's `items` when the document is a `List`/`PodList`.
    pub item: Option<usize>,
    pub pod: Pod,
}

impl PodDocument {
    /// "document 2" or "document 1, items\[3\]", for messages.
    pub fn position(&self) -> String {
        match self.item {
            Some(item) => format!("document {}, items[{item}]", self.document),
            None => format!("document {}", self.document),
        }
    }
}

/// Why a manifest file cannot be read as Pods: the document (None: the file as a whole) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub document: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.document {
            Some(document) => write!(f, "document {document}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DocumentError {}

/// What a document may be. Deserialized in one typed pass (no intermediate value), so YAML 1.1
/// octal modes and the parser's line numbers survive; `kind` is checked afterwards.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyDocument {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<ObjectMeta>,
    spec: Option<PodSpec>,
    items: Option<Vec<Pod>>,
}

/// Only the type of a document: read again when a document failed, to say what it was.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

/// Every Pod in `text`: one or more YAML (or JSON) documents separated by `---`, each a Pod or a
/// `List`/`PodList` of Pods. A document without `kind` is read as a Pod, as `--pod` reads it.
/// Other kinds are refused: Pods only (service accounts and the like go in `--objects`).
///
/// The whole text is read under `--pod`'s YAML budget (`manifest_yaml_options`): counted over the
/// file, not per document, so many documents cannot add up to what one may not spend.
pub fn parse_pod_documents(text: &str) -> Result<Vec<PodDocument>, DocumentError> {
    let documents: Vec<AnyDocument> =
        serde_saphyr::from_multiple_with_options(text, manifest_yaml_options())
            .map_err(|e| locate_error(text, &e))?;
    let ints: Vec<DocumentInts> =
        serde_saphyr::from_multiple_with_options(text, manifest_yaml_options())
            .map_err(|e| locate_error(text, &e))?;
    let mut pods = Vec::new();
    for (index, (document, ints)) in documents.into_iter().zip(ints).enumerate() {
        let number = index + 1;
        let at = |message: String| DocumentError {
            document: Some(number),
            message,
        };
        let kind = document.kind.as_deref().unwrap_or("Pod");
        match kind {
            "Pod" => {
                check_api_version(document.api_version.as_deref(), kind).map_err(at)?;
                ints.check_pod().map_err(|e| at(e.to_string()))?;
                pods.push(PodDocument {
                    document: number,
                    item: None,
                    pod: Pod {
                        metadata: document.metadata.unwrap_or_default(),
                        spec: document.spec,
                        status: None,
                    },
                });
            }
            "List" | "PodList" => {
                check_api_version(document.api_version.as_deref(), kind).map_err(at)?;
                let items = document
                    .items
                    .ok_or_else(|| at(format!("a {kind} needs an `items` array of Pods")))?;
                ints.check_items()
                    .map_err(|(item, e)| at(format!("items[{item}]: {e}")))?;
                pods.extend(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(item, pod)| PodDocument {
                            document: number,
                            item: Some(item),
                            pod,
                        }),
                );
            }
            other => return Err(at(not_a_pod(document.api_version.as_deref(), other))),
        }
    }
    Ok(pods)
}

/// Whether the reader stopped on one of its limits (size, alias expansion) rather than on what a
/// document says.
fn is_limit_error(error: &serde_saphyr::Error) -> bool {
    let mut error = error.without_snippet();
    while let serde_saphyr::Error::AliasError { error: inner, .. } = error {
        error = inner.without_snippet();
    }
    matches!(
        error,
        serde_saphyr::Error::Budget { .. }
            | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
            | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
            | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
            | serde_saphyr::Error::AliasReplayCounterOverflow { .. }
    )
}

/// The document a failure is in. Over a limit, the file as a whole is: it is not read again.
/// Otherwise the documents are read again one at a time, kept no longer than it takes to see
/// whether they fail, up to the first that does: the documents the whole-file pass already read
/// within its budget.
fn locate_error(text: &str, error: &serde_saphyr::Error) -> DocumentError {
    if is_limit_error(error) {
        return DocumentError {
            document: None,
            message: format!(
                "over the YAML limits of one manifest file (--pod's: 250,000 nodes, 1,000,000 \
                 events counting what aliases expand to, 1,024 documents): split it into smaller \
                 files, or expand fewer aliases: {error}"
            ),
        };
    }
    // No further than the whole-file pass may have gone.
    let max_documents = manifest_yaml_options()
        .budget
        .map_or(0, |budget| budget.max_documents);
    let mut reader = std::io::Cursor::new(text.as_bytes());
    let failed =
        serde_saphyr::read_with_options::<_, AnyDocument>(&mut reader, manifest_yaml_options())
            .take(max_documents)
            .position(|document| document.is_err());
    match failed {
        Some(index) => DocumentError {
            document: Some(index + 1),
            message: explain_parse_error(text, index + 1, &error.to_string()),
        },
        None => DocumentError {
            document: None,
            message: format!("not a Pod manifest: {error}"),
        },
    }
}

fn check_api_version(api_version: Option<&str>, kind: &str) -> Result<(), String> {
    match api_version {
        None | Some("v1") => Ok(()),
        Some(other) => Err(format!(
            "apiVersion {other:?}: a {kind} is apiVersion \"v1\""
        )),
    }
}

fn not_a_pod(api_version: Option<&str>, kind: &str) -> String {
    let what = match api_version {
        Some(api_version) => format!("{api_version} {kind}"),
        None => kind.to_owned(),
    };
    format!(
        "is a {what}, not a Pod: --pods reads Pod manifests only (put service accounts, secrets and nodes in --objects)"
    )
}

/// A document that failed as a whole may simply be another kind of object (a Deployment's
/// `spec` is no PodSpec): say so rather than quote the field that did not fit.
fn explain_parse_error(text: &str, number: usize, error: &str) -> String {
    let mut reader = std::io::Cursor::new(text.as_bytes());
    let kind = serde_saphyr::read_with_options::<_, TypeMeta>(&mut reader, manifest_yaml_options())
        .nth(number - 1);
    match kind {
        Some(Ok(TypeMeta {
            api_version,
            kind: Some(kind),
        })) if !matches!(kind.as_str(), "Pod" | "List" | "PodList") => {
            not_a_pod(api_version.as_deref(), &kind)
        }
        _ => format!("not a Pod manifest: {error}"),
    }
}

/// Whether the pod has a volume for the projector: one with a `projected` source.
pub fn has_projected_volume(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .is_some_and(|volumes| volumes.iter().any(|v| v.projected.is_some()))
}

/// `namespace` as a directory name: a DNS-1123 label, as Kubernetes requires of namespaces.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    if is_dns1123_label(namespace) {
        Ok(())
    } else {
        Err(format!(
            "metadata.namespace {namespace:?} is not a valid namespace (at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit); it names the pod's directory"
        ))
    }
}

/// `name` as a directory name: a DNS-1123 subdomain, as Kubernetes requires of pod names.
pub fn check_pod_name(name: &str) -> Result<(), String> {
    if is_dns1123_subdomain(name) {
        Ok(())
    } else {
        Err(format!(
            "metadata.name {name:?} is not a valid pod name (a DNS subdomain: at most 253 characters of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit); it names the pod's directory"
        ))
    }
}

/// The pods admitted so far, by `namespace/name` and by uid, each with where it came from.
#[derive(Debug, Default)]
pub struct PodRegistry {
    by_name: HashMap<(String, String), String>,
    by_uid: HashMap<String, String>,
}

impl PodRegistry {
    /// Admits a pod described at `origin` (e.g. `pods/web.yaml document 2`): its names must be
    /// usable as directory names, its service account's a valid name, and no earlier pod may
    /// have its `namespace/name` or its uid.
    /// An empty uid is not checked (the caller gives the pod a fresh one).
    pub fn admit(&mut self, origin: &str, pod: &PodInfo) -> Result<(), String> {
        check_namespace(&pod.namespace)?;
        check_pod_name(&pod.name)?;
        // The pod's service account becomes an object of the emulated API: a name upstream
        // refuses would give it a user name another account could share.
        check_object_name("spec.serviceAccountName", &pod.service_account)?;
        let key = (pod.namespace.clone(), pod.name.clone());
        if let Some(first) = self.by_name.get(&key) {
            return Err(format!(
                "pod {}/{} is also defined in {first}: a namespace holds one pod of a name; rename one of them",
                pod.namespace, pod.name
            ));
        }
        if !pod.uid.is_empty() {
            if let Some(first) = self.by_uid.get(&pod.uid) {
                return Err(format!(
                    "metadata.uid {} is also the uid of the pod in {first}: every pod has its own uid; change or remove one (a pod without a uid gets a generated one)",
                    pod.uid
                ));
            }
            self.by_uid.insert(pod.uid.clone(), origin.to_owned());
        }
        self.by_name.insert(key, origin.to_owned());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Where a pod's volumes go under `root`: `root/<namespace>/<pod-name>/`, each volume in a
/// directory of its name below that.
pub fn pod_dir(root: &Path, namespace: &str, name: &str) -> PathBuf {
    root.join(namespace).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_A: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - name: v\n    projected:\n      defaultMode: 0440\n      sources: [{serviceAccountToken: {path: token}}]\n";

    #[test]
    fn documents_lists_and_json_are_read_in_order() {
        let text = format!(
            "{POD_A}---\n---\nkind: List\napiVersion: v1\nitems:\n- {{apiVersion: v1, kind: Pod, metadata: {{name: b}}}}\n- {{metadata: {{name: c}}}}\n---\n{{\"metadata\": {{\"name\": \"d\"}}, \"spec\": {{\"containers\": []}}}}\n"
        );
        let pods = parse_pod_documents(&text).unwrap();
        let names: Vec<(String, String)> = pods
            .iter()
            .map(|p| (p.position(), p.pod.metadata.name.clone().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("document 1".to_owned(), "a".to_owned()),
                ("document 2, items[0]".to_owned(), "b".to_owned()),
                ("document 2, items[1]".to_owned(), "c".to_owned()),
                ("document 3".to_owned(), "d".to_owned()),
            ]
        );
        // YAML 1.1 octal survives.
        let volumes = pods[0].pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0].projected.as_ref().unwrap().default_mode,
            Some(0o440)
        );
        assert!(has_projected_volume(&pods[0].pod));
        assert!(!has_projected_volume(&pods[3].pod));
        assert!(parse_pod_documents("").unwrap().is_empty());
    }

    #[test]
    fn other_kinds_and_bad_yaml_name_the_document() {
        let deployment = format!(
            "{POD_A}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  template: {{spec: {{containers: []}}}}\n"
        );
        let err = parse_pod_documents(&deployment).unwrap_err();
        assert_eq!(err.document, Some(2));
        assert!(
            err.message
                .starts_with("is a apps/v1 Deployment, not a Pod"),
            "{err}"
        );
        let service = "kind: Service\nmetadata: {name: s}\n";
        let err = parse_pod_documents(service).unwrap_err();
        assert!(err.message.starts_with("is a Service, not a Pod"), "{err}");
        let err = parse_pod_documents("apiVersion: v2\nkind: Pod\n").unwrap_err();
        assert!(err.message.contains("apiVersion \"v2\""), "{err}");
        let err = parse_pod_documents(&format!("{POD_A}---\nmetadata: [unclosed\n")).unwrap_err();
        assert_eq!(err.document, Some(2));
        assert!(err.message.starts_with("not a Pod manifest: "), "{err}");
        let err = parse_pod_documents("kind: List\n").unwrap_err();
        assert!(err.message.contains("`items`"), "{err}");
    }

    /// A Pod whose 30 volumes each project 30 config maps of 30 items, written with aliases:
    /// 27,000 items (135,000 nodes) out of some 400 bytes.
    fn alias_bomb(name: &str) -> String {
        let aliases = |alias: &str| vec![alias; 30].join(",");
        format!(
            "kind: Pod\nmetadata: {{name: {name}}}\nk: &k {{key: k, path: k}}\na: &a [{}]\n\
             s: &s {{configMap: {{name: c, items: *a}}}}\nb: &b [{}]\n\
             v: &v {{name: v, projected: {{sources: *b}}}}\nspec: {{volumes: [{}]}}\n",
            aliases("*k"),
            aliases("*s"),
            aliases("*v")
        )
    }

    #[test]
    fn the_yaml_budget_holds_for_the_whole_file() {
        // One such document is within --pod's limits; two are not, however they are split.
        let pods = parse_pod_documents(&alias_bomb("a")).unwrap();
        assert_eq!(pods.len(), 1);
        let err = parse_pod_documents(&format!("{}---\n{}", alias_bomb("a"), alias_bomb("b")))
            .unwrap_err();
        assert_eq!(err.document, None, "{err}");
        assert!(
            err.message
                .starts_with("over the YAML limits of one manifest file (--pod's: 250,000 nodes"),
            "{err}"
        );
        assert!(err.message.contains("Nodes"), "{err}");
        let many = "metadata: {name: p}\n---\n".repeat(1025);
        let err = parse_pod_documents(&many).unwrap_err();
        assert!(err.message.contains("Documents"), "{err}");
    }

    #[test]
    fn integers_written_as_strings_name_the_document_and_item() {
        let quoted = POD_A.replace("defaultMode: 0440", "defaultMode: \"0440\"");
        let err = parse_pod_documents(&format!("{POD_A}---\n{quoted}")).unwrap_err();
        assert_eq!(err.document, Some(2));
        assert!(
            err.message
                .starts_with("spec.volumes[0].projected.defaultMode: \"0440\" is a string"),
            "{err}"
        );
        let list = "kind: List\nitems:\n- {metadata: {name: a}}\n- {metadata: {name: b}, spec: {containers: [], securityContext: {fsGroup: '2000'}}}\n";
        let err = parse_pod_documents(list).unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1: items[1]: spec.securityContext.fsGroup: \"2000\" is a string, but the \
             API server's schema says integer: write it unquoted (2000)"
        );
    }

    #[test]
    fn names_must_be_usable_directory_names() {
        assert!(check_namespace("team-a").is_ok());
        assert!(check_pod_name("web-0.canary").is_ok());
        for bad in ["", "..", ".", "a/b", "Web", "-a", "a-", &"x".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "namespace {bad:?}");
        }
        for bad in ["", "..", ".", "a/b", "a..b", "Web", "-a", &"x".repeat(254)] {
            assert!(check_pod_name(bad).is_err(), "name {bad:?}");
        }
    }

    #[test]
    fn registry_refuses_an_invalid_service_account_name() {
        let pod = PodInfo {
            namespace: "a".into(),
            name: "web".into(),
            service_account: "b:c".into(),
            ..PodInfo::default()
        };
        let err = PodRegistry::default().admit("x", &pod).unwrap_err();
        assert!(
            err.starts_with(
                "spec.serviceAccountName: Invalid value: \"b:c\": a lowercase RFC 1123 subdomain"
            ),
            "{err}"
        );
    }

    #[test]
    fn registry_refuses_duplicate_names_and_uids() {
        let pod = |namespace: &str, name: &str, uid: &str| PodInfo {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            service_account: "default".into(),
            ..PodInfo::default()
        };
        let mut registry = PodRegistry::default();
        registry
            .admit("a.yaml document 1", &pod("shop", "web", "u1"))
            .unwrap();
        registry
            .admit("a.yaml document 2", &pod("other", "web", ""))
            .unwrap();
        registry
            .admit("b.yaml document 1", &pod("shop", "db", ""))
            .unwrap();
        let err = registry
            .admit("c.yaml document 3", &pod("shop", "web", "u9"))
            .unwrap_err();
        assert!(
            err.contains("shop/web is also defined in a.yaml document 1"),
            "{err}"
        );
        let err = registry
            .admit("c.yaml document 4", &pod("shop", "api", "u1"))
            .unwrap_err();
        assert!(
            err.contains("u1 is also the uid of the pod in a.yaml document 1"),
            "{err}"
        );
        let err = registry
            .admit("d.yaml", &pod("shop", "../x", ""))
            .unwrap_err();
        assert!(err.contains("metadata.name \"../x\""), "{err}");
        assert_eq!(registry.len(), 3);
        assert_eq!(
            pod_dir(Path::new("/out"), "shop", "web"),
            Path::new("/out/shop/web")
        );
    }
}

//! From a Pod manifest to projection plans: which files each projected volume holds.
//!
//! Planning is pure: config map and secret data, the root CA and the pod's identity come in as
//! values, so every rule here is tested without files or a cluster. Token files are left as
//! requests ([`TokenFileSpec`]) that a token source fills in at write time.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, VolumeProjection,
};

use super::int_fields::{check_int_fields, PodInts};
use super::paths::validate_path;
use super::payload::{FileProjection, Payload};
pub use super::spec_error::SpecError;
use super::validation::{check_token_lifetimes, WrittenPaths};
use crate::errors::go_quote;

/// `ProjectedVolumeSourceDefaultMode`: 0644.
pub const DEFAULT_MODE: u32 = 0o644;
/// Mode of a token file when the pod sets `fsGroup` or a single `runAsUser`.
pub const OWNED_TOKEN_MODE: u32 = 0o600;
/// The lifetime the API server gives a token projection that names none.
pub const DEFAULT_PROJECTION_EXPIRATION_SECONDS: i64 = 3600;
/// Name of the config map that carries the cluster's root CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The mount path of the default service account volume.
pub const DEFAULT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Prefix of the default volume's name.
pub const DEFAULT_VOLUME_PREFIX: &str = "kube-api-access-";
/// Characters of the random suffix of generated names (apiserver's `SimpleNameGenerator`).
pub const NAME_SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn field_error(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// The parts of a pod that projections depend on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Empty when the manifest has none; the caller fills in a random one.
    pub uid: String,
    pub service_account: String,
    pub node_name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.securityContext.fsGroup`.
    pub fs_group: Option<u32>,
    /// The single `runAsUser` all containers share, if they do (`FsUserFrom`).
    pub fs_user: Option<u32>,
}

impl PodInfo {
    /// Reads the identity, labels and security settings of a pod manifest.
    pub fn from_pod(pod: &Pod) -> Result<Self, SpecError> {
        let meta = &pod.metadata;
        let name = meta
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| field_error("metadata.name", "is required: name the pod"))?;
        let spec = pod.spec.as_ref();
        let service_account = spec
            .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let fs_group = spec
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.fs_group)
            .map(|g| id_from("spec.securityContext.fsGroup", g))
            .transpose()?;
        Ok(Self {
            namespace: meta
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
            name,
            uid: meta.uid.clone().unwrap_or_default(),
            service_account,
            node_name: spec.and_then(|s| s.node_name.clone()),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            fs_group,
            fs_user: fs_user_from(pod)?,
        })
    }
}

fn id_from(field: &str, value: i64) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| field_error(field, format!("{value} is not a valid id")))
}

/// `FsUserFrom`: the `runAsUser` every container runs as, when all have one and they agree.
fn fs_user_from(pod: &Pod) -> Result<Option<u32>, SpecError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    let pod_user = spec.security_context.as_ref().and_then(|sc| sc.run_as_user);
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut shared: Option<i64> = None;
    let mut any = false;
    for container in containers {
        any = true;
        let user = container
            .security_context
            .as_ref()
            .and_then(|sc| sc.run_as_user)
            .or(pod_user);
        match (user, shared) {
            (None, _) => return Ok(None),
            (Some(u), None) => shared = Some(u),
            (Some(u), Some(s)) if u != s => return Ok(None),
            _ => {}
        }
    }
    if !any {
        return Ok(None);
    }
    shared
        .map(|u| id_from("spec.containers[*].securityContext.runAsUser", u))
        .transpose()
}

/// Data the non-token sources read: config maps, secrets (name -> key -> bytes) and the root CA.
#[derive(Debug, Clone, Default)]
pub struct DataSources {
    pub root_ca: Arc<[u8]>,
    pub configmaps: BTreeMap<String, NamedData>,
    pub secrets: BTreeMap<String, NamedData>,
}

/// A config map's or secret's data: key -> bytes (shared by every volume that projects it).
pub type NamedData = BTreeMap<String, Arc<[u8]>>;

impl DataSources {
    fn configmap(&self, name: &str) -> Option<NamedData> {
        match self.configmaps.get(name) {
            Some(data) => Some(data.clone()),
            // kube-controller-manager publishes the root CA into every namespace.
            None if name == ROOT_CA_CONFIGMAP => Some(BTreeMap::from([(
                "ca.crt".to_owned(),
                self.root_ca.clone(),
            )])),
            None => None,
        }
    }
}

/// A token the volume needs: one TokenRequest, bound to the pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenFileSpec {
    pub path: String,
    /// None: the API server's audiences.
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    pub mode: u32,
    pub fs_user: Option<u32>,
}

/// One file of a planned volume, in source order. No two files of a volume have the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedFile {
    Static { path: String, file: FileProjection },
    Token(TokenFileSpec),
}

impl PlannedFile {
    /// The file's path in the volume, as the manifest wrote it.
    pub fn path(&self) -> &str {
        match self {
            PlannedFile::Static { path, .. } => path,
            PlannedFile::Token(spec) => &spec.path,
        }
    }
}

/// The files of a volume being planned, and which field writes each path.
#[derive(Default)]
struct VolumeFiles {
    files: Vec<PlannedFile>,
    written: WrittenPaths,
}

impl VolumeFiles {
    /// Adds a file whose path `field` gives; refuses a path another field already writes.
    fn add(&mut self, field: &str, file: PlannedFile) -> Result<(), SpecError> {
        self.written.claim(field, file.path())?;
        self.files.push(file);
        Ok(())
    }
}

/// Everything needed to write one projected volume, given its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    pub name: String,
    pub files: Vec<PlannedFile>,
    pub fs_group: Option<u32>,
}

impl VolumePlan {
    /// The token requests of this volume, in source order.
    pub fn token_specs(&self) -> impl Iterator<Item = &TokenFileSpec> {
        self.files.iter().filter_map(|f| match f {
            PlannedFile::Token(spec) => Some(spec),
            PlannedFile::Static { .. } => None,
        })
    }

    /// The payload with `tokens[i]` as the content of the i-th token spec. Returns None when a
    /// token is missing: a volume is written whole or not at all, as the kubelet does.
    pub fn payload<T: AsRef<[u8]>>(&self, tokens: &[Option<T>]) -> Option<Payload> {
        let mut payload = Payload::new();
        let mut next_token = tokens.iter();
        for planned in &self.files {
            match planned {
                PlannedFile::Static { path, file } => {
                    payload.insert(path.clone(), file.clone());
                }
                PlannedFile::Token(spec) => {
                    let token = next_token.next()?.as_ref()?;
                    payload.insert(
                        spec.path.clone(),
                        FileProjection {
                            data: token.as_ref().into(),
                            mode: spec.mode,
                            fs_user: spec.fs_user,
                        },
                    );
                }
            }
        }
        Some(payload)
    }
}

/// Plans every `projected` volume of a pod manifest.
pub fn plan_pod_volumes(
    pod: &Pod,
    info: &PodInfo,
    data: &DataSources,
) -> Result<Vec<VolumePlan>, SpecError> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut plans = Vec::new();
    for (index, volume) in volumes.iter().enumerate() {
        if let Some(projected) = &volume.projected {
            if volume.name.is_empty() || volume.name.starts_with('.') || volume.name.contains('/') {
                return Err(field_error(
                    format!("spec.volumes[{index}].name"),
                    format!("{:?} is not a usable directory name", volume.name),
                ));
            }
            let field = format!("spec.volumes[{index}].projected");
            check_token_lifetimes(&field, projected)?;
            plans.push(plan_volume(&volume.name, &field, projected, info, data)?);
        }
    }
    if plans.is_empty() {
        return Err(SpecError::Manifest(
            "the pod has no projected volumes: add one under spec.volumes (e.g. the kube-api-access volume)".into(),
        ));
    }
    Ok(plans)
}

/// The `kube-api-access` volume the service account admission plugin adds to every pod.
pub fn default_volume_source() -> ProjectedVolumeSource {
    token_volume_source(
        None,
        crate::token::claims::WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS,
    )
}

/// A volume shaped like `kube-api-access` (`token`, `ca.crt`, `namespace`) with a token of the
/// given audience (None: the API server's) and lifetime.
pub fn token_volume_source(
    audience: Option<String>,
    expiration_seconds: i64,
) -> ProjectedVolumeSource {
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, DownwardAPIProjection, ObjectFieldSelector,
        ServiceAccountTokenProjection,
    };
    ProjectedVolumeSource {
        default_mode: Some(DEFAULT_MODE as i32),
        sources: Some(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    audience,
                    expiration_seconds: Some(expiration_seconds),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: ROOT_CA_CONFIGMAP.into(),
                    items: Some(vec![KeyToPath {
                        key: "ca.crt".into(),
                        path: "ca.crt".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "namespace".into(),
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: "metadata.namespace".into(),
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// Plans one projected volume.
pub fn plan_volume(
    name: &str,
    field: &str,
    source: &ProjectedVolumeSource,
    pod: &PodInfo,
    data: &DataSources,
) -> Result<VolumePlan, SpecError> {
    let default_mode = match source.default_mode {
        Some(mode) => mode_from(&format!("{field}.defaultMode"), mode)?,
        None => DEFAULT_MODE,
    };
    let token_mode = if pod.fs_user.is_some() || pod.fs_group.is_some() {
        OWNED_TOKEN_MODE
    } else {
        default_mode
    };
    let mut files = VolumeFiles::default();
    for (index, projection) in source.sources.iter().flatten().enumerate() {
        let field = format!("{field}.sources[{index}]");
        plan_source(
            &field,
            projection,
            default_mode,
            token_mode,
            pod,
            data,
            &mut files,
        )?;
    }
    Ok(VolumePlan {
        name: name.to_owned(),
        files: files.files,
        fs_group: pod.fs_group,
    })
}

fn plan_source(
    field: &str,
    projection: &VolumeProjection,
    default_mode: u32,
    token_mode: u32,
    pod: &PodInfo,
    data: &DataSources,
    files: &mut VolumeFiles,
) -> Result<(), SpecError> {
    let set = [
        projection.service_account_token.is_some(),
        projection.config_map.is_some(),
        projection.secret.is_some(),
        projection.downward_api.is_some(),
        projection.cluster_trust_bundle.is_some(),
        projection.pod_certificate.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err(field_error(
            field,
            if set == 0 {
                "names no source: set one of serviceAccountToken, configMap, secret, downwardAPI"
            } else {
                "may not specify more than 1 volume type"
            },
        ));
    }
    if let Some(token) = &projection.service_account_token {
        let path_field = format!("{field}.serviceAccountToken.path");
        check_path(&path_field, &token.path)?;
        files.add(
            &path_field,
            PlannedFile::Token(TokenFileSpec {
                path: token.path.clone(),
                audience: token.audience.clone().filter(|a| !a.is_empty()),
                expiration_seconds: token
                    .expiration_seconds
                    .unwrap_or(DEFAULT_PROJECTION_EXPIRATION_SECONDS),
                mode: token_mode,
                fs_user: pod.fs_user,
            }),
        )?;
    } else if let Some(cm) = &projection.config_map {
        let field = format!("{field}.configMap");
        let found = data.configmap(&cm.name);
        plan_keyed(
            &field,
            "config map",
            "--configmap NAME=DIR",
            &cm.name,
            found.as_ref(),
            cm.items.as_deref(),
            cm.optional.unwrap_or(false),
            default_mode,
            files,
        )?;
    } else if let Some(secret) = &projection.secret {
        let field = format!("{field}.secret");
        plan_keyed(
            &field,
            "secret",
            "--secret NAME=DIR",
            &secret.name,
            data.secrets.get(&secret.name),
            secret.items.as_deref(),
            secret.optional.unwrap_or(false),
            default_mode,
            files,
        )?;
    } else if let Some(downward) = &projection.downward_api {
        for (index, item) in downward.items.iter().flatten().enumerate() {
            let field = format!("{field}.downwardAPI.items[{index}]");
            let file = plan_downward_item(&field, item, default_mode, pod)?;
            files.add(&format!("{field}.path"), file)?;
        }
    } else {
        let kind = if projection.cluster_trust_bundle.is_some() {
            "clusterTrustBundle"
        } else {
            "podCertificate"
        };
        return Err(field_error(
            format!("{field}.{kind}"),
            "this source is not supported by projected-token: use serviceAccountToken, configMap, secret or downwardAPI",
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one call per keyed source kind; a struct would only rename these
fn plan_keyed(
    field: &str,
    kind: &str,
    flag: &str,
    name: &str,
    found: Option<&NamedData>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: u32,
    files: &mut VolumeFiles,
) -> Result<(), SpecError> {
    let Some(found) = found else {
        if optional {
            // Nothing is written, but upstream still checks the paths the items declare.
            for (index, item) in items.unwrap_or_default().iter().enumerate() {
                let path_field = format!("{field}.items[{index}].path");
                check_path(&path_field, &item.path)?;
                files.written.claim(&path_field, &item.path)?;
            }
            return Ok(());
        }
        return Err(field_error(
            format!("{field}.name"),
            format!("{kind} {name:?} not found: provide it with {flag} (or mark it optional)"),
        ));
    };
    match items {
        Some(items) if !items.is_empty() => {
            for (index, item) in items.iter().enumerate() {
                let item_field = format!("{field}.items[{index}]");
                let path_field = format!("{item_field}.path");
                check_path(&path_field, &item.path)?;
                let mode = match item.mode {
                    Some(mode) => mode_from(&format!("{item_field}.mode"), mode)?,
                    None => default_mode,
                };
                match found.get(&item.key) {
                    Some(bytes) => {
                        files.add(&path_field, static_file(&item.path, bytes.clone(), mode))?
                    }
                    // Upstream checks the paths items declare, whether or not the key exists.
                    None if optional => files.written.claim(&path_field, &item.path)?,
                    None => {
                        return Err(field_error(
                            format!("{item_field}.key"),
                            format!("{kind} {name:?} has no key {:?}", item.key),
                        ))
                    }
                }
            }
        }
        // No items: every key becomes a file of the same name.
        _ => {
            for (key, bytes) in found {
                let key_field = format!("{field} key {key:?}");
                check_path(&key_field, key)?;
                files.add(&key_field, static_file(key, bytes.clone(), default_mode))?;
            }
        }
    }
    Ok(())
}

fn plan_downward_item(
    field: &str,
    item: &DownwardAPIVolumeFile,
    default_mode: u32,
    pod: &PodInfo,
) -> Result<PlannedFile, SpecError> {
    check_path(&format!("{field}.path"), &item.path)?;
    let mode = match item.mode {
        Some(mode) => mode_from(&format!("{field}.mode"), mode)?,
        None => default_mode,
    };
    if item.resource_field_ref.is_some() {
        return Err(field_error(
            format!("{field}.resourceFieldRef"),
            "resource fields are not supported by projected-token: use a fieldRef",
        ));
    }
    let field_ref = item.field_ref.as_ref().ok_or_else(|| {
        field_error(
            format!("{field}.fieldRef"),
            "is required: e.g. fieldPath: metadata.namespace",
        )
    })?;
    let value = downward_value(&field_ref.field_path, pod).ok_or_else(|| {
        field_error(
            format!("{field}.fieldRef.fieldPath"),
            format!(
                "{:?} is not supported: use metadata.name, metadata.namespace, metadata.uid, \
                 metadata.labels, metadata.annotations, metadata.labels['KEY'] or metadata.annotations['KEY']",
                field_ref.field_path
            ),
        )
    })?;
    Ok(static_file(&item.path, value.into_bytes().into(), mode))
}

/// The value of a downward API field path, formatted as the kubelet writes it.
pub fn downward_value(field_path: &str, pod: &PodInfo) -> Option<String> {
    match field_path {
        "metadata.name" => return Some(pod.name.clone()),
        "metadata.namespace" => return Some(pod.namespace.clone()),
        "metadata.uid" => return Some(pod.uid.clone()),
        "metadata.labels" => return Some(format_map(&pod.labels)),
        "metadata.annotations" => return Some(format_map(&pod.annotations)),
        _ => {}
    }
    let subscript = |prefix: &str| {
        field_path
            .strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    if let Some(key) = subscript("metadata.labels['") {
        return Some(pod.labels.get(&key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations['") {
        return Some(pod.annotations.get(&key).cloned().unwrap_or_default());
    }
    None
}

/// The kubelet's `FormatMap`: `key="value"` lines sorted by key, values quoted as Go's `%q`,
/// no trailing newline.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn static_file(path: &str, data: Arc<[u8]>, mode: u32) -> PlannedFile {
    PlannedFile::Static {
        path: path.to_owned(),
        file: FileProjection {
            data,
            mode,
            fs_user: None,
        },
    }
}

fn check_path(field: &str, path: &str) -> Result<(), SpecError> {
    validate_path(path).map_err(|e| field_error(field, e.to_string()))
}

/// A file mode from the API (decimal 420 or YAML octal 0644 both arrive as 420).
fn mode_from(field: &str, mode: i32) -> Result<u32, SpecError> {
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            field_error(
                field,
                format!("{mode} must be a number between 0 and 0777 (octal), both inclusive"),
            )
        })
}

/// How Pod manifests are read (`--pod`, and each `--pods` file): unprefixed leading-zero numbers
/// such as `0644` are octal, as Kubernetes (YAML 1.1) reads them; and the YAML reader's default
/// budget over the whole text (250,000 nodes and 1,000,000 events, alias expansions counted, 1,024
/// documents, 64 MiB of scalars), which bounds the memory an alias bomb can make us spend.
pub fn manifest_yaml_options() -> serde_saphyr::options::Options {
    let mut options = serde_saphyr::options::Options::default();
    options.legacy_octal_numbers = true;
    options
}

/// Parses a Pod manifest as `kubectl get pod -o yaml` (or `-o json`) prints it, refusing an
/// integer field written as a string (`mode: "0400"`) as the API server does.
pub fn parse_pod_manifest(text: &str) -> Result<Pod, SpecError> {
    let not_a_pod =
        |e: serde_saphyr::Error| SpecError::Manifest(format!("not a Pod manifest: {e}"));
    let pod: Pod =
        serde_saphyr::from_str_with_options(text, manifest_yaml_options()).map_err(not_a_pod)?;
    let ints: PodInts =
        serde_saphyr::from_str_with_options(text, manifest_yaml_options()).map_err(not_a_pod)?;
    check_int_fields(&ints)?;
    Ok(pod)
}

/// `kube-api-access-` plus five characters of the name generator's alphabet; `pick(n)` returns a
/// number below `n` (random in production, fixed in tests).
pub fn default_volume_name(mut pick: impl FnMut(usize) -> usize) -> String {
    let mut name = String::from(DEFAULT_VOLUME_PREFIX);
    for _ in 0..5 {
        let index = pick(NAME_SUFFIX_ALPHABET.len()) % NAME_SUFFIX_ALPHABET.len();
        name.push(char::from(NAME_SUFFIX_ALPHABET[index]));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_info() -> PodInfo {
        PodInfo {
            namespace: "team-a".into(),
            name: "web-0".into(),
            uid: "11111111-2222-3333-4444-555555555555".into(),
            service_account: "web".into(),
            labels: BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                ("tier".to_owned(), "front \"end\"\n".to_owned()),
            ]),
            ..Default::default()
        }
    }

    fn data() -> DataSources {
        DataSources {
            root_ca: b"ROOT CA PEM".as_slice().into(),
            configmaps: BTreeMap::from([(
                "settings".to_owned(),
                BTreeMap::from([
                    ("a.conf".to_owned(), b"A".as_slice().into()),
                    ("b.conf".to_owned(), b"B".as_slice().into()),
                ]),
            )]),
            secrets: BTreeMap::from([(
                "creds".to_owned(),
                BTreeMap::from([("password".to_owned(), b"hunter2".as_slice().into())]),
            )]),
        }
    }

    const POD_YAML: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: team-a
  uid: 11111111-2222-3333-4444-555555555555
  labels:
    app: web
spec:
  serviceAccountName: web
  nodeName: node-1
  containers:
  - name: app
    image: app
  volumes:
  - name: scratch
    emptyDir: {}
  - name: kube-api-access-x7k2p
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken:
          expirationSeconds: 3607
          path: token
      - configMap:
          name: kube-root-ca.crt
          items:
          - key: ca.crt
            path: ca.crt
      - downwardAPI:
          items:
          - path: namespace
            fieldRef:
              apiVersion: v1
              fieldPath: metadata.namespace
  - name: vault-token
    projected:
      defaultMode: 0440
      sources:
      - serviceAccountToken:
          audience: vault
          path: vault/token
      - secret:
          name: creds
          items:
          - key: password
            path: password
            mode: 0600
      - configMap:
          name: settings
"#;

    #[test]
    fn plans_every_projected_volume_of_a_manifest() {
        let pod = parse_pod_manifest(POD_YAML).unwrap();
        let info = PodInfo::from_pod(&pod).unwrap();
        assert_eq!(info.service_account, "web");
        assert_eq!(info.node_name.as_deref(), Some("node-1"));
        let plans = plan_pod_volumes(&pod, &info, &data()).unwrap();
        let names: Vec<_> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["kube-api-access-x7k2p", "vault-token"]);

        let default = &plans[0];
        let token = default.token_specs().next().unwrap();
        assert_eq!(token.expiration_seconds, 3607);
        assert_eq!(token.audience, None);
        assert_eq!(token.mode, 0o644);
        let payload = default.payload(&[Some("TOKEN")]).unwrap();
        assert_eq!(payload["token"].data[..], b"TOKEN"[..]);
        assert_eq!(payload["ca.crt"].data[..], b"ROOT CA PEM"[..]);
        assert_eq!(payload["namespace"].data[..], b"team-a"[..]);
        assert!(payload.values().all(|f| f.mode == 0o644));

        // YAML octal literals mean octal, as Kubernetes reads them.
        let vault = &plans[1];
        let token = vault.token_specs().next().unwrap();
        assert_eq!(token.audience.as_deref(), Some("vault"));
        assert_eq!(token.expiration_seconds, 3600);
        assert_eq!(token.mode, 0o440);
        let payload = vault.payload(&[Some("T2")]).unwrap();
        assert_eq!(payload["password"].mode, 0o600);
        assert_eq!(payload["a.conf"].mode, 0o440);
        assert_eq!(
            payload.keys().collect::<Vec<_>>(),
            ["a.conf", "b.conf", "password", "vault/token"]
        );
    }

    #[test]
    fn json_manifest_with_decimal_modes_works() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
            "spec":{"containers":[{"name":"c"}],"volumes":[{"name":"v","projected":{"defaultMode":384,
            "sources":[{"serviceAccountToken":{"path":"t","expirationSeconds":600}}]}}]}}"#;
        let pod = parse_pod_manifest(json).unwrap();
        let info = PodInfo::from_pod(&pod).unwrap();
        assert_eq!(info.namespace, "default");
        assert_eq!(info.service_account, "default");
        let plans = plan_pod_volumes(&pod, &info, &data()).unwrap();
        assert_eq!(plans[0].token_specs().next().unwrap().mode, 0o600);
    }

    #[test]
    fn default_volume_matches_admission() {
        let info = pod_info();
        let plan = plan_volume(
            "kube-api-access-abcde",
            "v",
            &default_volume_source(),
            &info,
            &data(),
        )
        .unwrap();
        let payload = plan.payload(&[Some(b"jwt".to_vec())]).unwrap();
        assert_eq!(
            payload.keys().collect::<Vec<_>>(),
            ["ca.crt", "namespace", "token"]
        );
        assert_eq!(plan.token_specs().next().unwrap().expiration_seconds, 3607);
    }

    #[test]
    fn fs_group_or_shared_run_as_user_makes_token_0600() {
        let mut info = pod_info();
        info.fs_group = Some(2000);
        let plan = plan_volume("v", "v", &default_volume_source(), &info, &data()).unwrap();
        let payload = plan.payload(&[Some("t")]).unwrap();
        assert_eq!(payload["token"].mode, 0o600);
        assert_eq!(payload["ca.crt"].mode, 0o644);
        assert_eq!(plan.fs_group, Some(2000));
    }

    #[test]
    fn fs_user_needs_every_container_to_agree() {
        let yaml = |second_user: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  securityContext: {{runAsUser: 1000}}\n  containers:\n  - name: a\n  - name: b\n    securityContext: {{runAsUser: {second_user}}}\n"
            )
        };
        let same = PodInfo::from_pod(&parse_pod_manifest(&yaml("1000")).unwrap()).unwrap();
        assert_eq!(same.fs_user, Some(1000));
        let differ = PodInfo::from_pod(&parse_pod_manifest(&yaml("1001")).unwrap()).unwrap();
        assert_eq!(differ.fs_user, None);
    }

    #[test]
    fn downward_api_values_and_formats() {
        let info = pod_info();
        assert_eq!(downward_value("metadata.name", &info).unwrap(), "web-0");
        assert_eq!(
            downward_value("metadata.labels", &info).unwrap(),
            "app=\"web\"\ntier=\"front \\\"end\\\"\\n\""
        );
        assert_eq!(
            downward_value("metadata.labels['app']", &info).unwrap(),
            "web"
        );
        assert_eq!(downward_value("metadata.annotations", &info).unwrap(), "");
        assert_eq!(downward_value("spec.nodeName", &info), None);
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let cases: [(&str, &str); 12] = [
            (
                "- configMap: {name: missing}",
                "spec.volumes[0].projected.sources[0].configMap.name: config map \"missing\" not found: provide it with --configmap NAME=DIR",
            ),
            (
                "- downwardAPI: {items: [{path: x, fieldRef: {fieldPath: status.podIP}}]}",
                "spec.volumes[0].projected.sources[0].downwardAPI.items[0].fieldRef.fieldPath: \"status.podIP\" is not supported",
            ),
            (
                "- clusterTrustBundle: {path: x, signerName: a}",
                "spec.volumes[0].projected.sources[0].clusterTrustBundle: this source is not supported",
            ),
            ("- {}", "spec.volumes[0].projected.sources[0]: names no source"),
            (
                "- serviceAccountToken: {path: ../escape}",
                "spec.volumes[0].projected.sources[0].serviceAccountToken.path: invalid path",
            ),
            (
                "- secret: {name: creds, items: [{key: nope, path: p}]}",
                "spec.volumes[0].projected.sources[0].secret.items[0].key: secret \"creds\" has no key \"nope\"",
            ),
            (
                "- serviceAccountToken: {path: token}\n      - configMap: {name: settings, items: [{key: a.conf, path: token}]}",
                "spec.volumes[0].projected.sources[1].configMap.items[0].path: \"token\": conflicting duplicate paths \
                 (also written by spec.volumes[0].projected.sources[0].serviceAccountToken.path)",
            ),
            (
                "- configMap: {name: settings}\n      - secret: {name: creds, items: [{key: password, path: ./b.conf}]}",
                "spec.volumes[0].projected.sources[1].secret.items[0].path: \"./b.conf\": conflicting duplicate paths \
                 (also written by spec.volumes[0].projected.sources[0].configMap key \"b.conf\" as \"b.conf\")",
            ),
            (
                "- downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}, {path: n, fieldRef: {fieldPath: metadata.uid}}]}",
                "spec.volumes[0].projected.sources[0].downwardAPI.items[1].path: \"n\": conflicting duplicate paths \
                 (also written by spec.volumes[0].projected.sources[0].downwardAPI.items[0].path)",
            ),
            (
                "- configMap: {name: absent, optional: true, items: [{key: k, path: token}]}\n      - serviceAccountToken: {path: token}",
                "spec.volumes[0].projected.sources[1].serviceAccountToken.path: \"token\": conflicting duplicate paths",
            ),
            (
                "- serviceAccountToken: {path: token, expirationSeconds: 60}",
                "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: 60: may not specify a duration less than 10 minutes",
            ),
            (
                "- serviceAccountToken: {path: \"to\\0ken\"}",
                "spec.volumes[0].projected.sources[0].serviceAccountToken.path: invalid path: must not contain a NUL byte",
            ),
        ];
        for (sources, expected) in cases {
            let yaml = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: c}}]\n  volumes:\n  - name: v\n    projected:\n      sources:\n      {sources}\n"
            );
            let pod = parse_pod_manifest(&yaml).unwrap();
            let info = PodInfo::from_pod(&pod).unwrap();
            let err = plan_pod_volumes(&pod, &info, &data())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{sources}: got {err}");
        }
    }

    #[test]
    fn integers_written_as_strings_are_refused() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - name: v\n    projected:\n      sources:\n      - secret: {name: creds, items: [{key: password, path: p, mode: \"0400\"}]}\n";
        let err = parse_pod_manifest(yaml).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "spec.volumes[0].projected.sources[0].secret.items[0].mode: \"0400\" is a string"
            ),
            "{err}"
        );
        // Unquoted, the same mode is octal.
        let pod = parse_pod_manifest(&yaml.replace("\"0400\"", "0400")).unwrap();
        let info = PodInfo::from_pod(&pod).unwrap();
        let plans = plan_pod_volumes(&pod, &info, &data()).unwrap();
        assert_eq!(plans[0].payload::<&str>(&[]).unwrap()["p"].mode, 0o400);
    }

    #[test]
    fn bad_modes_are_rejected() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - name: v\n    projected:\n      defaultMode: 0o1777\n      sources: []\n";
        let pod = parse_pod_manifest(yaml).unwrap();
        let info = PodInfo::from_pod(&pod).unwrap();
        let err = plan_pod_volumes(&pod, &info, &data())
            .unwrap_err()
            .to_string();
        assert!(err.contains("defaultMode"), "{err}");
    }

    #[test]
    fn manifest_without_projected_volumes_is_an_error() {
        let yaml =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n";
        let pod = parse_pod_manifest(yaml).unwrap();
        let info = PodInfo::from_pod(&pod).unwrap();
        assert!(plan_pod_volumes(&pod, &info, &data()).is_err());
    }

    #[test]
    fn not_a_pod_is_a_manifest_error() {
        let err =
            parse_pod_manifest("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").unwrap_err();
        assert!(matches!(err, SpecError::Manifest(_)), "{err}");
    }

    #[test]
    fn default_volume_name_uses_generator_alphabet() {
        let mut n = 0;
        let name = default_volume_name(|len| {
            n += 1;
            (n * 7) % len
        });
        assert_eq!(name.len(), "kube-api-access-".len() + 5);
        assert!(name["kube-api-access-".len()..]
            .bytes()
            .all(|b| NAME_SUFFIX_ALPHABET.contains(&b)));
    }
}

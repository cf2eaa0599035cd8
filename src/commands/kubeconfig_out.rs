//! `--kubeconfig-out`: a kubeconfig for the emulator's admin (server URL, the CA inline, the
//! admin token by `tokenFile`), so kubectl, client libraries and `sidecar --kubeconfig` reach
//! the emulator without hand-written configuration.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

/// The name of the cluster, user and context in the kubeconfig.
pub const CONTEXT_NAME: &str = "projected-token";
const USER_NAME: &str = "projected-token-admin";

/// The kubeconfig as YAML. `token_file` must be absolute: a relative path would be read
/// relative to the kubeconfig's own directory.
pub fn render(server: &str, ca_pem: &str, token_file: &Path) -> Result<String, String> {
    let config = Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![NamedCluster {
            name: CONTEXT_NAME.to_owned(),
            cluster: Some(Cluster {
                server: Some(server.to_owned()),
                certificate_authority_data: Some(STANDARD.encode(ca_pem)),
                ..Cluster::default()
            }),
            other: BTreeMap::new(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: USER_NAME.to_owned(),
            auth_info: Some(AuthInfo {
                token_file: Some(token_file.to_string_lossy().into_owned()),
                ..AuthInfo::default()
            }),
            other: BTreeMap::new(),
        }],
        contexts: vec![NamedContext {
            name: CONTEXT_NAME.to_owned(),
            context: Some(Context {
                cluster: CONTEXT_NAME.to_owned(),
                user: Some(USER_NAME.to_owned()),
                namespace: Some("default".to_owned()),
                extensions: None,
                other: BTreeMap::new(),
            }),
            other: BTreeMap::new(),
        }],
        current_context: Some(CONTEXT_NAME.to_owned()),
        ..Kubeconfig::default()
    };
    serde_saphyr::to_string(&config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reads_back_what_is_written() {
        let yaml = render(
            "https://127.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            Path::new("/state/admin-token"),
        )
        .expect("render");
        let config = Kubeconfig::from_yaml(&yaml).expect("a kubeconfig");
        assert_eq!(config.current_context.as_deref(), Some(CONTEXT_NAME));
        let cluster = config.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        let ca = STANDARD
            .decode(cluster.certificate_authority_data.as_deref().expect("ca"))
            .expect("base64");
        assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let user = config.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(user.token_file.as_deref(), Some("/state/admin-token"));
        assert!(
            user.token.is_none(),
            "the token itself is never in the file"
        );
        let context = config.contexts[0].context.as_ref().expect("context");
        assert_eq!(context.user.as_deref(), Some(USER_NAME));
    }
}

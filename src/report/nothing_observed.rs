//! A check in which no client used a token: not a pass (unless `--allow-no-clients`), and the
//! usual causes, named with what this run used (the URL, the CA, the projected directories), so
//! the user knows what to look at.

use serde::{Deserialize, Serialize};

/// Projected directories named in the message; more are counted.
const DIRS_SHOWN: usize = 3;

/// What `check` knows about where clients should have come from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The emulator's URL.
    pub server: &'a str,
    /// The CA file `check` trusted (`--ca`): the emulator's CA, also projected as `ca.crt`.
    pub ca: Option<&'a str>,
    /// The directories the emulator projects tokens into, if it said (`emulate`; `serve` has
    /// none).
    pub token_dirs: &'a [String],
}

impl<'a> Origin<'a> {
    /// Only the URL known.
    pub fn server(server: &'a str) -> Self {
        Self {
            server,
            ..Self::default()
        }
    }
}

/// No client used a token of the emulator during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NothingObserved {
    /// `--allow-no-clients` was given: it passes.
    pub allowed: bool,
    /// Refused bearer tokens the emulator could not attribute (not signed by any key it has).
    pub unattributed_rejections: u64,
    pub message: String,
    /// What to check, one item each.
    pub checks: Vec<String>,
}

impl NothingObserved {
    pub fn new(origin: &Origin, unattributed_rejections: u64, allowed: bool) -> Self {
        let message = if allowed {
            format!(
                "no client used a service account token of {}; passing because of \
                 --allow-no-clients",
                origin.server
            )
        } else {
            format!(
                "no client used a service account token of {}: the client never reached the \
                 emulator, or never presented a token it projected. Nothing observed is not a \
                 pass",
                origin.server
            )
        };
        let mut checks = Vec::new();
        let host_port = origin
            .server
            .strip_prefix("https://")
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|rest| rest.rsplit_once(':'));
        checks.push(match host_port {
            Some((host, port)) => format!(
                "the URL: does the client connect to {} (in-cluster clients: \
                 KUBERNETES_SERVICE_HOST={host} KUBERNETES_SERVICE_PORT={port})?",
                origin.server
            ),
            None => format!("the URL: does the client connect to {}?", origin.server),
        });
        checks.push(match origin.ca {
            Some(ca) => format!(
                "the CA: does it trust the emulator's CA (the ca.crt beside the projected token, \
                 the same certificate as {ca})? A TLS failure never reaches the emulator"
            ),
            None => "the CA: does it trust the emulator's CA (the ca.crt beside the projected \
                     token)? A TLS failure never reaches the emulator"
                .to_owned(),
        });
        checks.push(match origin.token_dirs {
            [] => "the token path: does it read its token from the directory the emulator \
                   projects (emulate --dir), and send it as a bearer token?"
                .to_owned(),
            dirs => {
                let mut shown = dirs
                    .iter()
                    .take(DIRS_SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if dirs.len() > DIRS_SHOWN {
                    shown.push_str(&format!(" and {} more", dirs.len() - DIRS_SHOWN));
                }
                format!(
                    "the token path: does it read its token from the directory the emulator \
                     projects ({shown}), and send it as a bearer token?"
                )
            }
        });
        if unattributed_rejections > 0 {
            checks.push(format!(
                "{unattributed_rejections} requests presented bearer tokens the emulator did not \
                 sign (none of its keys, current or dropped, verifies them): a token from another \
                 issuer or an earlier run of the emulator?"
            ));
        }
        if !allowed {
            checks.push(
                "the run: did the client run at all, and long enough (did it exit at once)? If no \
                 client is expected, pass --allow-no-clients"
                    .to_owned(),
            );
        }
        Self {
            allowed,
            unattributed_rejections,
            message,
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_url_the_ca_and_the_token_path() {
        let dirs = ["/tmp/x/serviceaccount".to_owned()];
        let origin = Origin {
            server: "https://127.0.0.1:40123",
            ca: Some("/tmp/x/ca.crt"),
            token_dirs: &dirs,
        };
        let nothing = NothingObserved::new(&origin, 0, false);
        assert!(!nothing.allowed);
        assert!(nothing.message.contains("Nothing observed is not a pass"));
        let all = nothing.checks.join("\n");
        for needle in [
            "https://127.0.0.1:40123",
            "KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=40123",
            "/tmp/x/ca.crt",
            "/tmp/x/serviceaccount",
            "--allow-no-clients",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
        assert!(!all.contains("did not sign"), "{all}");
    }

    #[test]
    fn counts_unattributed_tokens_and_many_directories() {
        let dirs: Vec<String> = (0..5).map(|i| format!("/d/{i}")).collect();
        let origin = Origin {
            token_dirs: &dirs,
            ..Origin::server("https://[::1]:6443/")
        };
        let nothing = NothingObserved::new(&origin, 7, true);
        let all = nothing.checks.join("\n");
        assert!(all.contains("/d/0, /d/1, /d/2 and 2 more"), "{all}");
        assert!(all.contains("7 requests presented bearer tokens"), "{all}");
        assert!(all.contains("KUBERNETES_SERVICE_HOST=[::1]"), "{all}");
        assert!(nothing
            .message
            .contains("passing because of --allow-no-clients"));
        assert!(!all.contains("If no client is expected"), "{all}");
    }
}

//! The JWKS document (`/openid/v1/jwks`).

use serde::Serialize;

use super::keys::{Jwk, SigningKey};

/// `{"keys":[...]}` for the given keys as a JSON value, e.g. for [`super::verify`].
///
/// A `serde_json::Value` sorts object keys (no `preserve_order`), so serve [`jwks_json`] instead
/// when the bytes must match upstream.
pub fn jwks_document(keys: &[&SigningKey]) -> serde_json::Value {
    serde_json::json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

/// The JWKS bytes kube-apiserver serves: compact, each key in upstream's field order
/// (`use, kty, kid, crv, alg, x, y, n, e`), one entry per key, no de-duplication.
pub fn jwks_json(keys: &[&SigningKey]) -> String {
    let jwks: Vec<Jwk> = keys.iter().map(|k| k.public_jwk()).collect();
    jwk_set_json(&jwks)
}

/// [`jwks_json`] for keys already in JWK form (e.g. verification-only keys).
pub fn jwk_set_json(keys: &[Jwk]) -> String {
    #[derive(Serialize)]
    struct JwkSetRef<'a> {
        keys: &'a [Jwk],
    }
    // A struct of strings has no map keys or floats that could make serialisation fail.
    serde_json::to_string(&JwkSetRef { keys }).unwrap_or_else(|_| String::from(r#"{"keys":[]}"#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::KeyAlgorithm;

    #[test]
    fn jwks_json_keeps_upstream_field_order() {
        let rsa = SigningKey::generate(KeyAlgorithm::Rs256).unwrap();
        let ec = SigningKey::generate(KeyAlgorithm::Es256).unwrap();
        let json = jwks_json(&[&rsa, &ec]);
        let expected_start = format!(
            r#"{{"keys":[{{"use":"sig","kty":"RSA","kid":"{}","alg":"RS256","n":""#,
            rsa.kid()
        );
        assert!(json.starts_with(&expected_start), "{json}");
        let ec_start = format!(
            r#"{{"use":"sig","kty":"EC","kid":"{}","crv":"P-256","alg":"ES256","x":""#,
            ec.kid()
        );
        assert!(json.contains(&ec_start), "{json}");
        // Same content as the value form.
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, jwks_document(&[&rsa, &ec]));
    }
}

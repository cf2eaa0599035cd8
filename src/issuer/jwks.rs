//! The JWKS document (`/openid/v1/jwks`).

use super::keys::SigningKey;

/// `{"keys":[...]}` for the given keys, in upstream's field order.
pub fn jwks_document(keys: &[&SigningKey]) -> serde_json::Value {
    serde_json::json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

//! Decoding a JWT without its key: for `inspect`, and to read `exp`/`warnafter` from grants.
//!
//! Nothing here checks the signature; errors never quote the token (it is a bearer credential),
//! only which part is wrong and why.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{Map, Value};

use super::claims::LEGACY_ISSUER;

/// Prefix of the flat private claims of legacy secret-based tokens.
pub const LEGACY_CLAIM_PREFIX: &str = "kubernetes.io/serviceaccount/";

/// base64url that accepts both padded and unpadded input: JWS uses no padding, but tools that
/// re-encode tokens sometimes add it, and refusing them would not help anyone.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What kind of service account token this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A TokenRequest token with the `kubernetes.io` claim.
    Bound,
    /// A secret-based token (`iss: kubernetes/serviceaccount`).
    Legacy,
    /// A JWT that is not a Kubernetes service account token.
    Other,
}

/// A JWT split and decoded, signature not checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedToken {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub kind: TokenKind,
}

/// One of the three dot-separated parts of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Header,
    Payload,
    Signature,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Header => "header (first part)",
            Part::Payload => "payload (second part, the claims)",
            Part::Signature => "signature (third part)",
        })
    }
}

/// Why a string is not a JWT. Each says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the token is empty")]
    Empty,
    #[error("not a JWT: expected three dot-separated parts, found {0}")]
    NotThreeParts(usize),
    #[error("not a JWT: the {0} is empty")]
    EmptyPart(Part),
    #[error("not a JWT: the {part} is not base64url: {detail}")]
    NotBase64 { part: Part, detail: String },
    #[error("not a JWT: the {part} is not JSON: {detail}")]
    NotJson { part: Part, detail: String },
    #[error("not a JWT: the {part} is JSON but not an object")]
    NotObject { part: Part },
}

/// Splits and decodes a compact JWS. Surrounding whitespace is ignored.
pub fn decode(token: &str) -> Result<DecodedToken, DecodeError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(DecodeError::Empty);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(DecodeError::NotThreeParts(parts.len()));
    };
    let header = json_object(Part::Header, header)?;
    let claims = json_object(Part::Payload, payload)?;
    // The signature is opaque here, but checking its encoding catches truncated copies early.
    // An empty signature is allowed: it is how unsecured (`alg: none`) JWTs look.
    if !signature.is_empty() {
        base64url(Part::Signature, signature)?;
    }
    let kind = classify(&claims);
    Ok(DecodedToken {
        header,
        claims,
        kind,
    })
}

fn base64url(part: Part, text: &str) -> Result<Vec<u8>, DecodeError> {
    BASE64URL.decode(text).map_err(|e| {
        let mut detail = e.to_string();
        // A common copy/paste mistake: standard base64 instead of the URL-safe alphabet.
        if text.contains(['+', '/']) {
            detail.push_str(" (it contains '+' or '/': standard base64, not base64url)");
        }
        DecodeError::NotBase64 { part, detail }
    })
}

fn json_object(part: Part, text: &str) -> Result<Map<String, Value>, DecodeError> {
    if text.is_empty() {
        return Err(DecodeError::EmptyPart(part));
    }
    let bytes = base64url(part, text)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::NotObject { part }),
        Err(e) => Err(DecodeError::NotJson {
            part,
            detail: e.to_string(),
        }),
    }
}

fn classify(claims: &Map<String, Value>) -> TokenKind {
    if claims.get("kubernetes.io").is_some_and(Value::is_object) {
        return TokenKind::Bound;
    }
    let legacy_issuer = claims.get("iss").and_then(Value::as_str) == Some(LEGACY_ISSUER);
    if legacy_issuer || claims.keys().any(|k| k.starts_with(LEGACY_CLAIM_PREFIX)) {
        return TokenKind::Legacy;
    }
    TokenKind::Other
}

/// A JSON NumericDate as Unix seconds: integers as they are, non-integers truncated toward zero
/// (as Go's `int64(float64)` does). `None` for anything else or out of range.
fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    // i64::MAX as f64 rounds up to 2^63, hence the strict upper bound.
    if f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Some(f.trunc() as i64)
    } else {
        None
    }
}

impl DecodedToken {
    /// A numeric claim (`exp`, `iat`, `nbf`) as Unix seconds.
    pub fn numeric_claim(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(numeric_date)
    }

    /// `kubernetes.io.warnafter`, Unix seconds.
    pub fn warn_after(&self) -> Option<i64> {
        self.kubernetes_claim()?
            .get("warnafter")
            .and_then(numeric_date)
    }

    /// A string claim.
    pub fn string_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The private `kubernetes.io` claim object of a bound token.
    pub fn kubernetes_claim(&self) -> Option<&Map<String, Value>> {
        self.claims.get("kubernetes.io").and_then(Value::as_object)
    }

    /// `aud` as a list: JWTs may carry one audience as a plain string.
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A header field such as `alg` or `kid`.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use serde_json::json;

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn jwt(header: &Value, claims: &Value) -> String {
        format!("{}.{}.c2lnbmF0dXJl", b64(header), b64(claims))
    }

    fn header() -> Value {
        json!({"alg": "RS256", "kid": "k"})
    }

    fn bound_claims() -> Value {
        json!({
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "exp": 1_731_536_000,
            "iat": 1_700_000_000,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "kubernetes.io": {
                "namespace": "default",
                "pod": {"name": "p", "uid": "pu"},
                "serviceaccount": {"name": "default", "uid": "su"},
                "warnafter": 1_700_003_607
            },
            "nbf": 1_700_000_000,
            "sub": "system:serviceaccount:default:default"
        })
    }

    #[test]
    fn decodes_a_bound_token() {
        let token = decode(&jwt(&header(), &bound_claims())).unwrap();
        assert_eq!(token.kind, TokenKind::Bound);
        assert_eq!(token.header_str("alg"), Some("RS256"));
        assert_eq!(token.numeric_claim("exp"), Some(1_731_536_000));
        assert_eq!(token.numeric_claim("iat"), Some(1_700_000_000));
        assert_eq!(token.warn_after(), Some(1_700_003_607));
        assert_eq!(
            token.audiences(),
            vec!["https://kubernetes.default.svc.cluster.local"]
        );
    }

    #[test]
    fn surrounding_whitespace_and_newline_are_trimmed() {
        let raw = jwt(&header(), &bound_claims());
        let token = decode(&format!("  \n{raw}\r\n\t")).unwrap();
        assert_eq!(token, decode(&raw).unwrap());
    }

    #[test]
    fn padded_base64url_is_accepted() {
        // `{"a":1}` is 7 bytes: its base64 needs one `=` of padding.
        let padded = URL_SAFE.encode(br#"{"a":1}"#);
        assert!(padded.ends_with('='));
        let token = decode(&format!("{padded}.{padded}.c2ln")).unwrap();
        assert_eq!(token.claims["a"], 1);
    }

    #[test]
    fn legacy_by_issuer_or_flat_claims() {
        let by_issuer = json!({"iss": "kubernetes/serviceaccount", "sub": "x"});
        assert_eq!(
            decode(&jwt(&header(), &by_issuer)).unwrap().kind,
            TokenKind::Legacy
        );
        let by_claims = json!({"iss": "elsewhere", "kubernetes.io/serviceaccount/namespace": "ns"});
        assert_eq!(
            decode(&jwt(&header(), &by_claims)).unwrap().kind,
            TokenKind::Legacy
        );
    }

    #[test]
    fn other_jwts_are_other() {
        let claims = json!({"iss": "https://accounts.example.com", "sub": "u", "exp": 1});
        assert_eq!(
            decode(&jwt(&header(), &claims)).unwrap().kind,
            TokenKind::Other
        );
        // `kubernetes.io` must be an object to make a bound token.
        let claims = json!({"kubernetes.io": "nope"});
        assert_eq!(
            decode(&jwt(&header(), &claims)).unwrap().kind,
            TokenKind::Other
        );
    }

    #[test]
    fn numeric_claims_accept_integers_and_floats() {
        let claims = json!({"exp": 1_700_000_000.75, "iat": 1_700_000_000, "nbf": "soon",
                            "big": 1e300, "kubernetes.io": {"warnafter": 5.0}});
        let token = decode(&jwt(&header(), &claims)).unwrap();
        assert_eq!(token.numeric_claim("exp"), Some(1_700_000_000));
        assert_eq!(token.numeric_claim("iat"), Some(1_700_000_000));
        assert_eq!(token.numeric_claim("nbf"), None);
        assert_eq!(token.numeric_claim("big"), None);
        assert_eq!(token.numeric_claim("missing"), None);
        assert_eq!(token.warn_after(), Some(5));
    }

    #[test]
    fn single_string_audience_is_a_list_of_one() {
        let token = decode(&jwt(&header(), &json!({"aud": "api"}))).unwrap();
        assert_eq!(token.audiences(), vec!["api"]);
    }

    #[test]
    fn empty_input_is_empty() {
        assert_eq!(decode(" \n"), Err(DecodeError::Empty));
    }

    #[test]
    fn wrong_number_of_parts() {
        let h = b64(&header());
        assert_eq!(
            decode(&format!("{h}.{h}")),
            Err(DecodeError::NotThreeParts(2))
        );
        assert_eq!(
            decode(&format!("{h}.{h}.a.b")),
            Err(DecodeError::NotThreeParts(4))
        );
        assert_eq!(decode("abc"), Err(DecodeError::NotThreeParts(1)));
        let message = decode(&format!("{h}.{h}")).unwrap_err().to_string();
        assert!(
            message.contains("three") && message.contains("found 2"),
            "{message}"
        );
    }

    #[test]
    fn empty_header_or_payload_is_named() {
        let p = b64(&bound_claims());
        assert_eq!(
            decode(&format!(".{p}.c2ln")),
            Err(DecodeError::EmptyPart(Part::Header))
        );
        let h = b64(&header());
        assert_eq!(
            decode(&format!("{h}..c2ln")),
            Err(DecodeError::EmptyPart(Part::Payload))
        );
    }

    #[test]
    fn bad_base64_names_the_part() {
        let h = b64(&header());
        let p = b64(&bound_claims());
        let err = decode(&format!("{h}.{p}!!.c2ln")).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::NotBase64 {
                    part: Part::Payload,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("payload"), "{err}");
        assert!(err.to_string().contains("base64url"), "{err}");

        let err = decode(&format!("h*d.{p}.c2ln")).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::NotBase64 {
                    part: Part::Header,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("header"), "{err}");

        let err = decode(&format!("{h}.{p}.si+g/x")).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::NotBase64 {
                    part: Part::Signature,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("standard base64"), "{err}");
    }

    #[test]
    fn not_json_names_the_part() {
        let h = b64(&header());
        let p = b64(&bound_claims());
        let not_json = URL_SAFE_NO_PAD.encode(b"hello, world");
        let err = decode(&format!("{h}.{not_json}.c2ln")).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::NotJson {
                    part: Part::Payload,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("payload"), "{err}");
        assert!(err.to_string().contains("not JSON"), "{err}");

        let err = decode(&format!("{not_json}.{p}.c2ln")).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::NotJson {
                    part: Part::Header,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn json_that_is_not_an_object_names_the_part() {
        let h = b64(&header());
        let array = b64(&json!([1, 2]));
        assert_eq!(
            decode(&format!("{h}.{array}.c2ln")),
            Err(DecodeError::NotObject {
                part: Part::Payload
            })
        );
    }

    #[test]
    fn empty_signature_is_allowed() {
        let token = decode(&format!(
            "{}.{}.",
            b64(&json!({"alg": "none"})),
            b64(&json!({}))
        ));
        assert_eq!(token.unwrap().kind, TokenKind::Other);
    }

    #[test]
    fn errors_never_quote_the_token() {
        let h = b64(&header());
        let secretish = "c2VjcmV0LXBhcnQ";
        let not_json = URL_SAFE_NO_PAD.encode(b"secret-part-not-json");
        for bad in [
            format!("{h}.{secretish}"),
            format!("{h}.{secretish}!.c2ln"),
            format!("{h}.{not_json}.c2ln"),
        ] {
            let message = decode(&bad).unwrap_err().to_string();
            assert!(!message.contains(secretish), "{message}");
            assert!(!message.contains(&not_json), "{message}");
            assert!(!message.contains("secret-part"), "{message}");
        }
    }
}

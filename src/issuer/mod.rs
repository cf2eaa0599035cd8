//! The token issuer: signing keys and `kid`, TokenRequest validation and minting (with the 3607
//! extension), legacy tokens, JWKS, and verification. Pure rules plus crypto; no HTTP.

pub mod jwks;
pub mod keyring;
pub mod keys;
pub mod mint;
pub mod objects;
pub mod verify;

pub use keys::{KeyAlgorithm, KeyError, SigningKey};
pub use mint::{
    BoundKind, BoundObject, IssuedToken, Issuer, IssuerConfig, IssuerError, RequestError,
    ServiceAccountRef, TokenRequestSpec, ValidatedRequest, DEFAULT_EXPIRATION_SECONDS,
    DEFAULT_ISSUER, MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS,
};
pub use verify::VerifyError;

//! JWT HS256 with the claims the protocol uses: `sub` (userId), `ws` (workspaceId),
//! `exp` (seconds since the epoch). Minting lives here too, so the server's `token`
//! command, the simulator and tests all make tokens the same way.
//!
//! Signing and verification are `jsonwebtoken`'s (the crate people audit: algorithm
//! pinned to HS256, constant-time signature check); the protocol's own rules — bounded
//! ids, expiry on an injected clock, a reason for every refusal — are here.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims the server reads. Unknown claims are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The workspace id: events never cross it.
    pub ws: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the request.
    #[error("no token: pass ?token=JWT or Authorization: Bearer JWT")]
    Missing,
    /// Not three base64url parts, or a part does not decode.
    #[error("token is not a compact JWT (header.claims.signature)")]
    Malformed,
    /// The header names another algorithm than HS256.
    #[error("token algorithm must be HS256")]
    Algorithm,
    /// Signed with another secret, or altered.
    #[error("token signature does not match")]
    Signature,
    /// The claims are not `{sub, ws, exp}` with valid values (holds the reason).
    #[error("token claims are not {{sub, ws, exp}}: {0}")]
    Claims(String),
    /// `exp` has passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's expiry, seconds since the Unix epoch.
        exp: u64,
        /// The verifier's clock, seconds since the Unix epoch.
        now: u64,
    },
    /// One request carried two different tokens (query and header).
    #[error("two different tokens (?token= and Authorization: Bearer); send one")]
    Ambiguous,
    /// A `userId` parameter that is not the token's `sub`.
    #[error("userId {given:?} does not match the token's user")]
    UserMismatch {
        /// The `userId` the request gave.
        given: String,
    },
}

/// The one algorithm accepted: a token naming another is refused before its signature
/// is looked at (no `none`, no RS/HS confusion).
const ALGORITHM: Algorithm = Algorithm::HS256;

/// Mints a compact HS256 JWT.
///
/// # Panics
/// If `secret` is empty: an HMAC with an empty key proves nothing, and every caller
/// (the server's config, its `token` command, the simulator) refuses one first.
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret).expect("a non-empty JWT secret");
    jsonwebtoken::encode(&Header::new(ALGORITHM), claims, &key)
        .unwrap_or_else(|e| unreachable!("HS256 signs any claims: {e}"))
}

/// Checks the algorithm, the signature and the expiry against `now_s` and returns the
/// claims. `exp` is checked here, not by `jsonwebtoken`, whose check reads the system
/// clock: the server's clock is injected (simulated time in the simulator).
pub fn verify(token: &str, secret: &[u8], now_s: u64) -> Result<Claims, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let mut validation = Validation::new(ALGORITHM);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    // The header first, so a JSON error there (an algorithm the crate does not know,
    // such as `none`, or none named) is told apart from one in the claims.
    jsonwebtoken::decode_header(token).map_err(|e| match e.into_kind() {
        ErrorKind::Json(_) => AuthError::Algorithm,
        kind => refusal(kind),
    })?;
    // An empty secret verifies nothing: every token is refused as if forged.
    let key = DecodingKey::from_secret(secret).map_err(|_| AuthError::Signature)?;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| refusal(e.into_kind()))?
        .claims;
    let max = crate::event::ID_BYTES_MAX;
    if [&claims.sub, &claims.ws]
        .iter()
        .any(|id| id.is_empty() || id.len() > max)
    {
        // Ids everywhere else are bounded; a signed megabyte `sub` would be copied
        // into every presence entry and event.
        return Err(AuthError::Claims(format!(
            "sub and ws must be 1 to {max} bytes"
        )));
    }
    if claims.exp <= now_s {
        return Err(AuthError::Expired {
            exp: claims.exp,
            now: now_s,
        });
    }
    Ok(claims)
}

/// `jsonwebtoken`'s reason, as the protocol names it.
fn refusal(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthError::Algorithm,
        ErrorKind::MissingRequiredClaim(c) => AuthError::Claims(format!("no {c}")),
        ErrorKind::InvalidClaimFormat(c) => AuthError::Claims(format!("{c} is malformed")),
        ErrorKind::Json(e) => AuthError::Claims(e.to_string()),
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            ws: "w1".into(),
            exp: 2_000_000_000,
        }
    }

    #[test]
    fn verifies_what_it_mints() {
        let t = mint(&claims(), b"s3cret");
        assert_eq!(verify(&t, b"s3cret", 1_800_000_000).unwrap(), claims());
    }

    #[test]
    fn verifies_a_token_minted_elsewhere() {
        // Made independently with Python's hmac/hashlib/base64 (same header PyJWT writes).
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSIsIndzIjoidzEiLCJleHAiOjIwMDAwMDAwMDB9.yzgsXUeQC9_Xgr4cZn4ztQAbSYaAYP0F1epT7_guXVk";
        assert_eq!(verify(t, b"s3cret", 1_800_000_000).unwrap(), claims());
    }

    #[test]
    fn refuses_bad_tokens_with_reasons() {
        let t = mint(&claims(), b"s3cret");
        assert_eq!(verify(&t, b"other", 0), Err(AuthError::Signature));
        assert!(matches!(
            verify(&t, b"s3cret", 2_000_000_000),
            Err(AuthError::Expired { .. })
        ));
        assert_eq!(verify("", b"s3cret", 0), Err(AuthError::Missing));
        assert_eq!(verify("a.b", b"s3cret", 0), Err(AuthError::Malformed));
        // base64url of {"alg":"none"} and of {}.
        let none = "eyJhbGciOiJub25lIn0.e30.";
        assert_eq!(verify(none, b"s3cret", 0), Err(AuthError::Algorithm));
        // An RS256 header with an HMAC signature (algorithm confusion): refused for
        // its algorithm, before any key is used.
        let rs = format!(
            "{}.{}.{}",
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9",
            "eyJzdWIiOiJ1MSIsIndzIjoidzEiLCJleHAiOjIwMDAwMDAwMDB9",
            t.rsplit('.').next().unwrap()
        );
        assert_eq!(verify(&rs, b"s3cret", 0), Err(AuthError::Algorithm));
        assert_eq!(verify("!!.e30.x", b"s3cret", 0), Err(AuthError::Malformed));
        assert_eq!(verify(&t, b"", 0), Err(AuthError::Signature));
        let key = EncodingKey::from_secret(b"s3cret").unwrap();
        let no_exp = jsonwebtoken::encode(
            &Header::new(ALGORITHM),
            &serde_json::json!({"sub": "u1", "ws": "w1"}),
            &key,
        )
        .unwrap();
        assert!(matches!(
            verify(&no_exp, b"s3cret", 0),
            Err(AuthError::Claims(_))
        ));
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 2, 'x');
        assert!(verify(&tampered, b"s3cret", 0).is_err());
    }
}

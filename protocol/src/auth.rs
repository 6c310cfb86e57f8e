//! JWT HS256 with the claims the protocol uses: `sub` (userId), `ws` (workspaceId),
//! `exp` (seconds since the epoch). Minting lives here too, so the server's `token`
//! command, the simulator and tests all make tokens the same way.
//!
//! Small on purpose: one algorithm, compact form only, constant-time signature check
//! (`Mac::verify_slice`). Anything else is refused with a reason.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

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

#[derive(Deserialize)]
struct Header {
    alg: String,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// Mints a compact HS256 JWT.
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = serde_json::to_vec(claims).unwrap_or_else(|e| unreachable!("claims: {e}"));
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Checks the signature and expiry and returns the claims.
pub fn verify(token: &str, secret: &[u8], now_s: u64) -> Result<Claims, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthError::Malformed)?;
    let header: Header = serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
    if header.alg != "HS256" {
        return Err(AuthError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed)?;
    let mut m = mac(secret);
    m.update(&token.as_bytes()[..h.len() + 1 + c.len()]);
    m.verify_slice(&sig).map_err(|_| AuthError::Signature)?;
    let body = URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| AuthError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&body).map_err(|e| AuthError::Claims(e.to_string()))?;
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
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), "e30");
        assert_eq!(verify(&none, b"s3cret", 0), Err(AuthError::Algorithm));
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 2, 'x');
        assert!(verify(&tampered, b"s3cret", 0).is_err());
    }
}

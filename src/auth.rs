//! Entitlements: which clients may connect and which symbols each may see.
//!
//! A server started with `--auth-secret` admits a WebSocket client only
//! with an HS256 JWT signed with that secret (docs/PROTOCOL.md,
//! "Entitlements"). [`Authenticator::verify`] checks a presented token and
//! turns its claims into a [`Grant`]: the symbol patterns the client may
//! subscribe to and when its access ends. [`mint`] issues such a token, for
//! `tickcast token` and for tests.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

/// The pattern that covers every symbol.
pub const EVERY_SYMBOL: &str = "*";

/// Where to send a client that needs a token.
const HOW_TO_GET_A_TOKEN: &str = "send a token as `Authorization: Bearer TOKEN` or ?token=TOKEN; \
     the server's operator issues one with `tickcast token --secret-file FILE --symbols 'AAPL,NV*' --ttl 1h`";

/// The claims of a tickcast token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was issued to (only logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Symbols or patterns the holder may see (`*` any run of characters,
    /// `?` one character; `"*"` alone is everything).
    pub symbols: Vec<String>,
}

/// Why a token was refused. Each message says what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing token: this server admits only clients with a token; {HOW_TO_GET_A_TOKEN}")]
    Missing,
    /// The token is not a well-formed tickcast JWT.
    #[error("malformed token ({0}): send the token exactly as it was issued, an HS256 JWT with `exp` and `symbols` claims; {HOW_TO_GET_A_TOKEN}")]
    Malformed(String),
    /// The signature does not match this server's secret.
    #[error("forged token: its signature does not match this server's secret (it was signed with another secret or altered); get a token issued for this server")]
    BadSignature,
    /// The token's `exp` has passed.
    #[error(
        "expired token: it expired at Unix time {expired_at}; get a fresh token and connect again"
    )]
    Expired {
        /// The token's `exp` claim.
        expired_at: u64,
    },
}

/// Checks tokens against the server's secret.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is checked to the second; clients reconnect with a fresh
        // token rather than rely on clock slack.
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Authenticator {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks `token` (`None` or empty when none was presented) and returns
    /// what it grants.
    pub fn verify(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let token = token.ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| classify(err, token))?;
        Ok(Grant::from_claims(&data.claims))
    }
}

/// Maps a decoding failure to what the client is told.
fn classify(err: jsonwebtoken::errors::Error, token: &str) -> AuthError {
    match err.into_kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired {
            // The signature was good, so the claims parse.
            expired_at: jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token)
                .map_or(0, |claims| claims.exp),
        },
        ErrorKind::InvalidAlgorithm => AuthError::Malformed("not signed with HS256".into()),
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::Malformed(format!("no `{claim}` claim"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Malformed(format!("`{claim}` is not a number of Unix seconds"))
        }
        ErrorKind::Json(err) => AuthError::Malformed(format!("claims: {err}")),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            AuthError::Malformed("not three base64url parts separated by dots".into())
        }
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

/// What a verified token lets its holder see, and until when.
#[derive(Clone, Debug)]
pub struct Grant {
    /// Every symbol (the claim holds `"*"`, or the server is open).
    pub all: bool,
    /// The claimed patterns, when not `all`.
    pub patterns: Vec<WildMatch>,
    /// When the access ends; `None` for an open server.
    pub expires_at: Option<SystemTime>,
}

impl Grant {
    /// The grant of every client of an open server (no `--auth-secret`):
    /// every symbol, no expiry. One grant, shared by all of them.
    pub fn unrestricted() -> Arc<Grant> {
        static UNRESTRICTED: LazyLock<Arc<Grant>> = LazyLock::new(|| {
            Arc::new(Grant {
                all: true,
                patterns: Vec::new(),
                expires_at: None,
            })
        });
        UNRESTRICTED.clone()
    }

    /// The grant a token's claims make.
    pub fn from_claims(claims: &Claims) -> Self {
        let all = claims.symbols.iter().any(|s| s == EVERY_SYMBOL);
        Grant {
            all,
            patterns: if all {
                Vec::new()
            } else {
                claims.symbols.iter().map(|s| WildMatch::new(s)).collect()
            },
            expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(claims.exp)),
        }
    }

    /// Whether the holder may see symbol `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.all || self.patterns.iter().any(|p| p.matches(name))
    }

    /// The patterns, for messages: `AAPL, NV*`.
    pub fn describe(&self) -> String {
        if self.all {
            return EVERY_SYMBOL.into();
        }
        let patterns: Vec<String> = self.patterns.iter().map(|p| p.to_string()).collect();
        patterns.join(", ")
    }
}

/// A token signed with `secret` carrying `claims`.
pub fn encode(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing with an HMAC key cannot fail")
}

/// A token signed with `secret` for `symbols`, valid for `ttl` from now.
pub fn mint(secret: &[u8], symbols: &[String], ttl: Duration, sub: Option<&str>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = Claims {
        sub: sub.map(str::to_owned),
        exp: now.saturating_add(ttl).as_secs(),
        symbols: symbols.to_vec(),
    };
    encode(secret, &claims)
}

/// A secret file that cannot serve as the signing secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("cannot read the secret file {}: {source}; check the path and its permissions", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("the secret file {} is empty; write the secret into it (e.g. `openssl rand -hex 32 > {}`)", path.display(), path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A token secret given on the command line: anything but empty.
pub fn parse_secret(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "the secret is empty: give a long random string (e.g. from `openssl rand -hex 32`)"
                .into(),
        );
    }
    Ok(s.to_owned())
}

/// Reads a secret from `path`, without its trailing newline.
pub fn read_secret_file(path: &Path) -> Result<String, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretFileError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.trim().is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unit-test secret";

    fn symbols(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_minted_token_verifies_and_grants_its_patterns() {
        let token = mint(
            SECRET,
            &symbols(&["AAPL", "NV*", "M?FT"]),
            Duration::from_secs(60),
            Some("alice"),
        );
        let grant = Authenticator::new(SECRET).verify(Some(&token)).unwrap();
        assert!(!grant.all);
        assert!(grant.allows("AAPL"));
        assert!(grant.allows("NVDA"));
        assert!(grant.allows("MSFT"));
        assert!(!grant.allows("AAP"));
        assert!(!grant.allows("TSLA"));
        assert!(!grant.allows("aapl"));
        assert_eq!(grant.describe(), "AAPL, NV*, M?FT");
        let expires = grant.expires_at.unwrap();
        let left = expires.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(55));
    }

    #[test]
    fn star_alone_grants_everything() {
        let token = mint(SECRET, &symbols(&["*"]), Duration::from_secs(60), None);
        let grant = Authenticator::new(SECRET).verify(Some(&token)).unwrap();
        assert!(grant.all);
        assert!(grant.allows("ANYTHING"));
    }

    #[test]
    fn missing_and_empty_tokens_are_missing() {
        let auth = Authenticator::new(SECRET);
        assert_eq!(auth.verify(None).unwrap_err(), AuthError::Missing);
        assert_eq!(auth.verify(Some("  ")).unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_forged() {
        let token = mint(b"other", &symbols(&["*"]), Duration::from_secs(60), None);
        let err = Authenticator::new(SECRET).verify(Some(&token)).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert!(err.to_string().contains("forged"), "{err}");
    }

    #[test]
    fn an_altered_token_is_forged() {
        let token = mint(SECRET, &symbols(&["AAPL"]), Duration::from_secs(60), None);
        let (rest, _) = token.rsplit_once('.').unwrap();
        let (header, _) = rest.split_once('.').unwrap();
        let other = mint(SECRET, &symbols(&["*"]), Duration::from_secs(60), None);
        let other_claims = other.split('.').nth(1).unwrap();
        let signature = token.rsplit('.').next().unwrap();
        let spliced = format!("{header}.{other_claims}.{signature}");
        let err = Authenticator::new(SECRET)
            .verify(Some(&spliced))
            .unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
    }

    #[test]
    fn an_expired_token_is_refused_without_slack() {
        let claims = Claims {
            sub: None,
            exp: now() - 2,
            symbols: symbols(&["*"]),
        };
        let err = Authenticator::new(SECRET)
            .verify(Some(&encode(SECRET, &claims)))
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::Expired {
                expired_at: claims.exp
            }
        );
        assert!(err.to_string().contains("fresh token"), "{err}");
    }

    #[test]
    fn malformed_tokens_say_so() {
        let auth = Authenticator::new(SECRET);
        for token in ["garbage", "a.b.c", "not base64!.x.y"] {
            let err = auth.verify(Some(token)).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{token}: {err:?}");
            assert!(err.to_string().contains("tickcast token"), "{err}");
        }
        // Signed, but without the `symbols` claim.
        #[derive(Serialize)]
        struct NoSymbols {
            exp: u64,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoSymbols { exp: now() + 60 },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let err = auth.verify(Some(&token)).unwrap_err();
        assert!(
            matches!(&err, AuthError::Malformed(why) if why.contains("symbols")),
            "{err:?}"
        );
        // Signed, but without `exp`.
        #[derive(Serialize)]
        struct NoExp {
            symbols: Vec<String>,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExp {
                symbols: symbols(&["*"]),
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let err = auth.verify(Some(&token)).unwrap_err();
        assert!(
            matches!(&err, AuthError::Malformed(why) if why.contains("exp")),
            "{err:?}"
        );
    }

    #[test]
    fn the_open_grant_allows_everything_forever() {
        let grant = Grant::unrestricted();
        assert!(grant.allows("AAPL"));
        assert!(grant.expires_at.is_none());
    }

    #[test]
    fn secret_files_lose_their_trailing_newline_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("tickcast-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_secret_file(&file).unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        let err = read_secret_file(&file).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = read_secret_file(&dir.join("absent")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

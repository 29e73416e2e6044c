//! OAUTHBEARER (RFC 7628) as Kafka validates it: the client's initial
//! response carries a JWT, which is either checked against the keys of a
//! JWKS file (RS256/384/512, ES256/384) with issuer, audience, expiry and
//! principal claims, or, only when explicitly configured, accepted
//! unsigned (`alg: none`, Kafka's unsecured validator, for tests).

use crate::log::partition_log::now_ms;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;
use std::collections::HashMap;

/// A key from the JWKS file.
#[derive(Debug, Clone)]
enum Jwk {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point, `04 || x || y`.
    Ec {
        curve: &'static str,
        point: Vec<u8>,
    },
}

/// How tokens are validated (OAUTHBEARER's settings).
#[derive(Debug, Clone)]
pub(crate) struct OAuthSettings {
    /// Keys by `kid` (a key without one is stored under "").
    keys: HashMap<String, Jwk>,
    /// No keys: tokens must be unsigned (`alg: none`).
    unsecured: bool,
    pub expected_issuer: Option<String>,
    pub expected_audience: Vec<String>,
    pub principal_claim: String,
    pub clock_skew_ms: i64,
}

/// A token that validated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Validated {
    pub principal: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OAuthFailure {
    /// The initial response itself is malformed (generic failure).
    Malformed(String),
    /// The token is not acceptable: answered with Kafka's
    /// `{"status":"invalid_token"}` document.
    InvalidToken { reason: &'static str, detail: String },
}

fn invalid(reason: &'static str, detail: impl Into<String>) -> OAuthFailure {
    OAuthFailure::InvalidToken {
        reason,
        detail: detail.into(),
    }
}

/// The validator every connection on the broker uses.
pub(crate) type OAuthValidator = OAuthSettings;

fn b64url(text: &str) -> Option<Vec<u8>> {
    // Kafka decodes either alphabet, padded or not; so do we.
    let trimmed = text.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()
}

impl OAuthSettings {
    /// Accepts unsigned tokens: Kafka's unsecured validator (tests only).
    pub(crate) fn unsecured() -> OAuthSettings {
        OAuthSettings {
            keys: HashMap::new(),
            unsecured: true,
            expected_issuer: None,
            expected_audience: Vec::new(),
            principal_claim: "sub".into(),
            clock_skew_ms: 0,
        }
    }

    /// Validates against the keys of a JWKS document (RFC 7517).
    pub(crate) fn with_jwks(jwks: &str) -> Result<OAuthSettings, String> {
        let document: Value = serde_json::from_str(jwks).map_err(|e| format!("not JSON: {e}"))?;
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        let mut keys = HashMap::new();
        for entry in entries {
            let field = |name: &str| entry.get(name).and_then(Value::as_str);
            let bytes = |name: &str| field(name).and_then(b64url);
            let kid = field("kid").unwrap_or_default().to_string();
            let key = match field("kty") {
                Some("RSA") => match (bytes("n"), bytes("e")) {
                    (Some(n), Some(e)) => Jwk::Rsa { n, e },
                    _ => return Err(format!("RSA key {kid:?} lacks n or e")),
                },
                Some("EC") => {
                    let curve = match field("crv") {
                        Some("P-256") => "P-256",
                        Some("P-384") => "P-384",
                        other => return Err(format!("EC key {kid:?}: unsupported curve {other:?}")),
                    };
                    match (bytes("x"), bytes("y")) {
                        (Some(x), Some(y)) => {
                            let mut point = vec![4u8];
                            point.extend_from_slice(&x);
                            point.extend_from_slice(&y);
                            Jwk::Ec { curve, point }
                        }
                        _ => return Err(format!("EC key {kid:?} lacks x or y")),
                    }
                }
                // Keys of other types (symmetric, OKP) are skipped, as a
                // JWKS may carry keys for other uses.
                _ => continue,
            };
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err("no RSA or EC keys".into());
        }
        Ok(OAuthSettings {
            keys,
            unsecured: false,
            clock_skew_ms: 30_000,
            ..OAuthSettings::unsecured()
        })
    }

    /// Parses the client's initial response and validates its token.
    pub(crate) fn validate_initial_response(&self, response: &[u8]) -> Result<Validated, OAuthFailure> {
        let (authzid, token) = parse_initial_response(response)?;
        let validated = self.validate(token, now_ms())?;
        if !authzid.is_empty() && authzid != validated.principal {
            return Err(OAuthFailure::Malformed(format!(
                "authorization id {authzid} differs from the token's principal {}",
                validated.principal
            )));
        }
        Ok(validated)
    }

    fn validate(&self, token: &str, now: i64) -> Result<Validated, OAuthFailure> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err(invalid("malformed_token", "a JWT has three parts"));
        };
        let header: Value = b64url(header)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed_token", "header is not base64url JSON"))?;
        let claims: Value = b64url(claims)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed_token", "claims are not base64url JSON"))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
        if self.unsecured {
            if alg != "none" || !signature.is_empty() {
                return Err(invalid(
                    "bad_signature",
                    "the unsecured validator takes only alg none tokens",
                ));
            }
        } else {
            let kid = header.get("kid").and_then(Value::as_str).unwrap_or_default();
            let key = self
                .keys
                .get(kid)
                .ok_or_else(|| invalid("bad_signature", format!("no key with kid {kid:?}")))?;
            let signed = &token[..header_and_claims_len(token)];
            let signature =
                b64url(signature).ok_or_else(|| invalid("bad_signature", "signature is not base64url"))?;
            verify(alg, key, signed.as_bytes(), &signature)
                .map_err(|detail| invalid("bad_signature", detail))?;
        }
        let number = |name: &str| claims.get(name).and_then(Value::as_f64);
        let exp = number("exp").ok_or_else(|| invalid("bad_claims", "no exp claim"))?;
        let exp_ms = (exp * 1000.0) as i64;
        if now - self.clock_skew_ms >= exp_ms {
            return Err(invalid("expired", format!("expired at {exp_ms} ms, now {now}")));
        }
        if let Some(iat) = number("iat") {
            let iat_ms = (iat * 1000.0) as i64;
            if iat_ms > now + self.clock_skew_ms {
                return Err(invalid("bad_claims", "issued in the future"));
            }
            if exp_ms <= iat_ms {
                return Err(invalid("bad_claims", "exp is not after iat"));
            }
        } else if !self.unsecured {
            return Err(invalid("bad_claims", "no iat claim"));
        }
        if let Some(issuer) = &self.expected_issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(invalid("bad_claims", format!("issuer is not {issuer}")));
            }
        }
        if !self.expected_audience.is_empty() {
            let audiences: Vec<&str> = match claims.get("aud") {
                Some(Value::String(a)) => vec![a.as_str()],
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !audiences
                .iter()
                .any(|a| self.expected_audience.iter().any(|e| e == a))
            {
                return Err(invalid("bad_claims", "no expected audience"));
            }
        }
        let principal = claims
            .get(&self.principal_claim)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid("bad_claims", format!("no {} claim", self.principal_claim)))?;
        Ok(Validated {
            principal: principal.to_string(),
            expires_at_ms: exp_ms,
        })
    }
}

fn header_and_claims_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn verify(alg: &str, key: &Jwk, message: &[u8], sig: &[u8]) -> Result<(), String> {
    let checked = match (alg, key) {
        ("RS256" | "RS384" | "RS512", Jwk::Rsa { n, e }) => {
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n, e }.verify(params, message, sig)
        }
        (
            "ES256",
            Jwk::Ec {
                curve: "P-256",
                point,
            },
        ) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(message, sig),
        (
            "ES384",
            Jwk::Ec {
                curve: "P-384",
                point,
            },
        ) => UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(message, sig),
        _ => return Err(format!("algorithm {alg:?} does not fit the key")),
    };
    checked.map_err(|_| "signature does not verify".to_string())
}

/// `n,[a=authzid],` 0x01 `auth=Bearer <token>` 0x01 (`key=value` 0x01)* 0x01.
fn parse_initial_response(response: &[u8]) -> Result<(&str, &str), OAuthFailure> {
    let malformed = |what: &str| OAuthFailure::Malformed(format!("OAUTHBEARER initial response: {what}"));
    let text = std::str::from_utf8(response).map_err(|_| malformed("not UTF-8"))?;
    let rest = text
        .strip_prefix("n,")
        .ok_or_else(|| malformed("no gs2 header"))?;
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or_else(|| malformed("no gs2 header end"))?;
    let authzid = match authzid {
        "" => "",
        a => a.strip_prefix("a=").ok_or_else(|| malformed("bad authzid"))?,
    };
    let pairs = rest
        .strip_prefix('\u{1}')
        .and_then(|r| r.strip_suffix("\u{1}\u{1}"))
        .ok_or_else(|| malformed("bad key/value framing"))?;
    let mut token = None;
    for pair in pairs.split('\u{1}') {
        let (key, value) = pair.split_once('=').ok_or_else(|| malformed("pair without ="))?;
        if key == "auth" {
            let (scheme, bearer) = value
                .split_once(' ')
                .ok_or_else(|| malformed("auth without a scheme"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(malformed("auth scheme is not Bearer"));
            }
            token = Some(bearer.trim_start());
        } else if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(malformed("bad extension key"));
        }
    }
    let token = token.ok_or_else(|| malformed("no auth"))?;
    Ok((authzid, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn response(token: &str) -> Vec<u8> {
        format!("n,,\u{1}auth=Bearer {token}\u{1}\u{1}").into_bytes()
    }

    fn unsigned(claims: &str) -> String {
        format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.as_bytes()))
    }

    #[test]
    fn unsecured_tokens_as_librdkafka_makes_them() {
        let now = now_ms() / 1000;
        let validator = OAuthSettings::unsecured();
        let good = unsigned(&format!(
            r#"{{"sub":"alice","iat":{}.5,"exp":{}.25,"scope":["a"]}}"#,
            now - 1,
            now + 60
        ));
        let validated = validator.validate_initial_response(&response(&good)).unwrap();
        assert_eq!(validated.principal, "alice");
        let expired = unsigned(&format!(
            r#"{{"sub":"alice","iat":{},"exp":{}}}"#,
            now - 120,
            now - 60
        ));
        assert!(matches!(
            validator.validate_initial_response(&response(&expired)),
            Err(OAuthFailure::InvalidToken {
                reason: "expired",
                ..
            })
        ));
        let extension = format!("n,a=alice,\u{1}auth=Bearer {good}\u{1}ext=1\u{1}\u{1}");
        assert!(validator.validate_initial_response(extension.as_bytes()).is_ok());
        assert!(matches!(
            validator.validate_initial_response(b"n,,auth=Bearer x"),
            Err(OAuthFailure::Malformed(_))
        ));
    }

    #[test]
    fn signed_tokens_verify_against_the_jwks_and_its_claims() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            b64(&point[1..33]),
            b64(&point[33..])
        );
        let mut validator = OAuthSettings::with_jwks(&jwks).unwrap();
        validator.expected_issuer = Some("https://issuer".into());
        validator.expected_audience = vec!["kafka".into()];
        let now = now_ms() / 1000;
        let sign = |claims: String| {
            let signed = format!(
                "{}.{}",
                b64(br#"{"alg":"ES256","kid":"k1"}"#),
                b64(claims.as_bytes())
            );
            let sig = pair.sign(&rng, signed.as_bytes()).unwrap();
            format!("{signed}.{}", b64(sig.as_ref()))
        };
        let claims = |iss: &str, exp: i64| {
            format!(r#"{{"sub":"svc","iss":"{iss}","aud":["kafka"],"iat":{now},"exp":{exp}}}"#)
        };
        let good = sign(claims("https://issuer", now + 60));
        assert_eq!(validator.validate(&good, now_ms()).unwrap().principal, "svc");
        let reason = |token: &str| match validator.validate(token, now_ms()) {
            Err(OAuthFailure::InvalidToken { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(&sign(claims("https://other", now + 60))), "bad_claims");
        assert_eq!(reason(&sign(claims("https://issuer", now - 60))), "expired");
        let tampered = good.replace(&good[good.len() - 8..], "AAAAAAAA");
        assert_eq!(reason(&tampered), "bad_signature");
        assert_eq!(
            reason(&unsigned(&claims("https://issuer", now + 60))),
            "bad_signature"
        );
    }
}

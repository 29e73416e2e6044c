//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks
//! them: the stored credential, the server's side of the exchange, and
//! what AlterUserScramCredentials makes of a client-salted password.
//!
//! Kafka's deviations from the RFC are kept, since clients rely on them:
//! no SASLprep, the channel binding `c=` is decoded but not checked, and
//! a failure is never answered with `e=` (the broker answers
//! SASL_AUTHENTICATION_FAILED instead).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// Iterations Kafka accepts for a stored credential.
pub(crate) const MIN_ITERATIONS: i32 = 4096;
pub(crate) const MAX_ITERATIONS: i32 = 16384;

/// The two SCRAM mechanisms, with Kafka's wire codes (1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub(crate) const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub(crate) fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub(crate) fn from_code(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac_of(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    /// `Hi(password, salt, i)`: PBKDF2 with one output block.
    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: i32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest().output_len()];
        let rounds = NonZeroU32::new(iterations.max(1) as u32).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2(), rounds, salt, password, &mut out);
        out
    }
}

/// What the broker keeps of a password: never the password itself, nor
/// the salted password, only what verifies a proof and signs the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScramCredential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    /// From a salted password, as AlterUserScramCredentials sends it.
    pub(crate) fn from_salted(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted: &[u8],
        iterations: i32,
    ) -> Self {
        let client_key = mechanism.hmac_of(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: digest::digest(mechanism.digest(), &client_key).as_ref().to_vec(),
            server_key: mechanism.hmac_of(salted, b"Server Key"),
            iterations,
        }
    }

    /// From a password (bootstrap users): a fresh random salt.
    pub(crate) fn from_password(mechanism: ScramMechanism, password: &str, iterations: i32) -> Option<Self> {
        let salt = random_bytes(24)?;
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        Some(Self::from_salted(mechanism, &salt, &salted, iterations))
    }

    /// Whether `password` is the one this credential was made from (PLAIN
    /// checks against the SCRAM store: one password per user).
    pub(crate) fn matches_password(&self, mechanism: ScramMechanism, password: &str) -> bool {
        let salted = mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let candidate = Self::from_salted(mechanism, &self.salt, &salted, self.iterations);
        constant_time_eq(&candidate.stored_key, &self.stored_key)
    }
}

mod base64_bytes {
    use super::BASE64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn random_bytes(n: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; n];
    rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut out).ok()?;
    Some(out)
}

/// Compares without an early exit, so the time taken says nothing about
/// where two keys differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange failed. `Safe` texts go back to the client verbatim
/// (as Kafka's do); everything else is answered with the generic message
/// and kept for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScramFailure {
    Safe(&'static str),
    Invalid(String),
    UnknownUser(String),
    BadProof,
}

impl ScramFailure {
    /// The `reason` label of the auth-failure counter.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ScramFailure::Safe(_) | ScramFailure::Invalid(_) => "malformed",
            ScramFailure::UnknownUser(_) => "unknown_user",
            ScramFailure::BadProof => "bad_password",
        }
    }
}

/// The client's first message, parsed.
#[derive(Debug, PartialEq, Eq)]
struct ClientFirst {
    username: String,
    nonce: String,
    /// From `n=` on: the part that enters the AuthMessage.
    bare: String,
}

fn parse_client_first(message: &str) -> Result<ClientFirst, ScramFailure> {
    let invalid = |what: &str| ScramFailure::Invalid(format!("client-first-message: {what}"));
    // gs2-header: only "n" (no channel binding) is accepted, as in Kafka.
    let rest = message
        .strip_prefix("n,")
        .ok_or_else(|| invalid("only the gs2 flag n is supported"))?;
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| invalid("no authzid separator"))?;
    let mut username = None;
    let mut nonce = None;
    for (i, attribute) in bare.split(',').enumerate() {
        let (key, value) = attribute
            .split_once('=')
            .ok_or_else(|| invalid("attribute without ="))?;
        match (i, key) {
            (0, "m") => {}
            (_, "n") if username.is_none() => {
                username = Some(unescape_name(value).ok_or_else(|| invalid("bad saslname"))?)
            }
            (_, "r") if username.is_some() && nonce.is_none() => {
                if value.is_empty() || !value.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
                    return Err(invalid("bad nonce"));
                }
                nonce = Some(value.to_string());
            }
            // Extensions after the nonce; Kafka acts only on tokenauth,
            // which needs delegation tokens this broker does not issue.
            _ if nonce.is_some() => {}
            _ => return Err(invalid("unexpected attribute")),
        }
    }
    let username = username.ok_or_else(|| invalid("no username"))?;
    let nonce = nonce.ok_or_else(|| invalid("no nonce"))?;
    if let Some(authzid) = authzid.strip_prefix("a=") {
        if unescape_name(authzid).as_deref() != Some(username.as_str()) {
            return Err(ScramFailure::Safe(
                "Authentication failed: Client requested an authorization id that is different from username",
            ));
        }
    } else if !authzid.is_empty() {
        return Err(invalid("bad authzid"));
    }
    Ok(ClientFirst {
        username,
        nonce,
        bare: bare.to_string(),
    })
}

/// `=2C` and `=3D` back to `,` and `=`; any other `=` is malformed.
fn unescape_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// The server's side of one exchange, between its first and final message.
pub(crate) struct ScramExchange {
    mechanism: ScramMechanism,
    username: String,
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramExchange {
    /// Handles the client-first-message: `lookup` finds the user's stored
    /// credential. Returns the exchange and the server-first-message.
    pub(crate) fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramExchange, Vec<u8>), ScramFailure> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramFailure::Invalid("client-first-message is not UTF-8".into()))?;
        let first = parse_client_first(text)?;
        let credential =
            lookup(&first.username).ok_or_else(|| ScramFailure::UnknownUser(first.username.clone()))?;
        if credential.iterations < MIN_ITERATIONS {
            return Err(ScramFailure::Invalid("stored iterations below 4096".into()));
        }
        // 128 random bits as hex digits, printable without escaping.
        let server_nonce: String = random_bytes(16)
            .ok_or_else(|| ScramFailure::Invalid("no randomness for the server nonce".into()))?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let answer = server_first.clone().into_bytes();
        Ok((
            ScramExchange {
                mechanism,
                username: first.username,
                credential,
                client_first_bare: first.bare,
                server_first,
                nonce,
            },
            answer,
        ))
    }

    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Handles the client-final-message: checks the nonce and the proof,
    /// and returns the server-final-message (`v=` signature).
    pub(crate) fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramFailure> {
        let invalid = |what: &str| ScramFailure::Invalid(format!("client-final-message: {what}"));
        let text = std::str::from_utf8(client_final).map_err(|_| invalid("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(|| invalid("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| invalid("no channel binding"))?;
        BASE64
            .decode(binding)
            .map_err(|_| invalid("bad channel binding"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| invalid("no nonce"))?;
        // Kafka checks that the nonce ends with the whole nonce, not that
        // it equals it: librdkafka before 2.1 sends the client's part twice.
        if !nonce.ends_with(&self.nonce) {
            return Err(invalid("nonce mismatch"));
        }
        let proof = BASE64.decode(proof).map_err(|_| invalid("bad proof encoding"))?;
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let mechanism = self.mechanism;
        let signature = mechanism.hmac_of(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramFailure::BadProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = digest::digest(mechanism.digest(), &client_key);
        if !constant_time_eq(stored.as_ref(), &self.credential.stored_key) {
            return Err(ScramFailure::BadProof);
        }
        let server_signature = mechanism.hmac_of(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, end to end through the server.
    #[test]
    fn rfc7677_example_exchange() {
        let mechanism = ScramMechanism::Sha256;
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = mechanism.salted_password(b"pencil", &salt, 4096);
        let credential = ScramCredential::from_salted(mechanism, &salt, &salted, 4096);
        let (exchange, first) = ScramExchange::start(mechanism, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |u| {
            (u == "user").then(|| credential.clone())
        })
        .unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
        assert!(first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
        // Build the client's proof the way a client does.
        let nonce = first.split(',').next().unwrap().trim_start_matches("r=");
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{first},{without_proof}");
        let client_key = mechanism.hmac_of(&salted, b"Client Key");
        let stored = digest::digest(mechanism.digest(), &client_key);
        let signature = mechanism.hmac_of(stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let final_message = format!("{without_proof},p={}", BASE64.encode(&proof));
        let answer = exchange.finish(final_message.as_bytes()).unwrap();
        let expected = mechanism.hmac_of(&mechanism.hmac_of(&salted, b"Server Key"), auth.as_bytes());
        assert_eq!(answer, format!("v={}", BASE64.encode(expected)).into_bytes());
    }

    #[test]
    fn a_wrong_proof_and_an_unknown_user_fail() {
        let mechanism = ScramMechanism::Sha512;
        let credential = ScramCredential::from_password(mechanism, "secret", 4096).unwrap();
        assert!(credential.matches_password(mechanism, "secret"));
        assert!(!credential.matches_password(mechanism, "Secret"));
        let (exchange, first) =
            ScramExchange::start(mechanism, b"n,,n=alice,r=abc", |_| Some(credential.clone())).unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = first.split(',').next().unwrap().trim_start_matches("r=");
        let bad = format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 64]));
        assert_eq!(
            exchange.finish(bad.as_bytes()).err(),
            Some(ScramFailure::BadProof)
        );
        let unknown = ScramExchange::start(mechanism, b"n,,n=bob,r=abc", |_| None);
        assert_eq!(unknown.err().map(|e| e.reason()), Some("unknown_user"));
    }

    #[test]
    fn client_first_messages_parse_as_kafka_parses_them() {
        let first = parse_client_first("n,,n=a=2Cb=3Dc,r=xyz,ext=1").unwrap();
        assert_eq!(first.username, "a,b=c");
        assert_eq!(first.bare, "n=a=2Cb=3Dc,r=xyz,ext=1");
        assert!(parse_client_first("n,a=alice,n=alice,r=x").is_ok());
        assert!(matches!(
            parse_client_first("n,a=bob,n=alice,r=x"),
            Err(ScramFailure::Safe(_))
        ));
        for bad in ["y,,n=a,r=x", "p=tls,,n=a,r=x", "n,,n=a=2,r=x", "n,,r=x", "n,,n=a"] {
            assert!(parse_client_first(bad).is_err(), "{bad}");
        }
    }
}

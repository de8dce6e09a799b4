//! Refusals: why a request is refused ([`Denial`]), and the 401/403 local reply that says so —
//! `WWW-Authenticate` challenges (RFC 6750 for bearer tokens), a JSON body naming the reason,
//! and the `auth_denied_total{reason}` counter.

use std::borrow::Cow;

use weft_sdk::{Action, Counter, Request, Result, metric_name};

use crate::config::Resolved;
use crate::jwt::Failure;

/// Why a request is refused, and how.
#[derive(Debug)]
pub(crate) struct Denial {
    status: u16,
    reason: &'static str,
    description: Cow<'static, str>,
    challenge: Challenge,
}

/// What the `WWW-Authenticate` header(s) of a refusal say.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    /// Every configured credential's challenge; `invalid_token` on the bearer one when the
    /// token itself was refused.
    Credentials { invalid_token: bool },
    /// A valid token without a required claim (RFC 6750 `insufficient_scope`, 403).
    InsufficientScope,
    /// No client certificate identity.
    MutualTls,
    /// None: the client is known and refused (403).
    Nothing,
}

impl Denial {
    /// No credential at all.
    pub(crate) fn missing() -> Denial {
        Denial {
            status: 401,
            reason: "missing",
            description: Cow::Borrowed("no credentials"),
            challenge: Challenge::Credentials {
                invalid_token: false,
            },
        }
    }

    /// A refused bearer token.
    pub(crate) fn token(failure: Failure) -> Denial {
        let (status, challenge) = match failure {
            Failure::ClaimMismatch(_) => (403, Challenge::InsufficientScope),
            _ => (
                401,
                Challenge::Credentials {
                    invalid_token: true,
                },
            ),
        };
        Denial {
            status,
            reason: failure.reason(),
            description: failure.description(),
            challenge,
        }
    }

    /// An API key that is not one of the configured keys.
    pub(crate) fn unknown_api_key() -> Denial {
        Denial {
            status: 401,
            reason: "unknown_api_key",
            description: Cow::Borrowed("the API key is not valid"),
            challenge: Challenge::Credentials {
                invalid_token: false,
            },
        }
    }

    /// `allowPrincipals` is configured and the client presented no verified identity.
    pub(crate) fn missing_principal() -> Denial {
        Denial {
            status: 401,
            reason: "missing_principal",
            description: Cow::Borrowed("a client certificate identity is required"),
            challenge: Challenge::MutualTls,
        }
    }

    /// The client's identity is not in `allowPrincipals`.
    pub(crate) fn principal_not_allowed() -> Denial {
        Denial {
            status: 403,
            reason: "principal_not_allowed",
            description: Cow::Borrowed("the client identity is not allowed"),
            challenge: Challenge::Nothing,
        }
    }

    /// Answers `request` with this refusal and counts it.
    pub(crate) fn send(self, request: &mut Request, auth: &Resolved) -> Result<Action> {
        // A counter the host cannot update must not turn a refusal into a 500.
        let _ = Counter::define(&metric_name(
            "auth_denied_total",
            &[("reason", self.reason)],
        ))
        .and_then(|c| c.increment(1));

        let description = quoted(&self.description);
        let mut challenges: Vec<String> = Vec::with_capacity(2);
        match self.challenge {
            Challenge::Credentials { invalid_token } => {
                if auth.jwt.is_some() {
                    challenges.push(if invalid_token {
                        format!(
                            "Bearer realm=\"weft\", error=\"invalid_token\", error_description=\"{description}\""
                        )
                    } else {
                        "Bearer realm=\"weft\"".into()
                    });
                }
                if let Some(keys) = &auth.api_keys {
                    challenges.push(keys.challenge.clone());
                }
            }
            Challenge::InsufficientScope => challenges.push(format!(
                "Bearer realm=\"weft\", error=\"insufficient_scope\", error_description=\"{description}\""
            )),
            Challenge::MutualTls => challenges.push("MutualTLS realm=\"weft\"".into()),
            Challenge::Nothing => {}
        }
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        headers.extend(challenges.iter().map(|c| ("www-authenticate", c.as_str())));
        let body = serde_json::json!({
            "error": if self.status == 403 { "forbidden" } else { "unauthorized" },
            "reason": self.reason,
            "message": self.description,
        });
        request.respond(self.status, &headers, body.to_string().as_bytes())
    }
}

/// `text` made safe inside an HTTP quoted-string: `"` and `\` escaped, control characters
/// dropped.
fn quoted(text: &str) -> Cow<'_, str> {
    if !text.contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

//! The verified identity of a user, as read from a token's claims.

use serde_json::Value;

/// What livehub knows about a user: the claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// User id (`sub`).
    pub sub: String,
    /// Expiry, seconds since the epoch (`exp`).
    pub exp: u64,
    /// Branch / site / tenant (`branchId` or `branch_id`, string or number).
    pub branch_id: Option<String>,
    /// Role, e.g. `operator`, `manager`, `admin`.
    pub role: Option<String>,
    /// Display name shown to other viewers.
    pub name: Option<String>,
    /// Room patterns this user may join; when present, the only grant for entity rooms.
    pub rooms: Option<Vec<String>>,
}

/// A claim that may be a string or a number (ids from Mongo, Postgres, Cognito…).
fn id_claim(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The claims livehub reads, each as the token has it. Deserialised straight
/// from the token's payload: the other claims are skipped, not kept.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenClaims {
    sub: Option<Value>,
    exp: Option<Value>,
    #[serde(rename = "branchId")]
    branch_id_camel: Option<Value>,
    branch_id: Option<Value>,
    role: Option<Value>,
    name: Option<Value>,
    rooms: Option<Value>,
}

/// A claim's non-empty string.
fn text_claim(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

impl Claims {
    /// Reads claims from a verified token payload. `None` when `sub` or `exp`
    /// is missing or of the wrong type.
    pub fn from_json(v: Value) -> Option<Claims> {
        serde_json::from_value(v).ok().and_then(Claims::from_token)
    }

    /// [`Claims::from_json`] for claims already read from a token.
    pub(crate) fn from_token(t: TokenClaims) -> Option<Claims> {
        let sub = id_claim(t.sub.as_ref())?;
        let exp = t.exp?.as_u64()?;
        let branch_id =
            id_claim(t.branch_id_camel.as_ref()).or_else(|| id_claim(t.branch_id.as_ref()));
        let role = text_claim(t.role);
        let name = text_claim(t.name).map(|s| s.chars().take(100).collect());
        let rooms = match t.rooms {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .filter_map(|item| match item {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            ),
            // A `rooms` claim of the wrong shape grants nothing rather than everything.
            Some(_) => Some(Vec::new()),
        };
        Some(Claims {
            sub,
            exp,
            branch_id,
            role,
            name,
            rooms,
        })
    }

    /// Whether the user has the `admin` role.
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some(crate::rooms::ADMIN_ROLE)
    }

    /// The name to show other users: the `name` claim, else the user id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_branch_spellings_and_numbers() {
        let a = Claims::from_json(json!({"sub": 42, "exp": 1, "branch_id": "b2"})).unwrap();
        assert_eq!((a.sub.as_str(), a.branch_id.as_deref()), ("42", Some("b2")));
        let b = Claims::from_json(json!({"sub": "u", "exp": 1, "branchId": 3, "branch_id": "x"}))
            .unwrap();
        assert_eq!(b.branch_id.as_deref(), Some("3"));
    }

    #[test]
    fn malformed_rooms_claim_grants_nothing() {
        let c = Claims::from_json(json!({"sub": "u", "exp": 1, "rooms": "order:*"})).unwrap();
        assert_eq!(c.rooms, Some(vec![]));
    }

    #[test]
    fn missing_or_mistyped_required_claims_are_refused() {
        assert!(Claims::from_json(json!({"exp": 1})).is_none());
        assert!(Claims::from_json(json!({"sub": "u"})).is_none());
        assert!(Claims::from_json(json!({"sub": "u", "exp": "soon"})).is_none());
        assert!(Claims::from_json(json!({"sub": {"id": 1}, "exp": 1})).is_none());
        assert!(Claims::from_json(json!([])).is_none());
    }

    #[test]
    fn other_claims_are_ignored_and_odd_optional_ones_dropped() {
        let c = Claims::from_json(json!({
            "sub": "u", "exp": 1, "iat": 0, "iss": "x", "aud": ["a"], "extra": {"deep": [1]},
            "role": 7, "name": "", "rooms": ["order:*", 3, null],
        }))
        .unwrap();
        assert_eq!(c.role, None);
        assert_eq!(c.name, None);
        assert_eq!(c.rooms, Some(vec!["order:*".to_string()]));
        let long = "n".repeat(300);
        let d =
            Claims::from_json(json!({"sub": "u", "exp": 1, "name": long, "rooms": null})).unwrap();
        assert_eq!((d.name.unwrap().len(), d.rooms), (100, None));
    }
}

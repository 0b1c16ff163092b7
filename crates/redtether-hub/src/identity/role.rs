//! Operator roles and API token scopes. A role is what a person may do; a token's scope caps
//! what the token may do of it, and is applied to the role the operator has *when the token
//! is used*, so demoting an operator shrinks their tokens at once.

use serde::{Deserialize, Serialize};

/// What an operator may do, lowest first: `dashboard` opens devices' node space (dashboards,
/// HTTP-In) through the hub and nothing else; `viewer` also reads the fleet, the editor
/// read-only and the audit; `member` also commands and deploys; `owner` also changes security
/// settings (policies, device tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorRole {
    Dashboard,
    Viewer,
    Member,
    Owner,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 4] =
        [OperatorRole::Dashboard, OperatorRole::Viewer, OperatorRole::Member, OperatorRole::Owner];

    pub fn parse(text: &str) -> Option<OperatorRole> {
        OperatorRole::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Dashboard => "dashboard",
            OperatorRole::Viewer => "viewer",
            OperatorRole::Member => "member",
            OperatorRole::Owner => "owner",
        }
    }
}

impl std::fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an API token may do at most: `read` as a viewer, `operate` as a member, `admin` as an
/// owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    Read,
    Operate,
    Admin,
}

impl TokenScope {
    pub fn parse(text: &str) -> Option<TokenScope> {
        match text {
            "read" => Some(TokenScope::Read),
            "operate" => Some(TokenScope::Operate),
            "admin" => Some(TokenScope::Admin),
            _ => None,
        }
    }

    /// The highest role the scope allows.
    pub fn ceiling(self) -> OperatorRole {
        match self {
            TokenScope::Read => OperatorRole::Viewer,
            TokenScope::Operate => OperatorRole::Member,
            TokenScope::Admin => OperatorRole::Owner,
        }
    }
}

/// The role a request acts with: the operator's role now, capped by the token's scope if it
/// came with a token (a session has no cap).
pub fn effective(role: OperatorRole, scope: Option<TokenScope>) -> OperatorRole {
    scope.map_or(role, |s| role.min(s.ceiling()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_back() {
        assert!(OperatorRole::Dashboard < OperatorRole::Viewer);
        assert!(OperatorRole::Member < OperatorRole::Owner);
        for role in OperatorRole::ALL {
            assert_eq!(OperatorRole::parse(role.as_str()), Some(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        assert_eq!(OperatorRole::parse("root"), None);
        assert_eq!(OperatorRole::parse("Owner"), None);
    }

    #[test]
    fn a_token_never_does_more_than_its_operator_now_may() {
        use OperatorRole::*;
        assert_eq!(effective(Owner, Some(TokenScope::Admin)), Owner);
        assert_eq!(effective(Owner, Some(TokenScope::Operate)), Member);
        assert_eq!(effective(Owner, Some(TokenScope::Read)), Viewer);
        // Demoted: the admin token shrinks with the operator.
        assert_eq!(effective(Viewer, Some(TokenScope::Admin)), Viewer);
        assert_eq!(effective(Dashboard, Some(TokenScope::Admin)), Dashboard);
        assert_eq!(effective(Member, None), Member);
    }
}

//! The sign-in pages' query strings and forms, extracted by axum-extra's
//! `Query` and `Form` (serde_html_form: the same rules as the token endpoint's
//! parameters, see [`crate::http::request::decode`]; a field given twice is
//! refused), and turned into what berth asks of `authn`. The page's notices
//! travel in the redirect's query as fixed codes, so nothing a link carries is
//! echoed into the page.

use serde::Deserialize;

use crate::authn::oidc::pat::{NewToken, MAX_LIMITS};
use crate::policy::limit::Limit;

/// Largest form body accepted on the sign-in pages.
pub const MAX_FORM: usize = 4096;
/// Expiries offered, in days.
pub const EXPIRIES: [i64; 4] = [1, 7, 30, 90];

/// The provider's redirect back to `/login/callback`.
#[derive(Debug, Deserialize)]
pub struct Callback {
    /// Authorization code.
    pub code: Option<String>,
    /// The state berth sent.
    pub state: Option<String>,
    /// An error the provider reports instead.
    pub error: Option<String>,
}

/// The query of `GET /login`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// What the last POST did.
    pub notice: Option<Notice>,
}

/// What the last form did, said on the page it redirected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Notice {
    /// A token was revoked.
    Revoked,
    /// Revoking found no such token of this user.
    NoSuchToken,
    /// The create form named no known access.
    ChooseAccess,
    /// The create form named no offered expiry.
    ChooseExpiry,
    /// The provider gave no offline session: no token can be minted.
    NoOffline,
}

impl Notice {
    /// The code in the redirect's query.
    pub fn code(self) -> &'static str {
        match self {
            Notice::Revoked => "revoked",
            Notice::NoSuchToken => "no-such-token",
            Notice::ChooseAccess => "choose-access",
            Notice::ChooseExpiry => "choose-expiry",
            Notice::NoOffline => "no-offline",
        }
    }

    /// The text on the page.
    pub fn text(self) -> &'static str {
        match self {
            Notice::Revoked => "The token was revoked: it no longer works.",
            Notice::NoSuchToken => "No such token (already revoked?).",
            Notice::ChooseAccess => "Choose the access.",
            Notice::ChooseExpiry => "Choose an expiry.",
            Notice::NoOffline => {
                "No offline session from the identity provider; tokens cannot be created."
            }
        }
    }

    /// Whether it reports a failure.
    pub fn is_error(self) -> bool {
        !matches!(self, Notice::Revoked)
    }

    /// Where to send the browser to say it.
    pub fn location(self) -> String {
        format!("/login?notice={}", self.code())
    }
}

/// A form that carries only the CSRF token (sign out).
#[derive(Debug, Deserialize)]
pub struct Plain {
    /// Anti-CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// The create-token form.
#[derive(Debug, Deserialize)]
pub struct Create {
    /// Anti-CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `pull`, `pull,push` or `pull,push,delete`.
    pub access: Option<String>,
    /// Days, one of [`EXPIRIES`].
    pub expires: Option<String>,
    /// Repository names or patterns the token is limited to, separated by
    /// spaces or lines; blank: every repository of the user's access.
    #[serde(default)]
    pub repositories: String,
}

impl Create {
    /// What to mint, or the notice that says what is missing.
    pub fn request(&self) -> Result<NewToken, Notice> {
        let actions: &[&str] = match self.access.as_deref() {
            Some("pull") => &["pull"],
            Some("pull,push") => &["pull", "push"],
            Some("pull,push,delete") => &["pull", "push", "delete"],
            _ => return Err(Notice::ChooseAccess),
        };
        let days = self
            .expires
            .as_deref()
            .and_then(|d| d.parse::<i64>().ok())
            .filter(|d| EXPIRIES.contains(d))
            .ok_or(Notice::ChooseExpiry)?;
        Ok(NewToken {
            description: self.description.clone(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            ttl: days * 86_400,
            limits: Vec::new(),
        })
    }

    /// The repository limits asked for: each name or pattern with `actions`,
    /// as `repository:NAME:ACTIONS` read by the parser of
    /// `berth token create --limit`. Empty when the field is blank; the error
    /// says, for the page, what is wrong.
    pub fn limits(&self, actions: &[String]) -> Result<Vec<Limit>, String> {
        let patterns: Vec<&str> = self.repositories.split_whitespace().collect();
        if patterns.len() > MAX_LIMITS {
            return Err(format!(
                "at most {MAX_LIMITS} repositories or patterns per token, not {}",
                patterns.len()
            ));
        }
        let actions = actions.join(",");
        let mut out: Vec<Limit> = Vec::with_capacity(patterns.len());
        for p in patterns {
            let bad = |why: String| format!("{p:?} is not a repository name or pattern: {why}");
            if p.contains(':') {
                return Err(bad(
                    "no `:` (write the name only; the access is chosen below)".into(),
                ));
            }
            let name_char =
                |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*?".contains(c);
            if !p.chars().all(name_char) {
                return Err(bad(
                    "only lowercase letters, digits, `.`, `_`, `-`, `/` and the wildcards `*`, `**`, `?`".into(),
                ));
            }
            let limit: Limit = format!("repository:{p}:{actions}").parse().map_err(bad)?;
            if out.iter().all(|l| l.name() != limit.name()) {
                out.push(limit);
            }
        }
        Ok(out)
    }
}

/// The revoke form: first without `confirm` (berth asks), then with it.
#[derive(Debug, Deserialize)]
pub struct Revoke {
    /// Anti-CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// The token's id.
    pub id: Option<String>,
    /// `yes` once the user confirmed.
    pub confirm: Option<String>,
}

impl Revoke {
    /// The token id, if it is one.
    pub fn token_id(&self) -> Option<i64> {
        self.id.as_deref().and_then(|v| v.parse().ok())
    }

    /// Whether the user confirmed.
    pub fn confirmed(&self) -> bool {
        self.confirm.as_deref() == Some("yes")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn forms_follow_the_shared_rules() {
        let f: Create =
            serde_html_form::from_str("csrf=c&access=pull%2Cpush&expires=7&description=ci+job")
                .unwrap();
        let r = f.request().unwrap();
        assert_eq!(r.actions, ["pull", "push"]);
        assert_eq!((r.ttl, r.description.as_str()), (7 * 86_400, "ci job"));
        // A field given twice is refused, as on the token endpoint.
        assert!(serde_html_form::from_str::<Create>("csrf=a&csrf=b").is_err());
        assert!(serde_html_form::from_str::<Callback>("state=a&state=b&code=c").is_err());
        let f: Create = serde_html_form::from_str("csrf=c&access=admin&expires=7").unwrap();
        assert_eq!(f.request().err(), Some(Notice::ChooseAccess));
        let f: Create = serde_html_form::from_str("csrf=c&access=pull&expires=365").unwrap();
        assert_eq!(f.request().err(), Some(Notice::ChooseExpiry));
        assert!(r.limits.is_empty());
        let q: PageQuery = serde_html_form::from_str("notice=revoked").unwrap();
        assert_eq!(q.notice, Some(Notice::Revoked));
        assert!(serde_html_form::from_str::<PageQuery>("notice=%3Cscript%3E").is_err());
        for n in [
            Notice::Revoked,
            Notice::NoSuchToken,
            Notice::ChooseAccess,
            Notice::ChooseExpiry,
            Notice::NoOffline,
        ] {
            let q: PageQuery = serde_html_form::from_str(&format!("notice={}", n.code())).unwrap();
            assert_eq!(q.notice, Some(n));
        }
    }
}

#[cfg(test)]
mod limit_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn form(repositories: &str) -> Create {
        Create {
            csrf: String::new(),
            description: String::new(),
            access: Some("pull".into()),
            expires: Some("7".into()),
            repositories: repositories.into(),
        }
    }

    #[test]
    fn repositories_become_limits_of_the_chosen_actions() {
        let actions = vec!["pull".to_owned(), "push".to_owned()];
        let limits = form(" team-a/app\r\nteam-b/**  team-a/app\n")
            .limits(&actions)
            .unwrap();
        let written: Vec<String> = limits.iter().map(ToString::to_string).collect();
        assert_eq!(
            written,
            [
                "repository:team-a/app:pull,push",
                "repository:team-b/**:pull,push"
            ]
        );
        assert!(form("  \n ").limits(&actions).unwrap().is_empty());
        let f: Create = serde_html_form::from_str(
            "csrf=c&access=pull&expires=7&repositories=team-a%2Fapp%0D%0Ateam-a%2Fx",
        )
        .unwrap();
        assert_eq!(f.limits(&actions).unwrap().len(), 2);
    }

    #[test]
    fn bad_repositories_are_refused_with_a_reason() {
        let actions = vec!["pull".to_owned()];
        for bad in [
            "team-a/app:push",
            "repository:team-a/**:pull",
            "${account}/**",
            "team-a/app <script>",
        ] {
            let e = form(bad).limits(&actions).unwrap_err();
            assert!(
                e.contains("is not a repository name or pattern"),
                "{bad}: {e}"
            );
        }
        let many: Vec<String> = (0..=MAX_LIMITS).map(|i| format!("r/{i}")).collect();
        let e = form(&many.join(" ")).limits(&actions).unwrap_err();
        assert!(e.contains("at most 20"), "{e}");
        assert_eq!(
            form(&many[1..].join("\n")).limits(&actions).unwrap().len(),
            20
        );
    }
}

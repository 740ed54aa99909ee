//! The page of a signed-in browser: who they are, the token minted a moment ago
//! (shown once, with a ready `docker login` command per registry), the form
//! that mints, and the list that revokes.
//!
//! Groups shown: all the provider sent except its own bookkeeping roles, which
//! every user of a Keycloak realm holds and which say nothing about the
//! registry: the realm roles `offline_access`, `uma_authorization` and
//! `default-roles-*` (with the provider's `realm_roles_prefix`, `role:` by
//! default). They are only hidden here; policy still sees them.

use secrecy::{ExposeSecret, SecretString};

use super::access_view::{self, ServiceAccess};
use super::forms::{Notice, EXPIRIES};
use super::pages::{date, esc, layout};
use super::response::COPY_SCRIPT;
use crate::authn::oidc::browser::BrowserSession;
use crate::store::oidc::OidcTokenRecord;

/// A registry the page writes a `docker login` command for.
pub struct Registry {
    /// The `[[service]]` name.
    pub service: String,
    /// The address docker logs in to: the service's `registry_url`, else its name.
    pub address: String,
}

/// What the page shows.
pub struct TokenPage<'a> {
    /// The signed-in browser.
    pub session: &'a BrowserSession,
    /// What the user may do, per registry.
    pub access: &'a [ServiceAccess],
    /// The user's tokens, newest first.
    pub tokens: &'a [OidcTokenRecord],
    /// A token minted a moment ago: shown this once.
    pub minted: Option<SecretString>,
    /// What the last form did.
    pub notice: Option<Notice>,
    /// Registries for the login command.
    pub registries: &'a [Registry],
    /// Now, Unix seconds.
    pub now: i64,
}

/// Whether `group` is one of the provider's own bookkeeping roles (see the
/// module doc), hidden from the page.
pub fn provider_internal(group: &str, realm_roles_prefix: &str) -> bool {
    group.strip_prefix(realm_roles_prefix).is_some_and(|role| {
        role == "offline_access"
            || role == "uma_authorization"
            || role.starts_with("default-roles-")
    })
}

/// `s` as one shell word: unchanged when it has only safe characters, else in
/// single quotes.
pub fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The one-line login command: the token on standard input, never in the
/// process list.
pub fn login_command(token: &str, username: &str, address: &str) -> String {
    format!(
        "echo {} | docker login -u {} --password-stdin {}",
        shell_word(token),
        shell_word(username),
        shell_word(address)
    )
}

/// `text` escaped, each word in a span the layout never breaks (a browser
/// would break `--password-stdin` after a hyphen); lines wrap only at the
/// spaces between words.
fn unbreakable_words(text: &str) -> String {
    text.split(' ')
        .map(|w| format!(r#"<span class="nw">{}</span>"#, esc(w)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn copy_button(target: &str) -> String {
    format!(
        r#"<button type="button" class="copy" id="copy-{target}" data-copy="{target}" hidden>Copy</button>"#
    )
}

fn header(p: &TokenPage<'_>, csrf: &str) -> String {
    let s = p.session;
    let groups: Vec<String> = s
        .user
        .groups
        .iter()
        .filter(|g| !provider_internal(g, &s.provider.cfg.realm_roles_prefix))
        .map(|g| format!("<code>{}</code>", esc(g)))
        .collect();
    format!(
        r#"<p>Signed in as <strong id="username">{user}</strong> with {provider}.
Groups: <span id="groups">{groups}</span></p>
<form method="post" action="/login/logout"><input type="hidden" name="csrf" value="{csrf}"><button id="sign-out">Sign out</button></form>
"#,
        user = esc(&s.user.username),
        provider = esc(&s.provider.cfg.display_name),
        groups = if groups.is_empty() {
            "none".to_owned()
        } else {
            groups.join(", ")
        },
    )
}

fn minted(p: &TokenPage<'_>, token: &str) -> String {
    let mut out = format!(
        r#"<div class="box ok" id="minted">
<h2>Your new token</h2>
<p>Copy it now: it is not shown again (reloading this page does not show it, nor create another).</p>
<pre id="new-token">{token}</pre>
{copy}
"#,
        token = esc(token),
        copy = copy_button("new-token"),
    );
    for (i, r) in p.registries.iter().enumerate() {
        let id = if i == 0 {
            "docker-login".to_owned()
        } else {
            format!("docker-login-{i}")
        };
        let what = if p.registries.len() > 1 {
            format!(" to <code>{}</code>", esc(&r.service))
        } else {
            String::new()
        };
        out.push_str(&format!(
            r#"<p>Log in{what} with one command:</p>
<pre id="{id}">{cmd}</pre>
{copy}
"#,
            cmd = unbreakable_words(&login_command(token, &p.session.user.username, &r.address)),
            copy = copy_button(&id),
        ));
    }
    out.push_str("<p>The command holds the token: run it where your shell history is private, or start it with a space if your shell skips such lines.</p>\n</div>\n");
    out
}

fn create_form(csrf: &str) -> String {
    let expiries: String = EXPIRIES
        .iter()
        .map(|d| {
            format!(
                r#"<option value="{d}"{sel}>{d} day{s}</option>"#,
                sel = if *d == 30 { " selected" } else { "" },
                s = if *d == 1 { "" } else { "s" },
            )
        })
        .collect();
    format!(
        r#"<h2>Create a token</h2>
<form method="post" action="/login/tokens" id="create">
<input type="hidden" name="csrf" value="{csrf}">
<label for="description">Description</label>
<input id="description" name="description" maxlength="100" placeholder="laptop, CI job, …">
<label for="access">Access (never more than your access above allows)</label>
<select id="access" name="access">
<option value="pull">pull</option>
<option value="pull,push" selected>pull and push</option>
<option value="pull,push,delete">pull, push and delete</option>
</select>
<label for="repositories">Repositories (optional; one per line or space-separated, e.g. <code>team-a/app</code> or <code>team-a/**</code>; each within a pattern of your access above; blank: all of it)</label>
<textarea id="repositories" name="repositories" rows="3" maxlength="2000" placeholder="team-a/app"></textarea>
<label for="expires">Expires after</label>
<select id="expires" name="expires">{expiries}</select>
<p><button id="create-token">Create token</button></p>
</form>
"#
    )
}

fn token_list(p: &TokenPage<'_>, csrf: &str) -> String {
    if p.tokens.is_empty() {
        return "<h2>Your tokens</h2>\n<p id=\"no-tokens\">None yet.</p>\n".to_owned();
    }
    let mut out = "<h2>Your tokens</h2>\n<table id=\"token-list\"><tr class=\"head\"><th>Description</th><th>Access</th><th>Repositories</th><th>Created</th><th>Expires</th><th>Last used</th><th></th></tr>\n".to_owned();
    for t in p.tokens {
        let expired = t.expires_at <= p.now;
        out.push_str(&format!(
            r#"<tr id="token-{id}"><td data-label="Description">{desc}</td><td data-label="Access">{actions}</td><td data-label="Repositories" class="limits">{limits}</td><td data-label="Created">{created}</td><td data-label="Expires">{expires}</td><td data-label="Last used">{used}</td>
<td><form method="post" action="/login/tokens/revoke"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}"><button id="revoke-{id}">Revoke…</button></form></td></tr>
"#,
            id = t.id,
            desc = if t.description.is_empty() {
                "<em>no description</em>".to_owned()
            } else {
                esc(&t.description)
            },
            actions = esc(&t.actions.join(", ")),
            limits = limits_cell(&t.limits),
            created = date(t.created_at),
            expires = if expired {
                format!("expired {}", date(t.expires_at))
            } else {
                date(t.expires_at)
            },
            used = t.last_used_at.map(date).unwrap_or_else(|| "never".into()),
        ));
    }
    out.push_str("</table>\n");
    out
}

/// A token's repository limits for the list: the names or patterns (the
/// actions are the token's own), or all of the user's access.
fn limits_cell(limits: &[String]) -> String {
    if limits.is_empty() {
        return "all in your access".to_owned();
    }
    limits
        .iter()
        .map(|l| {
            let name = l
                .strip_prefix("repository:")
                .and_then(|rest| rest.rsplit_once(':'))
                .map_or(l.as_str(), |(name, _)| name);
            format!("<code>{}</code>", esc(name))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The signed-in page.
pub fn render(p: &TokenPage<'_>) -> String {
    let csrf = esc(&p.session.csrf);
    let mut body = header(p, &csrf);
    if let Some(n) = p.notice {
        body.push_str(&format!(
            r#"<div class="box {class}" id="notice"><p>{}</p></div>"#,
            esc(n.text()),
            class = if n.is_error() { "error" } else { "ok" },
        ));
        body.push('\n');
    }
    let has_minted = p.minted.is_some();
    if let Some(token) = &p.minted {
        body.push_str(&minted(p, token.expose_secret()));
    }
    body.push_str(&access_view::render(p.access));
    if p.session.idp_refresh.is_some() {
        body.push_str(&create_form(&csrf));
    } else {
        body.push_str(
            r#"<div class="box error"><p>The identity provider gave no offline session, so berth cannot mint tokens it could re-check. Ask the administrator to allow the <code>offline_access</code> scope for berth's client.</p></div>"#,
        );
    }
    body.push_str(&token_list(p, &csrf));
    if has_minted {
        body.push_str(&format!("<script>{COPY_SCRIPT}</script>\n"));
    }
    layout("Registry tokens", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_roles_are_hidden_by_the_realm_role_prefix() {
        for g in [
            "role:default-roles-berth",
            "role:uma_authorization",
            "role:offline_access",
        ] {
            assert!(provider_internal(g, "role:"), "{g}");
        }
        for g in [
            "team-a",
            "role:admins",
            "offline_access",
            "keycloak:default-roles-berth",
            "role:offline_access_x",
        ] {
            assert!(!provider_internal(g, "role:"), "{g}");
        }
        assert!(provider_internal("offline_access", ""));
    }

    #[test]
    fn login_command_reads_the_token_from_stdin_and_quotes_words() {
        assert_eq!(
            login_command("berth_oidc_AbC-_9", "frank", "registry.example.com:5000"),
            "echo berth_oidc_AbC-_9 | docker login -u frank --password-stdin registry.example.com:5000"
        );
        assert_eq!(
            login_command("t", "o'brien x", "reg"),
            r"echo t | docker login -u 'o'\''brien x' --password-stdin reg"
        );
        assert_eq!(shell_word("a;rm -rf /"), "'a;rm -rf /'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn the_list_shows_each_tokens_repositories_escaped() {
        assert_eq!(limits_cell(&[]), "all in your access");
        assert_eq!(
            limits_cell(&[
                "repository:team-a/app:pull".into(),
                "repository:team-a/**:pull,push".into(),
                "repository:<b>:pull".into(),
            ]),
            "<code>team-a/app</code> <code>team-a/**</code> <code>&lt;b&gt;</code>"
        );
    }
}

//! The sign-in page's HTML: small, server-rendered, no script. Every value from
//! outside goes through [`esc`].

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::authn::oidc::browser::BrowserSession;
use crate::store::oidc::OidcTokenRecord;

/// HTML-escapes text for element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn date(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(|s| s.replace('T', " ").replace('Z', " UTC"))
        .unwrap_or_else(|| "?".into())
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · berth</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }}
code, pre {{ font-family: ui-monospace, monospace; background: #f2f2f4; padding: .1rem .3rem; border-radius: 4px; }}
pre {{ padding: .7rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #ddd; }}
.box {{ border: 1px solid #c7d7ee; background: #f4f8fd; padding: .2rem 1rem 1rem; border-radius: 6px; margin: 1rem 0; }}
.error {{ border-color: #e3b4b4; background: #fdf4f4; }}
label {{ display: block; margin: .5rem 0 .2rem; }} button, .button {{ padding: .4rem .9rem; }}
</style></head>
<body>
<h1>{title}</h1>
{body}
</body></html>
"#,
        title = esc(title)
    )
}

/// The page of a browser that is not signed in.
pub fn sign_in(providers: &[(String, String)], error: Option<&str>) -> String {
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&format!(
            r#"<div class="box error" id="error"><p>{}</p></div>"#,
            esc(e)
        ));
    }
    body.push_str(
        "<p>Sign in with your organisation's account to create tokens for <code>docker login</code>.</p>\n<ul>\n",
    );
    for (name, display) in providers {
        body.push_str(&format!(
            r#"<li><a class="button" id="sign-in-{n}" href="/login/start/{n}">Sign in with {d}</a></li>"#,
            n = esc(name),
            d = esc(display)
        ));
        body.push('\n');
    }
    body.push_str("</ul>\n");
    layout("Sign in", &body)
}

/// A token created just now: shown once.
pub struct Minted<'a> {
    /// The token.
    pub token: &'a str,
    /// Registry host for the command line.
    pub registry: &'a str,
}

/// The page of a signed-in browser: new token (once), the form, the token list.
pub fn tokens(
    session: &BrowserSession,
    tokens: &[OidcTokenRecord],
    minted: Option<Minted<'_>>,
    message: Option<&str>,
    now: i64,
) -> String {
    let csrf = esc(&session.csrf);
    let user = esc(&session.user.username);
    let mut body = format!(
        r#"<p>Signed in as <strong id="username">{user}</strong> with {provider}.
Groups: {groups}</p>
<form method="post" action="/login/logout"><input type="hidden" name="csrf" value="{csrf}"><button id="sign-out">Sign out</button></form>
"#,
        provider = esc(&session.provider.cfg.display_name),
        groups = if session.user.groups.is_empty() {
            "none".to_owned()
        } else {
            session
                .user
                .groups
                .iter()
                .map(|g| format!("<code>{}</code>", esc(g)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    if let Some(m) = message {
        body.push_str(&format!(
            r#"<div class="box error" id="error"><p>{}</p></div>"#,
            esc(m)
        ));
    }
    if let Some(m) = minted {
        body.push_str(&format!(
            r#"<div class="box" id="minted">
<h2>Your new token</h2>
<p>Copy it now: it is not shown again.</p>
<pre id="new-token">{token}</pre>
<p>Log in with it:</p>
<pre id="docker-login">docker login -u {user} --password-stdin {registry}</pre>
<p>and paste the token as the password (or pipe it in).</p>
</div>
"#,
            token = esc(m.token),
            registry = esc(m.registry),
        ));
    }
    if session.idp_refresh.is_some() {
        body.push_str(&format!(
            r#"<h2>Create a token</h2>
<form method="post" action="/login/tokens" id="create">
<input type="hidden" name="csrf" value="{csrf}">
<label for="description">Description</label>
<input id="description" name="description" maxlength="100" placeholder="laptop, CI job, …">
<label for="access">Access (never more than your groups allow)</label>
<select id="access" name="access">
<option value="pull">pull</option>
<option value="pull,push" selected>pull and push</option>
<option value="pull,push,delete">pull, push and delete</option>
</select>
<label for="expires">Expires after</label>
<select id="expires" name="expires">
<option value="1">1 day</option>
<option value="7">7 days</option>
<option value="30" selected>30 days</option>
<option value="90">90 days</option>
</select>
<p><button id="create-token">Create token</button></p>
</form>
"#
        ));
    } else {
        body.push_str(
            r#"<div class="box error"><p>The identity provider gave no offline session, so berth cannot mint tokens it could re-check. Ask the administrator to allow the <code>offline_access</code> scope for berth's client.</p></div>"#,
        );
    }
    body.push_str("<h2>Your tokens</h2>\n");
    if tokens.is_empty() {
        body.push_str("<p id=\"no-tokens\">None yet.</p>\n");
    } else {
        body.push_str("<table id=\"token-list\"><tr><th>Description</th><th>Access</th><th>Created</th><th>Expires</th><th>Last used</th><th></th></tr>\n");
        for t in tokens {
            let expired = t.expires_at <= now;
            body.push_str(&format!(
                r#"<tr id="token-{id}"><td>{desc}</td><td>{actions}</td><td>{created}</td><td>{expires}</td><td>{used}</td>
<td><form method="post" action="/login/tokens/revoke"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}"><button id="revoke-{id}">Revoke</button></form></td></tr>
"#,
                id = t.id,
                desc = if t.description.is_empty() {
                    "<em>no description</em>".to_owned()
                } else {
                    esc(&t.description)
                },
                actions = esc(&t.actions.join(", ")),
                created = date(t.created_at),
                expires = if expired {
                    format!("expired {}", date(t.expires_at))
                } else {
                    date(t.expires_at)
                },
                used = t.last_used_at.map(date).unwrap_or_else(|| "never".into()),
            ));
        }
        body.push_str("</table>\n");
    }
    layout("Registry tokens", &body)
}

/// A page that only says what went wrong.
pub fn problem(title: &str, text: &str) -> String {
    layout(
        title,
        &format!(
            r#"<div class="box error" id="error"><p>{}</p></div><p><a href="/login">Back to sign-in</a></p>"#,
            esc(text)
        ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(
            super::esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = super::sign_in(&[("kc".into(), "<script>".into())], Some("<img src=x>"));
        assert!(!page.contains("<script>") && !page.contains("<img"));
    }
}

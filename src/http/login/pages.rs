//! The sign-in pages' HTML frame and the small pages: sign-in choices, problems,
//! the revoke confirmation. Server-rendered and usable without script (the only
//! script, the copy button, is an extra). Every value from outside goes through
//! [`esc`]. The layout fits a 390 px wide phone without sideways scrolling:
//! long names wrap anywhere, the token table becomes one card per token on
//! narrow screens, and a `docker login` command wraps only between words (a word
//! wider than the screen scrolls inside its own box).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

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

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn date(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(|s| s.replace('T', " ").replace('Z', " UTC"))
        .unwrap_or_else(|| "?".into())
}

/// A whole page: `title` as heading, `body` as its content.
pub fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · berth</title>
<style>
*, *::before, *::after {{ box-sizing: border-box; }}
body {{ font-family: system-ui, sans-serif; max-width: 52rem; margin: 1.5rem auto; padding: 0 1rem; color: #1d1d1f; line-height: 1.4; overflow-wrap: anywhere; }}
code, pre {{ font-family: ui-monospace, monospace; background: #f2f2f4; border-radius: 4px; }}
code {{ padding: .1rem .3rem; }}
pre {{ padding: .6rem .7rem; margin: .4rem 0; max-width: 100%; overflow-x: auto; white-space: pre-wrap; word-break: normal; overflow-wrap: normal; font-size: .9rem; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #ddd; vertical-align: top; }}
.box {{ border: 1px solid #c7d7ee; background: #f4f8fd; padding: .2rem 1rem 1rem; border-radius: 6px; margin: 1rem 0; }}
.error {{ border-color: #e3b4b4; background: #fdf4f4; }}
.ok {{ border-color: #b4e3c0; background: #f4fdf6; }}
label {{ display: block; margin: .6rem 0 .2rem; }}
input, select, textarea {{ max-width: 100%; font: inherit; padding: .3rem; }}
input[type=text], input:not([type]), textarea {{ width: 24rem; }}
button, .button {{ padding: .4rem .9rem; font: inherit; }}
.inline {{ display: inline; }} .nw {{ white-space: nowrap; }}
ul.access {{ padding-left: 1.2rem; }} .rule {{ color: #555; font-size: .9rem; }}
@media (max-width: 40rem) {{
  body {{ margin: 1rem auto; }}
  table, tbody, tr, td {{ display: block; width: 100%; }}
  tr.head {{ display: none; }}
  tr {{ border: 1px solid #ddd; border-radius: 6px; margin: .6rem 0; padding: .2rem 0; }}
  td {{ border: 0; padding: .15rem .6rem; }}
  td[data-label]::before {{ content: attr(data-label) ": "; font-weight: 600; }}
}}
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

/// The confirmation asked before a token is revoked.
pub fn confirm_revoke(csrf: &str, token: &OidcTokenRecord) -> String {
    let body = format!(
        r#"<div class="box error" id="confirm"><p>Revoke the token <strong>{desc}</strong> ({actions}, created {created})? Whatever uses it stops working at once; this cannot be undone.</p>
<form method="post" action="/login/tokens/revoke" class="inline"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}"><input type="hidden" name="confirm" value="yes"><button id="confirm-revoke">Revoke</button></form>
<a class="button" id="cancel-revoke" href="/login">Cancel</a></div>
"#,
        desc = if token.description.is_empty() {
            "(no description)".to_owned()
        } else {
            esc(&token.description)
        },
        actions = esc(&token.actions.join(", ")),
        created = date(token.created_at),
        csrf = esc(csrf),
        id = token.id,
    );
    layout("Revoke token?", &body)
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

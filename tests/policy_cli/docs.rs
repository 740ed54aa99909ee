//! The documentation stays navigable and its generated part stays in place.
//!
//! - Every relative link in the repository's Markdown (README.md, docs/*.md,
//!   policies/README.md, examples/**/README.md and any other `*.md` outside
//!   `target/`) names a file or directory that exists inside the repository,
//!   and every `#anchor` names a heading of the file it points to, by GitHub's
//!   slug rule (lower case; punctuation dropped except `-` and `_`; each space
//!   becomes `-`; a repeated heading gets `-1`, `-2`, …).
//! - The README's map links every page under docs/.
//! - The compatibility matrix is generated: `scripts/compat-table.py` writes
//!   it between `<!-- compat-table:start -->` and `<!-- compat-table:end -->`
//!   in docs/compatibility.md. This test checks that the page keeps both
//!   markers with a non-empty table between them, that no other page carries
//!   a second (unchecked) copy, and that `scripts/test.sh` checks that page.
//!   Whether the table's cells match the end-to-end run is checked by
//!   `scripts/test.sh` itself (`compat-table.py --check`), since only it has
//!   the run's results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::support::repo;

const TABLE_START: &str = "<!-- compat-table:start -->";
const TABLE_END: &str = "<!-- compat-table:end -->";

/// Pages that must exist and be checked; a walk that missed them (or a page
/// that was moved without its links) fails instead of checking nothing.
const REQUIRED: &[&str] = &[
    "README.md",
    "docs/operating.md",
    "docs/security.md",
    "docs/policy.md",
    "docs/keycloak.md",
    "docs/ldap.md",
    "docs/compatibility.md",
    "docs/benchmarks.md",
    "policies/README.md",
    "examples/kubernetes/README.md",
    "examples/policy-repo/README.md",
    "examples/registry/README.md",
];

/// Every `*.md` under `root`, skipping build output and hidden directories.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                    dirs.push(path);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `text` with fenced code blocks blanked (line numbers kept): neither a
/// `# comment` in a TOML block is a heading nor `a](b)` in code a link.
fn without_fences(text: &str) -> Vec<&str> {
    let mut fence: Option<char> = None;
    text.lines()
        .map(|line| {
            let t = line.trim_start();
            let opener = ['`', '~']
                .into_iter()
                .find(|c| t.starts_with(&c.to_string().repeat(3)));
            match (fence, opener) {
                (None, Some(c)) => {
                    fence = Some(c);
                    ""
                }
                (Some(f), Some(c)) if f == c => {
                    fence = None;
                    ""
                }
                (Some(_), _) => "",
                (None, None) => line,
            }
        })
        .collect()
}

/// `line` with inline code spans blanked (a span's backticks and contents
/// become spaces), so `[[service]]` in backticks is not taken for a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    // Link text only: `[text](url)` reads as `text`.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(i) = rest.find("](") {
        text.push_str(&rest[..i]);
        rest = rest[i + 2..].split_once(')').map_or("", |(_, after)| after);
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every ATX heading outside code blocks.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in without_fences(text) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let t = line.trim_start_matches(' ');
        let level = t.len() - t.trim_start_matches('#').len();
        if indent > 3 || !(1..=6).contains(&level) {
            continue;
        }
        let rest = &t[level..];
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        let base = slug(rest.trim().trim_end_matches('#').trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Every link target in `text`, with its line number: inline links and
/// images `[text](target)` (the text may wrap onto the next line) and
/// reference definitions `[label]: target`.
fn links(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<String> = without_fences(text)
        .into_iter()
        .map(without_code_spans)
        .collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let target: String = rest[i + 2..]
                .chars()
                .take_while(|c| *c != ')' && !c.is_whitespace())
                .collect();
            out.push((
                n + 1,
                target.trim_matches(|c| c == '<' || c == '>').to_owned(),
            ));
            rest = &rest[i + 2..];
        }
        let t = line.trim_start();
        if t.starts_with('[') && !t.starts_with("[[") {
            if let Some((_, target)) = t.split_once("]: ") {
                if let Some(target) = target.split_whitespace().next() {
                    out.push((n + 1, target.to_owned()));
                }
            }
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// `path` with `.` and `..` taken away, without touching the file system;
/// `None` when it climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Checks every relative link of `files` (paths relative to `root`); returns
/// how many links were checked and one line per broken one.
fn check_links(root: &Path, files: &[PathBuf]) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (line, target) in links(&text) {
            if target.is_empty() || is_external(&target) {
                continue;
            }
            checked += 1;
            let at = format!("{}:{line}: ({target})", file.display());
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let path = path.replace("%20", " ");
            let resolved = if path.is_empty() {
                Some(file.clone())
            } else if let Some(from_root) = path.strip_prefix('/') {
                normalize(Path::new(from_root))
            } else {
                normalize(&file.parent().unwrap_or(Path::new("")).join(&path))
            };
            let Some(resolved) = resolved else {
                broken.push(format!("{at}: points outside the repository"));
                continue;
            };
            let full = root.join(&resolved);
            if !full.exists() {
                broken.push(format!("{at}: {} does not exist", resolved.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if full.extension().and_then(|e| e.to_str()) != Some("md") {
                broken.push(format!("{at}: an anchor into a file that is not Markdown"));
                continue;
            }
            let heads = anchors(&std::fs::read_to_string(&full).unwrap());
            if !heads.contains(anchor) {
                broken.push(format!(
                    "{at}: {} has no heading #{anchor} (it has: {})",
                    resolved.display(),
                    heads.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    (checked, broken)
}

fn relative(files: Vec<PathBuf>, root: &Path) -> Vec<PathBuf> {
    files
        .into_iter()
        .map(|f| f.strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

#[test]
fn docs_every_relative_link_and_anchor_resolves() {
    let root = repo();
    let files = relative(markdown_files(root), root);
    for required in REQUIRED {
        assert!(
            files.iter().any(|f| f == Path::new(required)),
            "{required} is missing or was not found by the walk: {files:?}"
        );
    }
    let (checked, broken) = check_links(root, &files);
    // The README's map alone has more than this; zero would mean the parser
    // found nothing, not that everything is fine.
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn docs_readme_map_links_every_page() {
    let root = repo();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|(_, t)| t.split('#').next().unwrap_or_default().to_owned())
        .collect();
    let pages = relative(markdown_files(&root.join("docs")), root);
    assert!(!pages.is_empty(), "no pages under docs/");
    let missing: Vec<_> = pages
        .iter()
        .filter(|p| !linked.contains(&p.display().to_string()))
        .collect();
    assert!(missing.is_empty(), "README.md's map lacks {missing:?}");
}

#[test]
fn docs_compatibility_table_sits_between_its_markers() {
    let root = repo();
    let page = std::fs::read_to_string(root.join("docs/compatibility.md")).unwrap();
    assert_eq!(page.matches(TABLE_START).count(), 1, "start marker");
    assert_eq!(page.matches(TABLE_END).count(), 1, "end marker");
    let (start, end) = (
        page.find(TABLE_START).unwrap(),
        page.find(TABLE_END).unwrap(),
    );
    assert!(start < end, "the end marker comes before the start marker");
    let section = &page[start + TABLE_START.len()..end];
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with('|')).collect();
    let separators = rows.iter().filter(|l| l.starts_with("|---")).count();
    // Every table: a header, a separator and at least one body row.
    assert!(
        separators > 0 && rows.len() >= 3 * separators,
        "no table between the markers:\n{section}"
    );
    // compat-table.py marks a cell whose outcome was not the expected one;
    // a table rendered from such a run was rendered from a failing run.
    assert!(!section.contains("(unexpected)"), "{section}");
    assert!(
        !rows
            .iter()
            .any(|r| r.split('|').any(|cell| cell.trim() == "?")),
        "a cell without a result:\n{section}"
    );

    // No second copy that nothing compares with the run.
    let root_files = relative(markdown_files(root), root);
    for file in root_files
        .iter()
        .filter(|f| *f != Path::new("docs/compatibility.md"))
    {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            !text.contains(TABLE_START) && !text.contains(TABLE_END),
            "{} carries compat-table markers; the table lives in docs/compatibility.md",
            file.display()
        );
    }
    // The full test run compares this page with the run's results.
    let test_sh = std::fs::read_to_string(root.join("scripts/test.sh")).unwrap();
    assert!(
        test_sh.contains("compat-table.py --check docs/compatibility.md"),
        "scripts/test.sh no longer checks docs/compatibility.md against the run"
    );
}

#[test]
fn docs_slugs_follow_github() {
    for (heading, anchor) in [
        ("Sign-in lockout", "sign-in-lockout"),
        ("Registries × signing keys", "registries--signing-keys"),
        (
            "Signing-key rotation (`berth key rotate`)",
            "signing-key-rotation-berth-key-rotate",
        ),
        ("LDAP and Active Directory", "ldap-and-active-directory"),
        ("keys/", "keys"),
        (
            "Match fields (all optional; all given ones must hold)",
            "match-fields-all-optional-all-given-ones-must-hold",
        ),
        ("See [the guide](docs/a.md)", "see-the-guide"),
        ("snake_case stays", "snake_case-stays"),
    ] {
        assert_eq!(slug(heading), anchor, "{heading}");
    }
    let heads = anchors("# Title\n\n```toml\n# not a heading\n```\n## Checking\n### Checking\n#nospace\n    # indented code\n");
    let want: BTreeSet<String> = ["title", "checking", "checking-1"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(heads, want);
}

/// The checker itself can fail: a page with a missing file, a wrong anchor,
/// a wrapped link, a link out of the repository and links that are fine.
#[test]
fn docs_link_check_reports_broken_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/a.md"), "# A\n\n## Part two\n").unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Top\n\n\
         [ok](docs/a.md) [ok anchor](docs/a.md#part-two) [self](#top) [dir](docs/)\n\
         [web](https://example.com/x.md) `[[not]](code)`\n\
         [missing](docs/b.md)\n\
         [bad anchor](docs/a.md#part-three)\n\
         [wrapped\ntext](docs/c.md)\n\
         [out](../elsewhere.md)\n\
         [ref]: docs/d.md\n\
         ```\n[in code](docs/none.md)\n```\n",
    )
    .unwrap();
    let files = relative(markdown_files(root), root);
    let (checked, broken) = check_links(root, &files);
    assert_eq!(checked, 9, "{broken:#?}");
    let expect = [
        "README.md:5: (docs/b.md): docs/b.md does not exist",
        "README.md:6: (docs/a.md#part-three): docs/a.md has no heading #part-three",
        "README.md:8: (docs/c.md): docs/c.md does not exist",
        "README.md:9: (../elsewhere.md): points outside the repository",
        "README.md:10: (docs/d.md): docs/d.md does not exist",
    ];
    assert_eq!(broken.len(), expect.len(), "{broken:#?}");
    for (got, want) in broken.iter().zip(expect) {
        assert!(got.starts_with(want), "{got}\n  wanted {want}");
    }
}

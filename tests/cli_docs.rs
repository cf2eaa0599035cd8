//! The command reference in `docs/commands/` is generated from the clap definitions
//! (`projected_token::cli::command()`), so `--help` and the docs cannot drift: this test renders
//! every page in memory and fails when a committed page differs. `UPDATE_DOCS=1 cargo test --test
//! cli_docs` writes them. It also checks that every relative link of README.md, CONTRIBUTING.md
//! and docs/ points at a file that exists and, with a `#fragment`, at one of its headings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const REGENERATE: &str = "UPDATE_DOCS=1 cargo test --test cli_docs";
/// A fixed width: the pages never depend on the terminal the test runs in.
const WIDTH: usize = 100;

/// The hand-written pages each command's reference points to (paths relative to docs/commands/).
const SEE_ALSO: &[(&str, &[(&str, &str)])] = &[
    (
        "emulate",
        &[
            ("Projected volumes", "../projection.md"),
            ("The emulated API", "../api.md"),
            ("Client reload testing", "../client-reload-testing.md"),
            ("Kubelet scale", "../kubelet-scale.md"),
            ("Security and state", "../security.md"),
        ],
    ),
    (
        "serve",
        &[
            ("The emulated API", "../api.md"),
            ("Security and state", "../security.md"),
        ],
    ),
    (
        "sidecar",
        &[
            ("The sidecar", "../sidecar.md"),
            ("Projected volumes", "../projection.md"),
            ("Containers and compose", "../containers.md"),
        ],
    ),
    (
        "check",
        &[("Client reload testing", "../client-reload-testing.md")],
    ),
    (
        "ctl",
        &[
            ("Client reload testing", "../client-reload-testing.md"),
            ("The emulated API", "../api.md"),
        ],
    ),
    (
        "inspect",
        &[("How the kubelet does it", "../kubelet-and-differences.md")],
    ),
    (
        "watch",
        &[("Client reload testing", "../client-reload-testing.md")],
    ),
    ("probe", &[("Containers and compose", "../containers.md")]),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The command tree as the pages show it: a fixed width, and `[env: NAME]` without the value the
/// variable happens to have where the test runs.
fn command() -> clap::Command {
    fn hide_env_values(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.hide_env_values(true))
            .mut_subcommands(hide_env_values)
    }
    // No wrapping by clap (0: unlimited); `wrap` breaks the lines the same way everywhere.
    let mut command = hide_env_values(projected_token::cli::command()).term_width(0);
    command.build();
    command
}

fn long_help(command: &mut clap::Command) -> String {
    let text = command.render_long_help().to_string();
    let lines: Vec<String> = text.lines().flat_map(|line| wrap(line, WIDTH)).collect();
    lines.join("\n").trim_end().to_owned()
}

/// `line` broken at spaces into lines of at most `width` characters (a longer word stays
/// whole), each continuation indented as the line was: clap wraps only with its `wrap_help`
/// feature, which would make the pages depend on a feature some other crate may switch on.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let line = line.trim_end();
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    let mut lines = Vec::new();
    let mut current = indent.to_owned();
    for word in body.split(' ') {
        let empty = current.len() == indent.len();
        if !empty && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::replace(&mut current, indent.to_owned()));
        }
        if current.len() > indent.len() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines.push(current.trim_end().to_owned());
    lines
}

fn header(title: &str) -> String {
    format!(
        "<!-- Generated from src/cli.rs by `{REGENERATE}`: edit the clap definitions, not this file. -->\n\n# {title}\n\n"
    )
}

fn help_block(help: &str) -> String {
    format!("```text\n{help}\n```\n")
}

/// Every generated page: `docs/commands/<command>.md` (ctl's subcommands on ctl's page) and an
/// index, `docs/commands/README.md`.
fn pages() -> BTreeMap<String, String> {
    let mut root = command();
    let mut pages = BTreeMap::new();
    let mut index = header("Command reference");
    index.push_str(
        "One page per command, generated from the command-line definitions: the same text as \
         `projected-token <command> --help`. Topics: [docs/](../README.md).\n\n",
    );
    for sub in root.get_subcommands_mut() {
        let name = sub.get_name().to_owned();
        if name == "help" {
            continue;
        }
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        index.push_str(&format!("- [`{name}`]({name}.md): {about}\n"));
        let mut page = header(&format!("`projected-token {name}`"));
        page.push_str(&format!("{about}\n\n"));
        if let Some((_, links)) = SEE_ALSO.iter().find(|(command, _)| *command == name) {
            let links: Vec<String> = links
                .iter()
                .map(|(title, path)| format!("[{title}]({path})"))
                .collect();
            page.push_str(&format!("See also: {}.\n\n", links.join(", ")));
        }
        page.push_str(&help_block(&long_help(sub)));
        for nested in sub.get_subcommands_mut() {
            let nested_name = nested.get_name().to_owned();
            if nested_name == "help" {
                continue;
            }
            page.push_str(&format!("\n## `projected-token {name} {nested_name}`\n\n"));
            page.push_str(&help_block(&long_help(nested)));
        }
        pages.insert(format!("{name}.md"), page);
    }
    index.push_str("\n`projected-token --help`:\n\n");
    index.push_str(&help_block(&long_help(&mut root)));
    pages.insert("README.md".to_owned(), index);
    pages
}

#[test]
fn command_reference_is_up_to_date() {
    let dir = repo().join("docs/commands");
    let pages = pages();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(&dir).expect("create docs/commands");
        for entry in std::fs::read_dir(&dir).expect("read docs/commands") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.extension().is_some_and(|e| e == "md") && !pages.contains_key(name) {
                std::fs::remove_file(&path).expect("remove a page of a command that is gone");
            }
        }
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text).expect("write page");
        }
        return;
    }
    let mut stale = Vec::new();
    for (name, text) in &pages {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(format!("docs/commands/{name}"));
        }
    }
    let committed: BTreeSet<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(".md"))
                .collect()
        })
        .unwrap_or_default();
    for name in committed {
        if !pages.contains_key(&name) {
            stale.push(format!("docs/commands/{name} (no such command any more)"));
        }
    }
    assert!(
        stale.is_empty(),
        "the generated command reference is out of date with src/cli.rs: {}.\nRegenerate it with `{REGENERATE}` and commit the result.",
        stale.join(", ")
    );
}

/// Markdown files whose links are checked: README.md, CONTRIBUTING.md and everything in docs/.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, into);
            } else if path.extension().is_some_and(|e| e == "md") {
                into.push(path);
            }
        }
    }
    let mut files = vec![repo().join("README.md"), repo().join("CONTRIBUTING.md")];
    walk(&repo().join("docs"), &mut files);
    files.sort();
    files
}

/// The text outside fenced code blocks and inline code, where links live.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// The anchors a forge makes of a page's headings (lowercase, punctuation dropped, spaces to
/// dashes, `-1`, `-2` for repeats), plus explicit `<a id="...">`s.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            let heading = heading.trim_start_matches('#').trim();
            let slug: String = heading
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect();
            let count = seen.entry(slug.clone()).or_insert(0);
            anchors.insert(if *count == 0 {
                slug.clone()
            } else {
                format!("{slug}-{count}")
            });
            *count += 1;
        }
        let mut rest = line;
        while let Some(at) = rest.find("<a id=\"") {
            rest = &rest[at + 7..];
            if let Some(end) = rest.find('"') {
                anchors.insert(rest[..end].to_owned());
            }
        }
    }
    anchors
}

/// `(target)` of every `[text](target)` in `prose`.
fn link_targets(prose: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = prose;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].trim().to_owned());
        }
    }
    targets
}

#[test]
fn relative_links_point_at_files_and_headings_that_exist() {
    let root = repo();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for target in link_targets(&prose(&text)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("parent").join(path)
            };
            if !linked.exists() {
                broken.push(format!("{shown}: ({target}): no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                let linked_text = std::fs::read_to_string(&linked).unwrap_or_default();
                if !anchors(&linked_text).contains(fragment) {
                    broken.push(format!("{shown}: ({target}): no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 20, "only {checked} links checked");
}

#[test]
fn anchors_are_made_as_a_forge_makes_them() {
    let page = "# `emulate`\n## State that survives restarts\n```sh\n# not a heading\n```\n## Kubelet scale\n## Kubelet scale\n<a id=\"self-healing\"></a>";
    let made = anchors(page);
    for anchor in [
        "emulate",
        "state-that-survives-restarts",
        "kubelet-scale",
        "kubelet-scale-1",
        "self-healing",
    ] {
        assert!(made.contains(anchor), "{anchor} missing from {made:?}");
    }
    assert!(!made.contains("not-a-heading"));
}

#[test]
fn long_lines_wrap_at_spaces_keeping_their_indent() {
    assert_eq!(
        wrap("    one two three four", 14),
        ["    one two", "    three four"]
    );
    assert_eq!(
        wrap("  averyveryverylongword x", 8),
        ["  averyveryverylongword", "  x"]
    );
    assert_eq!(wrap("", 8), [""]);
}

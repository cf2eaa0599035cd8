//! README.md's shell examples, run as written: every ```` ```sh ```` block, in order, in one bash
//! script (so a command started with `&` stays up for the blocks after it, as in a reader's
//! terminal), against the binary cargo built for this test (`projected-token` first on `PATH`),
//! in a scratch directory with its own `HOME`, bounded in time. A failing command fails the test.
//!
//! An HTML comment on the line before a block changes how it is run (CONTRIBUTING.md):
//! `<!-- readme-test: skip REASON -->`, `<!-- readme-test: needs kubectl -->` (a kubectl 1.28+
//! from `PROJECTED_TOKEN_TEST_KUBECTL` or `PATH`), `needs docker` (an Engine that answers), or
//! `needs CMD` (CMD on `PATH`). A block whose needs are missing is skipped with the reason.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_projected-token");
/// The whole walkthrough takes well under a minute; this bounds a hang.
const TIMEOUT: Duration = Duration::from_secs(180);
const MARKER: &str = "<!-- readme-test: ";

#[derive(Debug, PartialEq)]
enum Marker {
    Skip(String),
    Needs(String),
}

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    marker: Option<Marker>,
    text: String,
}

fn parse_marker(line: usize, text: &str) -> Marker {
    let body = text
        .strip_prefix(MARKER)
        .and_then(|rest| rest.strip_suffix("-->"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("README.md:{line}: a marker is `{MARKER}... -->` on one line"));
    if let Some(reason) = body.strip_prefix("skip ") {
        return Marker::Skip(reason.trim().to_owned());
    }
    if let Some(tool) = body.strip_prefix("needs ") {
        return Marker::Needs(tool.trim().to_owned());
    }
    panic!("README.md:{line}: unknown marker {body:?}: use `skip REASON` or `needs TOOL`");
}

/// The shell blocks of `markdown`, each with the marker on the line before it.
fn shell_blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if line.starts_with(MARKER) {
            let next = lines.get(index + 1).copied().unwrap_or_default();
            assert!(
                next.starts_with("```"),
                "README.md:{}: a marker must be on the line right before a code block",
                index + 1
            );
        }
        let Some(language) = line.strip_prefix("```") else {
            index += 1;
            continue;
        };
        let start = index;
        let mut body = Vec::new();
        index += 1;
        while index < lines.len() && !lines[index].starts_with("```") {
            body.push(lines[index]);
            index += 1;
        }
        index += 1;
        if !matches!(language.trim(), "sh" | "bash" | "shell") {
            continue;
        }
        let marker = start
            .checked_sub(1)
            .map(|before| lines[before])
            .filter(|before| before.starts_with(MARKER))
            .map(|before| parse_marker(start, before));
        blocks.push(Block {
            line: start + 1,
            marker,
            text: body.join("\n"),
        });
    }
    blocks
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

/// Whether `tool` is available; kubectl is linked into `bin` (it may come from the variable).
fn provide(tool: &str, bin: &Path) -> Result<(), String> {
    match tool {
        "kubectl" => {
            let kubectl = common::kubectl()?;
            std::os::unix::fs::symlink(kubectl, bin.join("kubectl"))
                .map_err(|e| format!("cannot link kubectl: {e}"))
        }
        "docker" => {
            let answers = Command::new("docker")
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            answers
                .then_some(())
                .ok_or_else(|| "no Docker Engine answers `docker info`".to_owned())
        }
        other => on_path(other)
            .map(drop)
            .ok_or_else(|| format!("{other} is not on PATH")),
    }
}

/// The script of the blocks to run; prints why each other block is skipped.
fn script(blocks: &[Block], bin: &Path) -> String {
    let mut script = String::from(
        "set -euo pipefail\n\
         # Whatever the examples left running (an emulator started with `&`) stops with the script.\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    for block in blocks {
        match &block.marker {
            Some(Marker::Skip(reason)) => {
                eprintln!("SKIPPED README.md:{}: {reason}", block.line);
                continue;
            }
            Some(Marker::Needs(tool)) => {
                if let Err(reason) = provide(tool, bin) {
                    eprintln!("SKIPPED README.md:{}: {reason}", block.line);
                    continue;
                }
            }
            None => {}
        }
        script.push_str(&format!(
            "echo '== README.md:{}' >&2\n{}\n",
            block.line, block.text
        ));
    }
    script
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn readme_examples_run_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let blocks = shell_blocks(&readme);
    assert!(
        blocks.len() >= 5,
        "only {} shell blocks found",
        blocks.len()
    );

    let scratch = tempfile::tempdir().expect("scratch directory");
    let (bin, home, work) = (
        scratch.path().join("bin"),
        scratch.path().join("home"),
        scratch.path().join("work"),
    );
    for dir in [&bin, &home, &work] {
        std::fs::create_dir_all(dir).expect("scratch directories");
    }
    std::os::unix::fs::symlink(BIN, bin.join("projected-token")).expect("link the binary");
    let script = script(&blocks, &bin);
    std::fs::write(scratch.path().join("readme.sh"), &script).expect("write the script");

    // The README's emulator listens on the default address; say so plainly when it is taken.
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:6443") {
        panic!("127.0.0.1:6443 is not free ({e}): the README's emulator listens there");
    }

    let output_path = scratch.path().join("output");
    let output = std::fs::File::create(&output_path).expect("output file");
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    // A clean environment: no PROJECTED_TOKEN_*, KUBECONFIG or XDG_* of the developer's.
    let mut child = Command::new("bash")
        .arg("-x")
        .arg(scratch.path().join("readme.sh"))
        .current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("TMPDIR", scratch.path())
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("output"))
        .stderr(output)
        .process_group(0)
        .spawn()
        .expect("run bash");
    let group = rustix::process::Pid::from_child(&child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Anything the script left behind goes with it, whatever happened.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.wait();

    let mut text = String::new();
    std::fs::File::open(&output_path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("read the output");
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "a README example failed ({status}); the last lines of its run (the failing block is \
             the last `== README.md:LINE`):\n{}",
            tail(&text, 80)
        ),
        None => panic!(
            "the README examples did not finish within {TIMEOUT:?}; the last lines:\n{}",
            tail(&text, 80)
        ),
    }
}

#[test]
fn blocks_and_markers_are_read_as_documented() {
    let markdown = "text\n\
        <!-- readme-test: skip runs for ever -->\n\
        ```sh\nsleep infinity\n```\n\
        ```text\nnot run\n```\n\
        <!-- readme-test: needs kubectl -->\n\
        ```sh\nkubectl version\n```\n\
        ```sh\necho one\necho two\n```\n";
    let blocks = shell_blocks(markdown);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0].marker, Some(Marker::Skip("runs for ever".into())));
    assert_eq!(blocks[0].line, 3);
    assert_eq!(blocks[1].marker, Some(Marker::Needs("kubectl".into())));
    assert_eq!(blocks[2].marker, None);
    assert_eq!(blocks[2].text, "echo one\necho two");
}

#[test]
#[should_panic(expected = "unknown marker")]
fn an_unknown_marker_is_refused() {
    shell_blocks("<!-- readme-test: sometimes -->\n```sh\ntrue\n```\n");
}

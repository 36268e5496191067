//! The book matches the code: every include resolves to real, non-empty code; no code or
//! terminal output is pasted; every transcript is fresh and shown; every lesson has a chapter.
//!
//! mdBook itself checks none of this: a misspelled `{{#include file:anchor}}` renders an EMPTY
//! block and exits 0, a missing file only warns, and a chapter missing from src/ is created
//! empty (FACTS.md).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use regex::Regex;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in
            fs::read_dir(&dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The book's chapters: every Markdown file under book/src.
fn chapters() -> Vec<(PathBuf, String)> {
    files(&root().join("book/src"), ".md")
        .into_iter()
        .map(|path| (path.clone(), read(&path)))
        .collect()
}

/// One `{{#include ...}}` or `{{#rustdoc_include ...}}` in a chapter.
struct Include {
    /// The file, resolved against the chapter's directory.
    file: PathBuf,
    /// What follows the file name: an anchor, a line range, or nothing.
    selector: Option<String>,
    /// The directive as written, for messages.
    written: String,
}

fn includes(chapter: &Path, text: &str) -> Vec<Include> {
    let directive = Regex::new(r"\{\{#(?:include|rustdoc_include)\s+([^}\s]+)\s*\}\}").unwrap();
    directive
        .captures_iter(text)
        .map(|captures| {
            let target = &captures[1];
            let (file, selector) = match target.split_once(':') {
                Some((file, selector)) => (file, Some(selector.to_owned())),
                None => (target, None),
            };
            let dir = chapter.parent().expect("a chapter's directory");
            Include { file: dir.join(file), selector, written: captures[0].to_owned() }
        })
        .collect()
}

/// The lines mdBook would include, as it selects them: a named anchor (marker lines of other
/// anchors dropped), a line range `A:B` (1-based, either end open), or the whole file.
fn included_text(include: &Include) -> Result<String, String> {
    let text = fs::read_to_string(&include.file)
        .map_err(|err| format!("{}: {}: {err}", include.written, include.file.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let selected: Vec<&str> = match include.selector.as_deref() {
        None => lines,
        Some(range) if range.chars().all(|c| c.is_ascii_digit() || c == ':') => {
            let (start, end) = range.split_once(':').unwrap_or((range, range));
            let start = start.parse::<usize>().map_or(0, |n| n.saturating_sub(1));
            let end = end.parse::<usize>().unwrap_or(lines.len()).min(lines.len());
            lines.get(start..end).unwrap_or_default().to_vec()
        }
        Some(anchor) => {
            let marker = |kind: &str| {
                Regex::new(&format!(r"\b{kind}:\s*{}(\s|$|-->)", regex::escape(anchor))).unwrap()
            };
            let (begin, end) = (marker("ANCHOR"), marker("ANCHOR_END"));
            let first = lines.iter().position(|line| begin.is_match(line));
            let last = lines.iter().position(|line| end.is_match(line));
            match (first, last) {
                (Some(first), Some(last)) if first < last => lines[first + 1..last].to_vec(),
                _ => {
                    return Err(format!(
                        "{}: {} has no `ANCHOR: {anchor}` ... `ANCHOR_END: {anchor}` pair",
                        include.written,
                        include.file.display()
                    ));
                }
            }
        }
    };
    let any_marker = Regex::new(r"\bANCHOR(_END)?:").unwrap();
    Ok(selected
        .into_iter()
        .filter(|line| !any_marker.is_match(line))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A fenced block in a chapter: its info string (`rust,ignore`, `console`) and its lines.
struct Fence {
    info: String,
    body: Vec<String>,
    line: usize,
}

fn fences(text: &str) -> Vec<Fence> {
    let mut fences = Vec::new();
    let mut open: Option<(String, Fence)> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                for marker in ["```", "~~~"] {
                    if let Some(info) = trimmed.strip_prefix(marker) {
                        let fence = Fence {
                            info: info
                                .trim_start_matches(marker.chars().next().unwrap())
                                .trim()
                                .to_owned(),
                            body: Vec::new(),
                            line: number + 1,
                        };
                        open = Some((marker.to_owned(), fence));
                        break;
                    }
                }
            }
            Some((marker, fence)) => {
                if trimmed.starts_with(marker.as_str()) {
                    let (_, fence) = open.take().unwrap();
                    fences.push(fence);
                } else {
                    fence.body.push(line.to_owned());
                }
            }
        }
    }
    fences
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// mdBook creates a missing chapter as an empty file and says nothing: every entry of
/// SUMMARY.md must be a chapter someone wrote.
#[test]
fn every_summary_entry_is_a_written_chapter() {
    let src = root().join("book/src");
    let summary = read(&src.join("SUMMARY.md"));
    let link = Regex::new(r"\]\(([^)]+\.md)\)").unwrap();
    let entries: Vec<_> = link.captures_iter(&summary).map(|c| c[1].to_owned()).collect();
    assert!(entries.len() >= 4, "SUMMARY.md lists only {entries:?}");
    for entry in entries {
        let text = fs::read_to_string(src.join(&entry)).unwrap_or_default();
        assert!(text.lines().count() > 5, "SUMMARY.md lists {entry}, which is missing or empty");
    }
}

/// An anchor typo renders an empty block with mdBook's exit code 0: every include must name an
/// existing file and anchor and yield code.
#[test]
fn every_include_names_an_existing_file_and_anchor_and_yields_text() {
    let mut problems = Vec::new();
    let mut count = 0;
    for (chapter, text) in chapters() {
        for include in includes(&chapter, &text) {
            count += 1;
            match included_text(&include) {
                Ok(code) if code.trim().is_empty() => problems.push(format!(
                    "{}: {} yields nothing",
                    relative(&chapter),
                    include.written
                )),
                Ok(_) => {}
                Err(problem) => problems.push(format!("{}: {problem}", relative(&chapter))),
            }
        }
    }
    assert!(problems.is_empty(), "broken includes:\n{}", problems.join("\n"));
    assert!(count > 10, "only {count} includes in the whole book");
}

/// The book never shows a pasted copy: Rust code comes from the lessons by include, terminal
/// output and diffs from the generated transcripts. A command for the reader to type goes in
/// an `sh` fence; no other kind of block is expected.
#[test]
fn no_code_or_output_is_pasted_into_the_book() {
    let include_line =
        Regex::new(r"^\s*\{\{#(include|rustdoc_include)\s+([^}\s:]+)[^}]*\}\}\s*$").unwrap();
    let mut problems = Vec::new();
    for (chapter, text) in chapters() {
        let at = |fence: &Fence| format!("{}:{}", relative(&chapter), fence.line);
        for fence in fences(&text) {
            let language = fence.info.split([',', ' ']).next().unwrap_or_default();
            let source = match language {
                "rust" => "lessons/",
                "console" | "diff" => "book/transcripts/",
                "sh" => continue,
                other => {
                    problems.push(format!(
                        "{}: a ```{other} block; use ```rust,ignore (an include), ```console \
                         or ```diff (a transcript include) or ```sh (a command to type)",
                        at(&fence)
                    ));
                    continue;
                }
            };
            for line in fence.body.iter().filter(|line| !line.trim().is_empty()) {
                let target = include_line.captures(line).map(|c| {
                    let dir = chapter.parent().unwrap();
                    relative(&normalize(&dir.join(&c[2])))
                });
                match target {
                    Some(target) if target.starts_with(source) => {}
                    Some(target) => problems.push(format!(
                        "{}: a ```{language} block includes {target}, not a file under {source}",
                        at(&fence)
                    )),
                    None => problems.push(format!(
                        "{}: a ```{language} block holds a pasted line: {line:?}",
                        at(&fence)
                    )),
                }
            }
        }
    }
    assert!(problems.is_empty(), "pasted instead of included:\n{}", problems.join("\n"));
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A transcript no chapter includes is output nobody reads, or a chapter that lost its block.
#[test]
fn every_transcript_is_shown_in_the_book() {
    let mut shown = BTreeSet::new();
    for (chapter, text) in chapters() {
        for include in includes(&chapter, &text) {
            shown.insert(normalize(&include.file));
        }
    }
    let transcripts = root().join("book/transcripts");
    // Terminal blocks (.txt) and generated tables (.md, included outside a fence).
    let mut generated = files(&transcripts, ".txt");
    generated.extend(files(&transcripts, ".md"));
    let unshown: Vec<_> = generated
        .into_iter()
        .filter(|file| !shown.contains(file))
        .map(|file| relative(&file))
        .collect();
    assert!(unshown.is_empty(), "transcripts no chapter includes: {unshown:?}");
}

/// Every lesson has its chapter, listed in SUMMARY.md, with its run, its diff from the lesson
/// it builds on, and its exercises from EXERCISES.md.
#[test]
fn every_lesson_has_a_chapter_with_its_transcripts_and_exercises() {
    let summary = read(&root().join("book/src/SUMMARY.md"));
    let mut lessons: Vec<String> = fs::read_dir(root().join("lessons"))
        .expect("read lessons/")
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.len() > 3 && name.as_bytes()[..2].iter().all(u8::is_ascii_digit))
        .collect();
    lessons.sort();
    assert!(!lessons.is_empty());
    let mut problems = Vec::new();
    for (i, lesson) in lessons.iter().enumerate() {
        let chapter = root().join(format!("book/src/lessons/{lesson}.md"));
        if !chapter.is_file() {
            problems.push(format!("lessons/{lesson}: no chapter book/src/lessons/{lesson}.md"));
            continue;
        }
        if !summary.contains(&format!("(lessons/{lesson}.md)")) {
            problems.push(format!("book/src/lessons/{lesson}.md is not in SUMMARY.md"));
        }
        let text = read(&chapter);
        let shown: BTreeSet<PathBuf> =
            includes(&chapter, &text).into_iter().map(|include| normalize(&include.file)).collect();
        let number = &lesson[..2];
        let mut wanted = vec![format!("book/transcripts/lesson-{number}.txt")];
        // The diff from the lesson it builds on: the one before, unless its Cargo.toml names
        // another (`builds-on = N`, Part II).
        let manifest = read(&root().join(format!("lessons/{lesson}/Cargo.toml")));
        let base = manifest
            .lines()
            .find_map(|line| line.trim().strip_prefix("builds-on = "))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .map(|n| format!("{n:02}"))
            .or_else(|| i.checked_sub(1).map(|before| lessons[before][..2].to_owned()));
        if let Some(base) = base {
            wanted.push(format!("book/transcripts/diff-{base}-{number}.txt"));
        }
        wanted.push(format!("lessons/{lesson}/EXERCISES.md"));
        for file in wanted {
            if !shown.contains(&root().join(&file)) {
                problems.push(format!("book/src/lessons/{lesson}.md does not include {file}"));
            }
        }
        if !text.contains("EXERCISES.md:exercises}}") {
            problems.push(format!("book/src/lessons/{lesson}.md: include EXERCISES.md:exercises"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A chapter that names `tests/FILE.rs::name` promises that test exists in its lesson.
#[test]
fn every_test_a_chapter_names_exists() {
    let reference = Regex::new(r"`tests/([a-z_]+\.rs)::([a-z0-9_]+)`").unwrap();
    let mut problems = Vec::new();
    let mut count = 0;
    for chapter in files(&root().join("book/src/lessons"), ".md") {
        let lesson = chapter.file_stem().unwrap().to_string_lossy().into_owned();
        for captures in reference.captures_iter(&read(&chapter)) {
            count += 1;
            let file = root().join(format!("lessons/{lesson}/tests/{}", &captures[1]));
            let source = fs::read_to_string(&file).unwrap_or_default();
            if !source.contains(&format!("fn {}(", &captures[2])) {
                problems.push(format!(
                    "{}: {} is not a test there",
                    relative(&chapter),
                    &captures[0]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(count > 0, "no chapter names a test as `tests/FILE.rs::name`");
}

/// Links between the book's pages, its pictures, and the exercises' links to the chapters.
#[test]
fn every_relative_link_resolves() {
    let link = Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut pages: Vec<PathBuf> = chapters().into_iter().map(|(path, _)| path).collect();
    pages.extend(files(&root().join("lessons"), "EXERCISES.md"));
    pages.push(root().join("README.md"));
    let mut problems = Vec::new();
    for page in pages {
        for captures in link.captures_iter(&read(&page)) {
            let target = captures[1].split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !page.parent().unwrap().join(target).exists() {
                problems.push(format!("{}: {} does not exist", relative(&page), &captures[1]));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every terminal block is what the programs print today (`transcripts --check`).
#[test]
fn the_transcripts_match_what_the_programs_print() {
    let output = cargo_bin_cmd!("uds-course").args(["transcripts", "--check"]).output().unwrap();
    assert!(
        output.status.success(),
        "transcripts --check failed: run `cargo run -- transcripts` and review the diff\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

//! `diff A B`: the unified diff from lesson A's `src/` to lesson B's, so only the idea shows.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use similar::TextDiff;

use crate::lessons::{self, Number};

/// `diff A B`, or `diff N` (`b` none): the diff from the lesson N builds on to N.
pub fn diff(a: Number, b: Option<Number>) -> anyhow::Result<()> {
    let (a, b) = match b {
        Some(b) => (a, b),
        None => {
            let lesson = lessons::find(a)?;
            let base = lesson.builds_on()?;
            let base = base.with_context(|| format!("lesson {a} builds on no other lesson"))?;
            (base, a)
        }
    };
    write(a, b, &mut io::stdout().lock())
}

/// The diff from lesson `a` to lesson `b`, written to `out`.
pub fn write(a: Number, b: Number, out: &mut impl Write) -> anyhow::Result<()> {
    let (a, b) = (lessons::find(a)?, lessons::find(b)?);
    let (a_src, b_src) = (a.dir.join("src"), b.dir.join("src"));
    let mut files = lessons::files_under(&a_src)?;
    files.extend(lessons::files_under(&b_src)?);
    for file in &files {
        let (a_path, b_path) = (a_src.join(file), b_src.join(file));
        // Every lesson is a full copy of the one before under its own name: without renaming
        // `lesson01` to `lesson02` first, every `use lesson01::...` would show as a change.
        let old = read_if_exists(&a_path)?
            .map(|text| without_anchors(&text).replace(&a.package(), &b.package()));
        let new = read_if_exists(&b_path)?.map(|text| without_anchors(&text));
        // A file on one side only is added or removed: `/dev/null` is how `patch` reads that.
        let header = |lesson: &lessons::Lesson, text: &Option<String>| match text {
            Some(_) => format!("{}/src/{}", lesson.relative_dir(), file.display()),
            None => "/dev/null".to_owned(),
        };
        let (old_name, new_name) = (header(&a, &old), header(&b, &new));
        let (old, new) = (old.unwrap_or_default(), new.unwrap_or_default());
        // Identical files have no hunks, so similar prints nothing, header included.
        let text_diff = TextDiff::from_lines(&old, &new);
        write!(out, "{}", text_diff.unified_diff().header(&old_name, &new_name))
            .context("write stdout")?;
    }
    out.flush().context("write stdout")
}

/// `text` without the book's `// ANCHOR: name` and `// ANCHOR_END: name` marker lines: they
/// mark code for the book, and are no part of a lesson's idea.
fn without_anchors(text: &str) -> String {
    let marker = |line: &str| {
        let line = line.trim_start();
        line.starts_with("// ANCHOR: ") || line.starts_with("// ANCHOR_END: ")
    };
    text.split_inclusive('\n').filter(|line| !marker(line)).collect()
}

fn read_if_exists(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
    }
}

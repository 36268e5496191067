//! `diff A B`: the unified diff from lesson A's `src/` to lesson B's, so only the idea shows.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use similar::TextDiff;

use crate::lessons::{self, Number};

pub fn diff(a: Number, b: Number) -> anyhow::Result<()> {
    let (a, b) = (lessons::find(a)?, lessons::find(b)?);
    let (a_src, b_src) = (a.dir.join("src"), b.dir.join("src"));
    let mut files = BTreeSet::new();
    collect_files(&a_src, Path::new(""), &mut files)?;
    collect_files(&b_src, Path::new(""), &mut files)?;
    let mut out = io::stdout().lock();
    for file in &files {
        let (a_path, b_path) = (a_src.join(file), b_src.join(file));
        // Every lesson is a full copy of the one before under its own name: without renaming
        // `lesson01` to `lesson02` first, every `use lesson01::...` would show as a change.
        let old = read_if_exists(&a_path)?.map(|text| text.replace(&a.package(), &b.package()));
        let new = read_if_exists(&b_path)?;
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

/// Every file under `dir`, recursively, as paths relative to the lesson's `src/`.
fn collect_files(dir: &Path, relative: &Path, files: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    let here = dir.join(relative);
    let entries = fs::read_dir(&here).with_context(|| format!("read {}", here.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", here.display()))?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type().with_context(|| format!("stat {}", entry.path().display()))?;
        if kind.is_dir() {
            collect_files(dir, &path, files)?;
        } else {
            files.insert(path);
        }
    }
    Ok(())
}

fn read_if_exists(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
    }
}

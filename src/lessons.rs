//! Finding the lessons: every `lessons/NN-short-name/` directory, read at run time, and `list`.
//!
//! Scanning the directory (instead of a list compiled into the runner) means a new lesson shows
//! up in `list`, `lesson N` and `diff A B` the moment its directory exists.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};

/// A lesson number as typed on the command line: `1` or `01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Number(u8);

impl FromStr for Number {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // Two digits at most: directory names are `NN-...`, so `001` could never match one.
        match s.parse::<u8>() {
            Ok(n @ 1..=99) if s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Self(n)),
            _ => Err(format!("`{s}` is not a lesson number (1 to 99, written `1` or `01`)")),
        }
    }
}

impl Number {
    /// The number as written without a leading zero: `lesson 1`.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.0)
    }
}

/// One `lessons/NN-short-name/` directory.
#[derive(Clone)]
pub struct Lesson {
    pub number: Number,
    pub short_name: String,
    pub dir: PathBuf,
}

impl Lesson {
    /// The package name, which also prefixes the binaries: `lesson01`.
    pub fn package(&self) -> String {
        format!("lesson{}", self.number)
    }

    /// The directory relative to the workspace root, as diff headers show it.
    pub fn relative_dir(&self) -> String {
        format!("lessons/{}-{}", self.number, self.short_name)
    }

    /// The one idea: the `description = "..."` line of the lesson's Cargo.toml.
    pub fn description(&self) -> anyhow::Result<String> {
        let value = self.manifest_value("description")?;
        let text = value.as_deref().and_then(|value| value.strip_prefix('"')?.strip_suffix('"'));
        let manifest = self.dir.join("Cargo.toml");
        text.map(str::to_owned).with_context(|| {
            format!("read {}: no `description = \"...\"` line", manifest.display())
        })
    }

    /// The lesson this one adds its idea to: `builds-on = N` under
    /// `[package.metadata.course]`; none for the first lesson.
    pub fn builds_on(&self) -> anyhow::Result<Option<Number>> {
        let Some(value) = self.manifest_value("builds-on")? else { return Ok(None) };
        let manifest = self.dir.join("Cargo.toml");
        let number = value.parse::<Number>().map_err(anyhow::Error::msg);
        number.map(Some).with_context(|| format!("read {}: builds-on", manifest.display()))
    }

    /// Does this lesson's server speak the line protocol over a stream socket, as Part I's do
    /// (the bench loads those)? `line-protocol = false` under `[package.metadata.course]`
    /// says it does not (lesson 09's datagrams, say).
    pub fn speaks_lines(&self) -> anyhow::Result<bool> {
        Ok(self.manifest_value("line-protocol")?.as_deref() != Some("false"))
    }

    /// The file `lesson N` hands this lesson's server in a `--dir` and has its client ask for,
    /// instead of sending sample messages: `sample-file = "NAME"` under
    /// `[package.metadata.course]` (lesson 11, whose server hands out open files).
    pub fn sample_file(&self) -> anyhow::Result<Option<String>> {
        let Some(value) = self.manifest_value("sample-file")? else { return Ok(None) };
        let name = value.strip_prefix('"').and_then(|value| value.strip_suffix('"'));
        let manifest = self.dir.join("Cargo.toml");
        let name = name.with_context(|| format!("read {}: sample-file", manifest.display()))?;
        Ok(Some(name.to_owned()))
    }

    /// The value of the first `key = value` line of the lesson's Cargo.toml, trimmed. Parsed by
    /// hand: a TOML parser would be the runner's biggest dependency, and every lesson writes
    /// these lines the same way (a plain string or number, no escapes).
    fn manifest_value(&self, key: &str) -> anyhow::Result<Option<String>> {
        let manifest = self.dir.join("Cargo.toml");
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("read {}", manifest.display()))?;
        let value = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix(key))
            .find_map(|rest| rest.trim_start().strip_prefix('='))
            .map(|value| value.trim().to_owned());
        Ok(value)
    }
}

/// The workspace root, baked in at build time: the runner reads the lessons' sources from here.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every lesson, in order.
pub fn all() -> anyhow::Result<Vec<Lesson>> {
    let dir = root().join("lessons");
    let entries = fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?;
    let mut lessons = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        let name = entry.file_name();
        // Anything not named `NN-short-name` (a README, an editor's backup) is not a lesson.
        let Some((digits, short_name)) = name.to_str().and_then(|name| name.split_once('-')) else {
            continue;
        };
        let Ok(number) = digits.parse::<Number>() else { continue };
        if digits.len() != 2 || short_name.is_empty() || !entry.path().is_dir() {
            continue;
        }
        lessons.push(Lesson { number, short_name: short_name.to_owned(), dir: entry.path() });
    }
    lessons.sort_by_key(|lesson| lesson.number);
    Ok(lessons)
}

/// Lesson `number`, or an error naming the lessons that exist.
pub fn find(number: Number) -> anyhow::Result<Lesson> {
    let lessons = all()?;
    let names: Vec<String> = lessons.iter().map(|lesson| lesson.number.to_string()).collect();
    match lessons.into_iter().find(|lesson| lesson.number == number) {
        Some(lesson) => Ok(lesson),
        None => bail!("no lesson {number}; the lessons are {}", names.join(", ")),
    }
}

/// `list`: `NN  short-name  the one idea`, one line per lesson, short names padded to align.
pub fn list() -> anyhow::Result<()> {
    let lessons = all()?;
    let width = lessons.iter().map(|lesson| lesson.short_name.len()).max().unwrap_or(0);
    for lesson in &lessons {
        let description = lesson.description()?;
        // Part II lessons build on the lesson their idea needs, not always the one before.
        let base = match lesson.builds_on()? {
            Some(base) if base.get() + 1 != lesson.number.get() => format!(" (on {base})"),
            _ => String::new(),
        };
        println!("{}  {:<width$}  {description}{base}", lesson.number, lesson.short_name);
    }
    Ok(())
}

/// Every file under `dir`, recursively, as paths relative to `dir`.
pub fn files_under(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    collect_files(dir, Path::new(""), &mut files)?;
    Ok(files)
}

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

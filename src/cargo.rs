//! Cargo from inside the runner: build a lesson's binaries beside the runner's own executable,
//! and run a lesson's tests, with the cargo, profile and target dir that built the runner.
//!
//! Nesting cargo is safe here: `cargo run` and `cargo test` release the target dir's lock
//! before they start the runner (tests/runner.rs runs the runner under `cargo test`).

use std::env;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::lessons::{self, Lesson};

/// The directory holding the runner's executable: cargo builds the lesson binaries there, and
/// the runner runs them from there.
pub struct BinDir {
    pub path: PathBuf,
    /// `[--release] --target-dir DIR`, the arguments that make cargo build into `path`; `None`
    /// when `path` is not a cargo profile directory (a runner copied elsewhere only looks).
    target_args: Option<Vec<OsString>>,
}

impl BinDir {
    pub fn of_runner() -> anyhow::Result<Self> {
        let exe = env::current_exe().context("find the runner's own executable")?;
        let path = exe.parent().context("find the runner's own directory")?.to_owned();
        let profile: Option<&[&str]> = match path.file_name().and_then(OsStr::to_str) {
            Some("debug") => Some(&[]),
            Some("release") => Some(&["--release"]),
            _ => None,
        };
        // `--target-dir` explicitly, so the binaries land beside us even if we were built with
        // `--target-dir`.
        let target_args = profile.zip(path.parent()).map(|(profile, target_dir)| {
            let mut args: Vec<OsString> = profile.iter().map(OsString::from).collect();
            args.extend([OsString::from("--target-dir"), target_dir.into()]);
            args
        });
        Ok(BinDir { path, target_args })
    }

    /// `cargo SUBCOMMAND --quiet -p lessonNN`, run in the workspace root with stdin closed and
    /// building into this directory when it can. The caller adds arguments and runs it.
    pub fn cargo(&self, subcommand: &str, lesson: &Lesson) -> Command {
        let mut command = Command::new(cargo());
        command.args([subcommand, "--quiet", "-p", &lesson.package()]);
        command.args(self.target_args.iter().flatten());
        command.current_dir(lessons::root()).stdin(Stdio::null());
        command
    }

    /// `cargo build -p lessonNN --bins` into this directory, if cargo is around: the lesson's
    /// server and client, and its exercises' reference solutions.
    pub fn build(&self, lesson: &Lesson) -> anyhow::Result<()> {
        if self.target_args.is_none() {
            return Ok(());
        }
        let package = lesson.package();
        match self.cargo("build", lesson).arg("--bins").status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => bail!("cargo build -p {package} failed ({status})"),
            // No cargo on this machine: use the binaries already beside us, if any.
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("run {}", Path::new(&cargo()).display())),
        }
    }

    /// The lesson's own `lessonNN-server` and `lessonNN-client` in this directory.
    pub fn server_and_client(&self, lesson: &Lesson) -> anyhow::Result<(PathBuf, PathBuf)> {
        let package = lesson.package();
        let server = self.binary(lesson, &format!("{package}-server"))?;
        Ok((server, self.binary(lesson, &format!("{package}-client"))?))
    }

    /// Lesson binary `name` in this directory, or an error saying how to build it.
    pub fn binary(&self, lesson: &Lesson, name: &str) -> anyhow::Result<PathBuf> {
        let bin = self.path.join(name);
        if !bin.is_file() {
            let package = lesson.package();
            bail!("find {}: not built (try `cargo build -p {package} --bins`)", bin.display());
        }
        Ok(bin)
    }
}

/// `cargo run` sets CARGO to the cargo that built us: the same toolchain and settings.
fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

//! `check N [--solution]`: lesson N's own tests, then its exercises' checks, one `PASS` or
//! `FAIL` line each; exit 1 if any fails.
//!
//! Exercise K's checks are the `#[ignore]`d `exK_` tests in the lesson's tests/exercises.rs.
//! They take the binaries under test from UDS_SERVER and UDS_CLIENT, so the same tests check the
//! learner's binaries (as shipped every exercise FAILS: that is the point) and, with
//! `--solution`, the reference solutions built from `solutions/exK/`.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cargo::BinDir;
use crate::child::{self, Child};
use crate::lessons::{self, Lesson, Number};

/// A backstop, not a limit: the tests bound their own waits, so only a hung build gets here.
const CARGO_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// At most this many lines of each failed test's message under a `FAIL` line.
const MAX_LINES: usize = 20;
/// Details go under the text after `PASS  ` or `FAIL  `.
const INDENT: &str = "      ";

/// Exercise K of a lesson: its `## Exercise K: title` in EXERCISES.md and its `solutions/exK/`.
#[derive(Debug, PartialEq)]
struct Exercise {
    number: u32,
    title: String,
    /// `solutions/exK/server.rs` exists: the exercise changes the server.
    solves_server: bool,
    /// `solutions/exK/client.rs` exists: the exercise changes the client.
    solves_client: bool,
}

pub fn check(number: Number, solution: bool) -> anyhow::Result<()> {
    child::interruptible(|interrupted| run(number, solution, interrupted))
}

fn run(number: Number, solution: bool, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let lesson = lessons::find(number)?;
    let exercises = exercises(&lesson)?;
    let bins = BinDir::of_runner()?;
    let package = lesson.package();
    let mut out = io::stdout().lock();
    let mut failed = 0;

    // The lesson's own tests (the exercises' are ignored there): solving an exercise adds
    // behaviour, and must not break what the lesson already promises.
    let (status, tests) = run_cargo(bins.cargo("test", &lesson), interrupted)?;
    let why = failure(status, &tests.output, None);
    let rerun = format!("cargo test -p {package}");
    failed += verdict(&mut out, "lesson tests", why, Some(&rerun))?;

    // Quietly: cargo test has just built every bin too, so a lesson that does not build has
    // failed its tests above, with the compiler's errors.
    let mut build = bins.cargo("build", &lesson);
    build.arg("--bins");
    let (built, _) = run_cargo(build, interrupted)?;
    for exercise in &exercises {
        let k = exercise.number;
        let filter = format!("ex{k}_");
        let why = if built.success() {
            check_exercise(&bins, &lesson, exercise, solution, &filter, interrupted)?
        } else {
            let not_built = format!("not checked: `cargo build -p {package} --bins` failed");
            Some(vec![vec![not_built]])
        };
        // Without --solution, this command tests the same binaries: the lesson's own.
        let rerun = format!("cargo test -p {package} --test exercises -- --ignored {filter}");
        let what = format!("ex{k}  {}", exercise.title);
        failed += verdict(&mut out, &what, why, (!solution).then_some(rerun.as_str()))?;
    }

    if failed > 0 {
        let checks = exercises.len() + 1;
        let hint = if solution {
            String::new()
        } else {
            format!("; the exercises are in {}/EXERCISES.md", lesson.relative_dir())
        };
        bail!("{failed} of {checks} checks failed{hint}");
    }
    Ok(())
}

/// The lesson's exercises: each `solutions/exK/` directory, in order, titled by the
/// `## Exercise K: title` heading of EXERCISES.md. The two must match one to one.
fn exercises(lesson: &Lesson) -> anyhow::Result<Vec<Exercise>> {
    let number = lesson.number;
    let markdown = lesson.dir.join("EXERCISES.md");
    let shown = format!("{}/EXERCISES.md", lesson.relative_dir());
    let text = match fs::read_to_string(&markdown) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("lesson {number} has no exercises: there is no {shown}")
        }
        Err(err) => return Err(err).with_context(|| format!("read {}", markdown.display())),
    };
    let mut titles: Vec<(u32, String)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("## Exercise "))
        .filter_map(|rest| rest.split_once(':'))
        .filter_map(|(k, title)| Some((k.trim().parse().ok()?, title.trim().to_owned())))
        .collect();

    let solutions = lesson.dir.join("solutions");
    let entries = match fs::read_dir(&solutions) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!(
                "lesson {number} has no exercise solutions: there is no {}/solutions/",
                lesson.relative_dir()
            )
        }
        Err(err) => return Err(err).with_context(|| format!("read {}", solutions.display())),
    };
    let mut dirs: Vec<(u32, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", solutions.display()))?;
        let name = entry.file_name();
        let Some(k) = name.to_str().and_then(|name| name.strip_prefix("ex")) else { continue };
        // `ex1`, not `ex01` or `ex1-old`: the binaries are named `lessonNN-exK-...`.
        let Ok(parsed) = k.parse::<u32>() else { continue };
        if parsed.to_string() == k && entry.path().is_dir() {
            dirs.push((parsed, entry.path()));
        }
    }
    // Numerically, so ex10 comes after ex9.
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "lesson {number} has no exercise solutions: no exK/ in {}/solutions/",
            lesson.relative_dir()
        );
    }

    let mut exercises = Vec::new();
    for (k, dir) in dirs {
        let Some(at) = titles.iter().position(|(heading, _)| *heading == k) else {
            bail!("{shown} has no `## Exercise {k}: <title>` heading for solutions/ex{k}/");
        };
        let (_, title) = titles.remove(at);
        let (solves_server, solves_client) =
            (dir.join("server.rs").is_file(), dir.join("client.rs").is_file());
        if !solves_server && !solves_client {
            bail!("{}/solutions/ex{k}/ has neither server.rs nor client.rs", lesson.relative_dir());
        }
        exercises.push(Exercise { number: k, title, solves_server, solves_client });
    }
    if let Some((k, _)) = titles.first() {
        bail!("{shown}: exercise {k} has no solutions/ex{k}/ directory");
    }
    Ok(exercises)
}

/// Runs an exercise's checks (the tests whose names contain `filter`) against the lesson's
/// binaries, or with `solution` the reference ones: `None` if they passed, else why not.
fn check_exercise(
    bins: &BinDir,
    lesson: &Lesson,
    exercise: &Exercise,
    solution: bool,
    filter: &str,
    interrupted: &AtomicBool,
) -> anyhow::Result<Option<Vec<Vec<String>>>> {
    let (own_server, own_client) = bins.server_and_client(lesson)?;
    // With --solution, the reference binary of each side the exercise changes.
    let binary = |solved: bool, own: PathBuf, side: &str| {
        if solution && solved {
            bins.binary(lesson, &format!("{}-ex{}-{side}", lesson.package(), exercise.number))
        } else {
            Ok(own)
        }
    };
    let server = binary(exercise.solves_server, own_server, "server")?;
    let client = binary(exercise.solves_client, own_client, "client")?;
    // libtest runs the tests whose names contain the filter: exercise K's are `exK_...`.
    let mut command = bins.cargo("test", lesson);
    command.args(["--test", "exercises", "--", "--ignored", filter]);
    command.env("UDS_SERVER", &server).env("UDS_CLIENT", &client);
    let (status, tests) = run_cargo(command, interrupted)?;
    Ok(failure(status, &tests.output, Some(filter)))
}

/// Runs `command`, a cargo command, to the end; the returned [`Child`] holds its output.
fn run_cargo(command: Command, interrupted: &AtomicBool) -> anyhow::Result<(ExitStatus, Child)> {
    let mut cargo = Child::start(command)?;
    let status = cargo.finish(CARGO_TIMEOUT, interrupted)?;
    Ok((status, cargo))
}

/// `PASS  what`, or `FAIL  what` and why: each failed test's message, cut at [`MAX_LINES`]
/// and then pointing at `rerun` (a command that shows all of it), if there is one. At once: a
/// student watches the lines come. Returns the number of failed checks, 0 or 1.
fn verdict(
    out: &mut impl Write,
    what: &str,
    failure: Option<Vec<Vec<String>>>,
    rerun: Option<&str>,
) -> anyhow::Result<usize> {
    let Some(messages) = failure else {
        writeln!(out, "PASS  {what}").context("write stdout")?;
        out.flush().context("write stdout")?;
        return Ok(0);
    };
    writeln!(out, "FAIL  {what}").context("write stdout")?;
    for lines in messages {
        for line in lines.iter().take(MAX_LINES) {
            // No indent on an empty line: trailing spaces are noise in a terminal log.
            let indent = if line.is_empty() { "" } else { INDENT };
            writeln!(out, "{indent}{line}").context("write stdout")?;
        }
        if lines.len() > MAX_LINES {
            let more = lines.len() - MAX_LINES;
            let hint =
                rerun.map(|command| format!(" (all of it: `{command}`)")).unwrap_or_default();
            writeln!(out, "{INDENT}… {more} more lines{hint}").context("write stdout")?;
        }
    }
    out.flush().context("write stdout")?;
    Ok(1)
}

/// Why a `cargo test` failed, as messages of a few lines each (one per failed test), or `None`
/// when it passed: cargo exited 0 and, for an exercise's `filter`, at least one test ran (a
/// filter that matches nothing "passes" zero tests).
fn failure(
    status: ExitStatus,
    output: &[String],
    filter: Option<&str>,
) -> Option<Vec<Vec<String>>> {
    match (status.success(), filter) {
        (true, None) => None,
        (true, Some(_)) if tests_run(output) > 0 => None,
        (true, Some(filter)) => {
            Some(vec![vec![format!("no check named {filter} in tests/exercises.rs")]])
        }
        (false, _) => {
            let panics = panic_messages(output);
            // No panic means the tests did not even run: cargo's own errors say why.
            Some(if panics.is_empty() { vec![output.to_vec()] } else { panics })
        }
    }
}

/// The sum of libtest's `running N tests` lines.
fn tests_run(output: &[String]) -> usize {
    output
        .iter()
        .filter_map(|line| line.strip_prefix("running "))
        .filter_map(|rest| rest.strip_suffix(" tests").or_else(|| rest.strip_suffix(" test")))
        .filter_map(|count| count.parse::<usize>().ok())
        .sum()
}

/// Each failed test's panic from libtest's report: `name panicked at file:line:col:` and the
/// message lines after it, without a backtrace (RUST_BACKTRACE may be set) or blank lines
/// around.
fn panic_messages(output: &[String]) -> Vec<Vec<String>> {
    let mut messages: Vec<Vec<String>> = Vec::new();
    let mut in_panic = false;
    for line in output {
        // `thread 'ex1_x' panicked at tests/exercises.rs:1:2:`; newer Rust adds ` (tid)`.
        let panic = line
            .strip_prefix("thread '")
            .and_then(|rest| rest.split_once('\''))
            .and_then(|(name, rest)| Some((name, rest.split_once(" panicked at ")?.1)));
        if let Some((name, at)) = panic {
            messages.push(vec![format!("{name} panicked at {at}")]);
            in_panic = true;
        } else if line.starts_with("---- ")
            || line == "failures:"
            || line == "stack backtrace:"
            || line.starts_with("note: run with `RUST_BACKTRACE")
            || line.starts_with("test result: ")
        {
            in_panic = false;
        } else if let Some(message) = messages.last_mut().filter(|_| in_panic) {
            message.push(line.clone());
        }
    }
    for message in &mut messages {
        while message.last().is_some_and(|line| line.trim().is_empty()) {
            message.pop();
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::{Exercise, exercises, failure, panic_messages, tests_run};
    use crate::lessons::Lesson;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    /// What `cargo test -q ... -- --ignored ex1_` prints when two of three checks fail, with
    /// RUST_BACKTRACE set (newer Rust names the thread with its id).
    const FAILED: &str = "
running 3 tests
F.F
failures:

---- ex1_quit_is_answered_bye stdout ----

thread 'ex1_quit_is_answered_bye' (4242) panicked at tests/exercises.rs:42:5:
assertion `left == right` failed: `quit` should be answered BYE
  left: \"QUIT\\n\"
 right: \"BYE\\n\"
stack backtrace:
   0: __rustc::rust_begin_unwind
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.

---- ex1_quit_without_a_newline stdout ----
captured output of the test

thread 'ex1_quit_without_a_newline' panicked at tests/exercises.rs:71:5:
the server closed early

note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    ex1_quit_is_answered_bye
    ex1_quit_without_a_newline

test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 9 filtered out; finished in 0.02s

error: test failed, to rerun pass `-p lesson01 --test exercises`
";

    /// Each failed test's panic is one message: where, and what it said, without the
    /// backtrace, the test's captured output or libtest's summary.
    #[test]
    fn panic_messages_keep_each_message_and_drop_the_rest() {
        assert_eq!(
            panic_messages(&lines(FAILED)),
            [
                vec![
                    "ex1_quit_is_answered_bye panicked at tests/exercises.rs:42:5:",
                    "assertion `left == right` failed: `quit` should be answered BYE",
                    "  left: \"QUIT\\n\"",
                    " right: \"BYE\\n\"",
                ],
                vec![
                    "ex1_quit_without_a_newline panicked at tests/exercises.rs:71:5:",
                    "the server closed early",
                ],
            ]
        );
    }

    /// A check passes only when cargo exits 0 AND a test ran: a filter that matches no test
    /// "passes" vacuously, and a failed build has no panics, so cargo's errors are shown.
    #[test]
    fn a_check_passes_only_when_a_test_ran_and_cargo_exited_0() {
        let (ok, failed) = (ExitStatus::from_raw(0), ExitStatus::from_raw(101 << 8));
        let ran = lines("\nrunning 2 tests\n..\ntest result: ok. 2 passed; 0 failed");
        assert_eq!(tests_run(&ran), 2);
        assert_eq!(failure(ok, &ran, Some("ex1_")), None);
        let none = lines("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed");
        assert_eq!(tests_run(&none), 0);
        assert_eq!(
            failure(ok, &none, Some("ex4_")),
            Some(vec![vec!["no check named ex4_ in tests/exercises.rs".to_owned()]])
        );
        assert_eq!(failure(failed, &lines(FAILED), Some("ex1_")).map(|m| m.len()), Some(2));
        // The lesson's own tests need no test to run: a lesson may have none yet.
        assert_eq!(failure(ok, &none, None), None);
        let build =
            lines("error[E0425]: cannot find value `x` in this scope\n --> src/bin/server.rs:9:5");
        assert_eq!(failure(failed, &build, None), Some(vec![build.clone()]));
    }

    /// Exercises are the `solutions/exK/` directories in numeric order (ex10 after ex2), titled
    /// by EXERCISES.md's `## Exercise K: title` headings; other entries are not exercises.
    #[test]
    fn exercises_are_the_solution_directories_in_numeric_order_with_their_titles() {
        let dir = tempfile::tempdir().unwrap();
        let lesson =
            Lesson { number: "7".parse().unwrap(), short_name: "x".into(), dir: dir.path().into() };
        let markdown = "# Lesson 07 exercises: x\n\n## Exercise 1: first\n\
                        ## Exercise 2: second one\n\n## Exercise 10: tenth\n";
        fs::write(dir.path().join("EXERCISES.md"), markdown).unwrap();
        for (k, side) in [("1", "server"), ("2", "client"), ("10", "server"), ("10", "client")] {
            fs::create_dir_all(dir.path().join(format!("solutions/ex{k}"))).unwrap();
            fs::write(dir.path().join(format!("solutions/ex{k}/{side}.rs")), "").unwrap();
        }
        fs::create_dir(dir.path().join("solutions/ex01")).unwrap(); // not `ex1`
        fs::write(dir.path().join("solutions/ex3"), "").unwrap(); // a file, not a directory
        let exercise = |number, title: &str, solves_server, solves_client| Exercise {
            number,
            title: title.to_owned(),
            solves_server,
            solves_client,
        };
        assert_eq!(
            exercises(&lesson).unwrap(),
            [
                exercise(1, "first", true, false),
                exercise(2, "second one", false, true),
                exercise(10, "tenth", true, true)
            ]
        );
    }

    /// A lesson without EXERCISES.md, or whose headings and solutions do not match one to one,
    /// is an error that says which.
    #[test]
    fn missing_or_mismatched_exercises_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let lesson =
            Lesson { number: "7".parse().unwrap(), short_name: "x".into(), dir: dir.path().into() };
        let error = |lesson: &Lesson| format!("{:#}", exercises(lesson).unwrap_err());
        assert_eq!(
            error(&lesson),
            "lesson 07 has no exercises: there is no lessons/07-x/EXERCISES.md"
        );
        fs::write(dir.path().join("EXERCISES.md"), "## Exercise 1: first\n## Exercise 2: second\n")
            .unwrap();
        assert_eq!(
            error(&lesson),
            "lesson 07 has no exercise solutions: there is no lessons/07-x/solutions/"
        );
        fs::create_dir_all(dir.path().join("solutions/ex1")).unwrap();
        assert_eq!(
            error(&lesson),
            "lessons/07-x/solutions/ex1/ has neither server.rs nor client.rs"
        );
        fs::write(dir.path().join("solutions/ex1/server.rs"), "").unwrap();
        assert_eq!(
            error(&lesson),
            "lessons/07-x/EXERCISES.md: exercise 2 has no solutions/ex2/ directory"
        );
        fs::create_dir_all(dir.path().join("solutions/ex3")).unwrap();
        assert_eq!(
            error(&lesson),
            "lessons/07-x/EXERCISES.md has no `## Exercise 3: <title>` heading for solutions/ex3/"
        );
    }
}

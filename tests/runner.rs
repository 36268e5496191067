//! The course runner's own tests: `list`, `lesson N` (including a server that fails to start and
//! Ctrl-C), `check N` (as shipped and `--solution`), `diff A B`, and usage errors.
//!
//! `lesson N` and `check N` run with TMPDIR pointing at a private directory, so "leaves nothing
//! behind" is checkable: that directory ends up empty, and no process in /proc names it.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::assert::OutputAssertExt;
use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::prelude::*;
use rustix::process::{Pid, Signal, kill_process_group};
use tempfile::TempDir;

/// Generous: under `cargo test -p uds-course` the first `lesson` run builds the lesson first.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
/// `check N` runs the lesson's tests twice over in nested cargo, building them first.
const CHECK_DEADLINE: Duration = Duration::from_secs(300);
/// For commands that start nothing: `list`, `diff`, usage errors.
const QUICK_DEADLINE: Duration = Duration::from_secs(30);

/// A scratch directory holding the runner's output files and `tmp/`, the TMPDIR it is given.
struct Scratch {
    root: TempDir,
    tmp: PathBuf,
}

impl Scratch {
    /// `tmp_name` is the TMPDIR's own name: long names make the socket path too long to bind.
    fn new(tmp_name: &str) -> Scratch {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join(tmp_name);
        fs::create_dir(&tmp).unwrap();
        Scratch { root, tmp }
    }

    /// The runner with TMPDIR set, in its own process group, stdout and stderr to files.
    fn spawn(&self, args: &[&str]) -> Runner {
        let child = Command::new(cargo_bin!("uds-course"))
            .args(args)
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::null())
            .stdout(File::create(self.root.path().join("stdout")).unwrap())
            .stderr(File::create(self.root.path().join("stderr")).unwrap())
            // Its own group: the Ctrl-C test signals it as a terminal would, and a runner that
            // overruns its deadline is killed together with the lesson processes it started.
            .process_group(0)
            .spawn()
            .unwrap();
        Runner { child }
    }

    /// Runs the runner to completion (within [`RUN_DEADLINE`]) and returns what it printed.
    fn run(&self, args: &[&str]) -> Output {
        self.run_within(args, RUN_DEADLINE)
    }

    fn run_within(&self, args: &[&str], deadline: Duration) -> Output {
        let status = self.spawn(args).wait(deadline);
        Output {
            status,
            stdout: fs::read(self.root.path().join("stdout")).unwrap(),
            stderr: fs::read(self.root.path().join("stderr")).unwrap(),
        }
    }

    /// The runner's temp dir is gone and no process it started is still alive.
    fn assert_nothing_left(&self) {
        let left: Vec<_> = fs::read_dir(&self.tmp).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "left behind in {}: {left:?}", self.tmp.display());
        self.assert_no_process_left();
    }

    /// No process the runner started (directly or through the tests it ran) is still alive.
    fn assert_no_process_left(&self) {
        let alive = processes_naming(&self.tmp);
        assert!(alive.is_empty(), "still running: {alive:?}");
    }
}

/// The runner's process; dropping it kills its whole process group.
struct Runner {
    child: Child,
}

impl Runner {
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the runner did not exit within {timeout:?}");
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.wait();
    }
}

/// Every process whose command line mentions `dir`, as `pid: cmdline`.
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.as_os_str().as_bytes();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        // Processes come and go during the scan: one that is gone names nothing.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        if cmdline.windows(needle.len()).any(|window| window == needle) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// `(NN, short-name, description)` for every `lessons/NN-short-name/`, read independently of
/// the runner.
fn lesson_dirs() -> Vec<LessonDir> {
    let lessons = Path::new(env!("CARGO_MANIFEST_DIR")).join("lessons");
    let mut found = Vec::new();
    for entry in fs::read_dir(lessons).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let Some((number, short_name)) = name.split_once('-') else { continue };
        if number.len() != 2 || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let manifest = fs::read_to_string(entry.path().join("Cargo.toml")).unwrap();
        let line = manifest.lines().find(|line| line.starts_with("description")).unwrap();
        let description = line.split_once('=').unwrap().1.trim().trim_matches('"').to_owned();
        let builds_on = manifest
            .lines()
            .find_map(|line| line.strip_prefix("builds-on = "))
            .map(|n| format!("{:02}", n.parse::<u8>().unwrap()));
        let (number, short_name) = (number.to_owned(), short_name.to_owned());
        found.push(LessonDir { number, short_name, description, builds_on });
    }
    found.sort_by(|a, b| a.number.cmp(&b.number));
    found
}

/// One `lessons/NN-short-name/` directory as its Cargo.toml describes it.
struct LessonDir {
    number: String,
    short_name: String,
    description: String,
    /// `builds-on = N` under `[package.metadata.course]`, as two digits.
    builds_on: Option<String>,
}

/// Lesson 01's exercises, read independently of the runner: `(K, title)` for each
/// `solutions/exK/`, titled by EXERCISES.md's `## Exercise K: title`, in order.
fn lesson01_exercises() -> Vec<(u32, String)> {
    let lesson = Path::new(env!("CARGO_MANIFEST_DIR")).join("lessons/01-listen-accept");
    let markdown = fs::read_to_string(lesson.join("EXERCISES.md")).unwrap();
    let mut found = Vec::new();
    for entry in fs::read_dir(lesson.join("solutions")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let k: u32 = name.strip_prefix("ex").unwrap().parse().unwrap();
        let heading = format!("## Exercise {k}:");
        let line = markdown.lines().find(|line| line.starts_with(&heading)).unwrap();
        found.push((k, line[heading.len()..].trim().to_owned()));
    }
    found.sort();
    assert!(!found.is_empty(), "lesson 01 has no exercises");
    found
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// `list` prints one line per lessons/ directory: its number, short name and description, with
/// the descriptions aligned in one column, and the lesson it builds on when that is not the one
/// before.
#[test]
fn list_prints_one_aligned_line_per_lesson_directory() {
    let output = cargo_bin_cmd!("uds-course").arg("list").timeout(QUICK_DEADLINE).output().unwrap();
    let stdout = stdout_of(&output);
    output.assert().success();
    let lines: Vec<&str> = stdout.lines().collect();
    let lessons = lesson_dirs();
    assert_eq!(lines.len(), lessons.len(), "one line per lesson:\n{stdout}");
    let mut columns = Vec::new();
    for (line, lesson) in lines.iter().zip(&lessons) {
        let words: Vec<&str> = line.split_whitespace().take(2).collect();
        assert_eq!(words, [lesson.number.as_str(), lesson.short_name.as_str()], "in {line:?}");
        let before = format!("{:02}", lesson.number.parse::<u8>().unwrap() - 1);
        let end = match &lesson.builds_on {
            Some(base) if *base != before => format!("  {} (on {base})", lesson.description),
            _ => format!("  {}", lesson.description),
        };
        assert!(line.ends_with(&end), "{line:?} ends in {end:?}");
        columns.push(line.len() - end.len());
    }
    columns.dedup();
    assert!(columns.len() <= 1, "descriptions are not aligned:\n{stdout}");
}

/// `lesson 1` prints the client's block (the upper-cased replies) before the server's block,
/// exits 0, and leaves no process and no file behind.
#[test]
fn lesson_prints_the_client_block_then_the_server_block_and_leaves_nothing_behind() {
    let scratch = Scratch::new("tmp");
    let output = scratch.run(&["lesson", "1"]);
    let stdout = stdout_of(&output);
    output.assert().success();
    assert!(stdout.starts_with("$ lesson01-client "), "{stdout}");
    assert!(stdout.contains(" hello 'unix domain sockets'\n"), "{stdout}");
    let order = ["\nHELLO\n", "\nUNIX DOMAIN SOCKETS\n", "\n$ lesson01-server ", "\nlistening on "];
    let found: Vec<Option<usize>> = order.iter().map(|text| stdout.find(text)).collect();
    assert!(found.iter().all(Option::is_some), "missing one of {order:?} in:\n{stdout}");
    assert!(found.is_sorted(), "out of order, expected {order:?}:\n{stdout}");
    scratch.assert_nothing_left();
}

/// Lesson 11 names a `sample-file` in its Cargo.toml (its server hands out open files):
/// `lesson 11` gives the server a `--dir` holding that file, filled with the sample messages,
/// and the client asks for it by name and prints it; nothing is left behind.
#[test]
fn lesson_with_a_sample_file_hands_it_out_from_a_temp_dir_and_leaves_nothing_behind() {
    let scratch = Scratch::new("tmp");
    let output = scratch.run(&["lesson", "11"]);
    let stdout = stdout_of(&output);
    output.assert().success();
    assert!(stdout.starts_with("$ lesson11-client "), "{stdout}");
    let printed = " hello.txt\nhello\nunix domain sockets\n\n$ lesson11-server ";
    assert!(stdout.contains(printed), "{stdout}");
    assert!(stdout.contains("/files\nlistening on "), "no --dir on the server's line:\n{stdout}");
    assert!(stdout.contains("lesson11-server: connection 1: sent hello.txt\n"), "{stdout}");
    scratch.assert_nothing_left();
}

/// `lesson 01` means lesson 1, the way `list` writes it.
#[test]
fn lesson_number_may_be_written_with_a_leading_zero() {
    let scratch = Scratch::new("tmp");
    let output = scratch.run(&["lesson", "01"]);
    output.assert().success().stdout(predicate::str::contains("\nHELLO\n"));
    scratch.assert_nothing_left();
}

/// When the server cannot start (here: its socket path is too long to bind), the runner prints
/// what the server said, exits 1, and still leaves nothing behind.
#[test]
fn server_that_fails_to_start_is_reported_and_leaves_nothing_behind() {
    // <TMPDIR>/uds-course-XXXXXX/lesson01.sock must exceed the 107 bytes a socket path holds.
    let scratch = Scratch::new(&"x".repeat(100));
    let output = scratch.run(&["lesson", "1"]);
    output
        .assert()
        .code(1)
        .stdout(predicate::str::contains("path must be shorter than SUN_LEN"))
        .stderr(predicate::str::starts_with("uds-course: lesson01-server exited"));
    scratch.assert_nothing_left();
}

/// Ctrl-C (SIGINT to the runner's whole process group, as a terminal sends it) while the
/// lesson's server runs: the runner exits (130, or 0 if it had just finished) and leaves
/// nothing behind.
#[test]
fn ctrl_c_stops_the_runner_and_leaves_nothing_behind() {
    // The server lives for a few milliseconds only: a run that ends before we see it is still
    // checked for leftovers, and we try again.
    for _ in 0..5 {
        let scratch = Scratch::new("tmp");
        let mut runner = scratch.spawn(&["lesson", "1"]);
        if !server_appears(&scratch, &mut runner, RUN_DEADLINE) {
            scratch.assert_nothing_left();
            continue;
        }
        let _ = kill_process_group(Pid::from_child(&runner.child), Signal::INT); // may be gone
        let status = runner.wait(Duration::from_secs(30));
        let stderr = fs::read_to_string(scratch.root.path().join("stderr")).unwrap();
        match status.code() {
            Some(130) => assert_eq!(stderr, "uds-course: interrupted\n"),
            Some(0) => {}
            _ => panic!("the runner exited with {status}, expected 130 (or 0):\n{stderr}"),
        }
        scratch.assert_nothing_left();
        return;
    }
    panic!("in 5 runs, the runner never outlived the moment its server was seen");
}

/// Waits until a lesson01-server naming the scratch TMPDIR runs (true), or the runner is done.
fn server_appears(scratch: &Scratch, runner: &mut Runner, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if runner.child.try_wait().unwrap().is_some() {
            return false;
        }
        if processes_naming(&scratch.tmp).iter().any(|p| p.contains("lesson01-server")) {
            return true;
        }
        thread::sleep(Duration::from_millis(1)); // short: the window is milliseconds wide
    }
    panic!("no lesson01-server appeared within {timeout:?}");
}

/// As shipped, `check 1` passes the lesson's own tests and FAILS every exercise, each FAIL line
/// followed by the indented panic of a failed `exK_` test, then exits 1 saying how many failed.
#[test]
fn check_as_shipped_passes_the_lesson_tests_and_fails_every_exercise() {
    let scratch = Scratch::new("tmp");
    let output = scratch.run_within(&["check", "1"], CHECK_DEADLINE);
    let stdout = stdout_of(&output);
    let exercises = lesson01_exercises();
    let checks = exercises.len() + 1;
    let stderr = format!(
        "uds-course: {} of {checks} checks failed; the exercises are in \
         lessons/01-listen-accept/EXERCISES.md\n",
        exercises.len()
    );
    output.assert().code(1).stderr(stderr);
    // Reasons are indented (or empty lines inside a message): the rest are the verdicts.
    let verdicts: Vec<&str> =
        stdout.lines().filter(|line| !line.is_empty() && !line.starts_with(' ')).collect();
    let mut expected = vec!["PASS  lesson tests".to_owned()];
    expected.extend(exercises.iter().map(|(k, title)| format!("FAIL  ex{k}  {title}")));
    assert_eq!(verdicts, expected, "in:\n{stdout}");
    for verdict in &expected[1..] {
        let after = &stdout[stdout.find(&format!("{verdict}\n")).unwrap() + verdict.len() + 1..];
        assert!(after.starts_with("      ex"), "no reason under {verdict:?}:\n{stdout}");
    }
    scratch.assert_no_process_left();
}

/// `check 1 --solution` runs the same checks against the reference solutions: every line is
/// PASS, and it exits 0.
#[test]
fn check_with_the_solutions_passes_every_line() {
    let scratch = Scratch::new("tmp");
    let output = scratch.run_within(&["check", "01", "--solution"], CHECK_DEADLINE);
    let stdout = stdout_of(&output);
    output.assert().success().stderr("");
    let mut expected = "PASS  lesson tests\n".to_owned();
    for (k, title) in lesson01_exercises() {
        expected.push_str(&format!("PASS  ex{k}  {title}\n"));
    }
    assert_eq!(stdout, expected);
    scratch.assert_no_process_left();
}

/// Ctrl-C while `check 1` runs the lesson's tests: the runner exits 130 (or 1, if it had just
/// finished) and no process it started is left.
#[test]
fn ctrl_c_stops_check_and_leaves_no_process_behind() {
    let scratch = Scratch::new("tmp");
    let mut runner = scratch.spawn(&["check", "1"]);
    // The tests start lesson01 servers on sockets in the scratch TMPDIR, for seconds in all.
    if !server_appears(&scratch, &mut runner, CHECK_DEADLINE) {
        panic!("check 1 finished before any lesson01-server was seen");
    }
    let _ = kill_process_group(Pid::from_child(&runner.child), Signal::INT); // may be gone
    let status = runner.wait(Duration::from_secs(30));
    let stderr = fs::read_to_string(scratch.root.path().join("stderr")).unwrap();
    match status.code() {
        Some(130) => assert_eq!(stderr, "uds-course: interrupted\n"),
        Some(1) => assert!(stderr.contains(" checks failed"), "{stderr}"),
        _ => panic!("the runner exited with {status}, expected 130 (or 1):\n{stderr}"),
    }
    // The tests were killed mid-way, so their temp dirs may remain: only processes count.
    scratch.assert_no_process_left();
}

/// `check` of a lesson that does not exist exits 1 naming the lessons, before running anything.
#[test]
fn check_of_an_unknown_lesson_exits_1_naming_the_lessons() {
    let mut runner = cargo_bin_cmd!("uds-course");
    runner.args(["check", "99"]).timeout(QUICK_DEADLINE);
    runner.assert().code(1).stdout("").stderr(
        predicate::str::is_match("^uds-course: no lesson 99; the lessons are 01(, \\d\\d)*\n$")
            .unwrap(),
    );
}

/// `diff 1 1` prints nothing: the same sources.
#[test]
fn diff_of_a_lesson_with_itself_prints_nothing() {
    let mut runner = cargo_bin_cmd!("uds-course");
    runner.args(["diff", "1", "1"]).timeout(QUICK_DEADLINE);
    runner.assert().success().stdout("");
}

/// `diff 1 2` shows what lesson 02 adds, with `lesson01` renamed so names are not a change.
#[test]
fn diff_shows_added_lines_and_no_lesson_names_from_the_first_lesson() {
    let mut runner = cargo_bin_cmd!("uds-course");
    let output = runner.args(["diff", "1", "02"]).timeout(QUICK_DEADLINE).output().unwrap();
    let stdout = stdout_of(&output);
    output.assert().success();
    assert!(stdout.starts_with("--- lessons/01-listen-accept/src/"), "{stdout}");
    assert!(stdout.contains("\n+++ lessons/02-stale-socket/src/"), "{stdout}");
    assert!(stdout.lines().any(|line| line.starts_with('+') && !line.starts_with("+++")));
    let named: Vec<&str> = stdout.lines().filter(|line| line.contains("lesson01")).collect();
    assert!(named.is_empty(), "lesson01 was not renamed: {named:?}");
}

/// `diff N` is the diff from the lesson N builds on (its Cargo.toml's `builds-on`) to N; every
/// lesson after the first names one.
#[test]
fn diff_of_one_lesson_is_the_diff_from_the_lesson_it_builds_on() {
    for lesson in lesson_dirs().iter().skip(1) {
        let base = lesson.builds_on.as_deref().unwrap_or_else(|| {
            panic!("lesson {} has no `builds-on` in its Cargo.toml", lesson.number)
        });
        let run = |args: &[&str]| {
            let output = cargo_bin_cmd!("uds-course").args(args).timeout(QUICK_DEADLINE).output();
            let output = output.unwrap();
            output.clone().assert().success();
            stdout_of(&output)
        };
        let one = run(&["diff", &lesson.number]);
        assert!(!one.is_empty(), "diff {} is empty", lesson.number);
        assert_eq!(one, run(&["diff", base, &lesson.number]), "diff {}", lesson.number);
    }
}

/// The first lesson builds on none: `diff 1` exits 1 and says so.
#[test]
fn diff_of_the_first_lesson_alone_exits_1() {
    let mut runner = cargo_bin_cmd!("uds-course");
    runner.args(["diff", "1"]).timeout(QUICK_DEADLINE);
    runner.assert().code(1).stdout("").stderr("uds-course: lesson 01 builds on no other lesson\n");
}

/// Diffs leave out the book's `// ANCHOR:` and `// ANCHOR_END:` marker lines: they are no part
/// of any lesson's idea.
#[test]
fn diffs_leave_out_anchor_marker_lines() {
    let mut runner = cargo_bin_cmd!("uds-course");
    let output = runner.args(["diff", "1", "6"]).timeout(QUICK_DEADLINE).output().unwrap();
    let stdout = stdout_of(&output);
    output.assert().success();
    let markers: Vec<&str> = stdout.lines().filter(|line| line.contains("// ANCHOR")).collect();
    assert!(markers.is_empty(), "anchor markers in the diff: {markers:?}");
}

/// A lesson that does not exist exits 1 with one line naming the lessons that do.
#[test]
fn diff_of_an_unknown_lesson_exits_1_naming_the_lessons() {
    let mut runner = cargo_bin_cmd!("uds-course");
    runner.args(["diff", "1", "99"]).timeout(QUICK_DEADLINE);
    runner.assert().code(1).stdout("").stderr(
        predicate::str::is_match("^uds-course: no lesson 99; the lessons are 01(, \\d\\d)*\n$")
            .unwrap(),
    );
}

/// Usage errors exit 2: an unknown command or flag, a missing lesson number, or one that is not
/// 1 to 99.
#[test]
fn unknown_command_or_bad_lesson_number_exits_2() {
    for args in [
        &["frobnicate"][..],
        &["lesson", "x"],
        &["lesson", "0"],
        &["lesson", "001"],
        &["check"],
        &["check", "1", "--solutions"],
    ] {
        let mut runner = cargo_bin_cmd!("uds-course");
        runner.args(args).timeout(QUICK_DEADLINE);
        runner.assert().code(2).stdout("");
    }
}

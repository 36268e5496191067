//! `bench --quick`: the shape of what it prints and writes, never its timings. Every table,
//! row and column is there, every figure is a positive number, the Markdown tables have their
//! ratio columns, the files land in `--out`, and nothing is left in the temp dir.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use regex::Regex;
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::Value;
use tempfile::TempDir;

/// Generous: the first run builds every lesson first (a few seconds each on two busy cores).
const DEADLINE: Duration = Duration::from_secs(600);

/// A scratch dir holding `out/` (for `--out`), `tmp/` (the TMPDIR the bench gets) and the
/// bench's stdout and stderr.
struct Scratch {
    root: TempDir,
}

/// What a finished run printed.
struct Printed {
    stdout: String,
    stderr: String,
}

impl Scratch {
    fn new() -> Scratch {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("tmp")).unwrap();
        Scratch { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Runs `uds-course bench --quick --out OUT ARGS` to completion; panics (showing stderr)
    /// unless it exits 0.
    fn bench(&self, args: &[&str]) -> Printed {
        let out = self.path("out");
        let child = Command::new(cargo_bin!("uds-course"))
            .args(["bench", "--quick", "--out"])
            .arg(&out)
            .args(args)
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null())
            .stdout(File::create(self.path("stdout")).unwrap())
            .stderr(File::create(self.path("stderr")).unwrap())
            // Its own group, so a run past the deadline is killed with the servers it started.
            .process_group(0)
            .spawn()
            .unwrap();
        let mut group = Group(child);
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = group.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "bench did not finish within {DEADLINE:?}");
            thread::sleep(Duration::from_millis(50));
        };
        let printed = Printed {
            stdout: fs::read_to_string(self.path("stdout")).unwrap(),
            stderr: fs::read_to_string(self.path("stderr")).unwrap(),
        };
        assert!(status.success(), "bench failed ({status}):\n{}", printed.stderr);
        printed
    }

    /// The temp dir is empty again, and `--out` holds the three files and nothing else.
    fn assert_files_and_nothing_left(&self) {
        let names = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&self.path("tmp")), Vec::<String>::new(), "left in the temp dir");
        assert_eq!(names(&self.path("out")), ["chart.svg", "report.json", "report.md"]);
        let chart = fs::read_to_string(self.path("out/chart.svg")).unwrap();
        assert!(chart.starts_with("<svg") && chart.contains("<text"), "chart.svg: {chart:.200}");
    }
}

/// The bench's process group, killed on drop: a failed test leaves no server running.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = kill_process_group(Pid::from_child(&self.0), Signal::KILL); // may be gone
        let _ = self.0.wait();
    }
}

/// `NN short-name` for every `lessons/NN-short-name/` whose server speaks the line protocol (no
/// `line-protocol = false` in its Cargo.toml), read independently of the runner.
fn lesson_labels() -> Vec<String> {
    let lessons = Path::new(env!("CARGO_MANIFEST_DIR")).join("lessons");
    let speaks_lines = |name: &str| {
        let manifest = fs::read_to_string(lessons.join(name).join("Cargo.toml")).unwrap();
        !manifest.lines().any(|line| line.replace(' ', "") == "line-protocol=false")
    };
    let mut labels: Vec<String> = fs::read_dir(&lessons)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.len() > 3 && name[..2].bytes().all(|b| b.is_ascii_digit()))
        .filter(|name| speaks_lines(name))
        .map(|name| name.replacen('-', " ", 1))
        .collect();
    labels.sort();
    labels
}

/// The table with this id, from the JSON.
fn table<'a>(report: &'a Value, id: &str) -> &'a Value {
    let tables = report["tables"].as_array().unwrap();
    tables.iter().find(|table| table["id"] == id).unwrap_or_else(|| panic!("no table {id}"))
}

fn strings(values: &Value, key: &str) -> Vec<String> {
    values.as_array().unwrap().iter().map(|v| v[key].as_str().unwrap().to_owned()).collect()
}

fn positive(value: &Value, what: &str) -> f64 {
    let number = value.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {value}"));
    assert!(number.is_finite() && number > 0.0, "{what}: {number} is not a positive number");
    number
}

/// Every table has exactly the rows and columns expected, every cell a figure whose min,
/// median, max and runs are positive (min ≤ median ≤ max), and the expected ratios.
fn assert_table(report: &Value, id: &str, columns: &[&str], rows: &[String], ratios: &[&str]) {
    let table = table(report, id);
    let runs = report["header"]["runs"].as_u64().unwrap() as usize;
    assert!(runs >= 3, "only {runs} runs per figure");
    if !columns.is_empty() {
        assert_eq!(strings(&table["columns"], "id"), columns, "{id}: columns");
    }
    assert_eq!(strings(&table["rows"], "label"), rows, "{id}: rows");
    for row in table["rows"].as_array().unwrap() {
        let at = format!("{id}, {}", row["label"]);
        let figures = row["figures"].as_array().unwrap();
        assert_eq!(figures.len(), table["columns"].as_array().unwrap().len(), "{at}");
        for figure in figures {
            let [min, median, max] = ["min", "median", "max"].map(|k| positive(&figure[k], &at));
            assert!(min <= median && median <= max, "{at}: {figure}");
            let measured = figure["runs"].as_array().unwrap();
            assert_eq!(measured.len(), runs, "{at}: runs");
            for run in measured {
                positive(run, &at);
            }
        }
        assert_eq!(strings(&row["ratios"], "unix_vs"), ratios, "{at}: ratios");
        for ratio in row["ratios"].as_array().unwrap() {
            positive(&ratio["unix_speedup"], &at);
        }
    }
}

/// `bench --quick --json`: every table, row and column the bench promises is in the JSON (the
/// worker-pool table too, derived from the others; the idle connections of lessons 07 and 13;
/// the servers' CPU time), every figure and ratio is a positive number (a CPU time read in
/// clock ticks may be 0), the same JSON is in report.json, and the run leaves only its three
/// files behind.
#[test]
fn quick_json_has_every_row_and_column_and_only_positive_figures() {
    let scratch = Scratch::new();
    let printed = scratch.bench(&["--json"]);
    let report: Value = serde_json::from_str(&printed.stdout).unwrap();
    let header = &report["header"];
    for key in ["date", "machine", "kernel", "rustc", "build", "command", "file_system"] {
        assert!(!header[key].as_str().unwrap().is_empty(), "header.{key} is empty");
    }
    assert_eq!(header["mode"], "quick");

    let mut round_trip_rows = Vec::new();
    for size in [1, 64] {
        for between in ["threads", "processes"] {
            for statistic in ["median", "p99"] {
                round_trip_rows.push(format!("{size} B, {between}, {statistic}"));
            }
        }
    }
    let transports = ["unix", "tcp", "pipe"];
    assert_table(&report, "round_trip", &transports, &round_trip_rows, &["tcp", "pipe"]);
    let between = ["threads".to_owned(), "processes".to_owned()];
    assert_table(&report, "bulk", &transports, &between, &["tcp", "pipe"]);
    let file_rows =
        ["write (into the page cache)", "read back (from the page cache)", "write, then fsync"]
            .map(str::to_owned);
    assert_table(&report, "file", &["file"], &file_rows, &[]);
    let clients = ["1 client".to_owned(), "8 clients".to_owned()];
    assert_table(&report, "connections", &["unix", "tcp", "unix_handoff"], &clients, &["tcp"]);
    let load = ["connections_1", "connections_8", "lines_1", "lines_8"];
    assert_table(&report, "lessons", &load, &lesson_labels(), &[]);
    let pool = [
        "lesson_07",
        "lesson_06",
        "lean",
        "lean_handoff",
        "pool_vs_06",
        "pool_vs_lean",
        "handoff_vs_accept",
    ];
    assert_table(&report, "pool", &pool, &clients, &[]);
    let idle = ["rss_start", "rss_held", "per_connection", "threads"];
    let worker_pool_and_async = ["07 worker-pool".to_owned(), "13 async".to_owned()];
    assert_table(&report, "idle", &idle, &worker_pool_and_async, &[]);
    // The servers' CPU time per connection: the two lean servers', then every lesson's.
    let mut servers = vec!["lean (threads accept)".to_owned(), "lean (one acceptor)".to_owned()];
    servers.extend(lesson_labels());
    assert_table(&report, "cpu", &["connections_1", "connections_8"], &servers, &[]);
    assert_eq!(report["tables"].as_array().unwrap().len(), 8, "tables other than these eight");

    let saved: Value =
        serde_json::from_str(&fs::read_to_string(scratch.path("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(saved, report, "report.json differs from what --json printed");
    scratch.assert_files_and_nothing_left();
}

/// `bench --quick`: stdout is Markdown tables — each a header row, a separator, and rows with
/// as many cells, the transport tables with `Unix vs TCP` / `Unix vs pipe` columns holding
/// `N.NN× faster` or `slower` — and report.md is its header followed by the same tables.
#[test]
fn quick_prints_markdown_tables_with_ratio_columns() {
    let scratch = Scratch::new();
    let printed = scratch.bench(&[]);
    let stdout = &printed.stdout;
    let ratio = Regex::new(r"^\d+\.\d\d× (faster|slower)$").unwrap();
    let tables: Vec<&str> = stdout.split("\n### ").skip(1).collect();
    assert_eq!(tables.len(), 8, "eight tables, each under a ### heading:\n{stdout}");
    let mut ratio_columns = 0;
    for table in tables {
        let lines: Vec<&str> = table.lines().filter(|line| line.starts_with('|')).collect();
        let cells = |line: &str| -> Vec<String> {
            let inner = line.trim().strip_prefix('|').unwrap().strip_suffix('|').unwrap();
            inner.split('|').map(|cell| cell.trim().to_owned()).collect()
        };
        let header = cells(lines[0]);
        let separator = cells(lines[1]);
        assert!(separator.iter().all(|cell| cell == ":--" || cell == "--:"), "{table}");
        assert!(lines.len() > 2, "a table without rows:\n{table}");
        for line in &lines[1..] {
            assert_eq!(cells(line).len(), header.len(), "{line:?} in:\n{table}");
        }
        for (i, title) in header.iter().enumerate().filter(|(_, t)| t.starts_with("Unix vs ")) {
            ratio_columns += 1;
            for line in &lines[2..] {
                let cell = &cells(line)[i];
                assert!(ratio.is_match(cell), "{title}: {cell:?} in:\n{table}");
            }
        }
    }
    // Round trip and bulk: vs TCP and vs pipe; connections: vs TCP.
    assert_eq!(ratio_columns, 5, "ratio columns in:\n{stdout}");
    let report = fs::read_to_string(scratch.path("out/report.md")).unwrap();
    assert!(report.starts_with("- **Recorded:** "), "report.md:\n{report}");
    assert!(report.ends_with(stdout.as_str()), "report.md does not end with stdout:\n{report}");
    assert!(printed.stderr.contains("report.md"), "stderr names no files:\n{}", printed.stderr);
    scratch.assert_files_and_nothing_left();
}

/// The book's chart is what the chart code draws from the book's recorded report: `bench-chart`
/// redraws it without measuring, and it matches book/src/measured/chart.svg to the byte (after
/// a change to chart.rs, run it to update the book's chart).
#[test]
fn the_books_chart_is_drawn_from_its_recorded_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let measured = root.join("book/src/measured");
    let out = tempfile::tempdir().unwrap();
    let chart = out.path().join("chart.svg");
    let status = Command::new(cargo_bin("uds-course"))
        .arg("bench-chart")
        .arg(measured.join("report.md"))
        .arg(&chart)
        .status()
        .unwrap();
    assert!(status.success(), "bench-chart failed");
    let drawn = fs::read_to_string(&chart).unwrap();
    assert!(drawn.starts_with("<svg width=\"750\""), "not 750 px wide: {}", &drawn[..80]);
    let recorded = fs::read_to_string(measured.join("chart.svg")).unwrap();
    assert!(
        drawn == recorded,
        "book/src/measured/chart.svg is not what the chart code draws from report.md: run \
         `cargo run -- bench-chart book/src/measured/report.md book/src/measured/chart.svg`"
    );
}

//! The results: tables of figures (each the median of the runs, with the lowest and the
//! highest), the Unix-vs-others ratios beside them, and a header saying where and how they
//! were measured. Written as Markdown for people and as JSON (serde) for programs.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Everything one `bench` run produced: report.json, and what report.md shows.
#[derive(Serialize)]
pub struct Report {
    pub header: Header,
    pub tables: Vec<Table>,
}

/// Where and how the figures were measured: absolute numbers mean little without it.
#[derive(Serialize)]
pub struct Header {
    /// UTC, `2026-05-02 14:03 UTC`.
    pub date: String,
    /// The CPU's model name, from /proc/cpuinfo.
    pub machine: String,
    pub cores: usize,
    /// The kernel release, as `uname -r` prints it.
    pub kernel: String,
    pub rustc: String,
    /// `release` or `debug`: the profile the runner (and so the lesson servers) was built in.
    pub build: &'static str,
    /// The command that reproduces this run.
    pub command: String,
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Each figure is the median of this many runs.
    pub runs: usize,
    pub sizes: String,
    /// The 1, 5 and 15 minute load averages when the run started: others' work skews figures.
    pub load_average: String,
    /// The file system the regular file was on (on tmpfs, fsync has no disk to wait for).
    pub file_system: String,
}

impl Header {
    /// `file_dir`: where the regular file will be (or any dir on the same file system).
    pub fn gather(quick: bool, runs: usize, sizes: String, file_dir: &Path) -> Header {
        let release = !cfg!(debug_assertions);
        let kernel = proc_file("/proc/sys/kernel/osrelease");
        let load = proc_file("/proc/loadavg");
        Header {
            date: utc_now(),
            machine: cpu_model(),
            cores: thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            rustc: rustc_version(),
            build: if release { "release" } else { "debug" },
            command: format!(
                "cargo run {}-- bench{}",
                if release { "--release " } else { "" },
                if quick { " --quick" } else { "" }
            ),
            mode: if quick { "quick" } else { "full" },
            runs,
            sizes,
            load_average: load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            file_system: file_system(file_dir),
        }
    }

    /// The header of report.md: a list, before the tables.
    pub fn markdown(&self) -> String {
        format!(
            "- **Recorded:** {}, a {} run: {}\n\
             - **Machine:** {}, {} cores, Linux {}; load average {} at the start\n\
             - **Built with:** {}, {} profile\n\
             - **The regular file:** on {}\n\
             - **To reproduce:** `{}`\n",
            self.date,
            self.mode,
            self.sizes,
            self.machine,
            self.cores,
            self.kernel,
            self.load_average,
            self.rustc,
            self.build,
            self.file_system,
            self.command,
        )
    }
}

/// One table: rows of figures under named columns.
#[derive(Serialize)]
pub struct Table {
    /// A stable name for programs: `round_trip`, `bulk`, `file`, `connections`, `lessons`.
    pub id: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    /// Rates (GB/s, per second) are better higher; times (µs) lower.
    pub higher_is_better: bool,
    /// What each row's label names.
    pub row_header: &'static str,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

#[derive(Serialize)]
pub struct Column {
    /// `unix`, `tcp`, `pipe`, `file`, `connections_8`...
    pub id: String,
    pub title: String,
}

#[derive(Serialize)]
pub struct Row {
    pub label: String,
    /// One per column, in the columns' order; null where nothing was measured.
    pub figures: Vec<Option<Figure>>,
    /// The Unix socket against each other transport in the table, from the medians.
    pub ratios: Vec<Ratio>,
    /// Each column's runs, as they come in.
    #[serde(skip)]
    runs: Vec<Vec<f64>>,
}

/// One measured quantity over all its runs.
#[derive(Serialize)]
pub struct Figure {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

#[derive(Serialize)]
pub struct Ratio {
    /// The column compared with: `tcp` or `pipe`.
    pub unix_vs: String,
    /// How many times as fast the Unix socket was, from the medians: the other's time ÷ the
    /// Unix socket's, or the Unix socket's rate ÷ the other's. Above 1: Unix was faster.
    pub unix_speedup: f64,
}

/// Where one figure of one run goes.
#[derive(Clone, Copy)]
pub struct Cell {
    pub table: usize,
    pub row: usize,
    pub column: usize,
}

impl Table {
    pub fn new(
        id: &'static str,
        title: &'static str,
        unit: &'static str,
        higher_is_better: bool,
        row_header: &'static str,
        columns: Vec<Column>,
    ) -> Table {
        Table { id, title, unit, higher_is_better, row_header, columns, rows: Vec::new() }
    }

    pub fn add_row(&mut self, label: String) -> usize {
        let runs = vec![Vec::new(); self.columns.len()];
        self.rows.push(Row { label, figures: Vec::new(), ratios: Vec::new(), runs });
        self.rows.len() - 1
    }

    pub fn record(&mut self, cell: &Cell, value: f64) {
        self.rows[cell.row].runs[cell.column].push(value);
    }

    /// Turns the runs into figures and ratios.
    pub fn finish(mut self) -> Table {
        let unix = self.column("unix");
        let others: Vec<usize> =
            ["tcp", "pipe"].into_iter().filter_map(|id| self.column(id)).collect();
        for row in &mut self.rows {
            row.figures = row.runs.iter().map(|runs| Figure::of(runs)).collect();
            let median = |column: usize| row.figures[column].as_ref().map(|f| f.median);
            let Some(unix) = unix.and_then(median) else { continue };
            row.ratios = others
                .iter()
                .filter_map(|&other| {
                    let other_median = median(other)?;
                    let unix_speedup = if self.higher_is_better {
                        unix / other_median
                    } else {
                        other_median / unix
                    };
                    Some(Ratio { unix_vs: self.columns[other].id.clone(), unix_speedup })
                })
                .collect();
        }
        self
    }

    fn column(&self, id: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.id == id)
    }

    fn markdown(&self, out: &mut String) {
        let better = if self.higher_is_better { "higher" } else { "lower" };
        out.push_str(&format!("\n### {} ({}, {better} is better)\n\n", self.title, self.unit));
        let ratio_titles: Vec<String> = self.rows.first().map_or(Vec::new(), |row| {
            row.ratios
                .iter()
                .map(|ratio| format!("Unix vs {}", self.title_of(&ratio.unix_vs)))
                .collect()
        });
        let mut header = vec![self.row_header.to_owned()];
        header.extend(self.columns.iter().map(|column| column.title.clone()));
        header.extend(ratio_titles.iter().cloned());
        out.push_str(&markdown_row(&header));
        let mut rule = vec![":--".to_owned()];
        rule.extend(std::iter::repeat_n("--:".to_owned(), header.len() - 1));
        out.push_str(&markdown_row(&rule));
        for row in &self.rows {
            let mut cells = vec![row.label.clone()];
            cells.extend(
                row.figures
                    .iter()
                    .map(|figure| figure.as_ref().map_or("–".into(), Figure::markdown)),
            );
            cells.extend(row.ratios.iter().map(|ratio| speedup(ratio.unix_speedup)));
            out.push_str(&markdown_row(&cells));
        }
    }

    fn title_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.column(id).map_or(id, |column| &self.columns[column].title)
    }
}

/// Lesson 07's worker pool beside lesson 06's thread per client and the lean server (threads
/// that accept, in the bench's own process), from figures the other tables measured in the same
/// rounds: connections/s, and each round's ratios, so a burst of load elsewhere hits both
/// sides of a ratio alike. `None` without those rows (a lesson renamed or missing).
pub fn pool(tables: &[Table], clients: &[String]) -> Option<Table> {
    let find = |id: &str| tables.iter().find(|table| table.id == id);
    let (lessons, connections) = (find("lessons")?, find("connections")?);
    let row = |table: &'_ Table, label: &str| -> Option<usize> {
        table.rows.iter().position(|row| row.label.starts_with(label))
    };
    let (pool, threads) = (row(lessons, "07 ")?, row(lessons, "06 ")?);
    let (unix, handoff) = (connections.column("unix")?, connections.column("unix_handoff")?);
    let columns = [
        ("lesson_07", "07 worker-pool"),
        ("lesson_06", "06 (a thread per client)"),
        ("lean", "lean (threads accept)"),
        ("lean_handoff", "lean (one acceptor)"),
        ("pool_vs_06", "07 ÷ 06"),
        ("pool_vs_lean", "07 ÷ lean"),
        ("handoff_vs_accept", "one acceptor ÷ threads accept"),
    ];
    let columns = columns.map(|(id, title)| Column { id: id.into(), title: title.into() });
    let title = "A worker pool (lesson 07) against a thread per client and the lean server";
    let mut table = Table::new("pool", title, "connections/s", true, "clients", columns.into());
    for label in clients {
        let column = lessons.column(&format!("connections_{}", label.split(' ').next()?))?;
        let runs =
            |table: &'_ Table, row: usize, column: usize| table.rows[row].runs[column].clone();
        let (ours, theirs) = (runs(lessons, pool, column), runs(lessons, threads, column));
        let lean_row = row(connections, label)?;
        let (lean, one) = (runs(connections, lean_row, unix), runs(connections, lean_row, handoff));
        let at = table.add_row(label.clone());
        let rounds = ours.into_iter().zip(theirs).zip(lean).zip(one);
        for (((ours, theirs), lean), one) in rounds {
            let figures = [ours, theirs, lean, one, ours / theirs, ours / lean, one / lean];
            for (column, figure) in figures.into_iter().enumerate() {
                table.record(&Cell { table: 0, row: at, column }, figure);
            }
        }
    }
    Some(table.finish())
}

/// The chart's tables read back from a recorded report.md, so that a recorded run's chart can
/// be drawn again (after the chart's code changed) without measuring again. Each cell
/// `median (min–max)` becomes a figure with those three; the ratio columns are left out.
pub fn chart_tables_from_markdown(text: &str) -> Vec<Table> {
    let mut tables = Vec::new();
    for section in text.split("\n### ").skip(1) {
        let heading = section.lines().next().unwrap_or_default();
        let (id, unit, higher) = match heading {
            h if h.starts_with("Round trip") => ("round_trip", "µs", false),
            h if h.starts_with("Bulk") => ("bulk", "GB/s", true),
            h if h.starts_with("A regular file") => ("file", "GB/s", true),
            h if h.starts_with("Connections") => ("connections", "connections/s", true),
            _ => continue,
        };
        let rows: Vec<Vec<&str>> = section
            .lines()
            .filter(|line| line.starts_with('|'))
            .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        let Some((header, body)) = rows.split_first() else { continue };
        let measured: Vec<&str> =
            header[1..].iter().copied().take_while(|title| !title.contains(" vs ")).collect();
        let columns = measured
            .iter()
            .map(|title| {
                let id = match *title {
                    "Unix" => "unix".to_owned(),
                    "TCP" => "tcp".to_owned(),
                    "pipe" => "pipe".to_owned(),
                    "regular file" => "file".to_owned(),
                    other => other.to_lowercase().replace([' ', ','], "_"),
                };
                Column { id, title: (*title).to_owned() }
            })
            .collect();
        let mut table = Table::new(id, "", unit, higher, "", columns);
        // The separator row (`:--`) has no figures: it is skipped with the others that fail.
        for cells in body.iter().filter(|cells| !cells[0].starts_with(':')) {
            let row = table.add_row(cells[0].to_owned());
            for (column, cell) in cells[1..=measured.len()].iter().enumerate() {
                for value in parse_figure(cell) {
                    table.record(&Cell { table: 0, row, column }, value);
                }
            }
        }
        tables.push(table.finish());
    }
    tables
}

/// `10.3 (9.81–11.0)` as its three numbers: min, median, max; nothing for `–`.
fn parse_figure(cell: &str) -> Vec<f64> {
    let Some((median, range)) = cell.split_once(" (") else { return Vec::new() };
    let Some((min, max)) = range.trim_end_matches(')').split_once('–') else { return Vec::new() };
    [min, median, max].iter().filter_map(|x| x.parse().ok()).collect()
}

impl Figure {
    /// Min, median and max of `runs`; `None` when there are none.
    fn of(runs: &[f64]) -> Option<Figure> {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        Some(Figure { min, median, max, runs: runs.to_vec() })
    }

    /// `10.3 (9.81–11.0)`: the median, then the range of the runs.
    fn markdown(&self) -> String {
        format!("{} ({}–{})", number(self.median), number(self.min), number(self.max))
    }
}

/// The tables as Markdown, after a legend that says how to read them.
pub fn markdown_tables(report: &Report) -> String {
    let mut out = format!(
        "Each figure is the median of {} runs, with the lowest and the highest in brackets. \
         *Unix vs X* compares the medians: how many times faster (or slower) the Unix socket \
         was than X — for times, X's time ÷ the Unix socket's; for rates, the Unix socket's \
         rate ÷ X's. In the worker-pool table the ratios (÷) are taken round by round, each from \
         two figures measured in the same round. 1 GB = 10⁹ bytes.\n",
        report.header.runs
    );
    for table in &report.tables {
        table.markdown(&mut out);
    }
    out
}

fn markdown_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// Three significant digits, or all the integer digits: `4.52`, `10.3`, `152`, `45213`.
pub fn number(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn speedup(unix_speedup: f64) -> String {
    if unix_speedup >= 1.0 {
        format!("{unix_speedup:.2}× faster")
    } else {
        format!("{:.2}× slower", 1.0 / unix_speedup)
    }
}

/// The first line of a /proc file, or `unknown`: the header is worth having without it.
fn proc_file(path: &str) -> String {
    fs::read_to_string(path)
        .map_or("unknown".into(), |text| text.lines().next().unwrap_or("").trim().to_owned())
}

/// `model name : AMD EPYC 7B13` on x86; other architectures name other fields.
fn cpu_model() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| ["model name", "Hardware", "cpu model"].contains(&key.trim()))
        .map_or("unknown CPU".into(), |(_, value)| value.trim().to_owned())
}

/// `rustc -V`, if a rustc is on the PATH (the one `cargo run` used, in practice).
fn rustc_version() -> String {
    Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or("rustc (unknown version)".into(), |output| {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        })
}

/// The file system `dir` is on, by the magic number `statfs` reports.
fn file_system(dir: &Path) -> String {
    let Ok(stat) = rustix::fs::statfs(dir) else { return "an unknown file system".into() };
    #[allow(clippy::unnecessary_cast)] // its type differs between architectures
    let name = match stat.f_type as u64 {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs (fsync has no disk to wait for)",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x6969 => "nfs",
        other => return format!("a file system with magic number {other:#x}"),
    };
    name.into()
}

/// Now, as `2026-05-02 14:03 UTC`.
fn utc_now() -> String {
    utc_date(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// Seconds since 1970 as `2026-05-02 14:03 UTC`, without a date crate: days to a civil date by
/// Howard Hinnant's `civil_from_days`.
fn utc_date(seconds: u64) -> String {
    let (days, minutes) = ((seconds / 86_400) as i64, seconds % 86_400 / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year}-{month:02}-{day:02} {:02}:{:02} UTC", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::{Figure, speedup, utc_date};

    /// The header's date is right across leap days and century years.
    #[test]
    fn utc_date_turns_seconds_since_1970_into_a_civil_date() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_709_210_096), "2024-02-29 12:34 UTC");
        assert_eq!(utc_date(4_107_628_740), "2100-03-01 23:59 UTC");
    }

    /// A figure is the middle run (or the mean of the two middle runs), with the extremes.
    #[test]
    fn a_figure_is_the_median_of_its_runs_with_the_lowest_and_the_highest() {
        let odd = Figure::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.min, odd.median, odd.max), (1.0, 2.0, 3.0));
        assert_eq!(odd.runs, [3.0, 1.0, 2.0], "runs keep their order");
        assert_eq!(Figure::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Figure::of(&[]).is_none());
    }

    /// A ratio reads the same way whichever side is faster.
    #[test]
    fn speedup_says_faster_or_slower_never_a_fraction() {
        assert_eq!(speedup(1.5), "1.50× faster");
        assert_eq!(speedup(1.0), "1.00× faster");
        assert_eq!(speedup(0.5), "2.00× slower");
    }
}

//! `bench`: how fast a Unix domain socket is, measured beside what it is compared with — TCP
//! over loopback, a pipe, a regular file — and what each lesson's idea costs its server.
//!
//! Everything runs in ONE invocation on one machine, so the comparison is fair: the ratios
//! (Unix vs TCP, Unix vs pipe) carry over to other machines where the absolute numbers do not.
//! Progress goes to stderr; the tables (or JSON with `--json`) to stdout; report.md,
//! report.json and chart.svg to target/bench/.
//!
//! Run: `cargo run --release -- bench` (about two minutes), or `--quick` (seconds). Partners:
//! transports.rs connects the two ends, measure.rs times round trips and bulk transfers,
//! load.rs drives servers with connections and lines, report.rs and chart.rs show the results.

mod chart;
mod load;
mod measure;
mod report;
mod transports;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cargo::BinDir;
use crate::child::{self, bail_if_interrupted};
use crate::lessons::{self, Lesson};
use load::{Done, LessonServer, Load};
use report::{Cell, Column, Report, Table};
pub use transports::{PeerArgs, peer};
use transports::{Placement, Transport};

/// How much work each measurement does. `--quick` shrinks the counts, never the tables.
pub struct Sizes {
    /// Each figure is the median of this many runs, shown with the lowest and the highest.
    runs: usize,
    /// Round trips per run (after a tenth as many to warm up).
    round_trips: usize,
    /// Bytes per bulk run, in 64 KiB writes.
    bulk_bytes: u64,
    /// Connections per run, shared among the clients.
    connections: usize,
    /// Lines per run against a lesson server, shared among the clients.
    lines: usize,
    /// Idle connections held open at once against a server (fewer if RLIMIT_NOFILE is lower).
    idle: usize,
}

const FULL: Sizes = Sizes {
    runs: 3,
    round_trips: 100_000,
    bulk_bytes: 1 << 30,
    connections: 10_000,
    lines: 50_000,
    idle: 10_000,
};
const QUICK: Sizes = Sizes {
    runs: 3,
    round_trips: 2_000,
    bulk_bytes: 16 << 20,
    connections: 400,
    lines: 2_000,
    idle: 1_000,
};

/// The message sizes of the round trips: one byte (pure overhead) and a small request.
const MESSAGE_SIZES: [usize; 2] = [1, 64];
/// Concurrent clients for connections and lines: one alone, and more clients than cores.
const CLIENTS: [usize; 2] = [1, 8];
/// The lessons whose servers are measured holding idle connections: the worker pool, and the
/// same server on tokio. Both take `--max-connections`, raised to hold them all.
const IDLE_LESSONS: [u8; 2] = [7, 13];

/// What every measurement needs: the sizes, private directories, and the Ctrl-C flag.
pub struct Ctx<'a> {
    sizes: &'static Sizes,
    /// A private temp dir for socket files (short paths: a socket path holds 107 bytes).
    sockets: &'a Path,
    /// A private dir for the regular file, beside the output (see [`bench`] for why).
    files: &'a Path,
    interrupted: &'a AtomicBool,
}

pub fn bench(quick: bool, json: bool, out: Option<PathBuf>) -> anyhow::Result<()> {
    child::interruptible(|interrupted| {
        let sizes = if quick { &QUICK } else { &FULL };
        let out = out.unwrap_or_else(|| lessons::root().join("target").join("bench"));
        fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
        if cfg!(debug_assertions) {
            eprintln!("bench: a debug build; for figures to quote, `cargo run --release -- bench`");
        }
        // Before the build: the load average it records is the one the bench started in.
        let header = report::Header::gather(quick, sizes.runs, sizes.describe(), &out);
        let servers = build_lesson_servers(interrupted)?;
        // The file goes beside the output, not in /tmp: /tmp is a tmpfs on many systems, where
        // fsync has no disk to wait for. Both dirs are removed on every way out.
        let files = tempfile::Builder::new()
            .prefix(".scratch-")
            .tempdir_in(&out)
            .with_context(|| format!("create a temp dir in {}", out.display()))?;
        let sockets = tempfile::Builder::new()
            .prefix("uds-course-bench-")
            .tempdir()
            .context("create a temp dir")?;
        let ctx = Ctx { sizes, sockets: sockets.path(), files: files.path(), interrupted };
        // Declared after the temp dirs, so the servers are stopped before their dir is removed.
        let running = start_lesson_servers(&servers, &ctx)?;
        let idle = sizes.idle.min(descriptors_for_idle_connections()?);
        let mut plan = Plan::default();
        plan.round_trips(&ctx);
        plan.bulk(&ctx);
        let cpu = plan.connections(&ctx);
        plan.lesson_servers(&ctx, &running, cpu);
        plan.idle_connections(&ctx, &servers, idle);
        let mut tables = plan.run(sizes.runs, interrupted)?;
        drop(running);
        tables.extend(report::pool(&tables, &CLIENTS.map(clients_label)));
        let report = Report { header, tables };
        write_report(&report, &out, json)
    })
}

/// `bench-chart FROM OUT`: the chart of a recorded report.md, drawn again (see
/// [`report::chart_tables_from_markdown`]).
pub fn chart_from_report(from: &Path, out: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(from).with_context(|| format!("read {}", from.display()))?;
    let tables = report::chart_tables_from_markdown(&text);
    if tables.is_empty() {
        anyhow::bail!("read {}: no tables the chart draws", from.display());
    }
    let svg = chart::svg(&tables)?;
    fs::write(out, svg).with_context(|| format!("write {}", out.display()))
}

impl Sizes {
    /// Connections or lines per run.
    fn total(&self, load: Load) -> usize {
        match load {
            Load::Connections => self.connections,
            Load::Lines => self.lines,
        }
    }

    /// One line for the report's header.
    fn describe(&self) -> String {
        format!(
            "each figure from {} runs; per run {} round trips, {} MiB of bulk data, {} \
             connections, {} lines",
            self.runs,
            self.round_trips,
            self.bulk_bytes >> 20,
            self.connections,
            self.lines
        )
    }
}

/// Builds every lesson (as `lesson N` does: beside the runner, in the runner's profile) and
/// returns each with its server's path. Before the progress bar, which cargo's output would
/// break up.
fn build_lesson_servers(interrupted: &AtomicBool) -> anyhow::Result<Vec<(Lesson, PathBuf)>> {
    let bins = BinDir::of_runner()?;
    let mut servers = Vec::new();
    eprintln!("bench: building the lessons' servers");
    for lesson in lessons::all()? {
        // The load client sends lines; a lesson that speaks frames or datagrams would only
        // answer it with an error.
        if !lesson.speaks_lines()? {
            continue;
        }
        bail_if_interrupted(interrupted)?;
        bins.build(&lesson)?;
        let server = bins.binary(&lesson, &format!("{}-server", lesson.package()))?;
        servers.push((lesson, server));
    }
    Ok(servers)
}

fn start_lesson_servers(
    servers: &[(Lesson, PathBuf)],
    ctx: &Ctx,
) -> anyhow::Result<Vec<LessonServer>> {
    servers
        .iter()
        .map(|(lesson, server)| LessonServer::start(lesson, server, ctx.sockets, ctx.interrupted))
        .collect()
}

/// One measurement, run once per round; it yields one figure for each of its cells.
struct Case<'a> {
    name: String,
    cells: Vec<Cell>,
    run: Box<dyn Fn() -> anyhow::Result<Vec<f64>> + 'a>,
}

/// What to measure: the tables to fill and the cases that fill them.
#[derive(Default)]
struct Plan<'a> {
    tables: Vec<Table>,
    cases: Vec<Case<'a>>,
}

impl<'a> Plan<'a> {
    fn table(&mut self, table: Table) -> usize {
        self.tables.push(table);
        self.tables.len() - 1
    }

    fn row(&mut self, table: usize, label: String) -> usize {
        self.tables[table].add_row(label)
    }

    fn case(
        &mut self,
        name: String,
        cells: Vec<Cell>,
        run: impl Fn() -> anyhow::Result<Vec<f64>> + 'a,
    ) {
        self.cases.push(Case { name, cells, run: Box::new(run) });
    }

    /// Round trips: a small message to an echoing peer and back, timed one by one.
    fn round_trips(&mut self, ctx: &'a Ctx) {
        let table = self.table(Table::new(
            "round_trip",
            "Round trip: a message there and back again",
            "µs",
            false,
            "message, between, statistic",
            transport_columns(&Transport::ALL),
        ));
        for size in MESSAGE_SIZES {
            for placement in Placement::ALL {
                let median = self.row(table, format!("{size} B, {placement}, median"));
                let p99 = self.row(table, format!("{size} B, {placement}, p99"));
                for (column, transport) in Transport::ALL.into_iter().enumerate() {
                    self.case(
                        format!("round trip, {size} B, {transport}, {placement}"),
                        vec![Cell { table, row: median, column }, Cell { table, row: p99, column }],
                        move || measure::round_trip(ctx, transport, placement, size),
                    );
                }
            }
        }
    }

    /// Bulk: a stream of 64 KiB writes through each transport, and a regular file.
    fn bulk(&mut self, ctx: &'a Ctx) {
        let table = self.table(Table::new(
            "bulk",
            "Bulk: 64 KiB writes, one way",
            "GB/s",
            true,
            "between",
            transport_columns(&Transport::ALL),
        ));
        for placement in Placement::ALL {
            let row = self.row(table, placement.to_string());
            for (column, transport) in Transport::ALL.into_iter().enumerate() {
                self.case(
                    format!("bulk, {transport}, {placement}"),
                    vec![Cell { table, row, column }],
                    move || measure::bulk(ctx, transport, placement),
                );
            }
        }
        let columns = vec![Column { id: "file".into(), title: "regular file".into() }];
        let title = "A regular file, 64 KiB writes";
        let table = self.table(Table::new("file", title, "GB/s", true, "step", columns));
        let rows = measure::FILE_STEPS.map(|step| self.row(table, step.to_owned()));
        let cells = rows.map(|row| Cell { table, row, column: 0 }).to_vec();
        self.case("regular file".into(), cells, move || measure::file(ctx));
    }

    /// The servers of [`IDLE_LESSONS`] holding `count` idle connections: memory and threads.
    fn idle_connections(&mut self, ctx: &'a Ctx, servers: &'a [(Lesson, PathBuf)], count: usize) {
        let columns = [
            ("rss_start", "KiB when ready".to_owned()),
            ("rss_held", format!("KiB holding {count}")),
            ("per_connection", "bytes per connection".to_owned()),
            ("threads", format!("threads holding {count}")),
        ];
        let columns = columns.map(|(id, title)| Column { id: id.into(), title });
        let table = self.table(Table::new(
            "idle",
            "Idle connections held open at once: memory (VmRSS) and threads",
            "KiB, bytes, threads",
            false,
            "lesson",
            columns.into(),
        ));
        for (lesson, server) in
            servers.iter().filter(|(l, _)| IDLE_LESSONS.contains(&l.number.get()))
        {
            let row = self.row(table, format!("{} {}", lesson.number, lesson.short_name));
            let cells = (0..4).map(|column| Cell { table, row, column }).collect();
            self.case(
                format!("{} {}, {count} idle connections", lesson.number, lesson.short_name),
                cells,
                move || load::idle_connections(lesson, server, ctx, count),
            );
        }
    }

    /// Connections per second against the bench's own lean server, Unix and TCP; and the
    /// server CPU table, with the lean server's rows (over Unix). Returns that table, for
    /// [`Plan::lesson_servers`] to add the lessons' rows.
    fn connections(&mut self, ctx: &'a Ctx) -> usize {
        let transports = [Transport::Unix, Transport::Tcp];
        let mut columns = transport_columns(&transports);
        // Lesson 07's shape, one acceptor handing off to a pool, beside threads that accept.
        let handoff = Column { id: "unix_handoff".into(), title: "Unix, one acceptor".into() };
        columns.push(handoff);
        let table = self.table(Table::new(
            "connections",
            "Connections: connect, one line, its reply, close; a lean server",
            "connections/s",
            true,
            "clients",
            columns,
        ));
        let columns = CLIENTS.map(|clients| Column {
            id: format!("connections_{clients}"),
            title: format!("per connection, {}", clients_label(clients)),
        });
        let cpu = self.table(Table::new(
            "cpu",
            "The server's CPU time per connection, over a Unix socket",
            "µs",
            false,
            "server",
            columns.into(),
        ));
        let lean = self.row(cpu, "lean (threads accept)".into());
        let one_acceptor = self.row(cpu, "lean (one acceptor)".into());
        for (i, clients) in CLIENTS.into_iter().enumerate() {
            let row = self.row(table, clients_label(clients));
            for (column, transport) in transports.into_iter().enumerate() {
                let mut cells = vec![Cell { table, row, column }];
                let timed = transport == Transport::Unix;
                if timed {
                    cells.push(Cell { table: cpu, row: lean, column: i });
                }
                self.case(
                    format!("connections, {transport}, {}", clients_label(clients)),
                    cells,
                    move || {
                        let (done, spent) = load::lean_server(ctx, transport, clients)?;
                        Ok(figures(done, spent, timed))
                    },
                );
            }
            self.case(
                format!("connections, Unix, one acceptor, {}", clients_label(clients)),
                vec![
                    Cell { table, row, column: transports.len() },
                    Cell { table: cpu, row: one_acceptor, column: i },
                ],
                move || {
                    let (done, spent) = load::lean_handoff(ctx, clients)?;
                    Ok(figures(done, spent, true))
                },
            );
        }
        cpu
    }

    /// Every lesson's server under the bench's load: connections/s and lines/s; and in table
    /// `cpu`, the CPU time it spent per connection.
    fn lesson_servers(&mut self, ctx: &'a Ctx, servers: &'a [LessonServer], cpu: usize) {
        let mut columns = Vec::new();
        for load in Load::ALL {
            for clients in CLIENTS {
                let (what, id) = (load.name(), format!("{}_{clients}", load.name()));
                columns.push(Column { id, title: format!("{what}/s, {}", clients_label(clients)) });
            }
        }
        let table = self.table(Table::new(
            "lessons",
            "Each lesson's server under load, over a Unix socket",
            "per second",
            true,
            "lesson",
            columns,
        ));
        let interrupted = ctx.interrupted;
        for server in servers {
            let row = self.row(table, server.label().to_owned());
            let cpu_row = self.row(cpu, server.label().to_owned());
            for (i, load) in Load::ALL.into_iter().enumerate() {
                let total = ctx.sizes.total(load);
                for (j, clients) in CLIENTS.into_iter().enumerate() {
                    let mut cells = vec![Cell { table, row, column: i * CLIENTS.len() + j }];
                    let timed = matches!(load, Load::Connections);
                    if timed {
                        cells.push(Cell { table: cpu, row: cpu_row, column: j });
                    }
                    self.case(
                        format!("{}, {}, {}", server.label(), load.name(), clients_label(clients)),
                        cells,
                        move || {
                            let run = |target: &_| load.run(target, clients, total, interrupted);
                            let (done, spent) = server.under_load(run, interrupted)?;
                            Ok(figures(done, spent, timed))
                        },
                    );
                }
            }
        }
    }

    /// Runs every case once per round, `runs` rounds, and returns the filled tables.
    ///
    /// Rounds, not repeats: a burst of load from elsewhere on the machine then hits every case
    /// once, instead of one case three times, and the ratios between cases stay fair.
    fn run(mut self, runs: usize, interrupted: &AtomicBool) -> anyhow::Result<Vec<Table>> {
        let bar = ProgressBar::new((runs * self.cases.len()) as u64);
        let style = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .context("the progress bar's template")?;
        bar.set_style(style.progress_chars("=> "));
        for round in 1..=runs {
            for case in &self.cases {
                bail_if_interrupted(interrupted)?;
                bar.set_message(format!("round {round} of {runs}: {}", case.name));
                let figures = (case.run)().with_context(|| format!("measure {}", case.name))?;
                if figures.len() != case.cells.len() {
                    bail!(
                        "{}: {} figures for {} cells",
                        case.name,
                        figures.len(),
                        case.cells.len()
                    );
                }
                for (cell, figure) in case.cells.iter().zip(figures) {
                    self.tables[cell.table].record(cell, figure);
                }
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        Ok(self.tables.into_iter().map(Table::finish).collect())
    }
}

/// How many idle connections this process (and each server it starts, which inherits the
/// limit) can hold: RLIMIT_NOFILE raised to its hard limit, less room for everything else.
fn descriptors_for_idle_connections() -> anyhow::Result<usize> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
    setrlimit(Resource::Nofile, raised).context("raise RLIMIT_NOFILE to its hard limit")?;
    let most = limit.maximum.map_or(usize::MAX, |n| n as usize);
    Ok(most.saturating_sub(200))
}

fn transport_columns(transports: &[Transport]) -> Vec<Column> {
    transports.iter().map(|t| Column { id: t.id().into(), title: t.to_string() }).collect()
}

/// A case's figures: the rate, then, if the server's CPU time goes in a table too, that time
/// per connection (or line) done, in µs.
fn figures(done: Done, spent: Duration, timed: bool) -> Vec<f64> {
    let mut figures = vec![done.per_second()];
    if timed {
        figures.push(done.micros_each(spent));
    }
    figures
}

fn clients_label(clients: usize) -> String {
    if clients == 1 { "1 client".into() } else { format!("{clients} clients") }
}

/// The tables (or the JSON) on stdout; report.md, report.json and chart.svg in `out`; where
/// they went on stderr.
fn write_report(report: &Report, out: &Path, json: bool) -> anyhow::Result<()> {
    let tables = report::markdown_tables(report);
    let data = serde_json::to_string_pretty(report).context("write the results as JSON")?;
    let files = [
        ("report.md", format!("{}\n{tables}", report.header.markdown())),
        ("report.json", format!("{data}\n")),
        ("chart.svg", chart::svg(&report.tables)?),
    ];
    for (name, text) in &files {
        let path = out.join(name);
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    let mut stdout = io::stdout().lock();
    let shown = if json { format!("{data}\n") } else { tables };
    stdout.write_all(shown.as_bytes()).and_then(|()| stdout.flush()).context("write stdout")?;
    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    eprintln!("bench: wrote {} in {}", names.join(", "), out.display());
    Ok(())
}

//! The timed parts: round trips and bulk transfers over a [`Link`], and a regular file written
//! and read through the page cache. Each function is one run and returns its figures.
//! Partner: transports.rs, which sets up the two ends.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Ctx;
use super::transports::{CHUNK, Placement, Role, Transport, link};
use crate::child::bail_if_interrupted;

/// How often a long loop looks at the Ctrl-C flag: rarely enough to cost nothing.
const CHECK_EVERY: usize = 1024;

/// The regular file's rows, in the order [`file`] returns them.
pub const FILE_STEPS: [&str; 3] =
    ["write (into the page cache)", "read back (from the page cache)", "write, then fsync"];

/// One run of round trips: `size` bytes to an echoing peer and back, each timed on its own,
/// after a tenth as many untimed ones to warm up (page faults, caches, the scheduler).
/// Returns the median and the 99th percentile in µs: the typical trip, and the slow one in a
/// hundred that a busy machine causes.
///
/// What a round trip costs: two writes, two reads, and twice waking a sleeping reader, which is
/// what a request and its reply cost before any work is done.
pub fn round_trip(
    ctx: &Ctx,
    transport: Transport,
    placement: Placement,
    size: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut link =
        link(transport, placement, Role::Echo, size as u64, ctx.sockets, ctx.interrupted)?;
    let message = vec![b'x'; size];
    let mut reply = vec![0; size];
    let count = ctx.sizes.round_trips;
    let warm_up = count / 10;
    let mut micros = Vec::with_capacity(count);
    for i in 0..warm_up + count {
        if i % CHECK_EVERY == 0 {
            bail_if_interrupted(ctx.interrupted)?;
        }
        let start = Instant::now();
        link.conn.writer.write_all(&message).context("write a message")?;
        link.conn.reader.read_exact(&mut reply).context("read the echo")?;
        if i >= warm_up {
            micros.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    link.finish()?;
    micros.sort_by(f64::total_cmp);
    Ok(vec![percentile(&micros, 50), percentile(&micros, 99)])
}

/// One bulk run: [`Sizes::bulk_bytes`](super::Sizes) in 64 KiB writes to a peer that reads
/// them and answers one byte at the end. Returns GB/s (10⁹ bytes per second).
///
/// The bytes are copied twice: from our buffer into the kernel's socket or pipe buffer, and
/// from there into the reader's buffer. The reader runs at the same time, on the other core
/// or taking turns on one.
pub fn bulk(ctx: &Ctx, transport: Transport, placement: Placement) -> anyhow::Result<Vec<f64>> {
    let bytes = ctx.sizes.bulk_bytes;
    let mut link = link(transport, placement, Role::Sink, bytes, ctx.sockets, ctx.interrupted)?;
    let start = Instant::now();
    write_chunks(&mut link.conn.writer, bytes, ctx.interrupted)?;
    link.conn.reader.read_exact(&mut [0]).context("read the acknowledgement")?;
    let elapsed = start.elapsed();
    link.finish()?;
    Ok(vec![gb_per_second(bytes, elapsed)])
}

/// One run with a regular file: write it (the data only reaches the page cache, in memory),
/// read it back (from the page cache: one copy, no disk, no other party to wake), then fsync
/// it (the wait for the disk). Returns GB/s for the three [`FILE_STEPS`]; the third counts the
/// write and the fsync together, as a program that must not lose the data pays both.
pub fn file(ctx: &Ctx) -> anyhow::Result<Vec<f64>> {
    let bytes = ctx.sizes.bulk_bytes;
    let path = ctx.files.join("bulk.data");
    let shown = path.display();
    let mut file = File::create(&path).with_context(|| format!("create {shown}"))?;
    let start = Instant::now();
    write_chunks(&mut file, bytes, ctx.interrupted).with_context(|| format!("write {shown}"))?;
    let written = start.elapsed();
    file.sync_all().with_context(|| format!("fsync {shown}"))?;
    let synced = start.elapsed();
    drop(file);

    let mut file = File::open(&path).with_context(|| format!("open {shown}"))?;
    let start = Instant::now();
    let read = read_to_end(&mut file, ctx.interrupted).with_context(|| format!("read {shown}"))?;
    let reading = start.elapsed();
    if read != bytes {
        bail!("read {shown}: {read} bytes, expected {bytes}");
    }
    std::fs::remove_file(&path).with_context(|| format!("remove {shown}"))?;
    Ok(vec![
        gb_per_second(bytes, written),
        gb_per_second(bytes, reading),
        gb_per_second(bytes, synced),
    ])
}

/// Writes `bytes` in [`CHUNK`]-sized writes.
fn write_chunks(
    writer: &mut dyn Write,
    bytes: u64,
    interrupted: &AtomicBool,
) -> anyhow::Result<()> {
    let chunk = vec![0x5a; CHUNK];
    let chunks = bytes.div_ceil(CHUNK as u64);
    for i in 0..chunks {
        if i % CHECK_EVERY as u64 == 0 {
            bail_if_interrupted(interrupted)?;
        }
        let n = (bytes - i * CHUNK as u64).min(CHUNK as u64) as usize;
        writer.write_all(&chunk[..n]).context("write")?;
    }
    Ok(())
}

/// Reads in [`CHUNK`]s until EOF; returns how many bytes came.
fn read_to_end(reader: &mut dyn Read, interrupted: &AtomicBool) -> anyhow::Result<u64> {
    let mut buf = vec![0; CHUNK];
    let mut total = 0;
    for i in 0.. {
        if i % CHECK_EVERY == 0 {
            bail_if_interrupted(interrupted)?;
        }
        match reader.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    Ok(total)
}

fn gb_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// The `p`th percentile of `sorted` (ascending, not empty), by the nearest-rank method: the
/// smallest value that at least `p`% of the values do not exceed.
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    /// p50 and p99 of 1..=100 are 50 and 99: at least that share of the values is not above.
    #[test]
    fn percentile_is_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50), 50.0);
        assert_eq!(percentile(&values, 99), 99.0);
        assert_eq!(percentile(&values, 100), 100.0);
        assert_eq!(percentile(&[7.0], 99), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50), 2.0);
    }
}

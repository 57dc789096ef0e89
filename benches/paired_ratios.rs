//! The crate against its baselines, interleaved: a second view of the ratios that
//! `nickname_queries` measures, robust to a machine whose load changes over the run.
//!
//! ```sh
//! cargo bench --bench paired_ratios            # prints markdown tables
//! ```
//!
//! Criterion measures one id after another, seconds apart; on a shared machine the
//! load can change between the crate's measurement and its baseline's, and the
//! ratio with it. Here the implementations of one operation take turns in short
//! blocks (about 20 ms each, the order rotating every round), on the same data, with
//! the same pseudo-random picks, and a ratio is taken within each round: the table
//! gives the median over the rounds and the spread of the middle 80 %.
//!
//! Same environment variables as `nickname_queries` (sizes, backends, server); the
//! read operations only (the inserts grow the tables). Arguments that are not flags
//! filter on `<operation>/<backend>`. As there, a dataset's fixture checks when it
//! opens that every baseline sends exactly the crate's SQL (`support/ops.rs`).

#[path = "support/ops.rs"]
mod ops;
#[path = "support/mod.rs"]
mod support;
#[path = "support/trace.rs"]
mod trace;

use ops::*;
use std::time::{Duration, Instant};
use support::*;

const ROUNDS: usize = 40;
const DISCARDED_ROUNDS: usize = 3;
const BLOCK: Duration = Duration::from_millis(20);
const OPERATIONS: [Op; 5] = [
    Op::Lookup,
    Op::LookupDecrypt,
    Op::FindAll,
    Op::ByType,
    Op::List,
];

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e4 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{:.2} µs", ns / 1e3)
    }
}

/// Runs `k` iterations of one implementation and returns the mean time per iteration.
fn block(
    fixtures: &mut Fixtures,
    backend: &str,
    rows: usize,
    op: Op,
    implementation: &str,
    rng: &mut Rng,
    k: usize,
) -> f64 {
    let mut run = if backend == "sqlite" {
        sqlite_op(op, implementation, fixtures.sqlite(rows), rng)
    } else {
        pg_op(op, implementation, fixtures.pg(rows), rng)
    };
    let started = Instant::now();
    for _ in 0..k {
        run();
    }
    started.elapsed().as_nanos() as f64 / k as f64
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut backends = Vec::new();
    if backend_enabled("sqlite") {
        backends.push("sqlite");
    }
    if pg_available() {
        backends.push("postgres");
    }
    let mut fixtures = Fixtures::default();
    let mut lines = vec![
        "| operation | backend | rows | baseline | crate (median) | baseline (median) | crate / baseline, median of rounds | middle 80 % of rounds |".to_owned(),
        "|---|---|---:|---|---:|---:|---:|---|".to_owned(),
    ];
    for rows in sizes() {
        for &backend in &backends {
            for op in OPERATIONS {
                let name = format!("{}/{backend}", op.name());
                if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
                    continue;
                }
                let implementations = implementations(backend, op);
                let mut rngs: Vec<Rng> = implementations
                    .iter()
                    .map(|_| Rng::new(0x0bad_cafe ^ rows as u64))
                    .collect();
                // Iterations per block, from the crate's speed.
                let per = block(
                    &mut fixtures,
                    backend,
                    rows,
                    op,
                    "crate",
                    &mut Rng::new(1),
                    50,
                );
                let k = ((BLOCK.as_nanos() as f64 / per) as usize).clamp(5, 100_000);
                let mut means = vec![Vec::new(); implementations.len()];
                for round in 0..ROUNDS + DISCARDED_ROUNDS {
                    for j in 0..implementations.len() {
                        let i = (round + j) % implementations.len();
                        let mean = block(
                            &mut fixtures,
                            backend,
                            rows,
                            op,
                            implementations[i],
                            &mut rngs[i],
                            k,
                        );
                        if round >= DISCARDED_ROUNDS {
                            means[i].push(mean);
                        }
                    }
                }
                let median = |i: usize| quantile(&means[i], 0.5);
                for (b, baseline) in implementations.iter().enumerate().skip(1) {
                    let ratios: Vec<f64> = means[0]
                        .iter()
                        .zip(&means[b])
                        .map(|(c, base)| c / base)
                        .collect();
                    lines.push(format!(
                        "| {} | {backend} | {rows} | {baseline} | {} | {} | {:.2} | {:.2} – {:.2} |",
                        op.name(),
                        fmt_ns(median(0)),
                        fmt_ns(median(b)),
                        quantile(&ratios, 0.5),
                        quantile(&ratios, 0.1),
                        quantile(&ratios, 0.9),
                    ));
                }
                eprintln!("{name}/{rows}: {k} iterations per block");
            }
        }
    }
    println!("{}", lines.join("\n"));
}

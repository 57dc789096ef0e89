//! The repository against the same SQL written by hand, on SQLite and PostgreSQL,
//! from 10k to 1M credentials. BENCHMARKS.md has the command, the machine and the
//! results; `benches/report.py` turns criterion's output into its tables.
//!
//! Ids: `<operation>/<backend>/<implementation>/<rows>`, for example
//! `lookup_by_nickname/sqlite/rusqlite/1000000`. Implementations:
//!
//! - `crate`: `CredentialStore`, as a service uses it (a pool, validation, the
//!   row-level-security context on PostgreSQL);
//! - `diesel`: diesel on one connection running the crate's own statements
//!   (`credential_store::internals`) without the repository (on PostgreSQL in the
//!   same transaction with the same `set_config` context);
//! - `rusqlite` / `postgres`: the raw drivers with prepared statements, running the
//!   SQL text of the crate's statements, taken from `credential_store::internals`;
//! - `diesel_bare` / `postgres_bare` (PostgreSQL lookups only): the SELECT alone, no
//!   transaction, no context.
//!
//! Every iteration picks an account (and a nickname or type) with a deterministic
//! PRNG; every implementation sees the same sequence. Datasets are built once per
//! size and reused (see `support/mod.rs`).
//!
//! Before a dataset is measured, every operation runs once per implementation and
//! each baseline must have sent exactly the statements the crate sent, text for
//! text and in order, as diesel's instrumentation records the crate's (see
//! `support/trace.rs` and `check_same_sql_*` in `support/ops.rs`); otherwise the
//! benchmark panics, naming both texts.
//!
//! Environment: `CREDENTIAL_STORE_BENCH_SIZES=10000,100000` (default 10k, 100k,
//! 1M), `CREDENTIAL_STORE_BENCH_10M=1` (adds 10M), `CREDENTIAL_STORE_BENCH_BACKENDS=sqlite`
//! (default both), `CREDENTIAL_STORE_BENCH_POSTGRES=postgres://user@host:port`.

#[path = "support/ops.rs"]
mod ops;
#[path = "support/mod.rs"]
mod support;
#[path = "support/trace.rs"]
mod trace;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use ops::*;
use std::time::Duration;
use support::*;

// ---------------------------------------------------------------------------

fn benches(c: &mut Criterion) {
    let sizes = sizes();
    let mut backends = Vec::new();
    if backend_enabled("sqlite") {
        backends.push("sqlite");
    }
    if pg_available() {
        backends.push("postgres");
    }
    // A fixture checks, when it opens, that every baseline sends the crate's SQL
    // and returns what the crate returns.
    let mut fixtures = Fixtures::default();
    for op in Op::ALL {
        let mut group = c.benchmark_group(op.name());
        if op == Op::InsertBatch {
            group.sampling_mode(SamplingMode::Flat);
        }
        if op.is_insert() {
            group.throughput(criterion::Throughput::Elements(op.batch() as u64));
        }
        for &rows in &sizes {
            for &backend in &backends {
                for &implementation in implementations(backend, op) {
                    let mut rng = Rng::new(SEED ^ rows as u64);
                    let id = BenchmarkId::new(format!("{backend}/{implementation}"), rows);
                    group.bench_function(id, |b| {
                        let mut run = if backend == "sqlite" {
                            sqlite_op(op, implementation, fixtures.sqlite(rows), &mut rng)
                        } else {
                            pg_op(op, implementation, fixtures.pg(rows), &mut rng)
                        };
                        b.iter(&mut run)
                    });
                    if op.is_insert() {
                        if backend == "sqlite" {
                            if let Some(fx) = fixtures.sqlite.get(&rows) {
                                fx.cleanup();
                            }
                        } else if let Some(fx) = fixtures.pg.get_mut(&rows) {
                            fx.cleanup();
                        }
                    }
                }
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = nickname_queries;
    // Modest times, so that the whole run stays well under half an hour on two cores;
    // the command line (`--measurement-time`, `--sample-size`, …) overrides them.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = benches
}
criterion_main!(nickname_queries);

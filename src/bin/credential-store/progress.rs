//! Progress on stderr: an indicatif bar (rows, rows/s, ETA) on a terminal, plain
//! lines (no escape codes) otherwise, nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed, at most.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

pub enum Progress {
    Bar(ProgressBar),
    Plain {
        label: &'static str,
        started: Instant,
        last: Option<Instant>,
        position: u64,
        total: u64,
    },
    Quiet,
}

impl Progress {
    /// A reporter for a run over `rows` rows, labelled `label`.
    pub fn new(label: &'static str, quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:40}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label);
            Progress::Bar(bar)
        } else {
            Progress::Plain {
                label,
                started: Instant::now(),
                last: None,
                position: 0,
                total: 0,
            }
        }
    }

    /// `position` of `total` rows done.
    pub fn update(&mut self, position: u64, total: u64) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(total.max(position));
                bar.set_position(position);
            }
            Progress::Plain {
                last,
                position: pos,
                total: tot,
                ..
            } => {
                *pos = position;
                *tot = total;
                if last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) {
                    *last = Some(Instant::now());
                    self.print_line();
                }
            }
            Progress::Quiet => {}
        }
    }

    /// Ends the display: the bar stays with its last state; a last plain line.
    pub fn finish(&mut self) {
        match self {
            Progress::Bar(bar) => bar.abandon(),
            Progress::Plain { last, .. } if last.is_some() => self.print_line(),
            _ => {}
        }
    }

    fn print_line(&self) {
        if let Progress::Plain {
            label,
            started,
            position,
            total,
            ..
        } = self
        {
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let rate = *position as f64 / elapsed;
            let percent = if *total == 0 {
                100.0
            } else {
                *position as f64 * 100.0 / *total as f64
            };
            let eta = if rate > 0.0 {
                format!("{:.0}s", total.saturating_sub(*position) as f64 / rate)
            } else {
                "unknown".into()
            };
            eprintln!(
                "{label}: {position}/{total} rows ({percent:.1}%), {rate:.0} rows/s, ETA {eta}"
            );
        }
    }
}

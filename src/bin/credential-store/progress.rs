//! Progress on stderr: an indicatif bar (rows, rows/s, ETA) on a terminal, plain
//! lines (no escape codes) otherwise, nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
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
        /// The position the last line showed.
        shown: u64,
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
                "{prefix} [{bar:40}] {human_pos}/{human_len} rows, {rate} rows/s, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}", state.per_sec());
                },
            )
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label);
            Progress::Bar(bar)
        } else {
            Progress::Plain {
                label,
                started: Instant::now(),
                last: None,
                shown: 0,
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
                shown,
                position: pos,
                total: tot,
                ..
            } => {
                *pos = position;
                *tot = total;
                if last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) {
                    *last = Some(Instant::now());
                    *shown = position;
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
            // The last state, unless the last line already showed it.
            Progress::Plain {
                last,
                shown,
                position,
                ..
            } if last.is_some() && shown != position => self.print_line(),
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

//! Progress bars on stderr while `feed-sim load` runs: clients connected,
//! then where the run is on its timeline and the current message rate.
//! indicatif draws nothing when stderr is not a terminal, so logs and
//! piped output stay clean; `--no-progress` turns the bars off anyway.
//!
//! The bars are redrawn by `load`'s event loop between reads, about every
//! `PROGRESS_EVERY`, never per message, so they cost the clients nothing.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The two bars of a run.
pub struct Progress {
    multi: MultiProgress,
    clients: ProgressBar,
    timeline: ProgressBar,
}

/// Milliseconds, the unit of the timeline bar's position.
const MS: f64 = 1000.0;

impl Progress {
    /// Bars for `clients` connections and a run of `seconds`; hidden when
    /// `enabled` is false or stderr is not a terminal.
    pub fn new(enabled: bool, clients: usize, seconds: f64) -> Self {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix:>10.bold} [{bar:40.cyan/blue}] {msg}")
            .expect("a valid progress template")
            .progress_chars("=> ");
        let clients_bar = multi.add(ProgressBar::new(clients as u64).with_style(style.clone()));
        clients_bar.set_prefix("connect");
        let timeline = multi.add(ProgressBar::new((seconds * MS) as u64).with_style(style));
        timeline.set_prefix("waiting");
        Progress {
            multi,
            clients: clients_bar,
            timeline,
        }
    }

    /// Shows `connected` of the clients, with `failed` connect failures.
    pub fn clients(&self, connected: usize, failed: usize) {
        self.clients.set_position(connected as u64);
        let total = self.clients.length().unwrap_or(0);
        self.clients.set_message(if failed > 0 {
            format!("{connected}/{total} connected, {failed} failed")
        } else {
            format!("{connected}/{total} connected")
        });
    }

    /// Shows the run `elapsed` seconds into its timeline, in `stage`
    /// (`warm-up`, `measuring`, `draining`), with `detail` after it.
    pub fn timeline(&self, stage: &str, elapsed: f64, detail: &str) {
        let total = self.timeline.length().unwrap_or(0) as f64 / MS;
        self.timeline.set_prefix(stage.to_string());
        self.timeline.set_position((elapsed.min(total) * MS) as u64);
        self.timeline
            .set_message(format!("{elapsed:.1}/{total:.1} s {detail}"));
    }

    /// Removes the bars before the report is printed.
    pub fn finish(&self) {
        self.clients.finish_and_clear();
        self.timeline.finish_and_clear();
        let _ = self.multi.clear();
    }
}

//! Progress of the long steps (package downloads, guest image assembly,
//! bench rounds): an `indicatif` bar on a terminal, plain `xtask: ...` lines
//! on stderr when stderr is not a terminal or `CI` is set (`CI=true`), so a
//! log gets a few readable lines instead of redraws.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::error::Context;
use crate::{Error, Result};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// An `indicatif` bar (or spinner) redrawn in place.
    Bar,
    /// A line now and then (see [`plain_line_due`]).
    Plain,
}

impl Style {
    /// [`Style::Bar`] on a terminal outside CI, else [`Style::Plain`]; `ci`
    /// is the `CI` variable (set to anything but `false`, `0` or nothing
    /// counts as CI).
    pub fn choose(stderr_is_terminal: bool, ci: Option<&str>) -> Self {
        let in_ci = ci.is_some_and(|v| !matches!(v, "" | "0" | "false"));
        if stderr_is_terminal && !in_ci {
            Self::Bar
        } else {
            Self::Plain
        }
    }

    /// The style for this process's stderr and environment.
    pub fn current() -> Self {
        Self::choose(
            std::io::stderr().is_terminal(),
            std::env::var("CI").ok().as_deref(),
        )
    }
}

/// Whether plain progress prints a line on moving from `prev` to `pos` of
/// `total`: when it passes a tenth of the total (every step when there are
/// ten or fewer) and on reaching the end; at every step when the total is
/// unknown (0).
pub fn plain_line_due(prev: u64, pos: u64, total: u64) -> bool {
    if total == 0 {
        return pos > prev;
    }
    pos.min(total) * 10 / total > prev.min(total) * 10 / total
}

/// What a [`Progress`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Items,
    Bytes,
}

/// The progress of one step: `what` (`downloading 120 arm64 packages`) over
/// a known number of items, or a spinner when the number is unknown.
pub struct Progress {
    what: String,
    total: u64,
    pos: u64,
    unit: Unit,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `what` in `total` items, shown in the [`Style::current`] style.
    pub fn new(what: impl Into<String>, total: u64) -> Self {
        Self::with_style(Style::current(), what.into(), Some(total), Unit::Items)
    }

    /// `what` in `total` bytes (see [`Progress::set_position`]).
    pub fn bytes(what: impl Into<String>, total: u64) -> Self {
        Self::with_style(Style::current(), what.into(), Some(total), Unit::Bytes)
    }

    /// `what` in an unknown number of items.
    pub fn spinner(what: impl Into<String>) -> Self {
        Self::with_style(Style::current(), what.into(), None, Unit::Items)
    }

    fn with_style(style: Style, what: String, total: Option<u64>, unit: Unit) -> Self {
        let bar = match style {
            Style::Plain => {
                match (total, unit) {
                    (Some(n), Unit::Bytes) => eprintln!("xtask: {what} ({})", HumanBytes(n)),
                    _ => eprintln!("xtask: {what}"),
                }
                None
            }
            Style::Bar => {
                let (bar, template) = match (total, unit) {
                    (Some(n), Unit::Items) => (
                        ProgressBar::new(n),
                        "xtask: {prefix} [{bar:25}] {pos}/{len} {elapsed} {wide_msg}",
                    ),
                    (Some(n), Unit::Bytes) => (
                        ProgressBar::new(n),
                        "xtask: {prefix} [{bar:25}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}",
                    ),
                    (None, _) => (
                        ProgressBar::new_spinner(),
                        "xtask: {prefix} {spinner} {elapsed} {wide_msg}",
                    ),
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(what.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
        };
        Self {
            what,
            total: total.unwrap_or(0),
            pos: 0,
            unit,
            bar,
        }
    }

    /// Shows what is under way now (on the bar; plain output prints nothing).
    pub fn set_message(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_string());
        }
    }

    /// `pos` bytes (or items) done.
    pub fn set_position(&mut self, pos: u64) {
        let prev = std::mem::replace(&mut self.pos, pos);
        match &self.bar {
            Some(bar) => bar.set_position(pos),
            None if plain_line_due(prev, pos, self.total) => match self.unit {
                Unit::Bytes => eprintln!(
                    "xtask: {}: {} of {}",
                    self.what,
                    HumanBytes(pos),
                    HumanBytes(self.total)
                ),
                Unit::Items => eprintln!("xtask: {}: {pos}/{}", self.what, self.total),
            },
            None => {}
        }
    }

    /// One more item done, `item` naming it.
    pub fn inc(&mut self, item: &str) {
        self.pos += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_message(item.to_string());
                bar.inc(1);
            }
            None if plain_line_due(self.pos - 1, self.pos, self.total) => {
                if self.total == 0 {
                    eprintln!("xtask: {}: {item}", self.what);
                } else {
                    eprintln!("xtask: {}: {}/{} {item}", self.what, self.pos, self.total);
                }
            }
            None => {}
        }
    }

    /// Prints `line` on stderr (above the bar, which stays).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Clears the bar; the caller prints the outcome.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // On an early return (an error), leave the bar where it stopped.
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// Runs `cmd`, handing each line of its standard output to `on_line` as it
/// comes; its standard error is kept for the error when it fails.
pub fn run_lines(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<()> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().context(|| format!("{cmd:?}"))?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    if let Some(out) = child.stdout.take() {
        let mut out = BufReader::new(out);
        let mut line = Vec::new();
        while out.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            on_line(String::from_utf8_lossy(&line).trim_end());
            line.clear();
        }
    }
    let status = child.wait().context(|| format!("{cmd:?}"))?;
    let errors = errors.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!("{cmd:?} failed ({status}): {errors}")))
    }
}

/// Runs `cmd` with its output captured, calling `tick` every `every` while
/// it runs and once after; its standard error is kept for the error when it
/// fails.
pub fn run_polling(cmd: &mut Command, every: Duration, mut tick: impl FnMut()) -> Result<()> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().context(|| format!("{cmd:?}"))?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().context(|| format!("{cmd:?}"))? {
            break status;
        }
        tick();
        std::thread::sleep(every);
    };
    tick();
    let errors = errors.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!("{cmd:?} failed ({status}): {errors}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_outside_ci_gets_a_bar() {
        assert_eq!(Style::choose(true, None), Style::Bar);
        assert_eq!(Style::choose(true, Some("false")), Style::Bar);
    }

    #[test]
    fn ci_true_gets_plain_lines_even_on_a_terminal() {
        assert_eq!(Style::choose(true, Some("true")), Style::Plain);
    }

    #[test]
    fn a_pipe_gets_plain_lines() {
        assert_eq!(Style::choose(false, None), Style::Plain);
    }

    #[test]
    fn plain_lines_come_at_each_tenth_and_at_the_end() {
        let due: Vec<u64> = (1..=120)
            .filter(|p| plain_line_due(p - 1, *p, 120))
            .collect();
        assert_eq!(due, [12, 24, 36, 48, 60, 72, 84, 96, 108, 120]);
    }

    #[test]
    fn plain_lines_come_at_every_step_of_a_short_count() {
        assert!((1..=6).all(|p| plain_line_due(p - 1, p, 6)));
    }

    #[test]
    fn a_jump_over_several_tenths_gives_one_line_and_standing_still_none() {
        assert!(plain_line_due(0, 950, 1000));
        assert!(!plain_line_due(950, 950, 1000));
        assert!(!plain_line_due(950, 990, 1000));
        assert!(plain_line_due(990, 1000, 1000));
    }

    #[test]
    fn polling_ticks_until_the_command_ends() {
        let mut ticks = 0;
        run_polling(
            Command::new("sleep").arg("0.3"),
            Duration::from_millis(50),
            || ticks += 1,
        )
        .expect("sleep runs");
        assert!(ticks >= 3, "{ticks} ticks");
    }

    #[test]
    fn a_failing_polled_command_reports_its_stderr() {
        let e = run_polling(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_millis(10),
            || {},
        )
        .expect_err("fails");
        assert!(e.0.contains("oops"), "{e}");
    }

    #[test]
    fn lines_of_a_command_arrive_in_order() {
        let mut got = Vec::new();
        run_lines(Command::new("sh").args(["-c", "echo a; echo b"]), |l| {
            got.push(l.to_string())
        })
        .expect("sh runs");
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let e = run_lines(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            |_| {},
        )
        .expect_err("fails");
        assert!(e.0.contains("oops"), "{e}");
    }
}

//! Progress of `once`: a bar on a terminal, plain periodic lines otherwise.
//!
//! Role: tell the operator watching a `once` how far it has got (SPEC §9).
//! Inputs: the engine's [`Counters`] (read, never written) and the state
//! store, opened read-only, for the number of objects still pending. Output,
//! on stderr:
//!
//! - stderr is a terminal (and `TERM` is not `dumb`): an `indicatif` bar
//!   redrawn every [`BAR_TICK`]: files hashed out of files found, bytes
//!   hashed, objects delivered, skipped, dead, pending.
//! - otherwise (a pipe, journald, CI): one plain line every
//!   [`DEFAULT_EVERY`], changed by the environment variable [`EVERY_VAR`]
//!   (`MIXPEEK_INGEST_PROGRESS_EVERY=100ms`, a debugging aid):
//!
//!   ```text
//!   progress: 1200 files hashed (340.00 MiB), 118 objects delivered, 2 skipped, 0 dead, 3 pending
//!   ```
//!
//! - in both cases, one summary line at the end:
//!
//!   ```text
//!   once: summary: 1200 files hashed (340.00 MiB), 120 objects delivered, 2 skipped, 0 dead, 0 pending, in 12.3s
//!   ```
//!
//! Invariants:
//! - The reporter spawns nothing: [`Progress::report`] is a future the
//!   caller polls beside `once` on the same task, and it stops when dropped.
//! - While a bar is shown, log lines written through [`LogWriter`] suspend
//!   it (clear, write the line, redraw), so a line never lands inside the
//!   bar. The bar is cleared before the summary and whenever the
//!   [`Progress`] is dropped, so an error printed after a failed `once`
//!   starts on a clean line.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};
use tracing_subscriber::fmt::MakeWriter;

use crate::store::Store;
use crate::telemetry::{Counters, CountersSnapshot};

/// The environment variable that sets how often a plain progress line is
/// printed (a duration such as `100ms` or `1m`).
pub const EVERY_VAR: &str = "MIXPEEK_INGEST_PROGRESS_EVERY";
/// How often a plain progress line is printed by default: often enough to
/// show life in a CI log, rarely enough not to bury the log lines.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);
/// How often the bar is brought up to date.
pub const BAR_TICK: Duration = Duration::from_millis(200);
/// Bar updates between two counts of the pending objects: the count is a
/// query of the store, the rest are atomic loads.
const PENDING_EVERY_TICKS: u32 = 5;
const BAR_TEMPLATE: &str = "{spinner} {elapsed:>4} [{bar:24}] {pos}/{len} files hashed, {wide_msg}";

/// The figures every progress line and the summary show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub files_seen: u64,
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    pub delivered: u64,
    pub skipped: u64,
    pub dead: u64,
    /// Objects in the outbox waiting for delivery; `None` when the store
    /// could not be read.
    pub pending: Option<u64>,
}

impl Figures {
    pub fn new(counters: &CountersSnapshot, pending: Option<u64>) -> Figures {
        Figures {
            files_seen: counters.files_seen,
            files_hashed: counters.files_hashed,
            bytes_hashed: counters.bytes_hashed,
            delivered: counters.objects_delivered,
            skipped: counters.objects_skipped,
            dead: counters.objects_dead,
            pending,
        }
    }

    /// The objects part, shared by the plain line and the bar's message.
    fn objects(&self) -> String {
        let mut text = format!(
            "{} objects delivered, {} skipped, {} dead",
            self.delivered, self.skipped, self.dead
        );
        if let Some(pending) = self.pending {
            text.push_str(&format!(", {pending} pending"));
        }
        text
    }

    /// The bar's message: everything its `pos/len` does not already say.
    fn bar_message(&self) -> String {
        format!("{}, {}", HumanBytes(self.bytes_hashed), self.objects())
    }
}

/// `1200 files hashed (340.00 MiB), 118 objects delivered, 2 skipped, 0 dead, 3 pending`
impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files hashed ({}), {}",
            self.files_hashed,
            HumanBytes(self.bytes_hashed),
            self.objects()
        )
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A bar redrawn in place.
    Bar,
    /// A plain line every `every`.
    Lines { every: Duration },
}

impl Style {
    /// A bar when stderr is a terminal that can redraw a line, plain lines
    /// otherwise, at the interval [`EVERY_VAR`] asks for (a warning and the
    /// default when it cannot be read).
    pub fn detect() -> Style {
        let every = match lines_every(std::env::var(EVERY_VAR).ok().as_deref()) {
            Ok(every) => every,
            Err(err) => {
                warn!(variable = EVERY_VAR, "{err}; using {DEFAULT_EVERY:?}");
                DEFAULT_EVERY
            }
        };
        Style::choose(
            io::stderr().is_terminal(),
            std::env::var("TERM").ok().as_deref(),
            every,
        )
    }

    /// The decision of [`Style::detect`], without the environment.
    pub fn choose(terminal: bool, term: Option<&str>, every: Duration) -> Style {
        if terminal && term != Some("dumb") {
            Style::Bar
        } else {
            Style::Lines { every }
        }
    }
}

/// Why the value of [`EVERY_VAR`] was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("{value:?} is not a duration (e.g. \"10s\", \"100ms\"): {reason}")]
    Unreadable { value: String, reason: String },
    #[error("the interval must be longer than zero")]
    Zero,
}

/// The interval of plain lines for a value of [`EVERY_VAR`]; unset or empty
/// means [`DEFAULT_EVERY`].
pub fn lines_every(value: Option<&str>) -> Result<Duration, IntervalError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_EVERY);
    };
    let every = humantime::parse_duration(value).map_err(|err| IntervalError::Unreadable {
        value: value.to_owned(),
        reason: err.to_string(),
    })?;
    if every.is_zero() {
        return Err(IntervalError::Zero);
    }
    Ok(every)
}

/// The progress display of one `once`.
pub struct Progress {
    counters: Arc<Counters>,
    pending: PendingCount,
    style: Style,
    /// Shown while the bar style is in use; cleared on finish or drop.
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// Starts showing progress in `style`. `state_dir` is the store the
    /// engine writes; it is read for the pending count only, and a store
    /// that cannot be opened only leaves that figure out.
    pub fn start(counters: Arc<Counters>, state_dir: &Path, style: Style) -> Progress {
        let bar = (style == Style::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(bar_style());
            ActiveBar::set(Some(bar.clone()));
            bar
        });
        Progress {
            counters,
            pending: PendingCount::open(state_dir),
            style,
            bar,
            started: Instant::now(),
        }
    }

    /// Shows progress until dropped: poll it beside `once` (it never ends).
    pub async fn report(&self) {
        match (self.style, &self.bar) {
            (Style::Bar, Some(bar)) => self.redraw_bar(bar).await,
            (Style::Lines { every }, _) => self.print_lines(every).await,
            // A bar style always has its bar; nothing to show otherwise.
            (Style::Bar, None) => std::future::pending().await,
        }
    }

    async fn redraw_bar(&self, bar: &ProgressBar) {
        let mut tick = tokio::time::interval(BAR_TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut pending = None;
        let mut ticks: u32 = 0;
        loop {
            tick.tick().await;
            if ticks.is_multiple_of(PENDING_EVERY_TICKS) {
                pending = self.pending.get().await;
            }
            ticks = ticks.wrapping_add(1);
            let figures = Figures::new(&self.counters.snapshot(), pending);
            // Files are found while others are hashed: the length grows.
            bar.set_length(figures.files_seen.max(figures.files_hashed));
            bar.set_message(figures.bar_message());
            bar.set_position(figures.files_hashed);
            bar.tick();
        }
    }

    async fn print_lines(&self, every: Duration) {
        let start = tokio::time::Instant::now() + every;
        let mut tick = tokio::time::interval_at(start, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let figures = Figures::new(&self.counters.snapshot(), self.pending.get().await);
            eprintln!("progress: {figures}");
        }
    }

    /// Clears the bar and prints the summary line, with the figures of the
    /// finished `once`; returns the line.
    pub async fn finish(mut self, counters: &CountersSnapshot) -> String {
        self.clear();
        let figures = Figures::new(counters, self.pending.get().await);
        let line = format!(
            "once: summary: {figures}, in {:.1}s",
            self.started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        line
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            ActiveBar::set(None);
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(BAR_TEMPLATE)
        .expect("the bar template is a valid constant (a unit test parses it)")
        .progress_chars("=> ")
}

/// The number of pending objects, counted on a read-only connection of its
/// own so the engine's store is never held up by the display.
struct PendingCount(Option<Arc<Mutex<Store>>>);

impl PendingCount {
    fn open(state_dir: &Path) -> PendingCount {
        match Store::open_read_only(state_dir) {
            Ok(store) => PendingCount(Some(Arc::new(Mutex::new(store)))),
            Err(err) => {
                debug!(error = %err, "progress shows no pending count");
                PendingCount(None)
            }
        }
    }

    /// The count now, or `None` when it cannot be read. SQLite waits for
    /// the disk, so the query runs on the blocking pool like every other
    /// store access; it is awaited here, never left running.
    async fn get(&self) -> Option<u64> {
        let store = Arc::clone(self.0.as_ref()?);
        let counted = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pending_count()
        })
        .await;
        match counted {
            Ok(Ok(count)) => Some(count),
            Ok(Err(err)) => {
                debug!(error = %err, "cannot count pending objects");
                None
            }
            Err(err) => {
                debug!(error = %err, "cannot count pending objects");
                None
            }
        }
    }
}

/// The bar on screen, if any, for [`LogWriter`] to write around.
struct ActiveBar;

static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

impl ActiveBar {
    fn set(bar: Option<ProgressBar>) {
        *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = bar;
    }

    fn get() -> Option<ProgressBar> {
        ACTIVE_BAR
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where log lines go: stderr, written around the progress bar while one is
/// shown (the bar is cleared, the line written, the bar redrawn), so logs
/// and the bar share the terminal without garbling each other. Without a
/// bar it is plain stderr. Give it to the log subscriber
/// (`fmt().with_writer(LogWriter)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine
    }
}

/// One log event being written (the log formatter writes a whole line at once).
#[derive(Debug)]
pub struct LogLine;

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // Cloned out of the slot's lock: the bar has its own, and a log
        // line must never wait on the slot while the bar draws.
        write_around(ActiveBar::get().as_ref(), buf, &mut io::stderr())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Writes `buf` to `out`, with `bar` (drawn on the same screen) cleared
/// first and redrawn after, so `buf` starts on a line of its own.
fn write_around(bar: Option<&ProgressBar>, buf: &[u8], out: &mut dyn Write) -> io::Result<()> {
    match bar {
        Some(bar) => bar.suspend(|| out.write_all(buf)),
        None => out.write_all(buf),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn figures(pending: Option<u64>) -> Figures {
        Figures {
            files_seen: 1250,
            files_hashed: 1200,
            bytes_hashed: 340 * 1024 * 1024,
            delivered: 118,
            skipped: 2,
            dead: 0,
            pending,
        }
    }

    #[rstest]
    #[case::with_pending(
        Some(3),
        "1200 files hashed (340.00 MiB), 118 objects delivered, 2 skipped, 0 dead, 3 pending"
    )]
    #[case::store_unreadable(
        None,
        "1200 files hashed (340.00 MiB), 118 objects delivered, 2 skipped, 0 dead"
    )]
    fn plain_line(#[case] pending: Option<u64>, #[case] want: &str) {
        assert_eq!(figures(pending).to_string(), want);
    }

    #[test]
    fn bar_message_says_what_the_bar_position_does_not() {
        assert_eq!(
            figures(Some(0)).bar_message(),
            "340.00 MiB, 118 objects delivered, 2 skipped, 0 dead, 0 pending"
        );
    }

    #[test]
    fn figures_take_the_counters_they_show() {
        // Built through the atomics, so counters added later change nothing here.
        let counters = Counters::default();
        for (counter, n) in [
            (&counters.files_seen, 1),
            (&counters.files_skipped, 2),
            (&counters.files_hashed, 3),
            (&counters.bytes_hashed, 4),
            (&counters.objects_enqueued, 5),
            (&counters.objects_delivered, 6),
            (&counters.objects_skipped, 7),
            (&counters.objects_dead, 8),
            (&counters.requests, 9),
            (&counters.retries, 10),
        ] {
            Counters::add(counter, n);
        }
        assert_eq!(
            Figures::new(&counters.snapshot(), Some(11)),
            Figures {
                files_seen: 1,
                files_hashed: 3,
                bytes_hashed: 4,
                delivered: 6,
                skipped: 7,
                dead: 8,
                pending: Some(11),
            }
        );
    }

    #[rstest]
    #[case::unset(None, Ok(DEFAULT_EVERY))]
    #[case::empty(Some(" "), Ok(DEFAULT_EVERY))]
    #[case::millis(Some("100ms"), Ok(Duration::from_millis(100)))]
    #[case::minutes(Some("1m"), Ok(Duration::from_secs(60)))]
    #[case::zero(Some("0s"), Err(IntervalError::Zero))]
    fn interval_values(#[case] value: Option<&str>, #[case] want: Result<Duration, IntervalError>) {
        assert_eq!(lines_every(value), want);
    }

    #[test]
    fn an_unreadable_interval_names_the_value() {
        let err = lines_every(Some("often")).unwrap_err();
        assert!(matches!(err, IntervalError::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains("\"often\""), "{err}");
    }

    #[rstest]
    #[case::terminal(true, Some("xterm-256color"), true)]
    #[case::terminal_without_term(true, None, true)]
    #[case::dumb_terminal(true, Some("dumb"), false)]
    #[case::pipe(false, Some("xterm"), false)]
    fn bar_only_on_a_terminal_that_redraws(
        #[case] terminal: bool,
        #[case] term: Option<&str>,
        #[case] bar: bool,
    ) {
        let every = Duration::from_secs(3);
        let want = if bar {
            Style::Bar
        } else {
            Style::Lines { every }
        };
        assert_eq!(Style::choose(terminal, term, every), want);
    }

    #[test]
    fn the_bar_template_parses() {
        ProgressStyle::with_template(BAR_TEMPLATE).unwrap();
    }

    #[tokio::test]
    async fn lines_style_counts_pending_objects_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        // A store that exists but is empty: zero pending, not unknown.
        drop(Store::open(dir.path()).unwrap());
        let progress = Progress::start(
            Arc::new(Counters::default()),
            dir.path(),
            Style::Lines {
                every: DEFAULT_EVERY,
            },
        );
        assert_eq!(progress.pending.get().await, Some(0));
        let line = progress.finish(&Counters::default().snapshot()).await;
        assert!(
            line.starts_with(
                "once: summary: 0 files hashed (0 B), 0 objects delivered, 0 skipped, 0 dead, 0 pending, in "
            ),
            "{line}"
        );
    }

    /// A terminal reduced to what a one-line bar and log lines need: rows
    /// of text and a cursor row; text goes at the end of the cursor's row.
    #[derive(Debug, Default)]
    struct Rows {
        rows: Vec<String>,
        at: usize,
    }

    impl Rows {
        fn put(&mut self, text: &str) {
            for (i, part) in text.split('\n').enumerate() {
                if i > 0 {
                    self.at += 1;
                }
                if self.rows.len() <= self.at {
                    self.rows.resize(self.at + 1, String::new());
                }
                self.rows[self.at].push_str(part);
            }
        }
    }

    /// One screen shared by the bar's draw target and the log output.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Rows>>);

    impl Screen {
        fn rows(&self) -> Vec<String> {
            self.0.lock().unwrap().rows.clone()
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            let mut rows = self.0.lock().unwrap();
            rows.at = rows.at.saturating_sub(n);
            Ok(())
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            self.0.lock().unwrap().at += n;
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.0.lock().unwrap().put(&format!("{s}\n"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.0.lock().unwrap().put(s);
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            let mut rows = self.0.lock().unwrap();
            let at = rows.at;
            if let Some(row) = rows.rows.get_mut(at) {
                row.clear();
            }
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().put(&String::from_utf8_lossy(buf));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[rstest]
    #[case::around_the_bar(true)]
    #[case::no_bar(false)]
    fn a_log_line_gets_a_row_of_its_own_and_the_bar_stays_last(#[case] with_bar: bool) {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            Some(3),
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_style(bar_style());
        bar.set_message("0 B, 0 objects delivered");
        bar.set_position(1);
        bar.tick();
        let line = "2026-01-01T00:00:00Z  INFO delivered key_prefix=/a\n";
        write_around(
            with_bar.then_some(&bar),
            line.as_bytes(),
            &mut screen.clone(),
        )
        .unwrap();
        bar.tick();
        let rows = screen.rows();
        if with_bar {
            assert_eq!(rows.len(), 2, "{rows:#?}");
            assert_eq!(rows[0], line.trim_end(), "{rows:#?}");
            assert!(rows[1].contains("1/3 files hashed"), "{rows:#?}");
        } else {
            // What happens to a line written past the bar: it is glued to
            // the bar's text. This is what `write_around` prevents.
            assert!(rows[0].contains("files hashed"), "{rows:#?}");
            assert!(rows[0].ends_with(line.trim_end()), "{rows:#?}");
        }
    }

    #[test]
    fn a_bar_is_registered_for_the_log_while_shown() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::start(Arc::new(Counters::default()), dir.path(), Style::Bar);
        assert!(ActiveBar::get().is_some());
        drop(progress);
        assert!(
            ActiveBar::get().is_none(),
            "dropping the display frees the log"
        );
    }
}

//! The demo's live view on stderr: a bar per play (playhead, rendition, buffer, bytes by
//! source, protocol) and a line of totals.

use std::io::IsTerminal as _;
use std::time::Duration;

use chorus_client::{BySource, Summary};
use chorus_core::TrackId;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::{Played, shares};

/// How often the live view is redrawn.
pub(super) const REDRAW: Duration = Duration::from_millis(200);

/// The live view on stderr: a bar per play and a line of totals. Without a terminal it
/// prints one line per finished play instead.
pub(super) struct View {
    bars: MultiProgress,
    total: ProgressBar,
    plays: std::sync::Mutex<Vec<BySource>>,
}

impl View {
    pub(super) fn new() -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bars = MultiProgress::with_draw_target(target);
        let total = bars.add(ProgressBar::new_spinner());
        total.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        Self { bars, total, plays: std::sync::Mutex::new(Vec::new()) }
    }

    /// A line above the bars (or on stderr without a terminal).
    pub(super) fn say(&self, line: String) {
        if self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }

    pub(super) fn track(&self, track: &TrackId, duration: Duration) -> ProgressBar {
        let bar = self.bars.insert_before(&self.total, ProgressBar::new(duration.as_millis() as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>16} {bar:24} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(track.to_string());
        bar
    }

    pub(super) fn update(
        &self,
        bar: &ProgressBar,
        st: &Summary,
        played: Duration,
        duration: Duration,
        rendition: &str,
    ) {
        bar.set_position(played.as_millis() as u64);
        bar.set_message(format!(
            "{}/{} {rendition:>7} buffer {:>4.1} s | edge {} peer {} cache {} | {}",
            clock(played),
            clock(duration),
            st.buffer_ms as f64 / 1000.0,
            HumanBytes(st.bytes_by_source.edge),
            HumanBytes(st.bytes_by_source.peer),
            HumanBytes(st.bytes_by_source.cache),
            st.protocol,
        ));
    }

    pub(super) fn played(&self, bar: &ProgressBar, p: &Played) {
        let s = &p.summary;
        let by = p.by_source();
        let fetched = |pre: &&Summary| pre.bytes_by_source.edge + pre.bytes_by_source.peer > 0;
        let pre = p.preload.as_ref().filter(fetched).map_or(String::new(), |pre| {
            format!(
                " (its start preloaded: peer {}, edge {})",
                HumanBytes(pre.bytes_by_source.peer),
                HumanBytes(pre.bytes_by_source.edge)
            )
        });
        let line = format!(
            "played {}: {} {}, startup {} ms, {} stalls, {} peers, over {}; {}{pre}",
            s.track_id,
            s.rendition,
            HumanBytes(s.bytes_total),
            s.startup_ms,
            s.stalls,
            s.peers,
            s.protocol,
            shares(&by)
        );
        bar.finish_and_clear();
        self.bars.remove(bar);
        self.say(line);
        let mut plays = self.plays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        plays.push(by);
        let mut all = BySource::default();
        for b in plays.iter() {
            all.edge += b.edge;
            all.peer += b.peer;
            all.cache += b.cache;
        }
        self.total.set_message(format!("{} plays so far: {}", plays.len(), shares(&all)));
    }

    pub(super) fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.bars.clear();
    }
}

/// `m:ss`.
pub(super) fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

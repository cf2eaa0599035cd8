//! The reload report as one self-contained HTML page: inline CSS and SVG, no external resource,
//! readable from a file without a server. Each client gets a timeline: its volume's rotations as
//! dashed lines, each token it presented as a bar (green while it was current, orange once it had
//! been replaced), and its recent uses as dots.
//!
//! A short script at the end measures the drawn timelines and records what it found on the page
//! (`data-timelines-rendered` on `<body>`): it changes nothing visible, and lets a test ask a real
//! browser whether the timelines rendered.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};

use super::bounds::BrokenBound;
use super::{ClientReport, ReloadReport, Timeline};
use crate::apiserver::usage::{Classification, RecentUse, TokenSpan};

/// SVG geometry, in user units (the SVG scales to the page width).
const WIDTH: f64 = 1000.0;
const LEFT: f64 = 96.0;
const RIGHT: f64 = 24.0;
const ROTATION_LANE: f64 = 26.0;
const TOKEN_LANE: f64 = 24.0;
const BAR_HEIGHT: f64 = 12.0;
const AXIS: f64 = 30.0;
/// A token used once is still drawn this wide.
const MIN_BAR_WIDTH: f64 = 2.0;
/// Tick spacings, in seconds, from which the axis takes the first that gives at most 10 ticks.
const TICK_STEPS: [f64; 17] = [
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
    3600.0, 7200.0,
];
/// Characters of a jti shown in labels: enough to tell tokens apart.
const JTI_SHOWN: usize = 8;

const STYLE: &str = r#"
:root { --ok: #2e7d32; --late: #e65100; --rotation: #1565c0; --stale: #f9a825; --expired: #b71c1c;
        --ink: #1d2330; --muted: #5d6472; --line: #d9dde5; --card: #ffffff; --page: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; background: var(--page); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0; font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; word-break: break-all; }
header, section { max-width: 1180px; margin: 0 auto 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; }
.verdict { display: inline-block; font-weight: 600; padding: 2px 10px; border-radius: 12px; font-size: 13px; }
.pass { background: #e3f3e4; color: var(--ok); }
.fail { background: #fde7e1; color: #c62828; }
.meta { color: var(--muted); margin: 4px 0 0; }
.meta code, td code { font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
a { color: var(--rotation); text-decoration: none; }
a:hover { text-decoration: underline; }
.client-head { display: flex; gap: 12px; align-items: center; justify-content: space-between; }
.who { color: var(--muted); margin: 4px 0 10px; }
.stats { display: flex; flex-wrap: wrap; gap: 6px 22px; margin: 0 0 10px; }
.stats div { display: flex; flex-direction: column; }
.stats dt { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.stats dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
.stats dd.bad { color: #c62828; }
.advice { background: #fff8e1; border-left: 4px solid var(--stale); padding: 8px 12px; margin: 0 0 12px; }
.broken { color: #c62828; margin: 0 0 8px; }
svg.timeline { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
svg .lane-label { fill: var(--ink); font-weight: 600; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .rotation line { stroke: var(--rotation); stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .rotation path { fill: var(--rotation); }
svg .token .current { fill: var(--ok); }
svg .token .replaced { fill: var(--late); }
svg .use { stroke: #fff; stroke-width: 1; }
svg .use.valid, svg .use.no_warn_after, svg .use.legacy { fill: #1b5e20; }
svg .use.superseded { fill: #bf360c; }
svg .use.stale { fill: var(--stale); }
svg .use.expired, svg .use.rejected { fill: var(--expired); }
.legend { display: flex; flex-wrap: wrap; gap: 8px 20px; color: var(--muted); font-size: 12px; margin-top: 6px; }
.legend span::before { content: ""; display: inline-block; width: 14px; height: 10px; margin-right: 6px; vertical-align: -1px; border-radius: 2px; background: var(--c); }
.legend .dashed::before { height: 0; border-top: 2px dashed var(--c); background: none; }
.legend .dot::before { width: 9px; height: 9px; border-radius: 50%; }
.empty { color: var(--muted); font-style: italic; }
.nothing { color: #c62828; font-weight: 600; margin: 0 0 8px; }
.nothing.allowed { color: var(--muted); }
.checks { margin: 0; padding-left: 20px; }
"#;

/// Counts the timelines a browser actually laid out (non-zero size, with bars) and writes the
/// count to `<body data-timelines-rendered>`; per timeline, the bars and rotation lines drawn.
const SELF_CHECK: &str = r#"
(function () {
  var drawn = 0;
  document.querySelectorAll("svg.timeline").forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var visible = function (selector, needWidth) {
      var n = 0;
      svg.querySelectorAll(selector).forEach(function (el) {
        var b = el.getBoundingClientRect();
        if (b.height > 0 && (!needWidth || b.width > 0)) { n++; }
      });
      return n;
    };
    var bars = visible(".token", true);
    var rotations = visible(".rotation line", false);
    svg.setAttribute("data-rendered-bars", String(bars));
    svg.setAttribute("data-rendered-rotations", String(rotations));
    if (box.width > 0 && box.height > 0 && bars > 0) { drawn++; }
  });
  document.body.setAttribute("data-timelines-rendered", String(drawn));
})();
"#;

/// The whole page.
pub fn render(report: &ReloadReport) -> String {
    let mut page = String::with_capacity(16 * 1024 + report.clients.len() * 8 * 1024);
    let verdict = verdict_badge(report.within_bounds);
    let offenders = report.clients.iter().filter(|c| !c.within_bounds).count();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Token reload report: {}</title>\n<style>{STYLE}</style>\n</head>\n\
         <body data-clients=\"{}\">\n",
        if report.within_bounds { "pass" } else { "fail" },
        report.clients.len()
    );
    let _ = write!(
        page,
        "<header class=\"card\">\n<h1>Token reload report {verdict}</h1>\n\
         <p class=\"meta\">{} of {} clients within bounds: at most {} stale uses, {} rejected \
         uses and a reload delay of at most {} each.</p>\n\
         <p class=\"meta\">Generated {} from <code>{}</code>: {} rotations, {} token uses \
         ({} stale, {} of replaced tokens, {} rejected{}).</p>\n</header>\n",
        report.clients.len() - offenders,
        report.clients.len(),
        report.max_stale_uses,
        report.max_rejected_uses,
        seconds(report.max_reload_delay_seconds),
        escape(&clock_time(report.generated_at, true)),
        escape(&report.server),
        report.totals.rotations,
        report.totals.counts.uses,
        report.totals.counts.stale,
        report.totals.counts.superseded,
        report.totals.counts.rejected.total(),
        match report.totals.unattributed_rejections {
            0 => String::new(),
            n => format!("; {n} refused tokens the emulator did not sign"),
        },
    );
    summary_table(&mut page, report);
    for (index, client) in report.clients.iter().enumerate() {
        client_section(&mut page, index, client);
    }
    page.push_str(
        "<section class=\"legend\" aria-label=\"legend\">\
         <span style=\"--c: var(--ok)\">token in use while current</span>\
         <span style=\"--c: var(--late)\">token used after its replacement was written</span>\
         <span class=\"dashed\" style=\"--c: var(--rotation)\">rotation (new token written)</span>\
         <span class=\"dot\" style=\"--c: #1b5e20\">recent use</span>\
         <span class=\"dot\" style=\"--c: var(--stale)\">stale use (after warnafter)</span>\
         <span class=\"dot\" style=\"--c: var(--expired)\">rejected token (expired, unknown key, invalidated)</span>\
         </section>\n",
    );
    let _ = write!(page, "<script>{SELF_CHECK}</script>\n</body>\n</html>\n");
    page
}

fn verdict_badge(within_bounds: bool) -> &'static str {
    if within_bounds {
        "<span class=\"verdict pass\">PASS</span>"
    } else {
        "<span class=\"verdict fail\">FAIL</span>"
    }
}

fn summary_table(page: &mut String, report: &ReloadReport) {
    page.push_str("<section class=\"card\">\n");
    if report.clients.is_empty() {
        match &report.nothing_observed {
            Some(nothing) => {
                let _ = writeln!(
                    page,
                    "<p class=\"nothing{}\">{}.</p>\n<p>Check:</p>\n<ul class=\"checks\">",
                    if nothing.allowed { " allowed" } else { "" },
                    escape(&nothing.message)
                );
                for check in &nothing.checks {
                    let _ = writeln!(page, "<li>{}</li>", escape(check));
                }
                page.push_str("</ul>\n");
            }
            None => page.push_str(
                "<p class=\"empty\">No client used a service account token of this emulator.</p>\n",
            ),
        }
        page.push_str("</section>\n");
        return;
    }
    page.push_str(
        "<table>\n<thead><tr><th>client</th><th>pod</th><th>user agent</th>\
         <th class=\"num\">uses</th><th class=\"num\">tokens</th><th class=\"num\">reloads</th>\
         <th class=\"num\">median delay</th><th class=\"num\">worst delay</th>\
         <th class=\"num\">stale</th><th class=\"num\">after replacement</th>\
         <th class=\"num\">rejected</th><th>verdict</th>\
         </tr></thead>\n<tbody>\n",
    );
    for (index, client) in report.clients.iter().enumerate() {
        let _ = writeln!(
            page,
            "<tr><td><a href=\"#client-{index}\"><code>{}</code></a></td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&client.subject),
            escape(client.pod.as_deref().unwrap_or("-")),
            escape(client.user_agent.as_deref().unwrap_or("-")),
            client.uses.uses,
            client.distinct_tokens,
            client.reloads,
            optional_seconds(client.median_reload_delay_seconds),
            worst_delay(client),
            client.uses.stale,
            client.uses.superseded,
            client.rejected_uses,
            verdict_badge(client.within_bounds),
        );
    }
    page.push_str("</tbody>\n</table>\n</section>\n");
}

fn client_section(page: &mut String, index: usize, client: &ClientReport) {
    let _ = write!(
        page,
        "<section class=\"card client\" id=\"client-{index}\">\n\
         <div class=\"client-head\"><h2>{}</h2>{}</div>\n\
         <p class=\"who\">pod <b>{}</b> in <b>{}</b> · user agent <b>{}</b></p>\n",
        escape(&client.subject),
        verdict_badge(client.within_bounds),
        escape(client.pod.as_deref().unwrap_or("-")),
        escape(&client.namespace),
        escape(client.user_agent.as_deref().unwrap_or("-")),
    );
    let broke_delay = client
        .broken
        .iter()
        .any(|b| matches!(b, BrokenBound::ReloadDelay { .. }));
    let broke_stale = client
        .broken
        .iter()
        .any(|b| matches!(b, BrokenBound::StaleUses { .. }));
    let broke_rejected = client
        .broken
        .iter()
        .any(|b| matches!(b, BrokenBound::RejectedUses { .. }));
    page.push_str("<dl class=\"stats\">");
    let rejected = match client.rejected_uses {
        0 => "0".to_owned(),
        _ => escape(&client.uses.rejected.describe()),
    };
    let stats: [(&str, String, bool); 9] = [
        ("uses", client.uses.uses.to_string(), false),
        ("tokens", client.distinct_tokens.to_string(), false),
        ("reloads", client.reloads.to_string(), false),
        (
            "median reload delay",
            optional_seconds(client.median_reload_delay_seconds),
            false,
        ),
        ("worst reload delay", worst_delay(client), broke_delay),
        ("stale uses", client.uses.stale.to_string(), broke_stale),
        (
            "uses after replacement",
            client.uses.superseded.to_string(),
            client.uses.superseded > 0,
        ),
        (
            "expired uses",
            client.uses.expired.to_string(),
            client.uses.expired > 0,
        ),
        (
            "rejected uses",
            rejected,
            broke_rejected || client.rejected_uses > 0,
        ),
    ];
    for (label, value, bad) in stats {
        let class = if bad { " class=\"bad\"" } else { "" };
        let _ = write!(page, "<div><dt>{label}</dt><dd{class}>{value}</dd></div>");
    }
    page.push_str("</dl>\n");
    for bound in &client.broken {
        let text = match bound {
            BrokenBound::StaleUses { uses, allowed } => {
                format!("{uses} stale uses, {allowed} allowed")
            }
            BrokenBound::ReloadDelay {
                worst_seconds,
                allowed_seconds,
            } => format!(
                "used a replaced token {} after its replacement; {} allowed",
                seconds(*worst_seconds),
                seconds(*allowed_seconds)
            ),
            BrokenBound::RejectedUses {
                uses,
                allowed,
                reasons,
            } => format!(
                "{uses} rejected uses ({}), {allowed} allowed",
                reasons.describe()
            ),
        };
        let _ = writeln!(
            page,
            "<p class=\"broken\">Broke the bound: {}.</p>",
            escape(&text)
        );
    }
    if let Some(advice) = &client.advice {
        let _ = writeln!(
            page,
            "<p class=\"advice\"><b>Advice:</b> {}.</p>",
            escape(advice.message())
        );
    }
    timeline(page, client);
    page.push_str("</section>\n");
}

/// Maps times in the window to x coordinates.
struct Scale {
    start: Timestamp,
    span_seconds: f64,
}

impl Scale {
    fn new(timeline: &Timeline) -> Self {
        let span = timeline.end.duration_since(timeline.start).as_secs_f64();
        Self {
            start: timeline.start,
            // A window of one instant is drawn one second wide.
            span_seconds: if span > 0.0 { span } else { 1.0 },
        }
    }

    fn offset(&self, at: Timestamp) -> f64 {
        at.duration_since(self.start).as_secs_f64()
    }

    fn x(&self, at: Timestamp) -> f64 {
        self.x_of_offset(self.offset(at))
    }

    fn x_of_offset(&self, seconds: f64) -> f64 {
        let fraction = (seconds / self.span_seconds).clamp(0.0, 1.0);
        LEFT + fraction * (WIDTH - LEFT - RIGHT)
    }
}

/// Lanes for the token bars: a token goes to the first lane free since before its first use, so
/// tokens used one after the other share a lane and overlapping ones (two threads) stack.
fn token_lanes(tokens: &[TokenSpan]) -> (Vec<usize>, usize) {
    let mut lane_ends: Vec<Timestamp> = Vec::new();
    let mut lanes = Vec::with_capacity(tokens.len());
    for span in tokens {
        let end = span.last_use;
        match lane_ends
            .iter()
            .position(|lane_end| *lane_end < span.first_use)
        {
            Some(lane) => {
                lane_ends[lane] = end;
                lanes.push(lane);
            }
            None => {
                lane_ends.push(end);
                lanes.push(lane_ends.len() - 1);
            }
        }
    }
    let count = lane_ends.len().max(1);
    (lanes, count)
}

fn timeline(page: &mut String, client: &ClientReport) {
    let timeline = &client.timeline;
    if timeline.tokens.is_empty() {
        page.push_str("<p class=\"empty\">No token with a jti was presented.</p>\n");
        return;
    }
    let scale = Scale::new(timeline);
    let (lanes, lane_count) = token_lanes(&timeline.tokens);
    let tokens_top = ROTATION_LANE;
    let tokens_bottom = tokens_top + TOKEN_LANE * lane_count as f64;
    let height = tokens_bottom + AXIS;
    let lane_y = |lane: usize| tokens_top + TOKEN_LANE * lane as f64 + TOKEN_LANE / 2.0;
    let _ = writeln!(
        page,
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"timeline of {} rotations and {} tokens\">",
        timeline.rotations.len(),
        timeline.tokens.len()
    );
    let _ = writeln!(
        page,
        "<text class=\"lane-label\" x=\"8\" y=\"17\">rotations</text>\
         <text class=\"lane-label\" x=\"8\" y=\"{:.1}\">tokens</text>",
        lane_y(0) + 4.0
    );
    axis(page, &scale, tokens_top, tokens_bottom);
    for (span, lane) in timeline.tokens.iter().zip(&lanes) {
        token_bar(page, &scale, span, lane_y(*lane));
    }
    for token_use in &timeline.recent_uses {
        let lane = token_use
            .jti
            .as_ref()
            .and_then(|jti| timeline.tokens.iter().position(|span| &span.jti == jti))
            .map_or(0, |index| lanes[index]);
        use_dot(page, &scale, token_use, lane_y(lane));
    }
    for mark in &timeline.rotations {
        let x = scale.x(mark.at);
        let _ = writeln!(
            page,
            "<g class=\"rotation\"><line x1=\"{x:.1}\" y1=\"18\" x2=\"{x:.1}\" y2=\"{tokens_bottom:.1}\"/>\
             <path d=\"M{:.1} 8 h10 l-5 8 z\"/><title>rotation at {} ({}/{}): token {} replaced by {}</title></g>",
            x - 5.0,
            escape(&clock_time(mark.at, false)),
            escape(&mark.volume),
            escape(&mark.path),
            escape(short_jti(&mark.old_jti)),
            escape(mark.new_jti.as_deref().map_or("-", short_jti)),
        );
    }
    page.push_str("</svg>\n");
}

fn axis(page: &mut String, scale: &Scale, top: f64, bottom: f64) {
    let step = TICK_STEPS
        .iter()
        .copied()
        .find(|step| scale.span_seconds / step <= 10.0)
        .unwrap_or_else(|| (scale.span_seconds / 10.0).ceil());
    let label_y = bottom + 18.0;
    let _ = writeln!(
        page,
        "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{bottom:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\"/>",
        WIDTH - RIGHT,
    );
    let mut tick = 0.0;
    while tick <= scale.span_seconds + 1e-9 {
        let x = scale.x_of_offset(tick);
        // The first tick says when the window starts; the others how long after.
        let (label, anchor) = if tick == 0.0 {
            (format!("{} UTC", scale.start.strftime("%H:%M:%S")), "start")
        } else {
            (format!("+{}", tick_label(tick)), "middle")
        };
        let _ = writeln!(
            page,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text x=\"{x:.1}\" y=\"{label_y:.1}\" text-anchor=\"{anchor}\">{}</text>",
            bottom + 4.0,
            escape(&label)
        );
        tick += step;
    }
}

fn token_bar(page: &mut String, scale: &Scale, span: &TokenSpan, y: f64) {
    let start = scale.x(span.first_use);
    let end = scale.x(span.last_use).max(start + MIN_BAR_WIDTH);
    let top = y - BAR_HEIGHT / 2.0;
    // The part after the replacement, if the client went on using it.
    let replaced_from = span
        .superseded_at
        .filter(|at| *at < span.last_use)
        .map(|at| scale.x(at).max(start));
    let current_end = replaced_from.unwrap_or(end);
    let mut title = format!(
        "token {} used {} times, {} to {}",
        short_jti(&span.jti),
        span.counts.uses,
        clock_time(span.first_use, false),
        clock_time(span.last_use, false)
    );
    match (span.superseded_at, span.reload_delay_seconds) {
        (Some(at), Some(delay)) if delay > 0.0 => {
            let _ = write!(
                title,
                "; replaced at {}, used {} more times until {} after that",
                clock_time(at, false),
                span.counts.superseded,
                seconds(delay)
            );
        }
        (Some(at), _) => {
            let _ = write!(
                title,
                "; replaced at {}, not used after that",
                clock_time(at, false)
            );
        }
        (None, _) => title.push_str("; still current"),
    }
    let _ = write!(page, "<g class=\"token\"><title>{}</title>", escape(&title));
    if current_end > start {
        let _ = write!(
            page,
            "<rect class=\"current\" x=\"{start:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{BAR_HEIGHT}\" rx=\"2\"/>",
            current_end - start
        );
    }
    if let Some(from) = replaced_from {
        let _ = write!(
            page,
            "<rect class=\"replaced\" x=\"{from:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{BAR_HEIGHT}\" rx=\"2\"/>",
            (end - from).max(MIN_BAR_WIDTH)
        );
    }
    page.push_str("</g>\n");
}

fn use_dot(page: &mut String, scale: &Scale, token_use: &RecentUse, y: f64) {
    let class = if token_use.expired {
        "expired"
    } else if token_use.rejected.is_some() {
        "rejected"
    } else {
        match token_use.classification {
            Classification::Stale { .. } => "stale",
            _ if token_use.superseded_after_seconds.is_some() => "superseded",
            Classification::Legacy => "legacy",
            Classification::NoWarnAfter => "no_warn_after",
            Classification::Valid => "valid",
        }
    };
    let mut title = format!(
        "use at {} with token {}",
        clock_time(token_use.at, false),
        token_use.jti.as_deref().map_or("-", short_jti)
    );
    if let Some(late) = token_use.superseded_after_seconds {
        let _ = write!(title, ", {} after its replacement", seconds(late));
    }
    if let Classification::Stale {
        seconds_after_warning,
    } = token_use.classification
    {
        let _ = write!(title, ", stale ({seconds_after_warning}s after warnafter)");
    }
    match token_use.rejected {
        Some(reason) => {
            let _ = write!(title, ", rejected: {}", reason.describe());
        }
        None if token_use.expired => title.push_str(", expired: rejected"),
        None => {}
    }
    let _ = writeln!(
        page,
        "<circle class=\"use {class}\" cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3.5\"><title>{}</title></circle>",
        scale.x(token_use.at),
        escape(&title)
    );
}

/// `10:31:05.123`, with the date too when asked.
fn clock_time(at: Timestamp, with_date: bool) -> String {
    let format = if with_date {
        "%Y-%m-%d %H:%M:%S UTC"
    } else {
        "%H:%M:%S%.3f"
    };
    at.strftime(format).to_string()
}

fn short_jti(jti: &str) -> &str {
    jti.char_indices()
        .nth(JTI_SHOWN)
        .map_or(jti, |(index, _)| &jti[..index])
}

/// `+0s`, `+2.5s`, `+30s`, `+2m`, `+1h`.
fn tick_label(offset: f64) -> String {
    let rounded = (offset * 10.0).round() / 10.0;
    if rounded >= 3600.0 && (rounded % 3600.0).abs() < 1e-6 {
        format!("{}h", rounded / 3600.0)
    } else if rounded >= 60.0 && (rounded % 60.0).abs() < 1e-6 {
        format!("{}m", rounded / 60.0)
    } else {
        seconds(rounded)
    }
}

/// `5s`, `1.5s`, `0.25s`: at most millisecond precision.
fn seconds(value: f64) -> String {
    let duration = SignedDuration::from_secs_f64(value.max(0.0));
    let millis = duration.as_millis();
    let text = format!("{}.{:03}", millis / 1000, millis % 1000);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}s")
}

fn optional_seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), seconds)
}

/// The worst delay: none recorded while replaced tokens exist means every reload was on time.
fn worst_delay(client: &ClientReport) -> String {
    match (
        client.worst_reload_delay_seconds,
        client.median_reload_delay_seconds,
    ) {
        (None, Some(_)) => seconds(0.0),
        (worst, _) => optional_seconds(worst),
    }
}

/// Text for HTML content and attribute values. User agents and names come from clients, so
/// everything that is not our own markup goes through here.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, client, mark, span};
    use super::*;
    use crate::apiserver::usage::{UsageReport, UsageTotals};
    use crate::report::bounds::CheckBounds;
    use crate::report::Origin;

    fn report_of(clients: Vec<crate::apiserver::usage::ClientUsage>) -> ReloadReport {
        let usage = UsageReport {
            generated_at: at(60),
            clients,
            totals: UsageTotals::default(),
        };
        let bounds = CheckBounds::strict(SignedDuration::from_secs(1));
        ReloadReport::new(&usage, &bounds, &Origin::server("https://127.0.0.1:6443"))
    }

    #[test]
    fn one_timeline_per_client_with_its_rotations_and_tokens() {
        let reloading = client(
            vec![
                span("aaaaaaaa-1", 0, 9, Some(10)),
                span("bbbbbbbb-2", 10, 20, None),
            ],
            vec![mark(10, "aaaaaaaa-1", "bbbbbbbb-2")],
        );
        let read_once = crate::apiserver::usage::ClientUsage {
            user_agent: Some("read-once".to_owned()),
            ..client(
                vec![span("aaaaaaaa-1", 0, 30, Some(10))],
                vec![
                    mark(10, "aaaaaaaa-1", "bbbbbbbb-2"),
                    mark(20, "bbbbbbbb-2", "c"),
                ],
            )
        };
        let page = render(&report_of(vec![reloading, read_once]));
        assert_eq!(page.matches("<svg class=\"timeline\"").count(), 2);
        assert_eq!(page.matches("<g class=\"rotation\">").count(), 3);
        assert_eq!(page.matches("<g class=\"token\">").count(), 3);
        // Only the read-once client's token has a replaced part.
        assert_eq!(page.matches("<rect class=\"replaced\"").count(), 1);
        assert!(page.contains("Token reload report <span class=\"verdict fail\">FAIL</span>"));
        assert!(page.contains("<b>Advice:</b> it never moved to a newer token"));
        assert!(page.contains("replaced by bbbbbbbb"));
        // Self-contained: no external resource of any kind.
        for external in ["src=", "href=\"http", "url(", "@import"] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn client_text_is_escaped() {
        let hostile = crate::apiserver::usage::ClientUsage {
            user_agent: Some("<script>alert(\"x\")</script>&'".to_owned()),
            ..client(vec![span("j", 0, 1, None)], vec![])
        };
        let page = render(&report_of(vec![hostile]));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
    }

    #[test]
    fn no_clients_is_a_fail_that_says_what_to_check() {
        let page = render(&report_of(vec![]));
        assert!(page.contains("no client used a service account token"));
        assert!(page.contains("data-clients=\"0\""));
        assert!(page.contains("Token reload report <span class=\"verdict fail\">FAIL</span>"));
        assert!(!page.contains("verdict pass"));
        assert!(page.contains("KUBERNETES_SERVICE_HOST=127.0.0.1"), "{page}");
        assert!(page.contains("--allow-no-clients"));
    }

    #[test]
    fn rejected_uses_are_shown_with_their_reasons() {
        let mut dropped = client(vec![span("j", 0, 1, None)], vec![]);
        dropped.counts.rejected.unknown_key = 80;
        dropped.recent_uses = vec![RecentUse {
            at: at(1),
            jti: Some("j".to_owned()),
            classification: Classification::Valid,
            superseded_after_seconds: None,
            expired: false,
            rejected: Some(crate::apiserver::usage::Rejection::UnknownKey),
        }];
        let page = render(&report_of(vec![dropped]));
        assert!(page.contains("<dt>rejected uses</dt><dd class=\"bad\">80 unknown key</dd>"));
        assert!(page.contains("Broke the bound: 80 rejected uses (80 unknown key), 0 allowed."));
        assert!(page.contains("<circle class=\"use rejected\""));
        assert!(page.contains("rejected: unknown key"));
        assert!(page.contains("<td class=\"num\">80</td>"));
    }

    #[test]
    fn overlapping_tokens_stack_and_sequential_ones_share_a_lane() {
        let tokens = [
            span("a", 0, 10, None),
            span("b", 11, 20, None),
            span("c", 15, 30, None),
            span("d", 31, 40, None),
        ];
        assert_eq!(token_lanes(&tokens), (vec![0, 0, 1, 0], 2));
        assert_eq!(token_lanes(&[]), (vec![], 1));
    }

    #[test]
    fn labels() {
        assert_eq!(tick_label(0.0), "0s");
        assert_eq!(tick_label(2.5), "2.5s");
        assert_eq!(tick_label(120.0), "2m");
        assert_eq!(tick_label(90.0), "90s");
        assert_eq!(tick_label(7200.0), "2h");
        assert_eq!(short_jti("0123456789"), "01234567");
        assert_eq!(short_jti("abc"), "abc");
        assert_eq!(clock_time(at(0), false), "22:13:20.000");
        assert_eq!(seconds(0.25), "0.25s");
        assert_eq!(seconds(5.0), "5s");
    }
}

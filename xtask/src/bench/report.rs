//! The bench's outputs: the table (Markdown, and as printed), the JSON
//! file, the SVG chart of the ratios (plotters' SVG backend), the machine
//! description, and the README section between [`README_BEGIN`] and
//! [`README_END`].

use std::path::Path;
use std::process::Command;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use super::stats::{Row, Target};
use crate::{Error, Result};

/// The README's generated section starts after this line ...
pub const README_BEGIN: &str = "<!-- bench:begin -->";
/// ... and ends before this one.
pub const README_END: &str = "<!-- bench:end -->";
/// The same for the `--scaling` table.
pub const SCALING_BEGIN: &str = "<!-- bench-scaling:begin -->";
/// End of the `--scaling` section.
pub const SCALING_END: &str = "<!-- bench-scaling:end -->";
/// Where the chart is committed, relative to the workspace root (the README
/// shows it).
pub const CHART: &str = "docs/bench.svg";

/// What the figures were measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// Online CPUs of the host.
    pub cores: usize,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// The first line of `qemu-system-aarch64 --version`.
    pub qemu: String,
    /// The day, UTC (`date -u +%F`).
    pub date: String,
}

/// The `model name` of the first CPU in /proc/cpuinfo's text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// The number of `processor` entries in /proc/cpuinfo's text.
pub fn cpu_count(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count()
}

impl Machine {
    /// This host.
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let first_line = |cmd: &mut Command| {
            cmd.output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "unknown".into())
        };
        Machine {
            cores: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or_else(|_| cpu_count(&cpuinfo)),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".into()),
            qemu: first_line(Command::new("qemu-system-aarch64").arg("--version")),
            date: first_line(Command::new("date").args(["-u", "+%F"])),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {}, TCG",
            self.cores, self.cpu_model, self.qemu
        )
    }
}

/// A figure with as many decimals as its size deserves.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `✓`, `✗`, or nothing without a target.
fn verdict(r: &Row) -> &'static str {
    match r.within_target() {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "",
    }
}

/// The rows as a Markdown table: median (min–max) per arrangement, the
/// ratio, the target and whether it is met.
pub fn markdown(rows: &[Row]) -> String {
    let cell = |s: &Option<super::stats::Summary>| {
        s.as_ref().map_or("-".to_string(), |s| {
            format!(
                "{} ({}–{})",
                fmt_value(s.median),
                fmt_value(s.min),
                fmt_value(s.max)
            )
        })
    };
    let mut out = String::from(
        "| metric | unit | direct: median (min–max) | hypervisor: median (min–max) | ratio hyp/direct | target | |\n\
         |---|---|---:|---:|---:|---:|:-:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.unit,
            cell(&r.direct),
            cell(&r.hypervisor),
            r.ratio.map_or("-".to_string(), |x| format!("{x:.2}")),
            r.target.map_or("-".to_string(), |t| t.to_string()),
            verdict(r),
        ));
    }
    out
}

/// The whole report as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report<'a> {
    /// The host.
    pub machine: &'a Machine,
    /// Boots per arrangement.
    pub runs: usize,
    /// What the rows are, in words.
    pub notes: &'a [String],
    /// The figures.
    pub metrics: &'a [Row],
}

/// [`Report`] as pretty JSON.
pub fn json(report: &Report<'_>) -> Result<String> {
    serde_json::to_string_pretty(report).map_err(|e| Error(format!("bench.json: {e}")))
}

/// A horizontal bar per row with a ratio, from parity (1.0) to the ratio on
/// a log scale, green when within its target, red when not, grey without
/// one; the target as a black tick. SVG text.
pub fn chart(rows: &[Row], title: &str) -> Result<String> {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.ratio.is_some()).collect();
    let n = rows.len().max(1);
    let mut lo = 1.0f64;
    let mut hi = 1.0f64;
    for r in &rows {
        for v in r.ratio.into_iter().chain(r.target.map(|t| match t {
            Target::AtMost(v) | Target::AtLeast(v) => v,
        })) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    // Room for the figures beyond the bars.
    let (lo, hi) = (lo / 1.6, hi * 1.6);
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let mut svg = String::new();
    {
        let height = 90 + 26 * n as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| Error(format!("chart: {e}"));
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(330)
            .build_cartesian_2d(
                (lo..hi).log_scale().base(2.0),
                (0..n as i32).into_segmented(),
            )
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .disable_y_mesh()
            .x_desc(
                "ratio hypervisor / direct (medians), log scale; bar: green within its target (tick), red outside, grey no target",
            )
            .x_labels(12)
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| names.get(n.checked_sub(1 + i)?))
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(|x| e(&x))?;
        for (k, r) in rows.iter().enumerate() {
            // The first row at the top.
            let (i, ratio) = ((n - 1 - k) as i32, r.ratio.unwrap_or(1.0));
            let colour = match r.within_target() {
                Some(true) => RGBColor(46, 139, 87),
                Some(false) => RGBColor(200, 50, 50),
                None => RGBColor(150, 150, 150),
            };
            let mut bar = Rectangle::new(
                [
                    (1.0, SegmentValue::Exact(i)),
                    (ratio, SegmentValue::Exact(i + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            c.draw_series(std::iter::once(bar)).map_err(|x| e(&x))?;
            // The figure beyond the bar's end, on whichever side it grows.
            let (at, h) = if ratio >= 1.0 {
                (ratio * 1.02, HPos::Left)
            } else {
                (ratio / 1.02, HPos::Right)
            };
            let style =
                TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(h, VPos::Center));
            c.draw_series(std::iter::once(Text::new(
                format!("{ratio:.2}"),
                (at, SegmentValue::CenterOf(i)),
                style,
            )))
            .map_err(|x| e(&x))?;
            if let Some(Target::AtMost(t) | Target::AtLeast(t)) = r.target {
                c.draw_series(std::iter::once(PathElement::new(
                    vec![(t, SegmentValue::Exact(i)), (t, SegmentValue::Exact(i + 1))],
                    BLACK.stroke_width(2),
                )))
                .map_err(|x| e(&x))?;
            }
        }
        c.draw_series(std::iter::once(PathElement::new(
            vec![
                (1.0, SegmentValue::Exact(0)),
                (1.0, SegmentValue::Exact(n as i32)),
            ],
            BLACK.stroke_width(1),
        )))
        .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// `text` with the lines between `begin` and `end` replaced by `body`; an
/// error when the markers are missing or out of order.
pub fn replace_section(text: &str, begin: &str, end: &str, body: &str) -> Result<String> {
    let b = text
        .find(begin)
        .ok_or_else(|| Error(format!("no {begin} marker")))?;
    let after_begin = b + begin.len();
    let e = text[after_begin..]
        .find(end)
        .map(|i| after_begin + i)
        .ok_or_else(|| Error(format!("no {end} marker after {begin}")))?;
    let body = body.trim_matches('\n');
    Ok(format!("{}\n{body}\n{}", &text[..after_begin], &text[e..]))
}

/// Rewrites the section of the file at `path` between `begin` and `end`.
pub fn update_file_section(path: &Path, begin: &str, end: &str, body: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error(format!("{}: {e}", path.display())))?;
    let new = replace_section(&text, begin, end, body)
        .map_err(|e| Error(format!("{}: {e}", path.display())))?;
    if new != text {
        std::fs::write(path, new).map_err(|e| Error(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::stats::{Better, RatioThresholds};
    use super::*;

    fn rows() -> Vec<Row> {
        let t = RatioThresholds::parse("[max]\nboot = 1.10\n[min]\ntcp = 0.95\n").expect("valid");
        vec![
            Row::new(
                ("boot", "boot to init", "s", Better::Lower),
                &[2.0, 3.0, 2.5],
                &[3.0],
                &t,
            ),
            Row::new(
                ("tcp", "TCP", "Mbit/s", Better::Higher),
                &[100.0],
                &[99.0],
                &t,
            ),
            Row::new(("hvc", "hvc", "ns", Better::Lower), &[], &[800.0], &t),
        ]
    }

    #[test]
    fn cpu_model_and_count_come_from_cpuinfo() {
        let c =
            "processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n";
        assert_eq!(cpu_model(c).as_deref(), Some("AMD EPYC"));
        assert_eq!(cpu_count(c), 2);
    }

    #[test]
    fn values_get_decimals_by_size() {
        assert_eq!(fmt_value(1234.56), "1235");
        assert_eq!(fmt_value(12.345), "12.3");
        assert_eq!(fmt_value(1.2345), "1.23");
        assert_eq!(fmt_value(0.01234), "0.012");
    }

    #[test]
    fn markdown_rows_show_median_range_ratio_and_verdict() {
        let md = markdown(&rows());
        assert!(
            md.contains(
                "| boot to init | s | 2.50 (2.00–3.00) | 3.00 (3.00–3.00) | 1.20 | ≤ 1.10 | ✗ |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| TCP | Mbit/s | 100 (100–100) | 99.0 (99.0–99.0) | 0.99 | ≥ 0.95 | ✓ |"),
            "{md}"
        );
        assert!(
            md.contains("| hvc | ns | - | 800 (800–800) | - | - |  |"),
            "{md}"
        );
    }

    #[test]
    fn json_names_every_metric_with_its_ratio_and_target() {
        let m = Machine {
            cores: 2,
            cpu_model: "cpu".into(),
            qemu: "QEMU 10".into(),
            date: "2026-01-01".into(),
        };
        let rows = rows();
        let j = json(&Report {
            machine: &m,
            runs: 3,
            notes: &[],
            metrics: &rows,
        })
        .expect("json");
        let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
        assert_eq!(v["metrics"][0]["id"], "boot");
        assert_eq!(v["metrics"][0]["ratio"], 1.2);
        assert_eq!(v["metrics"][0]["target"]["op"], "<=");
        assert_eq!(v["metrics"][0]["within_target"], false);
        assert_eq!(v["metrics"][1]["better"], "higher");
        assert_eq!(v["machine"]["cores"], 2);
    }

    #[test]
    fn the_chart_is_svg_with_one_label_per_measured_ratio() {
        let svg = chart(&rows(), "t").expect("chart");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("boot to init") && svg.contains("TCP"));
        // hvc has no ratio: no bar, no label.
        assert!(!svg.contains(">hvc<"));
    }

    #[test]
    fn a_section_between_markers_is_replaced_and_the_rest_kept() {
        let t = "head\n<!-- b -->\nold\n<!-- e -->\ntail\n";
        assert_eq!(
            replace_section(t, "<!-- b -->", "<!-- e -->", "\nnew\n").expect("markers"),
            "head\n<!-- b -->\nnew\n<!-- e -->\ntail\n"
        );
    }

    #[test]
    fn a_missing_or_misordered_marker_is_an_error() {
        assert!(
            replace_section("x <!-- e --> <!-- b -->", "<!-- b -->", "<!-- e -->", "y").is_err()
        );
        assert!(replace_section("x", "<!-- b -->", "<!-- e -->", "y").is_err());
    }
}

//! Samples to figures: median, minimum and maximum per arrangement, the
//! ratio hypervisor / direct of the medians, and its check against the
//! targets of [`RATIO_THRESHOLDS`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{paths, Error, Result};

/// The checked-in targets of the ratio hypervisor / direct, relative to the
/// workspace root.
pub const RATIO_THRESHOLDS: &str = "bench/ratio-thresholds.toml";

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Times, latencies: the ratio's target is a maximum.
    Lower,
    /// Throughput, IOPS: the ratio's target is a minimum.
    Higher,
}

/// Median, minimum and maximum of one arrangement's samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The median (the mean of the two middle samples for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// The samples, in the order they were taken.
    pub samples: Vec<f64>,
}

impl Summary {
    /// `None` without samples; NaNs are not samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        let median = median(&mut v)?;
        Some(Summary {
            median,
            min: v[0],
            max: v[v.len() - 1],
            samples: samples.to_vec(),
        })
    }
}

/// The median of `v` (`None` if empty); sorts `v`.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `hypervisor / direct`, `None` when either is missing or direct is not
/// above zero.
pub fn ratio(direct: Option<f64>, hypervisor: Option<f64>) -> Option<f64> {
    match (direct, hypervisor) {
        (Some(d), Some(h)) if d > 0.0 => Some(h / d),
        _ => None,
    }
}

/// A target for a ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "op", content = "value")]
pub enum Target {
    /// The ratio must be at most this.
    #[serde(rename = "<=")]
    AtMost(f64),
    /// The ratio must be at least this.
    #[serde(rename = ">=")]
    AtLeast(f64),
}

impl Target {
    /// Whether `ratio` meets the target.
    pub fn met_by(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(t) => ratio <= t,
            Target::AtLeast(t) => ratio >= t,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtMost(t) => write!(f, "≤ {t:.2}"),
            Target::AtLeast(t) => write!(f, "≥ {t:.2}"),
        }
    }
}

/// [`RATIO_THRESHOLDS`]: the ratio hypervisor / direct of the medians,
/// `max` for metrics where lower is better, `min` where higher is.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RatioThresholds {
    /// Upper limits, by metric id.
    #[serde(default)]
    pub max: BTreeMap<String, f64>,
    /// Lower limits, by metric id.
    #[serde(default)]
    pub min: BTreeMap<String, f64>,
}

impl RatioThresholds {
    /// Parses the file's text; a metric with both limits is refused.
    pub fn parse(text: &str) -> Result<Self> {
        let t: RatioThresholds =
            toml::from_str(text).map_err(|e| Error(format!("{RATIO_THRESHOLDS}: {e}")))?;
        if let Some(k) = t.max.keys().find(|k| t.min.contains_key(*k)) {
            return Err(Error(format!(
                "{RATIO_THRESHOLDS}: {k} has both a max and a min"
            )));
        }
        Ok(t)
    }

    /// Reads [`RATIO_THRESHOLDS`] from the workspace.
    pub fn load() -> Result<Self> {
        let path = paths::workspace_root().join(RATIO_THRESHOLDS);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// The target of metric `id`, if any.
    pub fn target(&self, id: &str) -> Option<Target> {
        self.max
            .get(id)
            .map(|t| Target::AtMost(*t))
            .or_else(|| self.min.get(id).map(|t| Target::AtLeast(*t)))
    }

    /// Every metric id the file names.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.max.keys().chain(self.min.keys())
    }
}

/// One metric's figures in both arrangements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Stable identifier (the thresholds file's key).
    pub id: String,
    /// What is measured, for people.
    pub name: String,
    /// Unit of the figures.
    pub unit: String,
    /// Which way is better.
    pub better: Better,
    /// Directly on QEMU.
    pub direct: Option<Summary>,
    /// Under the hypervisor.
    pub hypervisor: Option<Summary>,
    /// Hypervisor median / direct median.
    pub ratio: Option<f64>,
    /// The target of the ratio, if any.
    pub target: Option<Target>,
    /// `true` within the target, `false` outside it or not measured, `None`
    /// without a target.
    pub within_target: Option<bool>,
}

impl Row {
    /// The row of a metric from both arrangements' samples.
    pub fn new(
        (id, name, unit, better): (&str, &str, &str, Better),
        direct: &[f64],
        hypervisor: &[f64],
        thresholds: &RatioThresholds,
    ) -> Row {
        let direct = Summary::of(direct);
        let hypervisor = Summary::of(hypervisor);
        let ratio = ratio(
            direct.as_ref().map(|s| s.median),
            hypervisor.as_ref().map(|s| s.median),
        );
        let target = thresholds.target(id);
        Row {
            id: id.to_string(),
            name: name.to_string(),
            unit: unit.to_string(),
            better,
            ratio,
            direct,
            hypervisor,
            target,
            within_target: target.map(|t| ratio.is_some_and(|r| t.met_by(r))),
        }
    }

    /// `Some(true)` within the target, `Some(false)` outside it or not
    /// measured, `None` without a target.
    pub fn within_target(&self) -> Option<bool> {
        self.within_target
    }

    /// Why the row fails its target, if it does.
    pub fn violation(&self) -> Option<String> {
        let t = self.target?;
        match self.ratio {
            None => Some(format!("{}: not measured (target {t})", self.name)),
            Some(r) if !t.met_by(r) => Some(format!("{}: ratio {r:.2}, target {t}", self.name)),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: (&str, &str, &str, Better) = ("boot", "boot", "s", Better::Lower);
    const RATE: (&str, &str, &str, Better) = ("tcp", "tcp", "Mbit/s", Better::Higher);

    fn thresholds() -> RatioThresholds {
        RatioThresholds::parse("[max]\nboot = 1.10\n[min]\ntcp = 0.95\n").expect("valid")
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn summary_gives_median_min_max_and_keeps_sample_order() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.samples, [3.0, 1.0, 2.0]);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn ratio_is_hypervisor_over_direct_of_the_medians() {
        let r = Row::new(TIME, &[2.0, 2.2, 1.8], &[3.0, 2.0, 4.0], &thresholds());
        assert_eq!(r.ratio, Some(1.5));
        assert_eq!(ratio(Some(0.0), Some(1.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }

    #[test]
    fn a_time_ratio_above_its_maximum_misses_the_target() {
        let r = Row::new(TIME, &[1.0], &[1.11], &thresholds());
        assert_eq!(r.within_target(), Some(false));
        assert!(r.violation().expect("violation").contains("1.11"));
        let r = Row::new(TIME, &[1.0], &[1.10], &thresholds());
        assert_eq!((r.within_target(), r.violation()), (Some(true), None));
    }

    #[test]
    fn a_throughput_ratio_below_its_minimum_misses_the_target() {
        let r = Row::new(RATE, &[100.0], &[94.0], &thresholds());
        assert_eq!(r.within_target(), Some(false));
        let r = Row::new(RATE, &[100.0], &[96.0], &thresholds());
        assert_eq!(r.within_target(), Some(true));
    }

    #[test]
    fn a_metric_with_a_target_but_no_figures_fails_it() {
        let r = Row::new(RATE, &[100.0], &[], &thresholds());
        assert_eq!(r.within_target(), Some(false));
        assert!(r.violation().expect("violation").contains("not measured"));
    }

    #[test]
    fn a_metric_without_target_never_fails() {
        let r = Row::new(
            ("x", "x", "ns", Better::Lower),
            &[1.0],
            &[9.0],
            &thresholds(),
        );
        assert_eq!((r.within_target(), r.violation()), (None, None));
    }

    #[test]
    fn a_metric_with_both_limits_is_refused() {
        assert!(RatioThresholds::parse("[max]\na = 1.0\n[min]\na = 0.9\n").is_err());
        assert!(RatioThresholds::parse("[maxx]\n").is_err());
    }
}

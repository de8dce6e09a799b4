//! The fault plugin's configuration: the authored model (serde) and what
//! [`Config::compile`] makes of it — a status and a [`Chance`] for the abort, a `Duration` and
//! a `Chance` for the delay, the trigger header in lower case.
//!
//! ```yaml
//! abort: {status: 503, percent: 10}      # percent: 0..=100, decimals allowed; default 100
//! delay: {duration: 300ms, percent: 50}  # duration: a number with ms, s or m; default 100 %
//! headerTrigger: x-fault                 # optional: only requests with this header
//! ```

use std::cell::Cell;
use std::time::Duration;

use serde::Deserialize;
use weft_sdk::Counter;

/// The plugin's configuration as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Answer some requests with a status instead of sending them upstream.
    #[serde(default)]
    pub abort: Option<AbortSpec>,
    /// Hold some requests for a while before they go on.
    #[serde(default)]
    pub delay: Option<DelaySpec>,
    /// Only requests carrying this header (any value) are eligible for a fault.
    #[serde(default)]
    pub header_trigger: Option<String>,
    /// What the plugin runs with, made by [`Config::compile`].
    #[serde(skip)]
    pub faults: Faults,
}

/// `abort`: the status and the share of requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AbortSpec {
    /// The status answered, 200..=599.
    pub status: u16,
    /// The percentage of eligible requests aborted (default 100).
    #[serde(default = "all")]
    pub percent: f64,
}

/// `delay`: the duration and the share of requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DelaySpec {
    /// How long a delayed request is held: `100ms`, `2s`, `1.5s`, `1m`.
    pub duration: String,
    /// The percentage of eligible requests delayed (default 100).
    #[serde(default = "all")]
    pub percent: f64,
}

fn all() -> f64 {
    100.0
}

/// The compiled faults.
#[derive(Debug, Default)]
pub struct Faults {
    /// The abort's status and chance.
    pub abort: Option<(u16, Chance)>,
    /// The delay's duration and chance.
    pub delay: Option<(Duration, Chance)>,
    /// The trigger header, lower case.
    pub trigger: Option<Box<str>>,
    /// The counters (aborts, delays), once defined.
    pub(crate) counters: Cell<Option<(Counter, Counter)>>,
}

/// How often a fault is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chance {
    /// 0 %: no draw.
    Never,
    /// 100 %: no draw.
    Always,
    /// When a random `u64` is below this.
    Below(u64),
}

impl Chance {
    /// The chance of `percent` (checked to be in 0..=100).
    fn of(percent: f64, field: &str) -> Result<Chance, String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!(
                "{field}.percent: {percent} is not between 0 and 100"
            ));
        }
        Ok(if percent == 0.0 {
            Chance::Never
        } else if percent == 100.0 {
            Chance::Always
        } else {
            // 2^64 * percent / 100; below 2^64 since percent < 100 (the cast saturates).
            Chance::Below((percent / 100.0 * 18_446_744_073_709_551_616.0) as u64)
        })
    }

    /// Draws: whether the fault happens this time.
    pub fn draw(self) -> bool {
        match self {
            Chance::Never => false,
            Chance::Always => true,
            Chance::Below(threshold) => weft_sdk::random_u64() < threshold,
        }
    }
}

impl Config {
    /// Checks the configuration and compiles it into [`Config::faults`].
    pub fn compile(&mut self) -> Result<(), String> {
        if self.abort.is_none() && self.delay.is_none() {
            return Err("set `abort`, `delay` or both".into());
        }
        let abort = match &self.abort {
            None => None,
            Some(spec) => {
                if !(200..=599).contains(&spec.status) {
                    return Err(format!(
                        "abort.status: {} is not a status in 200..=599",
                        spec.status
                    ));
                }
                Some((spec.status, Chance::of(spec.percent, "abort")?))
            }
        };
        let delay = match &self.delay {
            None => None,
            Some(spec) => {
                let duration =
                    parse_duration(&spec.duration).map_err(|e| format!("delay.duration: {e}"))?;
                Some((duration, Chance::of(spec.percent, "delay")?))
            }
        };
        let trigger = match &self.header_trigger {
            None => None,
            Some(name) if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) => {
                return Err(format!("headerTrigger: `{name}` is not a header name"));
            }
            Some(name) => Some(name.to_ascii_lowercase().into_boxed_str()),
        };
        self.faults = Faults {
            abort,
            delay,
            trigger,
            counters: Cell::new(None),
        };
        Ok(())
    }
}

/// Parses `100ms`, `2s`, `1.5s`, `1m`: a non-negative decimal number and a unit (`ms`, `s`,
/// `m`). Zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let unit_at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` needs a unit: ms, s or m"))?;
    let (number, unit) = text.split_at(unit_at);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number with a unit (like 100ms, 2s, 1m)"))?;
    let nanos_per_unit = match unit {
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    // Exact for whole numbers of nanoseconds up to 2^53 (104 days); never NaN (digits only).
    let nanos = (number * nanos_per_unit).round();
    if nanos >= 18_446_744_073_709_551_616.0 {
        return Err(format!("`{text}` is too long"));
    }
    let duration = Duration::from_nanos(nanos as u64);
    if duration.is_zero() {
        return Err(format!("`{text}` must be more than 0"));
    }
    Ok(duration)
}

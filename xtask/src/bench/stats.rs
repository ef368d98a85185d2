//! Median and spread of repeated measurements: the machine is shared and noisy, so every figure
//! is a median over interleaved rounds, shown with its range.

use serde_json::{Value, json};

/// Median, minimum and maximum of a series (NaN-free).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    pub fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "n": self.n})
    }

    /// `12.3 [11.9–12.8]` with `digits` decimals, or just the value for one round.
    pub fn show(&self, digits: usize) -> String {
        self.show_unit(digits, "")
    }

    /// As `show`, with `unit` after the median: `1.06x [1.03–1.15]`.
    pub fn show_unit(&self, digits: usize, unit: &str) -> String {
        if self.n == 1 || self.min == self.max {
            format!("{:.*}{unit}", digits, self.median)
        } else {
            format!(
                "{:.*}{unit} [{:.*}–{:.*}]",
                digits, self.median, digits, self.min, digits, self.max
            )
        }
    }
}

/// `a / b`, or NaN when `b` is zero (dropped by `Spread::of`).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_and_even() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn empty_and_nan_are_dropped() {
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
        assert_eq!(Spread::of(&[f64::NAN, 5.0]).unwrap().n, 1);
        assert!(ratio(1.0, 0.0).is_nan());
    }

    #[test]
    fn shown_with_range() {
        let s = Spread::of(&[0.98, 0.99, 1.0]).unwrap();
        assert_eq!(s.show(2), "0.99 [0.98–1.00]");
        assert_eq!(Spread::of(&[7.0]).unwrap().show(1), "7.0");
    }
}

//! The latency histogram as HdrHistogram's percentile-distribution text,
//! the `.hgrm` format written by `--hgrm FILE`: the layout of Java's
//! `AbstractHistogram.outputPercentileDistribution` (which the C library's
//! `hdr_percentiles_print` and HdrHistogram's online plotter follow), so
//! runs can be compared with the usual HdrHistogram tools.
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!       11.295 0.500000000000     502263           2.00
//!       …
//!       52.703 1.000000000000    1004512
//! #[Mean    =       11.541, StdDeviation   =        5.127]
//! #[Max     =       52.703, Total count    =      1004512]
//! #[Buckets =           22, SubBuckets     =         2048]
//! ```

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Rows per halving of the distance to 100%, as in HdrHistogram's own
/// tools (`percentileTicksPerHalfDistance`).
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Divides the histogram's microseconds into the file's milliseconds
/// (`outputValueUnitScalingRatio`).
pub const MICROS_PER_MILLI: f64 = 1000.0;

/// One row of the percentile distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// Highest value equivalent to the recorded ones at this row, in the
    /// histogram's unit.
    pub value: u64,
    /// The percentile level iterated to, as a fraction (0.5 is the median).
    pub quantile: f64,
    /// Values recorded up to and including `value`.
    pub total_count: u64,
}

/// The rows HdrHistogram's percentile iterator visits: from 0% in steps
/// that halve with each halving of the distance to 100%
/// (`ticks_per_half_distance` per halving), ending with one row at 100%.
pub fn percentile_rows(histogram: &Histogram<u64>, ticks_per_half_distance: u32) -> Vec<Row> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut total_count = 0;
    histogram
        .iter_quantiles(ticks_per_half_distance)
        .map(|v| {
            total_count += v.count_since_last_iteration();
            Row {
                value: v.value_iterated_to(),
                quantile: v.quantile_iterated_to(),
                total_count,
            }
        })
        .collect()
}

/// The histogram's percentile distribution in `.hgrm` text, values
/// divided by `value_unit_scaling` (1000 turns µs into ms).
pub fn percentile_distribution(
    histogram: &Histogram<u64>,
    ticks_per_half_distance: u32,
    value_unit_scaling: f64,
) -> String {
    let digits = usize::from(histogram.sigfig());
    let scaled = |v: f64| v / value_unit_scaling;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for row in percentile_rows(histogram, ticks_per_half_distance) {
        let value = scaled(row.value as f64);
        if row.quantile < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.digits$} {:2.12} {:10} {:14.2}",
                row.quantile,
                row.total_count,
                1.0 / (1.0 - row.quantile)
            );
        } else {
            // The last row, at 100%, has no finite 1/(1-Percentile).
            let _ = writeln!(
                out,
                "{value:12.digits$} {:2.12} {:10}",
                row.quantile, row.total_count
            );
        }
    }
    let (mean, stdev, max) = if histogram.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            scaled(histogram.mean()),
            scaled(histogram.stdev()),
            scaled(histogram.max() as f64),
        )
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_bucket_count(histogram.sigfig())
    );
    out
}

/// Sub-buckets per bucket for `sigfig` significant digits: the power of two
/// that holds 2 × 10^sigfig values at unit resolution (2048 for 3 digits),
/// computed as HdrHistogram does since the Rust crate does not expose it.
fn sub_bucket_count(sigfig: u8) -> u64 {
    let single_unit_resolution = 2 * 10u64.pow(u32::from(sigfig));
    single_unit_resolution.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram<u64> {
        Histogram::new_with_max(3_600_000_000, 3).unwrap()
    }

    #[test]
    fn matches_the_layout_of_hdrhistograms_own_output() {
        let mut h = histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let text = percentile_distribution(&h, TICKS_PER_HALF_DISTANCE, MICROS_PER_MILLI);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // The first row is the lowest value at percentile 0.
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        // Ten rows per halving: 0, 0.1, …, 0.5, then 0.55, 0.6, … up to 0.75.
        assert_eq!(
            lines[7],
            "       5.003 0.500000000000       5003           2.00"
        );
        assert_eq!(
            lines[8],
            "       5.503 0.550000000000       5503           2.22"
        );
        let last = lines[lines.len() - 4];
        assert_eq!(last, "      10.007 1.000000000000      10000");
        assert_eq!(
            lines[lines.len() - 3],
            "#[Mean    =        5.001, StdDeviation   =        2.887]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =       10.007, Total count    =        10000]"
        );
        assert_eq!(
            lines[lines.len() - 1],
            format!(
                "#[Buckets = {:12}, SubBuckets     =         2048]",
                h.buckets()
            )
        );
        // Percentiles and counts never go down.
        let rows = percentile_rows(&h, TICKS_PER_HALF_DISTANCE);
        assert!(rows
            .windows(2)
            .all(|w| w[0].quantile <= w[1].quantile && w[0].total_count <= w[1].total_count));
        assert_eq!(rows.last().unwrap().total_count, 10_000);
    }

    #[test]
    fn each_halving_of_the_distance_to_100_percent_gets_five_rows() {
        let mut h = histogram();
        for v in 1..=1_000_000u64 {
            h.record(v).unwrap();
        }
        let rows = percentile_rows(&h, TICKS_PER_HALF_DISTANCE);
        for halving in 1..=10 {
            let from = 1.0 - 0.5f64.powi(halving);
            let to = 1.0 - 0.5f64.powi(halving + 1);
            let inside = rows
                .iter()
                .filter(|r| r.quantile >= from - 1e-12 && r.quantile < to - 1e-12)
                .count();
            assert_eq!(inside, 5, "between {from} and {to}");
        }
    }

    #[test]
    fn an_empty_histogram_has_a_header_and_a_footer() {
        let text = percentile_distribution(&histogram(), 5, MICROS_PER_MILLI);
        assert_eq!(text.lines().count(), 5);
        assert!(text.contains("Total count    =            0]"));
    }

    #[test]
    fn sub_buckets_follow_the_significant_digits() {
        assert_eq!(sub_bucket_count(1), 32);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(3), 2048);
    }
}

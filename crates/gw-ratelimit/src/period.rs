//! Calendar periods in UTC, for quotas: hour, day, week (Monday 00:00), month.

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

/// A quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Clock hours.
    Hour,
    /// UTC days.
    Day,
    /// ISO weeks, from Monday 00:00 UTC.
    Week,
    /// Calendar months.
    Month,
}

impl Period {
    /// The period containing `now_ms`: `(start_ms, end_ms)`.
    pub fn bounds(self, now_ms: u64) -> (u64, u64) {
        match self {
            Period::Hour => {
                let s = now_ms - now_ms % HOUR;
                (s, s + HOUR)
            }
            Period::Day => {
                let s = now_ms - now_ms % DAY;
                (s, s + DAY)
            }
            Period::Week => {
                let days = now_ms / DAY;
                // 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) % 7.
                let s = (days - (days + 3) % 7) * DAY;
                (s, s + 7 * DAY)
            }
            Period::Month => {
                let days = (now_ms / DAY) as i64;
                let (y, m, _) = civil_from_days(days);
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1);
                (start as u64 * DAY, end as u64 * DAY)
            }
        }
    }

    /// Name used in headers and logs.
    pub fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

pub use gw_core::calendar::{civil_from_days, days_from_civil};

/// `YYYY-MM-DD` of a day number.
pub fn date_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32, h: u64) -> u64 {
        days_from_civil(y, m, d) as u64 * DAY + h * HOUR
    }

    #[test]
    fn calendar_round_trip() {
        for days in [-1000, 0, 59, 60, 11_016, 20_000, 20_513, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(days_from_civil(2024, 2, 29)), "2024-02-29");
    }

    #[test]
    fn month_bounds() {
        let (s, e) = Period::Month.bounds(ms(2026, 1, 31, 23));
        assert_eq!((s, e), (ms(2026, 1, 1, 0), ms(2026, 2, 1, 0)));
        let (s, e) = Period::Month.bounds(ms(2024, 2, 15, 3));
        assert_eq!((s, e), (ms(2024, 2, 1, 0), ms(2024, 3, 1, 0)));
        let (s, e) = Period::Month.bounds(ms(2026, 12, 31, 23));
        assert_eq!((s, e), (ms(2026, 12, 1, 0), ms(2027, 1, 1, 0)));
    }

    #[test]
    fn week_starts_monday() {
        // 2026-11-26 is a Thursday; its week starts Monday 2026-11-23.
        let (s, e) = Period::Week.bounds(ms(2026, 11, 26, 12));
        assert_eq!((s, e), (ms(2026, 11, 23, 0), ms(2026, 11, 30, 0)));
        assert_eq!(Period::Day.bounds(ms(2026, 11, 26, 12)), (ms(2026, 11, 26, 0), ms(2026, 11, 27, 0)));
        assert_eq!(Period::Hour.bounds(ms(2026, 11, 26, 12) + 5), (ms(2026, 11, 26, 12), ms(2026, 11, 26, 13)));
    }
}

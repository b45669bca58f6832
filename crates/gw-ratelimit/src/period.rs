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

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31) (proleptic Gregorian; H. Hinnant's
/// algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) -> days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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

//! Time helpers shared by every stage: event times are Unix nanoseconds.

/// Formats Unix nanoseconds as RFC 3339 UTC with second precision.
pub fn rfc3339(unix_nanos: u64) -> String {
    let seconds = unix_nanos / 1_000_000_000;
    let days = (seconds / 86_400) as i64;
    let in_day = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60
    )
}

/// When something happened relative to an incident's onset, as every text
/// says it: "4 min before onset", "at onset", "20 s after onset".
/// `before_secs` is positive before the onset.
pub fn relative_to_onset(before_secs: f64) -> String {
    let span = |secs: f64| {
        if secs >= 90.0 {
            format!("{:.0} min", secs / 60.0)
        } else {
            format!("{secs:.0} s")
        }
    };
    if before_secs.abs() < 1.0 || !before_secs.is_finite() {
        "at onset".to_owned()
    } else if before_secs > 0.0 {
        format!("{} before onset", span(before_secs))
    } else {
        format!("{} after onset", span(-before_secs))
    }
}

#[cfg(test)]
mod onset_tests {
    use super::relative_to_onset;

    #[test]
    fn one_wording_on_both_sides_of_the_onset() {
        assert_eq!(relative_to_onset(0.4), "at onset");
        assert_eq!(relative_to_onset(-0.4), "at onset");
        assert_eq!(relative_to_onset(45.0), "45 s before onset");
        assert_eq!(relative_to_onset(-2.0), "2 s after onset");
        assert_eq!(relative_to_onset(240.0), "4 min before onset");
        assert_eq!(relative_to_onset(f64::NAN), "at onset");
    }
}

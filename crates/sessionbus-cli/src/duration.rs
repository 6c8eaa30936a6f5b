//! Durations on the command line: a number and a unit (`500ms`, `90s`, `15m`, `2h`, `30d`).

use std::time::Duration;

/// Parses `text` as a number followed by `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("`{text}` is not a duration: write a number and a unit, e.g. 500ms, 90s, 15m, 2h, 30d");
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_units_parse_and_anything_else_is_refused() {
        let cases = [
            ("500ms", Some(Duration::from_millis(500))),
            ("90s", Some(Duration::from_secs(90))),
            ("15m", Some(Duration::from_secs(900))),
            ("2h", Some(Duration::from_secs(7200))),
            ("30d", Some(Duration::from_secs(30 * 86_400))),
            (" 1s ", Some(Duration::from_secs(1))),
            ("0s", Some(Duration::ZERO)),
            ("10", None),
            ("s", None),
            ("1.5h", None),
            ("-1s", None),
            ("3w", None),
            ("99999999999999999999d", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).ok(), expected, "{text}");
        }
    }
}

//! The access log: one line per finished request, in Envoy's default format or as JSON with the
//! same fields.
//!
//! Envoy's default (`-` for what is unknown; `0` for the code when there was no response):
//!
//! ```text
//! [START_TIME] "METHOD PATH PROTOCOL" RESPONSE_CODE RESPONSE_FLAGS BYTES_RECEIVED BYTES_SENT DURATION UPSTREAM_SERVICE_TIME "X-FORWARDED-FOR" "USER-AGENT" "X-REQUEST-ID" "AUTHORITY" "UPSTREAM_HOST"
//! [2024-05-01T12:00:00.123Z] "GET /api?x=1 HTTP/1.1" 200 - 0 512 3 - "-" "curl/8.5.0" "1b4e28ba-2fa1-41d2-883f-0016d3cca427" "example.com" "-"
//! ```
//!
//! JSON: an object with the keys `start_time`, `method`, `path`, `protocol`, `response_code`,
//! `response_flags`, `bytes_received`, `bytes_sent`, `duration`, `upstream_service_time`,
//! `x_forwarded_for`, `user_agent`, `request_id`, `authority` and `upstream_host`; numbers as
//! numbers, unknown values `null`. Durations are milliseconds, bytes are body bytes (Envoy's
//! `BYTES_RECEIVED`/`BYTES_SENT`). weft sets no response flags, so that field is always unknown.

use std::fmt::Write;
use std::time::Duration;

use serde::Deserialize;

/// The line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Envoy's default access log format.
    #[default]
    Envoy,
    /// One JSON object per line.
    Json,
}

/// What one line says about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// When the request started, in nanoseconds since the Unix epoch.
    pub start_time: Option<i64>,
    /// `:method`.
    pub method: Option<String>,
    /// `:path`, with the query.
    pub path: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`, …
    pub protocol: Option<String>,
    /// The response status.
    pub response_code: Option<u16>,
    /// Request body bytes.
    pub bytes_received: Option<u64>,
    /// Response body bytes.
    pub bytes_sent: Option<u64>,
    /// How long the request took.
    pub duration: Option<Duration>,
    /// The upstream's `x-envoy-upstream-service-time` response header.
    pub upstream_service_time: Option<String>,
    /// `x-forwarded-for`.
    pub forwarded_for: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `:authority`.
    pub authority: Option<String>,
    /// The upstream endpoint's address.
    pub upstream_host: Option<String>,
}

impl Entry {
    /// The line in `format`.
    pub fn line(&self, format: Format) -> String {
        match format {
            Format::Envoy => self.envoy(),
            Format::Json => self.json(),
        }
    }

    fn duration_millis(&self) -> Option<u64> {
        self.duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn envoy(&self) -> String {
        fn text(value: &Option<String>) -> &str {
            value.as_deref().unwrap_or("-")
        }
        fn number(line: &mut String, value: Option<u64>) {
            match value {
                Some(n) => {
                    let _ = write!(line, "{n}");
                }
                None => line.push('-'),
            }
        }
        let mut line = String::with_capacity(256);
        line.push('[');
        match self.start_time {
            Some(nanos) => push_rfc3339(&mut line, nanos),
            None => line.push('-'),
        }
        let _ = write!(
            line,
            "] \"{} {} {}\" {} - ",
            text(&self.method),
            text(&self.path),
            text(&self.protocol),
            self.response_code.unwrap_or(0),
        );
        number(&mut line, self.bytes_received);
        line.push(' ');
        number(&mut line, self.bytes_sent);
        line.push(' ');
        number(&mut line, self.duration_millis());
        let _ = write!(
            line,
            " {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"",
            text(&self.upstream_service_time),
            text(&self.forwarded_for),
            text(&self.user_agent),
            text(&self.request_id),
            text(&self.authority),
            text(&self.upstream_host),
        );
        line
    }

    fn json(&self) -> String {
        let mut line = String::with_capacity(320);
        line.push('{');
        let mut first = true;
        let mut key = |line: &mut String, name: &str| {
            if !std::mem::take(&mut first) {
                line.push(',');
            }
            line.push('"');
            line.push_str(name);
            line.push_str("\":");
        };
        let string = |line: &mut String, value: Option<&str>| match value {
            Some(value) => push_json_string(line, value),
            None => line.push_str("null"),
        };
        let number = |line: &mut String, value: Option<u64>| match value {
            Some(n) => {
                let _ = write!(line, "{n}");
            }
            None => line.push_str("null"),
        };
        key(&mut line, "start_time");
        match self.start_time {
            Some(nanos) => {
                line.push('"');
                push_rfc3339(&mut line, nanos);
                line.push('"');
            }
            None => line.push_str("null"),
        }
        key(&mut line, "method");
        string(&mut line, self.method.as_deref());
        key(&mut line, "path");
        string(&mut line, self.path.as_deref());
        key(&mut line, "protocol");
        string(&mut line, self.protocol.as_deref());
        key(&mut line, "response_code");
        number(&mut line, Some(u64::from(self.response_code.unwrap_or(0))));
        key(&mut line, "response_flags");
        line.push_str("null");
        key(&mut line, "bytes_received");
        number(&mut line, self.bytes_received);
        key(&mut line, "bytes_sent");
        number(&mut line, self.bytes_sent);
        key(&mut line, "duration");
        number(&mut line, self.duration_millis());
        key(&mut line, "upstream_service_time");
        string(&mut line, self.upstream_service_time.as_deref());
        key(&mut line, "x_forwarded_for");
        string(&mut line, self.forwarded_for.as_deref());
        key(&mut line, "user_agent");
        string(&mut line, self.user_agent.as_deref());
        key(&mut line, "request_id");
        string(&mut line, self.request_id.as_deref());
        key(&mut line, "authority");
        string(&mut line, self.authority.as_deref());
        key(&mut line, "upstream_host");
        string(&mut line, self.upstream_host.as_deref());
        line.push('}');
        line
    }
}

/// Appends `value` as a JSON string.
fn push_json_string(line: &mut String, value: &str) {
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// Appends `nanos` since the Unix epoch as Envoy's `START_TIME`: RFC 3339, UTC, milliseconds
/// (`2024-05-01T12:00:00.123Z`).
pub fn push_rfc3339(line: &mut String, nanos: i64) {
    let millis = nanos.div_euclid(1_000_000);
    let days = millis.div_euclid(86_400_000);
    let of_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000,
    );
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // `day` is 1..=31 and `month` 1..=12 by construction.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(nanos: i64) -> String {
        let mut line = String::new();
        push_rfc3339(&mut line, nanos);
        line
    }

    #[test]
    fn formats_start_times_like_envoy() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.999Z, a leap day.
        assert_eq!(
            rfc3339(1_709_251_199_999_000_000),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1_000_000), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn escapes_json_strings() {
        let mut line = String::new();
        push_json_string(&mut line, "a\"b\\c\u{1}é");
        assert_eq!(line, r#""a\"b\\c\u0001é""#);
    }

    #[test]
    fn writes_dashes_and_nulls_for_what_is_unknown() {
        let entry = Entry::default();
        assert_eq!(
            entry.line(Format::Envoy),
            r#"[-] "- - -" 0 - - - - - "-" "-" "-" "-" "-""#
        );
        assert!(entry.line(Format::Json).contains(r#""method":null"#));
    }
}

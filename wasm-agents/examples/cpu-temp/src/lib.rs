//! Example agent: the board's CPU temperature, on a timer.
//!
//! Each run reads a Linux thermal zone (`/sys/class/thermal/thermal_zone0/temp`,
//! millidegrees Celsius), publishes the reading on `subject` and, above `limit`, an
//! alert on `alert_subject`. Deploy it with a timer and a read grant:
//!
//! ```sh
//! edgeleaf deploy cpu-temp.wasm --name cpu-temp --every 10s \
//!     --read /sys/class/thermal --allow-publish 'sensors.>' --allow-publish 'alerts.>' \
//!     --config limit=75 --tag site=berlin --key publisher.key
//! ```
//!
//! and allow the directory on each device (`[devices] read = ["/sys/class/thermal"]`).
//! Reading (also the run's result):
//! `{"sensor":"cpu-temp","celsius":48.312,"limit":75,"alert":false,"at":"2026-12-03T10:00:00Z"}`.
//!
//! Config:
//! * `path`: the file to read (default `/sys/class/thermal/thermal_zone0/temp`);
//! * `limit`: degrees Celsius above which an alert is sent (default 80);
//! * `subject`: where readings go (default `sensors.cpu-temp`);
//! * `alert_subject`: where alerts go (default `alerts.cpu-temp`).
//!
//! A file that cannot be read or parsed is an `Err` naming it (a board without that
//! zone, a missing grant).

use edgeleaf_sdk::{Agent, Message, config, export_agent, messaging};

const DEFAULT_PATH: &str = "/sys/class/thermal/thermal_zone0/temp";

struct CpuTemp;

impl Agent for CpuTemp {
    fn handle(msg: Message) -> Result<Vec<u8>, String> {
        let path = config::get_or("path", DEFAULT_PATH);
        let limit: f64 = config::parse_or("limit", 80.0)?;
        let raw = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path}: {e} (is its directory granted with --read?)"))?;
        let millis: i64 = raw
            .trim()
            .parse()
            .map_err(|_| format!("{path}: {:?} is not a temperature in millidegrees", raw.trim()))?;
        let celsius = millis as f64 / 1000.0;
        let alert = celsius > limit;
        // A timer run says when it was due; a message (a manual poke) has no tick.
        let at = msg
            .timer_tick()
            .map(|t| format!(",\"at\":\"{}\"", t.scheduled_at))
            .unwrap_or_default();
        let reading = format!(
            "{{\"sensor\":\"cpu-temp\",\"celsius\":{celsius},\"limit\":{limit},\"alert\":{alert}{at}}}"
        );
        messaging::publish(&config::get_or("subject", "sensors.cpu-temp"), &reading)?;
        if alert {
            messaging::publish(&config::get_or("alert_subject", "alerts.cpu-temp"), &reading)?;
        }
        Ok(reading.into_bytes())
    }
}

export_agent!(CpuTemp);

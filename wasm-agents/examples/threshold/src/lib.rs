//! Example agent: a rolling mean of sensor readings, with an alert above a limit.
//!
//! Input: one JSON reading per message, like `{"sensor":"t1","value":71.5}` (other
//! members are ignored). The agent keeps the last `window` values of each sensor in
//! its kv store (key `window.<sensor>`, little-endian `f64`s), computes their mean,
//! and when the mean exceeds `limit` publishes an alert on `alert_subject`:
//!
//! ```json
//! {"sensor":"t1","mean":72.1,"limit":70,"values":[71.5,72.7],"subject":"sensors.t1"}
//! ```
//!
//! Reply: `{"sensor":"t1","mean":72.1,"alert":true}`.
//!
//! Config:
//! * `limit` (required): a number; an alert is sent when the mean is above it;
//! * `window`: how many values to average per sensor (default 5, at most 10000);
//! * `alert_subject`: where alerts go (default `alerts.threshold`); the deployment
//!   must allow publishing there.
//!
//! Bad input, bad config and a refused publish are `Err`s that name the problem.

mod json;

use edgeleaf_sdk::{Agent, Message, config, export_agent, kv, messaging};
use json::Value;

const DEFAULT_WINDOW: usize = 5;
const MAX_WINDOW: usize = 10_000;
const DEFAULT_ALERT_SUBJECT: &str = "alerts.threshold";

struct Threshold;

struct Reading {
    sensor: String,
    value: f64,
}

fn parse_reading(payload: &[u8]) -> Result<Reading, String> {
    let doc = json::parse(payload).map_err(|e| format!("bad reading: {e}"))?;
    if !matches!(doc, Value::Object(_)) {
        return Err(format!(
            "bad reading: expected a JSON object, got {}",
            doc.kind()
        ));
    }
    let sensor = match doc.get("sensor") {
        None => return Err("bad reading: missing \"sensor\"".into()),
        Some(Value::String(s)) if s.is_empty() => {
            return Err("bad reading: \"sensor\" is empty".into());
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "bad reading: \"sensor\" must be a string, got {}",
                other.kind()
            ));
        }
    };
    let value = match doc.get("value") {
        None => return Err("bad reading: missing \"value\"".into()),
        Some(Value::Number(n)) if n.is_finite() => *n,
        Some(Value::Number(_)) => return Err("bad reading: \"value\" is out of range".into()),
        Some(other) => {
            return Err(format!(
                "bad reading: \"value\" must be a number, got {}",
                other.kind()
            ));
        }
    };
    Ok(Reading { sensor, value })
}

fn decode_window(bytes: &[u8]) -> Option<Vec<f64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    let values: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    values.iter().all(|v| v.is_finite()).then_some(values)
}

fn encode_window(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Agent for Threshold {
    fn handle(msg: Message) -> Result<Vec<u8>, String> {
        let reading = parse_reading(&msg.payload)?;

        let limit: f64 = config::parse("limit")?
            .ok_or("config \"limit\" is not set (the mean above which to alert)")?;
        let window: usize = config::parse_or("window", DEFAULT_WINDOW)?;
        if window == 0 || window > MAX_WINDOW {
            return Err(format!(
                "config \"window\" must be between 1 and {MAX_WINDOW}, got {window}"
            ));
        }
        let alert_subject = config::get_or("alert_subject", DEFAULT_ALERT_SUBJECT);

        // Update this sensor's window.
        let key = format!("window.{}", reading.sensor);
        let mut values = match kv::get(&key)? {
            None => Vec::new(),
            Some(bytes) => decode_window(&bytes).unwrap_or_else(|| {
                edgeleaf_sdk::log::warn(format!("kv {key:?} held a corrupt window; starting over"));
                Vec::new()
            }),
        };
        values.push(reading.value);
        if values.len() > window {
            values.drain(..values.len() - window);
        }
        kv::set(&key, encode_window(&values))?;

        // Divide first so that the sum of large values cannot overflow.
        let n = values.len() as f64;
        let mean: f64 = values.iter().map(|v| v / n).sum();
        let alert = mean > limit;

        if alert {
            let mut body = String::from("{\"sensor\":");
            json::write_string(&mut body, &reading.sensor);
            body.push_str(",\"mean\":");
            json::write_number(&mut body, mean);
            body.push_str(",\"limit\":");
            json::write_number(&mut body, limit);
            body.push_str(",\"values\":[");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                json::write_number(&mut body, *v);
            }
            body.push_str("],\"subject\":");
            json::write_string(&mut body, &msg.subject);
            body.push('}');
            messaging::publish(&alert_subject, body)
                .map_err(|e| format!("alert for sensor {:?} not published: {e}", reading.sensor))?;
        }

        let mut reply = String::from("{\"sensor\":");
        json::write_string(&mut reply, &reading.sensor);
        reply.push_str(",\"mean\":");
        json::write_number(&mut reply, mean);
        reply.push_str(if alert {
            ",\"alert\":true}"
        } else {
            ",\"alert\":false}"
        });
        Ok(reply.into_bytes())
    }
}

export_agent!(Threshold);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings() {
        let r = parse_reading(br#"{"sensor":"t1","value":71.5}"#).unwrap();
        assert_eq!((r.sensor.as_str(), r.value), ("t1", 71.5));
        let cases: [(&[u8], &str); 7] = [
            (b"nope", "invalid JSON"),
            (b"[1]", "expected a JSON object"),
            (br#"{"value":1}"#, "missing \"sensor\""),
            (br#"{"sensor":"","value":1}"#, "\"sensor\" is empty"),
            (br#"{"sensor":3,"value":1}"#, "\"sensor\" must be a string"),
            (br#"{"sensor":"t1"}"#, "missing \"value\""),
            (
                br#"{"sensor":"t1","value":"71"}"#,
                "\"value\" must be a number",
            ),
        ];
        for (input, want) in cases {
            let err = parse_reading(input).err().unwrap();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        assert!(parse_reading(br#"{"sensor":"t1","value":1e999}"#).is_err());
    }

    #[test]
    fn window_round_trip() {
        let v = vec![1.5, -2.0, 1e300];
        assert_eq!(decode_window(&encode_window(&v)), Some(v));
        assert_eq!(decode_window(&[1, 2, 3]), None);
    }
}

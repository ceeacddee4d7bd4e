//! The expected object of each corpus line, built from what the log call was given and
//! the clock read around it (never from the formatted output).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Where in a line each value was written (dotted paths).
#[derive(Clone, Copy)]
pub struct LineKeys {
    pub message: &'static str,
    pub level: &'static str,
    pub time: &'static str,
    pub trace_id: Option<&'static str>,
    pub span_id: Option<&'static str>,
}

pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
}

#[derive(Serialize)]
struct Keys {
    message: &'static str,
    level: &'static str,
    time: &'static str,
    trace_id: Option<&'static str>,
    span_id: Option<&'static str>,
    service: Option<&'static str>,
}

#[derive(Serialize)]
struct Expected {
    message: String,
    level: &'static str,
    trace_id: Option<String>,
    span_id: Option<String>,
    service: Option<String>,
    time_min_ns: u128,
    time_max_ns: u128,
    keys: Keys,
}

#[derive(Default)]
pub struct Recorder {
    expected: Vec<Expected>,
}

fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

impl Recorder {
    /// Runs `emit` (one log call) and records the expected fields of the line it writes.
    pub fn log(
        &mut self,
        level: &'static str,
        message: &str,
        keys: LineKeys,
        ids: Option<&SpanIds>,
        emit: impl FnOnce(),
    ) {
        let before = unix_ns(SystemTime::now());
        emit();
        let after = unix_ns(SystemTime::now() + Duration::from_millis(1));
        const SECOND: u128 = 1_000_000_000;
        self.expected.push(Expected {
            message: message.to_owned(),
            level,
            trace_id: ids.map(|i| i.trace_id.clone()),
            span_id: ids.map(|i| i.span_id.clone()),
            service: None,
            time_min_ns: before / SECOND * SECOND,
            time_max_ns: after,
            keys: Keys {
                message: keys.message,
                level: keys.level,
                time: keys.time,
                trace_id: keys.trace_id,
                span_id: keys.span_id,
                service: None,
            },
        });
    }

    /// Every call must have written exactly one line of JSON, or the pairing is wrong.
    pub fn check_one_line_per_call(&self, lines_path: &Path) -> Result<(), String> {
        let file = fs::File::open(lines_path).map_err(|e| e.to_string())?;
        let mut count = 0;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| e.to_string())?;
            serde_json::from_str::<serde_json::Value>(&line)
                .map_err(|e| format!("line {} is not JSON ({e}): {line}", count + 1))?;
            count += 1;
        }
        if count != self.expected.len() {
            return Err(format!(
                "{count} lines for {} log calls",
                self.expected.len()
            ));
        }
        Ok(())
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut file = fs::File::create(path)?;
        for e in &self.expected {
            serde_json::to_writer(&mut file, e)?;
            file.write_all(b"\n")?;
        }
        Ok(())
    }
}

//! Test agent for the runtime's isolation and limit tests. Never deploy it.
//!
//! The payload (UTF-8 text, surrounding whitespace ignored) chooses what it does:
//!
//! | payload              | behaviour |
//! |----------------------|-----------|
//! | `echo`, `echo:<any>` | replies with the whole payload |
//! | `loop`               | loops forever (needs the deadline / epoch interruption) |
//! | `oom`                | allocates and touches 1 MiB blocks until allocation fails, then aborts (a trap) |
//! | `oomtry`             | the same, but returns `Err("oomtry: allocation failed after <n> MiB")` when memory runs out |
//! | `trap`               | executes `unreachable` |
//! | `panic`              | panics (with panic=abort: a trap; the message goes to stderr) |
//! | `big`                | replies with 16 MiB of `x` |
//! | `publish:<subject>`  | publishes `hostile` (or the text after the first space: `publish:<subject> <body>`) on `<subject>`; replies `published`, or `Err(<the host's message>)` |
//! | `kvfill`             | sets 64 KiB values under new keys `fill.<n>` until `set` fails, then returns `Err(<the host's message>)`; gives up with an `Err` after 1 GiB |
//! | `spin:<ms>`          | busy-waits `<ms>` milliseconds on the monotonic clock, then replies `done` |
//! | `config:<key>`       | replies with the config value of `<key>`, or `none` |
//! | `confighash:<key>`   | replies with the FNV-1a 64 hash (16 hex digits) of the config value, or `none`: proves a secret arrived without echoing it |
//! | `log`                | writes one line at each log level, then replies `logged` |
//! | `fs:<path>`          | reads the file `<path>` and replies with it, or `Err(fs: <why>)` |
//! | `ls:<path>`          | lists the directory `<path>`, or `Err(ls: <why>)` |
//! | `tcp:<ip>:<port>`    | connects (SDK `net`), sends `GET / HTTP/1.0`, replies with all it reads, or `Err(tcp: <why>)` |
//! | `http:<url>`         | GETs `<url>` (SDK `http`), replies `<status> <body>`, or `Err(http: <why>)` |
//! | `serial:<path>=<text>` | opens the serial port at 115200, writes `<text>`, replies with what it reads within 2 s (SDK `serial`) |
//! | `serialwait:<path>`  | opens the serial port and waits up to 10 minutes for a byte |
//! | `fswrite:<path>=<text>` | writes `<text>` to the file `<path>`; replies `written`, or `Err(fswrite: <why>)` |
//! | `calls`              | replies with how many messages this instance has handled, this one included (`1` in a fresh instance) |
//! | `env`                | replies `env:<n> <NAME,...>`: the environment it sees |
//! | `kvset:<key>=<value>`| stores a value in its own kv; replies `stored` |
//! | `kvget:<key>`        | replies with the value under `<key>`, or `none` |
//! | `kvlist:<prefix>`    | replies with the keys under `<prefix>`, comma-separated |
//! | `sleep:<ms>`         | sleeps `<ms>` milliseconds in the host (a blocking `wasi:io/poll` wait), then replies `slept` |
//! | `quotes:<n>`         | replies with `<n>` bytes of `"` (each one escapes to two bytes in JSON) |
//! | `errbig:<n>`         | returns `Err` with a message of `<n>` bytes of `e` |
//! | `lognl`              | logs one line with embedded newlines, a carriage return and an escape character, then replies `logged` |
//! | `logspam:<n>`        | logs `<n>` lines of 1 KiB (each starting with its index, `00000 sss…`), then replies `logged <n>` |
//! | `say:<text>`         | logs `<text>` at info, then replies `said` |
//!
//! Anything else is `Err("unknown mode ...")`. A timer run (subject
//! `<prefix>.timer.<node>.<agent>`) does what config `on_timer` says (default
//! `echo`, which replies with the timer's JSON payload).

use edgeleaf_sdk::{Agent, Message, config, export_agent, kv, log, messaging};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

struct Hostile;

impl Agent for Hostile {
    fn handle(msg: Message) -> Result<Vec<u8>, String> {
        // Instance-global: 1 in a fresh instance, counting up in a warm one.
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let text = match std::str::from_utf8(&msg.payload) {
            Ok(t) => t.trim(),
            Err(_) => return Err("unknown mode (the payload is not UTF-8)".into()),
        };
        // A timer run: the mode comes from config `on_timer`.
        let on_timer;
        let text = if msg.subject.contains(".timer.") {
            on_timer = config::get("on_timer").unwrap_or_else(|| "echo".into());
            on_timer.as_str()
        } else {
            text
        };
        let (mode, arg) = match text.split_once(':') {
            Some((m, a)) => (m, Some(a)),
            None => (text, None),
        };
        match (mode, arg) {
            ("echo", _) => Ok(msg.payload),
            ("loop", None) => spin_forever(),
            ("oom", None) => oom(),
            ("oomtry", None) => oom_try(),
            ("trap", None) => trap(),
            ("panic", None) => panic!("hostile: panic on request"),
            ("big", None) => Ok(vec![b'x'; 16 * MIB]),
            ("publish", Some(rest)) => {
                let (subject, body) = match rest.split_once(' ') {
                    Some((s, b)) => (s, b),
                    None => (rest, "hostile"),
                };
                messaging::publish(subject, body)?;
                Ok(b"published".to_vec())
            }
            ("kvfill", None) => kv_fill(),
            ("spin", Some(ms)) => {
                let ms: u64 = ms
                    .trim()
                    .parse()
                    .map_err(|_| format!("spin: {ms:?} is not a number of milliseconds"))?;
                let until = Duration::from_millis(ms);
                let start = Instant::now();
                while start.elapsed() < until {
                    black_box(());
                }
                Ok(b"done".to_vec())
            }
            ("confighash", Some(key)) => Ok(config::get(key)
                .map(|v| format!("{:016x}", fnv1a(v.as_bytes())))
                .unwrap_or_else(|| "none".into())
                .into_bytes()),
            ("config", Some(key)) => Ok(config::get(key)
                .unwrap_or_else(|| "none".into())
                .into_bytes()),
            ("log", None) => {
                log::trace("hostile: trace line");
                log::debug("hostile: debug line");
                log::info("hostile: info line");
                log::warn("hostile: warn line");
                log::error("hostile: error line");
                Ok(b"logged".to_vec())
            }
            ("fs", Some(path)) => std::fs::read(path).map_err(|e| format!("fs: {e}")),
            ("tcp", Some(addr)) => {
                use std::io::{Read, Write};
                let mut stream = edgeleaf_sdk::net::TcpStream::connect(addr.trim())
                    .map_err(|e| format!("tcp: {e}"))?;
                stream
                    .write_all(b"GET / HTTP/1.0\r\n\r\n")
                    .map_err(|e| format!("tcp: {e}"))?;
                let mut reply = Vec::new();
                stream
                    .read_to_end(&mut reply)
                    .map_err(|e| format!("tcp: {e}"))?;
                Ok(reply)
            }
            ("http", Some(url)) => {
                let response =
                    edgeleaf_sdk::http::get(url.trim()).map_err(|e| format!("http: {e}"))?;
                let mut reply = format!("{} ", response.status).into_bytes();
                reply.extend_from_slice(&response.body);
                Ok(reply)
            }
            ("serial", Some(rest)) => {
                let (path, text) = rest.split_once('=').unwrap_or((rest, ""));
                let port = edgeleaf_sdk::serial::Port::open(path, 115200)?;
                port.write(text.as_bytes())?;
                port.read(256, 2000)
            }
            ("serialwait", Some(path)) => {
                let port = edgeleaf_sdk::serial::Port::open(path, 115200)?;
                port.read(256, 600_000)
            }
            ("fswrite", Some(rest)) => {
                let (path, text) = rest.split_once('=').unwrap_or((rest, ""));
                std::fs::write(path, text).map_err(|e| format!("fswrite: {e}"))?;
                Ok(b"written".to_vec())
            }
            ("ls", Some(path)) => std::fs::read_dir(path)
                .map(|dir| {
                    let names: Vec<String> = dir
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.join(",").into_bytes()
                })
                .map_err(|e| format!("ls: {e}")),
            ("calls", None) => Ok(calls.to_string().into_bytes()),
            ("env", None) => {
                let names: Vec<String> = std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .collect();
                Ok(format!("env:{} {}", names.len(), names.join(",")).into_bytes())
            }
            ("kvset", Some(rest)) => {
                let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
                kv::set(key, value)?;
                Ok(b"stored".to_vec())
            }
            ("kvget", Some(key)) => Ok(kv::get(key)?.unwrap_or_else(|| b"none".to_vec())),
            ("kvlist", Some(prefix)) => Ok(kv::list_keys(prefix)?.join(",").into_bytes()),
            ("sleep", Some(ms)) => {
                let ms: u64 = ms
                    .trim()
                    .parse()
                    .map_err(|_| format!("sleep: {ms:?} is not a number of milliseconds"))?;
                std::thread::sleep(Duration::from_millis(ms));
                Ok(b"slept".to_vec())
            }
            ("quotes", Some(n)) => Ok(vec![b'"'; count(n)?]),
            ("errbig", Some(n)) => Err("e".repeat(count(n)?)),
            ("lognl", None) => {
                log::warn("first\nFORGED node line\r\u{1b}[31mred");
                Ok(b"logged".to_vec())
            }
            ("logspam", Some(n)) => {
                let n = count(n)?;
                let padding = "s".repeat(1024 - 6);
                for i in 0..n {
                    log::info(&format!("{i:05} {padding}"));
                }
                Ok(format!("logged {n}").into_bytes())
            }
            ("say", Some(said)) => {
                log::info(said);
                Ok(b"said".to_vec())
            }
            _ => Err(format!("unknown mode {text:?}")),
        }
    }
}

/// A count argument, at most 64 MiB.
fn count(n: &str) -> Result<usize, String> {
    match n.trim().parse::<usize>() {
        Ok(n) if n <= 64 * MIB => Ok(n),
        _ => Err(format!("{n:?} is not a count up to 64 MiB")),
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

#[inline(never)]
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Writes one byte in every page so that the memory is really used.
fn touch(block: &mut [u8]) {
    for i in (0..block.len()).step_by(PAGE) {
        block[i] = 1;
    }
    black_box(block);
}

/// Allocates until the allocator fails; Rust's alloc-error handler then aborts.
fn oom() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; MIB];
        touch(&mut block);
        blocks.push(block);
        black_box(&blocks);
    }
}

/// Allocates until the allocator fails, then reports how far it got.
fn oom_try() -> Result<Vec<u8>, String> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block: Vec<u8> = Vec::new();
        if block.try_reserve_exact(MIB).is_err() || blocks.try_reserve(1).is_err() {
            let n = blocks.len();
            drop(blocks);
            return Err(format!("oomtry: allocation failed after {n} MiB"));
        }
        block.resize(MIB, 0);
        touch(&mut block);
        blocks.push(block);
        black_box(&blocks);
    }
}

fn kv_fill() -> Result<Vec<u8>, String> {
    const VALUE: usize = 64 * 1024;
    const GIVE_UP: usize = 16 * 1024; // 16384 × 64 KiB = 1 GiB
    let value = vec![0x5a_u8; VALUE];
    for n in 0..GIVE_UP {
        if let Err(e) = kv::set(&format!("fill.{n:06}"), &value) {
            log::info(format!(
                "hostile: kvfill stored {n} values of 64 KiB before: {e}"
            ));
            return Err(e);
        }
    }
    Err(format!(
        "kvfill: no quota hit after {GIVE_UP} values of 64 KiB"
    ))
}

export_agent!(Hostile);

//! `serial` import: the serial ports a deployment grants (`--serial PATH[@BAUD]`),
//! each listed in the node's `[devices] serial`. A port is opened raw (8N1, no
//! echo, no line discipline) and non-blocking, read and written through tokio's
//! reactor, so a silent device holds no thread and the invocation's deadline ends
//! any wait. Ports are per invocation: they close when its instance goes.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::protocol::SerialGrant;
use crate::runtime::AgentError;
use crate::runtime::component::ComponentState;
use crate::runtime::component::edgeleaf::agent::serial::Host;

/// Most bytes one `read` returns.
const MAX_READ: u32 = 64 << 10;

/// Checks a spec's serial grants against the ceiling: each path must be one the
/// node lists (the same path, or the same device once symlinks such as
/// `/dev/serial/by-id/…` are followed). Refusals are `forbidden`.
pub fn resolve(
    agent: &str,
    grants: &[String],
    ceiling: &[PathBuf],
) -> Result<Vec<SerialGrant>, AgentError> {
    let same = |a: &Path, b: &Path| {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    };
    grants
        .iter()
        .map(|entry| {
            let grant = SerialGrant::parse(entry)
                .map_err(|e| AgentError::new("invalid_spec", format!("agent {agent}: {e}")))?;
            if ceiling.iter().any(|c| same(c, Path::new(&grant.path))) {
                Ok(grant)
            } else {
                Err(AgentError::new(
                    "forbidden",
                    format!(
                        "agent {agent}: serial grant {} is not in this node's [devices] serial ({})",
                        grant.path,
                        super::describe_ceiling(ceiling.iter().map(|c| c.display().to_string()))
                    ),
                ))
            }
        })
        .collect()
}

/// The ports one invocation has open, by handle.
#[derive(Default)]
pub struct OpenPorts {
    next: u32,
    ports: BTreeMap<u32, AsyncFd<OwnedFd>>,
}

/// The termios speed constant of a baud rate.
fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        _ => return None,
    })
}

/// Opens `path` non-blocking and sets it raw, 8N1, at `baud`.
fn open_raw(path: &str, baud: libc::speed_t) -> io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: a valid NUL-terminated path; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: termios is plain data; the calls get a valid fd and pointer.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd.as_raw_fd(), &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        t.c_cflag &= !(libc::CSTOPB | libc::PARENB);
        if libc::cfsetispeed(&mut t, baud) != 0
            || libc::cfsetospeed(&mut t, baud) != 0
            || libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

fn raw_read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn raw_write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl ComponentState {
    fn port(&self, port: u32) -> Result<&AsyncFd<OwnedFd>, String> {
        self.serial
            .ports
            .get(&port)
            .ok_or_else(|| format!("serial: no open port {port}"))
    }
}

impl Host for ComponentState {
    async fn open(&mut self, path: String, baud: u32) -> Result<u32, String> {
        let grant = self
            .caps
            .serial
            .iter()
            .find(|g| g.path == path)
            .ok_or_else(|| {
                let granted: Vec<&str> = self.caps.serial.iter().map(|g| g.path.as_str()).collect();
                format!(
                    "serial port {path} is not granted to this agent (granted: {})",
                    if granted.is_empty() {
                        "none".to_owned()
                    } else {
                        granted.join(", ")
                    }
                )
            })?;
        if let Some(only) = grant.baud
            && only != baud
        {
            return Err(format!(
                "serial port {path} is granted at {only} baud, not {baud}"
            ));
        }
        let speed =
            speed(baud).ok_or_else(|| format!("serial: {baud} is not a supported baud rate"))?;
        let fd = open_raw(&path, speed).map_err(|e| format!("serial port {path}: {e}"))?;
        // SAFETY: the fd is an OwnedFd that only this AsyncFd holds, so it stays
        // open for as long as it is registered, and is closed after.
        let fd =
            unsafe { AsyncFd::register(fd) }.map_err(|e| format!("serial port {path}: {e}"))?;
        let handle = self.serial.next;
        self.serial.next = self.serial.next.wrapping_add(1);
        self.serial.ports.insert(handle, fd);
        Ok(handle)
    }

    async fn read(&mut self, port: u32, max: u32, timeout_ms: u32) -> Result<Vec<u8>, String> {
        let fd = self.port(port)?;
        let mut buf = vec![0u8; max.min(MAX_READ) as usize];
        let wait = async {
            loop {
                let mut ready = fd.readable().await?;
                match ready.try_io(|inner| raw_read(inner.get_ref(), &mut buf)) {
                    Ok(result) => return result,
                    Err(_would_block) => continue,
                }
            }
        };
        match tokio::time::timeout(Duration::from_millis(timeout_ms.into()), wait).await {
            Err(_) => Ok(Vec::new()),
            Ok(Ok(n)) => {
                buf.truncate(n);
                Ok(buf)
            }
            Ok(Err(e)) => Err(format!("serial read: {e}")),
        }
    }

    async fn write(&mut self, port: u32, data: Vec<u8>) -> Result<(), String> {
        let fd = self.port(port)?;
        let mut written = 0;
        while written < data.len() {
            let mut ready = fd
                .writable()
                .await
                .map_err(|e| format!("serial write: {e}"))?;
            match ready.try_io(|inner| raw_write(inner.get_ref(), &data[written..])) {
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => return Err(format!("serial write: {e}")),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    async fn close(&mut self, port: u32) {
        self.serial.ports.remove(&port);
    }
}

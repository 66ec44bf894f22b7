//! The wasmtime side: one engine ([`engine`]), a compiled-code cache ([`cache`]),
//! and agents ([`agent`]) of two kinds — components of the `edgeleaf:agent` world
//! ([`component`]) and WASI preview1 commands ([`wasi_command`]).
//!
//! Knows nothing of the node or the CLI: it takes module bytes, a spec and the
//! agent's capabilities, and turns messages into outputs or classified errors.

pub mod agent;
pub mod cache;
pub mod component;
pub mod engine;
pub mod precompiled;
pub mod wasi_command;

pub use agent::{Agent, AgentError, Invocation};
pub use engine::{EngineOptions, Runtime};

/// The two kinds of module an agent can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// A component of the `edgeleaf:agent` world.
    Component,
    /// A WASI preview1 command: stdin in, stdout out.
    WasiCommand,
}

impl ModuleKind {
    /// Tells the kind from the header; `None` for anything that is not wasm.
    ///
    /// # Examples
    /// ```
    /// use edgeleaf::runtime::ModuleKind;
    /// assert_eq!(ModuleKind::detect(b"\0asm\x01\0\0\0"), Some(ModuleKind::WasiCommand));
    /// assert_eq!(ModuleKind::detect(b"\0asm\x0d\0\x01\0"), Some(ModuleKind::Component));
    /// assert_eq!(ModuleKind::detect(b"hello"), None);
    /// ```
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        match bytes.get(..8)? {
            [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(Self::WasiCommand),
            [0, b'a', b's', b'm', _, _, 1, 0] => Some(Self::Component),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::WasiCommand => "wasi-command",
        }
    }
}

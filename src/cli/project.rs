//! Agent projects outside this repository: `edgeleaf new` writes one (Rust, C,
//! Python or JavaScript), `edgeleaf build` builds it into `dist/<name>.wasm` with the
//! toolchain the machine has, and says exactly what to install when one is missing.
//!
//! A project is a directory with an `edgeleaf.toml`:
//!
//! ```toml
//! lang = "python"          # rust, c, python or js
//!
//! [agent]                  # what `edgeleaf dev` deploys: an [[agents]] entry's keys
//! name = "hello"
//! triggers = ["hello.in"]
//! ```

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::config::StaticAgent;

/// The manifest's file name.
pub const MANIFEST: &str = "edgeleaf.toml";

/// The componentize-py release the templates and the install hints name.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The componentize-js release the JavaScript template's package.json names.
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// The WIT world every component agent implements (also in the binary, so `new`
/// writes the one this node speaks).
const WIT: &str = include_str!("../../wasm-agents/wit/agent.wit");
const SDK_LIB: &str = include_str!("../../wasm-agents/sdk/src/lib.rs");
/// The guest workspace's lock: a new Rust project builds with the versions this
/// repository's agents are tested with (and offline once they are in cargo's cache).
const GUEST_LOCK: &str = include_str!("../../wasm-agents/Cargo.lock");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    C,
    Python,
    Js,
}

impl Lang {
    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The agent's language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The agent's name: letters, digits, `-` and `_`, starting with a letter.
    name: String,
    /// Where to write the project (must not exist, or be empty). Default: ./NAME
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project directory (with an edgeleaf.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub fn new(args: NewArgs) -> Result<()> {
    let name = &args.name;
    let well_formed = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && crate::protocol::is_token(name);
    if !well_formed {
        bail!(
            "{name:?} cannot name an agent: use up to 64 letters, digits, '-' and '_', starting with a letter"
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} already exists and is not empty; give --dir a new directory",
            dir.display()
        );
    }
    for (path, text) in template(args.lang, name) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "wrote a {} agent to {}; build it with `edgeleaf build {}`",
        args.lang.title(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

pub fn build(args: BuildArgs) -> Result<()> {
    let project = Project::load(&args.dir)?;
    let wasm = project.build()?;
    println!("{}", wasm.display());
    Ok(())
}

/// The files of a new project, relative to its directory.
fn template(lang: Lang, name: &str) -> Vec<(&'static str, String)> {
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{type}}", &type_name(name))
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
    };
    let mut files = vec![
        (MANIFEST, manifest(lang, name)),
        ("README.md", readme(lang, name)),
        (".gitignore", gitignore(lang).to_owned()),
    ];
    if lang != Lang::C {
        files.push(("wit/agent.wit", WIT.to_owned()));
    }
    match lang {
        Lang::Rust => files.extend([
            ("Cargo.toml", fill(include_str!("project/rust/Cargo.toml"))),
            ("src/lib.rs", fill(include_str!("project/rust/src/lib.rs"))),
            (
                "sdk/Cargo.toml",
                include_str!("project/rust/sdk-Cargo.toml").to_owned(),
            ),
            ("sdk/src/lib.rs", SDK_LIB.to_owned()),
            ("Cargo.lock", GUEST_LOCK.to_owned()),
        ]),
        Lang::C => files.push(("agent.c", fill(include_str!("project/c/agent.c")))),
        Lang::Python => files.push(("app.py", fill(include_str!("project/python/app.py")))),
        Lang::Js => files.extend([
            ("app.js", fill(include_str!("project/js/app.js"))),
            (
                "package.json",
                fill(include_str!("project/js/package.json")),
            ),
        ]),
    }
    files
}

/// `hello-world` → `HelloWorld` (the Rust template's type).
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn manifest(lang: Lang, name: &str) -> String {
    format!(
        r#"# An edgeleaf agent project. `edgeleaf build` builds it into dist/{name}.wasm;
# `edgeleaf dev` deploys that to a node and redeploys it on every change.
lang = "{lang}"

# The deployment `edgeleaf dev` makes: the keys of a node config's [[agents]] entry
# (triggers, schedule, allow_publish, config, limits, connect, ...), without `wasm`.
[agent]
name = "{name}"
triggers = ["{name}.in"]
"#,
        lang = lang.as_str()
    )
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/dist/\n/target/\n",
        Lang::C => "/dist/\n",
        Lang::Python => "/dist/\n/.venv/\n__pycache__/\n",
        Lang::Js => "/dist/\n/node_modules/\n",
    }
}

fn readme(lang: Lang, name: &str) -> String {
    let (source, toolchain) = match lang {
        Lang::Rust => (
            "`src/lib.rs` (the agent), `sdk/` (the edgeleaf guest SDK) and `wit/` (the world it implements)",
            "`rustup target add wasm32-wasip2`, or on Debian/Ubuntu without rustup's targets: \
             `apt-get install -y rustc-web cargo-web rust-web-src lld wasi-libc` (Debian's rustc \
             builds std for wasm itself)"
                .to_owned(),
        ),
        Lang::C => (
            "`agent.c`: a WASI preview1 command (stdin is the payload, stdout the reply, stderr log lines)",
            "`apt-get install -y clang wasi-libc libclang-rt-14-dev-wasm32`, or a wasi-sdk \
             (set `WASI_SDK_PATH`)"
                .to_owned(),
        ),
        Lang::Python => (
            "`app.py` (the agent) and `wit/` (the world it implements)",
            format!(
                "`python3 -m venv .venv && .venv/bin/pip install {COMPONENTIZE_PY}` (edgeleaf \
                 build finds `.venv/bin/componentize-py`, or one on PATH). \
                 `.venv/bin/componentize-py -d wit -w agent bindings .` writes the bindings \
                 (`wit_world/`) for your editor"
            ),
        ),
        Lang::Js => (
            "`app.js` (the agent), `package.json` and `wit/` (the world it implements)",
            "`npm install` here (package.json names componentize-js; edgeleaf build finds \
             `node_modules/.bin/componentize-js`, or one on PATH)"
                .to_owned(),
        ),
    };
    format!(
        r#"# {name}

An [edgeleaf](https://github.com/edgeleaf/edgeleaf) agent in {title}: it logs a line
and replies with the payload it got. Source: {source}.

## Build

    edgeleaf build

writes `dist/{name}.wasm` and prints its path as the last line. Toolchain: {toolchain}.

## Run it

On one machine, start a local hub, leaf and node with `edgeleaf up` (here or in a
directory above), then, here:

    edgeleaf dev

builds, deploys to that node with its publisher key (from `.edgeleaf/up.json`; or
give `--up FILE`), rebuilds and redeploys on every
change, and prints each invocation's result and log lines until Ctrl-C. Try it from
another shell:

    edgeleaf -s nats://127.0.0.1:4250 invoke {name}.in hello

`edgeleaf.toml` holds the deployment `dev` makes (`[agent]`: triggers, config, limits,
grants, with the keys of a node config's `[[agents]]` entry).

## Ship it

    edgeleaf deploy dist/{name}.wasm --name {name} --trigger {name}.in --tag site=lab --key publisher.key

## What an agent can do

The imports of `wit/agent.wit` (kv, messaging, log, config, serial, dns) and the
limits they run under are described in edgeleaf's `docs/agents.md`.
"#,
        title = lang.title(),
    )
}

/// A project directory and its manifest.
#[derive(Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub lang: Lang,
    /// The WIT world's directory, relative to `dir`.
    pub wit: PathBuf,
    /// The `[agent]` table, with `wasm` the built module.
    pub agent: StaticAgent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    lang: Lang,
    /// The directory of the WIT world, relative to the project (default `wit`).
    wit: Option<PathBuf>,
    agent: toml::Table,
}

impl Project {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: is {} an agent project (see `edgeleaf new`)?",
                path.display(),
                dir.display()
            )
        })?;
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        let mut table = manifest.agent;
        if table.contains_key("wasm") {
            bail!(
                "{}: [agent] has no `wasm`: the module is the one `edgeleaf build` writes to dist/",
                path.display()
            );
        }
        let Some(name) = table.get("name").and_then(|v| v.as_str()) else {
            bail!("{}: [agent] needs a `name`", path.display());
        };
        let wasm = dir.join("dist").join(format!("{name}.wasm"));
        table.insert("wasm".into(), wasm.display().to_string().into());
        let agent: StaticAgent = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("{}: [agent] is not valid", path.display()))?;
        if !crate::protocol::is_token(&agent.name) {
            bail!(
                "{}: [agent] name {:?} is not a single NATS token",
                path.display(),
                agent.name
            );
        }
        Ok(Project {
            dir: dir.to_path_buf(),
            lang: manifest.lang,
            wit: manifest.wit.unwrap_or_else(|| "wit".into()),
            agent,
        })
    }

    /// Builds the module into `dist/<name>.wasm` and returns that path. The tools'
    /// own output goes to stderr.
    pub fn build(&self) -> Result<PathBuf> {
        let out = self.agent.wasm.clone();
        // The tools run in the project directory.
        let out_abs = std::path::absolute(&out)?;
        let dist = self.dir.join("dist");
        std::fs::create_dir_all(&dist)
            .with_context(|| format!("cannot create {}", dist.display()))?;
        // A failed build must not leave the previous module looking like its result.
        let _ = std::fs::remove_file(&out);
        let name = &self.agent.name;
        eprintln!("edgeleaf build: {name} ({})", self.lang.title());
        match self.lang {
            Lang::Rust => build_rust(&self.dir, &out_abs)?,
            Lang::C => build_c(&self.dir, &out_abs)?,
            Lang::Python => {
                let tool = componentize_py(&self.dir)?;
                let mut cmd = Command::new(tool);
                cmd.arg("-d")
                    .arg(&self.wit)
                    .args(["-w", "agent", "componentize", "app", "-o"])
                    .arg(&out_abs);
                run(cmd.current_dir(&self.dir), "componentize-py")?;
            }
            Lang::Js => {
                let tool = componentize_js(&self.dir)?;
                let mut cmd = Command::new(tool);
                cmd.args(["app.js", "--wit"])
                    .arg(&self.wit)
                    .args(["-n", "agent", "-o"])
                    .arg(&out_abs);
                run(cmd.current_dir(&self.dir), "componentize-js")?;
            }
        }
        if !out.is_file() {
            bail!("the build finished but wrote no {}", out.display());
        }
        Ok(out)
    }
}

/// Runs `cmd` with its stdout on our stderr (our stdout is for the result).
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = cmd
        .stdout(Stdio::from(stderr))
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Where `EDGELEAF_GUESTS=all bash scripts/deps.sh` installs componentize-py and
/// componentize-js: `$EDGELEAF_TOOLS`, else `$XDG_DATA_HOME/edgeleaf/tools`, else
/// `~/.local/share/edgeleaf/tools`.
pub fn tools_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("EDGELEAF_TOOLS") {
        return Some(dir.into());
    }
    let data = var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("edgeleaf/tools"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The first of: `$env`, each of `local`, `name` on PATH, then the tools dir's `sub`.
fn find_tool(env: &str, local: &[PathBuf], name: &str, sub: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(path.into());
    }
    local
        .iter()
        .find(|p| is_executable(p))
        .cloned()
        .or_else(|| on_path(name))
        .or_else(|| {
            tools_dir()
                .map(|t| t.join(sub))
                .filter(|p| is_executable(p))
        })
}

fn componentize_py(dir: &Path) -> Result<PathBuf> {
    let local = [dir.join(".venv/bin/componentize-py")];
    find_tool(
        "EDGELEAF_COMPONENTIZE_PY",
        &local,
        "componentize-py",
        "py/bin/componentize-py",
    )
    .with_context(|| {
        format!(
            "cannot build a Python agent: componentize-py is missing \
             (looked at $EDGELEAF_COMPONENTIZE_PY, .venv/bin/, PATH and {tools}/py/bin/).\n\
             Install it in the project with:\n    \
             python3 -m venv .venv && .venv/bin/pip install {COMPONENTIZE_PY}\n\
             (EDGELEAF_GUESTS=all bash scripts/deps.sh in the edgeleaf repository installs every agent toolchain.)",
            tools = tools_hint()
        )
    })
}

fn componentize_js(dir: &Path) -> Result<PathBuf> {
    if on_path("node").is_none() {
        bail!(
            "cannot build a JavaScript agent: node is missing.\n\
             Install Node.js 18 or later, e.g.:\n    apt-get install -y nodejs npm"
        );
    }
    let local = [dir.join("node_modules/.bin/componentize-js")];
    find_tool(
        "EDGELEAF_COMPONENTIZE_JS",
        &local,
        "componentize-js",
        "js/node_modules/.bin/componentize-js",
    )
    .with_context(|| {
        format!(
            "cannot build a JavaScript agent: componentize-js is missing \
             (looked at $EDGELEAF_COMPONENTIZE_JS, node_modules/.bin/, PATH and {tools}/js/).\n\
             Install it in the project with:\n    \
             npm install --save-dev {COMPONENTIZE_JS}\n\
             (EDGELEAF_GUESTS=all bash scripts/deps.sh in the edgeleaf repository installs every agent toolchain.)",
            tools = tools_hint()
        )
    })
}

fn tools_hint() -> String {
    tools_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "$EDGELEAF_TOOLS".into())
}

const WASI_LIBDIR: &str = "/usr/lib/wasm32-wasi";
const WASM_TARGET: &str = "wasm32-wasip2";

/// Debian packages a route needs that are not installed, and other missing parts.
#[derive(Default)]
struct Missing {
    packages: Vec<&'static str>,
    other: Vec<String>,
}

impl Missing {
    fn package(&mut self, present: bool, package: &'static str) {
        if !present && !self.packages.contains(&package) {
            self.packages.push(package);
        }
    }

    fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.other.is_empty()
    }

    /// The install lines, one per line.
    fn advice(&self) -> String {
        let mut out = String::new();
        if !self.packages.is_empty() {
            out += &format!("    apt-get install -y {}\n", self.packages.join(" "));
        }
        for o in &self.other {
            out += &format!("    {o}\n");
        }
        out
    }
}

fn build_c(dir: &Path, out: &Path) -> Result<()> {
    let mut sources: Vec<PathBuf> = [dir.to_path_buf(), dir.join("src")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        bail!("no .c files in {} or its src/", dir.display());
    }
    let (clang, sysroot) = match std::env::var_os("WASI_SDK_PATH").filter(|v| !v.is_empty()) {
        Some(sdk) => {
            let sdk = PathBuf::from(sdk);
            (sdk.join("bin/clang"), sdk.join("share/wasi-sysroot"))
        }
        None => {
            let clang = on_path("clang");
            let mut missing = Missing::default();
            missing.package(clang.is_some(), "clang");
            missing.package(Path::new(WASI_LIBDIR).join("libc.a").is_file(), "wasi-libc");
            missing.package(
                has_glob(
                    "/usr/lib/llvm-",
                    "lib/clang",
                    "lib/wasi/libclang_rt.builtins-wasm32.a",
                ),
                "libclang-rt-14-dev-wasm32",
            );
            if !missing.is_empty() {
                bail!(
                    "cannot build a C agent: the wasm32-wasi C toolchain is incomplete.\n\
                     Install it with:\n{}\
                     (or set WASI_SDK_PATH to a wasi-sdk; EDGELEAF_GUESTS=1 bash scripts/deps.sh \
                     in the edgeleaf repository installs it.)",
                    missing.advice()
                );
            }
            (clang.unwrap_or_default(), PathBuf::from("/usr"))
        }
    };
    let mut cmd = Command::new(&clang);
    cmd.arg("--target=wasm32-wasi")
        .arg(format!("--sysroot={}", sysroot.display()))
        .args(["-O2", "-Wall", "-Wl,--strip-all", "-o"])
        .arg(out)
        .args(&sources);
    run(&mut cmd, "clang")
}

/// Is there a file `<prefix>*/<middle>/*/<suffix>` (the compiler-rt builtins
/// live at /usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/…)?
fn has_glob(prefix: &str, middle: &str, suffix: &str) -> bool {
    let (parent, stem) = prefix.rsplit_once('/').unwrap_or((".", prefix));
    let Ok(llvms) = std::fs::read_dir(parent) else {
        return false;
    };
    llvms
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(stem))
        .filter_map(|e| std::fs::read_dir(e.path().join(middle)).ok())
        .flatten()
        .filter_map(|v| v.ok())
        .any(|v| v.path().join(suffix).is_file())
}

/// How this machine builds Rust for wasm32-wasip2.
enum RustRoute {
    /// rustup's own target.
    Rustup,
    /// Debian's rustc-web with `-Z build-std`, wasi-libc, wasm-ld and a
    /// wasm-component-ld from any rustup toolchain (or PATH).
    Debian {
        component_ld: PathBuf,
        wasm_ld: PathBuf,
    },
}

fn rust_route() -> Result<RustRoute> {
    let rustup_has_target = on_path("rustup").is_some()
        && Command::new("rustup")
            .args(["target", "list", "--installed"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == WASM_TARGET)
            });
    if rustup_has_target {
        return Ok(RustRoute::Rustup);
    }
    let mut missing = Missing::default();
    missing.package(Path::new("/usr/bin/rustc").is_file(), "rustc-web");
    missing.package(Path::new("/usr/bin/cargo").is_file(), "cargo-web");
    missing.package(
        Path::new("/usr/lib/rustlib/src/rust/library").is_dir(),
        "rust-web-src",
    );
    missing.package(Path::new(WASI_LIBDIR).join("libc.a").is_file(), "wasi-libc");
    let wasm_ld = std::env::var_os("WASM_LD")
        .map(PathBuf::from)
        .or_else(find_wasm_ld);
    missing.package(wasm_ld.is_some(), "lld");
    let component_ld = std::env::var_os("WASM_COMPONENT_LD")
        .map(PathBuf::from)
        .or_else(find_component_ld);
    if component_ld.is_none() {
        missing.other.push(
            "cargo install --locked wasm-component-ld   (or any rustup toolchain, which ships it)"
                .into(),
        );
    }
    match (missing.is_empty(), wasm_ld, component_ld) {
        (true, Some(wasm_ld), Some(component_ld)) => Ok(RustRoute::Debian {
            component_ld,
            wasm_ld,
        }),
        _ => bail!(
            "cannot build a Rust agent: no toolchain for {WASM_TARGET}.\n\
             With rustup:\n    rustup target add {WASM_TARGET}\n\
             Or, on Debian/Ubuntu (Debian's rustc builds std for wasm itself):\n{}\
             (EDGELEAF_GUESTS=1 bash scripts/deps.sh in the edgeleaf repository installs it.)",
            missing.advice()
        ),
    }
}

fn find_wasm_ld() -> Option<PathBuf> {
    let versioned = std::fs::read_dir("/usr/bin")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("wasm-ld-"))
        })
        .max();
    on_path("wasm-ld").or(versioned)
}

fn find_component_ld() -> Option<PathBuf> {
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))?;
    let mut toolchains: Vec<PathBuf> = std::fs::read_dir(rustup_home.join("toolchains"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // The stable toolchain's copy first.
    toolchains.sort_by_key(|t| {
        !t.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("stable-"))
    });
    toolchains
        .iter()
        .filter_map(|t| std::fs::read_dir(t.join("lib/rustlib")).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/wasm-component-ld"))
        .find(|p| is_executable(p))
        .or_else(|| on_path("wasm-component-ld"))
}

fn build_rust(dir: &Path, out: &Path) -> Result<()> {
    let route = rust_route()?;
    let mut cmd;
    match &route {
        RustRoute::Rustup => {
            cmd = Command::new("cargo");
            cmd.args(["build", "--release", "--target", WASM_TARGET]);
        }
        RustRoute::Debian {
            component_ld,
            wasm_ld,
        } => {
            // rustup's shims in ~/.cargo/bin must not win over /usr/bin here.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![PathBuf::from("/usr/bin")];
            dirs.extend(std::env::split_paths(&path));
            cmd = Command::new("/usr/bin/cargo");
            cmd.env("PATH", std::env::join_paths(dirs)?)
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_WASIP2_LINKER", component_ld)
                .env(
                    "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
                    format!(
                        "-C link-self-contained=no -L {WASI_LIBDIR} -C link-arg=--wasm-ld-path={}",
                        wasm_ld.display()
                    ),
                )
                .args(["build", "--release", "--target", WASM_TARGET])
                .args(["-Z", "build-std=std,panic_abort"]);
        }
    }
    cmd.env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        .stdout(Stdio::piped());
    let output = cmd
        .spawn()
        .context("cannot run cargo")?
        .wait_with_output()?;
    if !output.status.success() {
        bail!("cargo build failed ({})", output.status);
    }
    // The cdylib's .wasm, wherever CARGO_TARGET_DIR put it.
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["crate_types"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(OsString::from))
                .collect::<Vec<_>>()
        })
        .map(PathBuf::from)
        .find(|p| p.extension().is_some_and(|e| e == "wasm"))
        .context("cargo built no .wasm: is the package a cdylib (see Cargo.toml's [lib])?")?;
    std::fs::copy(&built, out)
        .with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("hello"), "Hello");
        assert_eq!(type_name("hello-world_x"), "HelloWorldX");
    }

    #[test]
    fn every_template_loads_as_a_project() {
        for lang in [Lang::Rust, Lang::C, Lang::Python, Lang::Js] {
            let dir = tempfile::tempdir().unwrap();
            for (path, text) in template(lang, "probe-1") {
                let path = dir.path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            let project = Project::load(dir.path()).unwrap();
            assert_eq!(project.lang, lang);
            assert_eq!(project.agent.name, "probe-1");
            assert_eq!(project.agent.triggers, ["probe-1.in"]);
            assert!(project.agent.wasm.ends_with("dist/probe-1.wasm"));
            project.agent.spec().check("edgeleaf").unwrap();
        }
    }

    #[test]
    fn the_rust_template_pins_the_sdk_dependencies_of_this_repository() {
        let ours: toml::Table =
            toml::from_str(include_str!("../../wasm-agents/Cargo.toml")).unwrap();
        let template: toml::Table =
            toml::from_str(include_str!("project/rust/sdk-Cargo.toml")).unwrap();
        assert_eq!(
            ours["workspace"]["dependencies"]["wit-bindgen"],
            template["dependencies"]["wit-bindgen"]
        );
        let sdk: toml::Table =
            toml::from_str(include_str!("../../wasm-agents/sdk/Cargo.toml")).unwrap();
        assert_eq!(
            sdk["dependencies"]["wasi"],
            template["dependencies"]["wasi"]
        );
    }

    #[test]
    fn a_manifest_with_an_unknown_agent_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST),
            "lang = \"c\"\n[agent]\nname = \"x\"\ntrigers = [\"a\"]\n",
        )
        .unwrap();
        let err = format!("{:#}", Project::load(dir.path()).unwrap_err());
        assert!(err.contains("trigers"), "{err}");
    }
}

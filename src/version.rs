//! The version this binary reports (`--version`, heartbeats) and upgrades compare.
//!
//! It lives in a fixed-size slot in the binary's data, behind a marker, rather than
//! in a constant the compiler may fold into its uses: a release pipeline (and the
//! self-update tests) can then stamp a built binary with another version
//! ([`stamp`]) without building it again. The slot starts as `EDGELEAF_VERSION` at
//! build time, else the crate's version.

use std::sync::OnceLock;

/// Bytes of the slot: the marker, then the version, NUL-padded.
const SLOT_LEN: usize = 64;
/// 16 bytes that start the slot. Kept as two halves everywhere else, so the whole
/// marker occurs once in the binary: in the slot.
const MARKER_HEAD: &[u8; 8] = b"EDGELEAF";
const MARKER_TAIL: &[u8; 8] = b"~VERSN~=";
const MARKER_LEN: usize = 16;
/// Longest version the slot holds.
pub const MAX_LEN: usize = SLOT_LEN - MARKER_LEN - 1;

const fn slot(version: &str) -> [u8; SLOT_LEN] {
    let mut out = [0u8; SLOT_LEN];
    let mut i = 0;
    while i < 8 {
        out[i] = MARKER_HEAD[i];
        out[8 + i] = MARKER_TAIL[i];
        i += 1;
    }
    let v = version.as_bytes();
    assert!(v.len() <= MAX_LEN, "version too long for its slot");
    let mut j = 0;
    while j < v.len() {
        out[MARKER_LEN + j] = v[j];
        j += 1;
    }
    out
}

const BUILT: &str = match option_env!("EDGELEAF_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

#[used]
static SLOT: [u8; SLOT_LEN] = slot(BUILT);

/// The version in this binary's slot, as built or stamped.
pub fn version() -> &'static str {
    static READ: OnceLock<String> = OnceLock::new();
    READ.get_or_init(|| {
        // SAFETY: SLOT is a valid, aligned, immutable static. The volatile read
        // keeps the compiler from using the initializer instead of the bytes a
        // stamp may have changed in the file.
        let bytes: [u8; SLOT_LEN] = unsafe { std::ptr::read_volatile(&raw const SLOT) };
        let v = &bytes[MARKER_LEN..];
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    })
}

/// Is `v` a version a slot can hold: 1 to [`MAX_LEN`] characters of
/// `[A-Za-z0-9.+-_]`, starting with a digit?
pub fn valid(v: &str) -> bool {
    (1..=MAX_LEN).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-_".contains(&b))
}

/// Writes `version` into the slot of the binary `bytes`. Fails when the binary has
/// no slot, or more than one (a binary that embeds another).
pub fn stamp(bytes: &mut [u8], version: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid(version),
        "{version:?} is not a version (digits first, then letters, digits, . + - _; at most {MAX_LEN})"
    );
    // Compared half by half, and only where a version follows: an optimizer
    // never has a reason to lay the two halves out side by side elsewhere.
    let found: Vec<usize> = bytes
        .windows(MARKER_LEN + 1)
        .enumerate()
        .filter(|(_, w)| {
            w[..8] == MARKER_HEAD[..] && w[8..16] == MARKER_TAIL[..] && w[16].is_ascii_digit()
        })
        .map(|(i, _)| i)
        .collect();
    let at = match found.as_slice() {
        [at] => *at + MARKER_LEN,
        [] => anyhow::bail!("no version slot: not an edgeleaf binary, or one older than stamping"),
        _ => anyhow::bail!("{} version slots: refusing to guess which", found.len()),
    };
    anyhow::ensure!(at + MAX_LEN < bytes.len(), "version slot cut short");
    let slot = &mut bytes[at..at + MAX_LEN + 1];
    slot.fill(0);
    slot[..version.len()].copy_from_slice(version.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips_through_stamp() {
        let mut image = vec![7u8; 10];
        image.extend_from_slice(&slot("0.1.0"));
        image.extend_from_slice(&[9u8; 10]);
        stamp(&mut image, "2.0.0-rc.1").unwrap();
        let at = 10 + MARKER_LEN;
        assert_eq!(&image[at..at + 10], b"2.0.0-rc.1");
        assert!(image[at + 10..at + MAX_LEN + 1].iter().all(|&b| b == 0));
        assert_eq!(&image[10 + SLOT_LEN..], &[9u8; 10]);
        assert!(stamp(&mut [0u8; 100], "1.0").is_err());
        assert!(stamp(&mut image, "not a version").is_err());
        let mut twice = image.clone();
        twice.extend_from_slice(&slot("1"));
        assert!(
            stamp(&mut twice, "1.1")
                .unwrap_err()
                .to_string()
                .contains("2 version slots")
        );
    }

    #[test]
    fn this_binary_reports_its_built_version() {
        assert_eq!(version(), BUILT);
    }

    #[test]
    fn versions_are_checked() {
        assert!(valid("0.1.0+git.abc") && valid("1.2.3-rc.1"));
        assert!(!valid("v1") && !valid("") && !valid("1 2") && !valid(&"1".repeat(MAX_LEN + 1)));
    }
}

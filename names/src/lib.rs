//! The names `upload_log_data` accepts, in one place for both ends: the agent
//! never sends a name a server refuses by rule, and anamon-receiver refuses
//! exactly what the agent would never send.
//!
//! Cobbler ≥ 3.2.2 checks the system name against `RE_OBJECT_NAME`
//! (`[a-zA-Z0-9_\-.:]*`) and the file name against `RE_SCRIPT_NAME`
//! (`[a-zA-Z0-9_\-.]+`), then joins both under `/var/log/cobbler/anamon`.
//! The patterns let through names that are not a directory or file of their
//! own: `""`, `"."` and `".."` (Cobbler 3.1.2 and older check nothing, so
//! `..` there climbs out of the log directory), and names longer than a
//! file system takes for one path component (Cobbler's `open` then raises,
//! which reaches the agent as a fault). Both are refused here.

/// The longest name a Linux file system takes for one path component
/// (`NAME_MAX`).
pub const MAX_BYTES: usize = 255;

/// A system (or profile) name Cobbler accepts and stores as a directory.
pub fn is_system_name(name: &str) -> bool {
    is_component(name) && name.bytes().all(in_system_set)
}

/// A log file name Cobbler accepts and stores as a file.
pub fn is_file_name(name: &str) -> bool {
    is_component(name) && name.bytes().all(in_file_set)
}

/// What [`is_system_name`] allows, as a phrase for error messages.
pub const SYSTEM_NAME_RULE: &str =
    "letters, digits and _ - . : only, at most 255 bytes, not \".\" or \"..\"";

/// A valid file name derived from `raw` (a file's basename): characters
/// outside the set become `_`, a name of only dots gets a `_` in front, an
/// empty one becomes `log`, and one longer than [`MAX_BYTES`] is shortened
/// (see [`shorten`]). Always satisfies [`is_file_name`].
pub fn file_name_from(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii() && in_file_set(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        name.push_str("log");
    } else if name.bytes().all(|b| b == b'.') {
        name.insert(0, '_');
    }
    shorten(name)
}

/// `name` if it fits in [`MAX_BYTES`], else its first bytes, `-`, eight hex
/// digits of a hash of the whole name, and its extension (up to 16 bytes
/// from the last dot): two long names that share a prefix stay apart, and
/// `ks-script-….log` still ends in `.log`. `name` must be ASCII, as every
/// name from [`file_name_from`] is.
pub fn shorten(name: String) -> String {
    if name.len() <= MAX_BYTES {
        return name;
    }
    debug_assert!(name.is_ascii());
    let ext = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => &name[dot..],
        _ => "",
    };
    let tag = format!("-{:08x}", fnv1a(name.as_bytes()));
    let keep = MAX_BYTES - tag.len() - ext.len();
    format!("{}{tag}{ext}", &name[..keep])
}

fn is_component(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && name.len() <= MAX_BYTES
}

fn in_file_set(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

fn in_system_set(b: u8) -> bool {
    in_file_set(b) || b == b':'
}

/// 32-bit FNV-1a: a few lines, no dependency, and stable across builds and
/// architectures (a server-side name must not change with the agent build).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_names_follow_cobbler_and_stay_one_directory() {
        for ok in ["web01", "a.b-c_d:e", "x", "...", &"x".repeat(255)] {
            assert!(is_system_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "/etc",
            "a\0b",
            "a b",
            "é",
            &"x".repeat(256),
        ] {
            assert!(!is_system_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn file_names_follow_cobbler_and_stay_one_file() {
        assert!(is_file_name("anaconda.log"));
        assert!(is_file_name("_.."));
        for bad in [
            "",
            ".",
            "..",
            "a:b",
            "a/b",
            "..\\x",
            "x\n",
            &"y".repeat(256),
        ] {
            assert!(!is_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn derived_names_are_always_valid() {
        for raw in [
            "",
            ".",
            "..",
            "...",
            "weird name+x.log",
            "日本.log",
            "a:b",
            "\0",
        ] {
            let n = file_name_from(raw);
            assert!(is_file_name(&n), "{raw:?} -> {n:?}");
        }
        assert_eq!(file_name_from("weird name+x.log"), "weird_name_x.log");
        assert_eq!(file_name_from(".."), "_..");
        assert_eq!(file_name_from(""), "log");
    }

    #[test]
    fn long_names_are_shortened_keeping_extension_and_apart() {
        let a = format!("ks-script-{}a.log", "x".repeat(300));
        let b = format!("ks-script-{}b.log", "x".repeat(300));
        let (sa, sb) = (file_name_from(&a), file_name_from(&b));
        assert_eq!(sa.len(), MAX_BYTES);
        assert!(
            sa.starts_with("ks-script-xxx") && sa.ends_with(".log"),
            "{sa}"
        );
        assert_ne!(sa, sb);
        assert!(is_file_name(&sa) && is_file_name(&sb));
        // No extension to keep when the last dot is far from the end.
        let c = format!("a.{}", "z".repeat(400));
        assert_eq!(file_name_from(&c).len(), MAX_BYTES);
        // Names that fit are left alone.
        assert_eq!(shorten("x".repeat(255)), "x".repeat(255));
    }
}

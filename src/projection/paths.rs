//! Payload path rules of the kubelet's atomic writer (`validatePath` in atomic_writer.go).

/// Longest accepted payload path, in bytes (Go's `len` on a string counts bytes).
pub const MAX_PATH_LENGTH: usize = 4096;
/// Longest accepted `/`-separated element, in bytes.
pub const MAX_FILE_NAME_LENGTH: usize = 255;

/// Why a payload path was rejected. Messages follow upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid path: must not be empty: \"{0}\"")]
    Empty(String),
    #[error("invalid path: must be relative path: {0}")]
    Absolute(String),
    #[error("invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters")]
    TooLong(String),
    #[error("invalid path: must not contain '..': {0}")]
    ContainsDotDot(String),
    #[error(
        "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
    )]
    NameTooLong(String),
    #[error("invalid path: must not start with '..': {0}")]
    Reserved(String),
    #[error("invalid path: must not contain a NUL byte: {0:?}")]
    ContainsNul(String),
}

/// Checks one payload path as upstream does (on the raw string, before cleaning).
///
/// The checks run in upstream's order, so a path breaking several rules gets the same message as
/// from the kubelet. Lengths are in bytes, as Go's `len` counts them. One rule is ours: no NUL
/// byte, which no file name can hold (upstream lets it through to fail at the system call).
pub fn validate_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty(path.to_owned()));
    }
    if path.contains('\0') {
        return Err(PathError::ContainsNul(path.to_owned()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.to_owned()));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(PathError::TooLong(path.to_owned()));
    }
    for item in path.split('/') {
        if item == ".." {
            return Err(PathError::ContainsDotDot(path.to_owned()));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(PathError::NameTooLong(path.to_owned()));
        }
    }
    // Names starting with `..` belong to the writer (`..data`, `..data_tmp`, timestamped dirs);
    // a bare `..` was already rejected above.
    let first = path.split('/').next().unwrap_or_default();
    if first.starts_with("..") && first.len() > 2 {
        return Err(PathError::Reserved(path.to_owned()));
    }
    Ok(())
}

/// `filepath.Clean` for a validated relative path: `./a` -> `a`, `a//b` -> `a/b`.
///
/// Implements Go's full lexical algorithm (so it is also right for inputs that were not
/// validated): drop empty and `.` elements, let `..` cancel the previous element, never climb
/// above a root, and return `.` for an empty result.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for item in path.split('/') {
        match item {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // `/..` is `/`; a relative path keeps its leading `..` elements.
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's TestValidatePath cases, plus one case per rule for the exact message.
    #[test]
    fn validate_path_table() {
        let max_path = "a".repeat(MAX_PATH_LENGTH + 1);
        let max_file = "a".repeat(MAX_FILE_NAME_LENGTH + 1);
        // 4096 bytes made of short elements, so only the total length is at its limit.
        let mut at_max_path = String::new();
        while at_max_path.len() + 101 < MAX_PATH_LENGTH {
            at_max_path.push_str(&"a".repeat(100));
            at_max_path.push('/');
        }
        at_max_path.push_str(&"b".repeat(MAX_PATH_LENGTH - at_max_path.len()));
        assert_eq!(at_max_path.len(), MAX_PATH_LENGTH);
        let long_element = format!("ok/{max_file}/ok");
        let cases: Vec<(&str, &str, Option<String>)> = vec![
            ("valid 1", "i/am/well/behaved.txt", None),
            ("valid 2", "keepyourheaddownandfollowtherules.txt", None),
            (
                "max path length",
                &max_path,
                Some("invalid path: must be less than or equal to 4096 characters".into()),
            ),
            (
                "max file length",
                &max_file,
                Some("invalid path: filenames must be less than or equal to 255 characters".into()),
            ),
            (
                "absolute failure",
                "/dev/null",
                Some("invalid path: must be relative path: /dev/null".into()),
            ),
            (
                "reserved path",
                "..sneaky.txt",
                Some("invalid path: must not start with '..': ..sneaky.txt".into()),
            ),
            (
                "contains doubledot 1",
                "hello/there/../../../../../../etc/passwd",
                Some(
                    "invalid path: must not contain '..': hello/there/../../../../../../etc/passwd"
                        .into(),
                ),
            ),
            (
                "contains doubledot 2",
                "hello/../etc/somethingbad",
                Some("invalid path: must not contain '..': hello/../etc/somethingbad".into()),
            ),
            (
                "empty",
                "",
                Some("invalid path: must not be empty: \"\"".into()),
            ),
            // Beyond upstream's table: boundaries and the reserved-prefix details.
            ("exactly 4096 bytes", &at_max_path, None),
            ("exactly 255 byte name", &max_file[1..], None),
            (
                "long inner element",
                &long_element,
                Some("invalid path: filenames must be less than or equal to 255 characters".into()),
            ),
            (
                "data link name",
                "..data",
                Some("invalid path: must not start with '..': ..data".into()),
            ),
            (
                "reserved first element only",
                "..data/token",
                Some("invalid path: must not start with '..': ..data/token".into()),
            ),
            (
                "bare dotdot",
                "..",
                Some("invalid path: must not contain '..': ..".into()),
            ),
            ("dotdot-prefixed inner element", "a/..b", None),
            ("dotfile", ".dotfile", None),
            ("dot-slash", "./token", None),
            ("double slash", "a//b", None),
            ("token", "token", None),
            (
                "NUL byte",
                "to\0ken",
                Some("invalid path: must not contain a NUL byte: \"to\\0ken\"".into()),
            ),
        ];
        for (name, path, want) in cases {
            let got = validate_path(path).err().map(|e| e.to_string());
            assert_eq!(got, want, "case {name:?}");
        }
    }

    #[test]
    fn too_long_wins_over_element_rules() {
        // Upstream checks the total length before looking at elements.
        let path = format!("{}/..", "a".repeat(MAX_PATH_LENGTH));
        assert!(matches!(validate_path(&path), Err(PathError::TooLong(_))));
    }

    #[test]
    fn clean_path_matches_go() {
        let cases = [
            ("token", "token"),
            ("./token", "token"),
            ("a//b", "a/b"),
            ("bar///bar/zab.txt", "bar/bar/zab.txt"),
            ("a/./b/", "a/b"),
            ("a/", "a"),
            (".", "."),
            ("./", "."),
            ("", "."),
            ("a/b/../c", "a/c"),
            ("a/../..", ".."),
            ("../../a", "../../a"),
            ("/a/../..", "/"),
            ("//a//", "/a"),
            ("/", "/"),
            (".dotfile", ".dotfile"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input), want, "clean_path({input:?})");
        }
    }
}

//! The names a projected directory's writer reserves (all start with `..`): the published
//! `..data` link, its staging links, and the version directories.

/// The published link to the current version directory.
pub const DATA_DIR_NAME: &str = "..data";
/// The staging link renamed over `..data`.
pub const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// Staging name of a link about to replace a wrong entry. Reserved (starts with `..`); a crash
/// can leave it behind, and `recover` removes it.
pub const NEW_LINK_NAME: &str = "..link_tmp";

/// True for a name `write` may have created as a version directory: `..` plus anything, except
/// the link names.
pub fn is_version_dir_name(name: &str) -> bool {
    name.len() > 2
        && name.starts_with("..")
        && !name.contains('/')
        && name != DATA_DIR_NAME
        && name != NEW_DATA_DIR_NAME
        && name != NEW_LINK_NAME
}

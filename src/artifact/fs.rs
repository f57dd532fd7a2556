//! The filesystem backend's layout: `<fs_root>/<aa>/<uuid>` with `<aa>` the first two hex
//! characters of the UUID, staging under `<fs_root>/.staging/`, and `file://` URIs that may only
//! point at such a file under the configured root (FORMAT.md §7.4).

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{Error, Result};

/// Staging directory for files being written, under the filesystem root.
pub const STAGING_DIR: &str = ".staging";

/// The file of `file_id` under `root`.
pub(crate) fn file_path(root: &Path, file_id: Uuid) -> PathBuf {
    let name = file_id.hyphenated().to_string();
    root.join(&name[..2]).join(name)
}

/// The `file://` URL of an absolute path, percent-encoded where needed.
pub(crate) fn uri_of(path: &Path) -> Result<String> {
    url::Url::from_file_path(path)
        .map(String::from)
        .map_err(|()| Error::UnsafePath {
            path: path.into(),
            reason: "not an absolute path; cannot form a file:// uri".into(),
        })
}

/// The file a `file://` uri names, refused unless it is exactly `<root>/<aa>/<uuid>` (a
/// lowercase hyphenated UUID whose first two characters are `<aa>`). `root` must be absolute
/// with symlinks resolved; a record from a hostile or moved store can name nothing else.
pub fn path_of_uri(uri: &str, root: &Path) -> Result<PathBuf> {
    let refuse = |reason: &str| Error::UnsafePath {
        path: uri.into(),
        reason: reason.into(),
    };
    let url = url::Url::parse(uri).map_err(|e| refuse(&format!("not a URL: {e}")))?;
    if url.scheme() != "file" {
        return Err(refuse("not a file:// uri"));
    }
    if url.host().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("a file:// uri with a host, query or fragment"));
    }
    let path = url
        .to_file_path()
        .map_err(|()| refuse("not a local file path"))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let shard = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    let in_root = path.parent().and_then(Path::parent) == Some(root);
    let well_formed = Uuid::try_parse(name).is_ok_and(|u| u.hyphenated().to_string() == name)
        && shard == Some(&name[..2]);
    if !in_root || !well_formed {
        return Err(Error::UnsafePath {
            path,
            reason: format!(
                "outside the artifact root {} (only <root>/<aa>/<uuid> is accepted)",
                root.display()
            ),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_with_percent_encoding_and_stay_inside_the_root() {
        let root = Path::new("/data/art ifacts/ä");
        let id = Uuid::new_v4();
        let p = file_path(root, id);
        let uri = uri_of(&p).unwrap();
        assert!(
            uri.starts_with("file:///data/art%20ifacts/%C3%A4/"),
            "{uri}"
        );
        assert_eq!(path_of_uri(&uri, root).unwrap(), p);
        assert_eq!(
            p.parent().unwrap().file_name().unwrap(),
            &id.to_string()[..2]
        );
    }

    #[test]
    fn uris_outside_the_root_are_refused() {
        let root = Path::new("/data/a");
        let id = Uuid::new_v4().to_string();
        for bad in [
            format!("file:///etc/{}/{id}", &id[..2]),
            format!("file:///data/a/{}/../../../etc/passwd", &id[..2]),
            format!("file:///data/a/zz/{id}"),
            format!("file:///data/a/{}/{}", &id[..2], id.to_uppercase()),
            format!("file://host/data/a/{}/{id}", &id[..2]),
            format!("http:///data/a/{}/{id}", &id[..2]),
            "file:///data/a/passwd".into(),
        ] {
            let err = path_of_uri(&bad, root).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{bad}: {err}");
        }
    }
}

//! Index credentials off the command line: `http://user:pw@host/simple` becomes the URL
//! `http://host/simple` on uv's or pip's command line and a `machine host login user password
//! pw` line in a netrc file in a private folder (mode 0700, removed after the run), found by
//! `NETRC`, which both read (uv itself, pip through requests).
//!
//! A command line is readable by every user of the machine (`/proc/PID/cmdline`, `ps`); an
//! environment variable holding the password would be inherited by every build backend uv or
//! pip starts. The file is neither: a backend sees only its path.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::redact;

/// Index URLs without their credentials, and the netrc text that carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Split {
    pub urls: Vec<String>,
    /// `machine … login … password …` lines; empty when no URL carried credentials.
    pub netrc: String,
}

/// Take the userinfo out of each of `urls`. A password that a netrc file cannot carry (blanks,
/// quotes, backslashes, `#`) is refused, naming the index (redacted).
pub(crate) fn split(urls: &[String]) -> Result<Split> {
    let mut out = Split::default();
    for url in urls {
        let (bare, creds) = strip(url);
        if let Some((host, user, password)) = creds {
            for (what, value) in [("user name", &user), ("password", &password)] {
                if value.is_empty()
                    || value
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "\"'\\#".contains(c))
                {
                    return Err(Error::Config(format!(
                        "index {}: the {what} is empty or holds a blank, a quote, a backslash or \
                         '#', which cannot be handed to uv and pip off the command line",
                        redact::url(url)
                    )));
                }
            }
            out.netrc.push_str(&format!(
                "machine {host} login {user} password {password}\n"
            ));
        }
        out.urls.push(bare);
    }
    Ok(out)
}

/// `url` without userinfo, and (host, user, password) percent-decoded when it had some.
fn strip(url: &str) -> (String, Option<(String, String, String)>) {
    let Some(sep) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[sep + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let (userinfo, hostport) = (&authority[..at], &authority[at + 1..]);
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
        None => hostport
            .rsplit_once(':')
            .map_or(hostport, |(h, _)| h)
            .to_string(),
    };
    let bare = format!("{}{hostport}{}", &url[..sep + 3], &rest[authority_end..]);
    (
        bare,
        Some((
            host,
            redact::percent_decode(user),
            redact::percent_decode(password),
        )),
    )
}

/// A private folder holding `netrc`; removed when the last clone of the handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct NetrcFile {
    dir: Arc<tempfile::TempDir>,
}

impl NetrcFile {
    /// Write `text` (non-empty) into a new private folder.
    pub(crate) fn write(text: &str) -> Result<NetrcFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("bifrost-netrc-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::io("creating a private folder", std::env::temp_dir(), e))?;
        let path = dir.path().join("netrc");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("writing", &path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io("writing", &path, e))?;
        Ok(NetrcFile { dir: Arc::new(dir) })
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("netrc")
    }

    #[cfg(test)]
    fn folder(&self) -> &std::path::Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn credentials_move_to_the_netrc_and_the_rest_stays() {
        let s = split(&[
            "http://alice:s%40cret@127.0.0.1:8080/simple/".into(),
            "https://pypi.org/simple".into(),
            "http://bob:pw@[::1]:9/x?y".into(),
        ])
        .unwrap();
        assert_eq!(
            s.urls,
            [
                "http://127.0.0.1:8080/simple/",
                "https://pypi.org/simple",
                "http://[::1]:9/x?y"
            ]
        );
        assert_eq!(
            s.netrc,
            "machine 127.0.0.1 login alice password s@cret\nmachine ::1 login bob password pw\n"
        );
        assert_eq!(
            split(&["https://pypi.org/simple".into()]).unwrap().netrc,
            ""
        );
        let e = split(&["http://u:xq%20yz@host/".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://u:***@host/"), "{e}");
        assert!(!e.contains("xq"), "{e}");
    }

    #[test]
    fn the_file_is_private_and_goes_with_its_handle() {
        use std::os::unix::fs::PermissionsExt;
        use std::path::Path;
        let f = NetrcFile::write("machine h login u password p\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f.path()), 0o600);
        assert_eq!(mode(f.folder()), 0o700);
        let folder = f.folder().to_path_buf();
        drop(f);
        assert!(!folder.exists());
    }

    proptest! {
        /// No URL keeps a password; each netrc line names the URL's host and gives the decoded
        /// credentials back.
        #[test]
        fn no_password_stays_in_a_url(
            user in "[A-Za-z0-9._-]{1,10}",
            password in "[A-Za-z0-9!$%&()*+,;=@:/?~-]{1,16}",
            host in "[a-z]{1,8}(\\.[a-z]{1,5})?",
            port in 1u16..65535,
            path in "(/[a-z]{0,6}){0,3}",
        ) {
            let encoded = redact::percent_encode(&password);
            let url = format!("https://{user}:{encoded}@{host}:{port}{path}");
            let s = split(std::slice::from_ref(&url)).unwrap();
            prop_assert_eq!(&s.urls[0], &format!("https://{host}:{port}{path}"));
            prop_assert_eq!(s.netrc, format!("machine {host} login {user} password {password}\n"));
        }
    }
}

//! Who holds a seat, in words: the uid a client's session id carries (`uid:<uid>/…`), with
//! the user's name when the client runs on the server's own machine, where the server's
//! user database is the client's (`getpwuid_r`). Elsewhere the uid alone is shown: the same
//! number may name someone else on another machine. The protocol carries no user name.

/// The user name of `uid` in this machine's user database (`getpwuid_r`), or `None`.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `pwd` and `buf` outlive the call; getpwuid_r writes the strings it points
        // `pwd`'s fields at into `buf` (of the length given) and sets `result` to `&pwd` or
        // NULL. Nothing is read from `pwd` unless `result` is non-NULL.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success `pw_name` points at a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty());
    }
}

/// The uid of a session id (`uid:<uid>/…`).
pub fn session_uid(session: &str) -> Option<u32> {
    crate::host::SessionId {
        kind: crate::host::SessionKind::Login,
        id: session.to_string(),
    }
    .uid()
}

/// How the admin page names the user of a session on `hostname`: `name (uid N)` when the
/// client is on this machine (`this_host`) and the uid has a name here, else `uid N`;
/// `None` without a uid.
pub fn user_label(session: &str, hostname: &str, this_host: &str) -> Option<String> {
    let uid = session_uid(session)?;
    let name = (hostname == this_host).then(|| user_name(uid)).flatten();
    Some(match name {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_named_and_an_unknown_uid_is_not() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_name(4_000_000_000), None);
    }

    #[test]
    fn a_local_client_gets_its_name_and_a_remote_one_its_uid() {
        let me = crate::host::hostname();
        assert_eq!(
            user_label("uid:0/tty/1", &me, &me).as_deref(),
            Some("root (uid 0)")
        );
        assert_eq!(
            user_label("uid:0/tty/1", "elsewhere", &me).as_deref(),
            Some("uid 0")
        );
        assert_eq!(
            user_label("uid:4000000000/x", &me, &me).as_deref(),
            Some("uid 4000000000")
        );
        assert_eq!(user_label("no uid here", &me, &me), None);
    }
}

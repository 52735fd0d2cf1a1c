//! Waiting for the answers of many connections at once.

use std::os::fd::AsRawFd;

use crate::client::Conn;

/// An epoll instance watching every live connection for input (level-triggered; the
/// event's data is the connection's index).
pub(crate) struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    pub(crate) fn new(conns: &[Conn]) -> std::io::Result<Epoll> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the result is checked before it is owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new epoll descriptor that nothing else owns.
        let ep = Epoll(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        for (i, c) in conns.iter().enumerate().filter(|(_, c)| !c.dead) {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open; ev is a valid epoll_event.
            let r = unsafe {
                libc::epoll_ctl(
                    ep.0.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    c.io.get_ref().as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(ep)
    }

    pub(crate) fn remove(&self, c: &Conn) {
        // SAFETY: both descriptors are open; a NULL event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                c.io.get_ref().as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Waits up to `ms` for input; returns how many events were written to `events`.
    pub(crate) fn wait(&self, events: &mut [libc::epoll_event], ms: i32) -> std::io::Result<usize> {
        // SAFETY: events is a valid, writable array of events.len() entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

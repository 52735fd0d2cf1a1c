//! The C ABI: the only `extern "C"` code in the crate.
//!
//! Everything here is a thin translation: check the arguments, call [`crate::client`], map
//! the error to a [`status::tessera_status`]. Every export runs inside `boundary`, which
//! catches panics, and every pointer is checked before use. Sessions and seats are integer
//! handles from a generational table ([`handles`]). The header `include/tessera.h` is
//! generated from these files by cbindgen; the doc comments here are its documentation.
#![allow(non_camel_case_types)]
// The exports take raw pointers from C and are safe to call only under the contract their
// docs state (pointers valid for the sizes given), exactly like any C function; every
// dereference is NULL-checked first and marked with a SAFETY comment. Marking them `unsafe`
// would change nothing for C callers.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod api;
pub mod handles;
pub mod status;

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::Error;
pub use api::*;
pub use status::tessera_status;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs `f` inside the panic boundary; maps its error to a status and records the message
/// for `tessera_last_error`. A panic becomes `TESSERA_E_PANIC`.
pub(crate) fn boundary(f: impl FnOnce() -> Result<(), Error>) -> tessera_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => tessera_status::TESSERA_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            status::from_error(&e)
        }
        Err(_) => {
            set_last_error("internal error: a panic was caught at the C API boundary");
            tessera_status::TESSERA_E_PANIC
        }
    }
}

/// Like [`boundary`] for exports that return a value rather than a status.
pub(crate) fn boundary_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Returns `InvalidArgument` when a pointer is NULL.
macro_rules! check_ptr {
    ($p:expr, $name:literal) => {
        if $p.is_null() {
            return Err($crate::Error::InvalidArgument(
                concat!($name, " is NULL").into(),
            ));
        }
    };
}
pub(crate) use check_ptr;

/// A `(ptr, len)` input as a slice: `(NULL, 0)` is empty; `(NULL, n > 0)` is an error.
///
/// # Safety
/// When non-NULL, `ptr` must point to `len` readable bytes that outlive the returned slice.
pub(crate) unsafe fn input<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], Error> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::InvalidArgument(format!(
            "{name} is NULL but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{name} length {len} is out of range"
        )));
    }
    // SAFETY: the caller promises `ptr` points to `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A caller-owned output buffer `(ptr, cap)`: `(NULL, 0)` is a size query.
///
/// # Safety
/// When non-NULL, `ptr` must point to `cap` writable bytes that outlive the returned slice.
pub(crate) unsafe fn output<'a>(
    ptr: *mut u8,
    cap: usize,
    name: &str,
) -> Result<&'a mut [u8], Error> {
    if ptr.is_null() {
        if cap == 0 {
            return Ok(&mut []);
        }
        return Err(Error::InvalidArgument(format!(
            "{name} is NULL but its capacity is {cap}"
        )));
    }
    if cap > isize::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{name} capacity {cap} is out of range"
        )));
    }
    // SAFETY: the caller promises `ptr` points to `cap` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, cap) })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Run under Miri too (`make miri`): the slices must cover exactly the caller's memory.

    #[test]
    fn inputs_are_the_callers_bytes_and_null_is_empty_only_with_length_zero() {
        let data = [1u8, 2, 3];
        // SAFETY: `data` has 3 readable bytes; the NULL cases read nothing.
        unsafe {
            assert_eq!(input(data.as_ptr(), 3, "x").unwrap(), &data);
            assert_eq!(input(data.as_ptr(), 0, "x").unwrap(), &[] as &[u8]);
            assert!(input(std::ptr::null(), 0, "x").unwrap().is_empty());
            assert!(input(std::ptr::null(), 1, "x").is_err());
            assert!(input(data.as_ptr(), usize::MAX, "x").is_err());
        }
    }

    #[test]
    fn outputs_are_the_callers_buffer_and_null_is_a_size_query() {
        let mut buf = [0u8; 4];
        // SAFETY: `buf` has 4 writable bytes; the NULL cases write nothing.
        unsafe {
            let out = output(buf.as_mut_ptr(), 4, "out").unwrap();
            out.copy_from_slice(&[9, 8, 7, 6]);
            assert!(output(std::ptr::null_mut(), 0, "out").unwrap().is_empty());
            assert!(output(std::ptr::null_mut(), 4, "out").is_err());
            assert!(output(buf.as_mut_ptr(), usize::MAX, "out").is_err());
        }
        assert_eq!(buf, [9, 8, 7, 6]);
    }

    #[test]
    fn a_panic_inside_the_boundary_is_a_status_and_a_message() {
        let st = boundary(|| panic!("boom"));
        assert_eq!(st, tessera_status::TESSERA_E_PANIC);
        // SAFETY: NUL-terminated, valid until the next call on this thread.
        let msg = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        assert!(msg.to_str().unwrap().contains("panic"), "{msg:?}");
    }
}

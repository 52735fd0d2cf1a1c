// Handles.cs: the SafeHandles that own tessera_session and tessera_seat handles.
//
// The C handles are uint64_t and 0 is never a valid one. They live in SafeHandle's IntPtr,
// which is 64 bits wide in the 64-bit processes this binding runs in (Library refuses a
// 32-bit process before any handle is made). The marshaller fills them in from the out
// parameter of tessera_open / tessera_acquire, so a handle is owned from the moment it
// exists; the finalizer releases one the app forgot to dispose.
using System;
using System.Runtime.InteropServices;

namespace Tessera
{
    /// <summary>Owns a <c>tessera_session</c>; releasing it calls <c>tessera_close</c> (which
    /// also releases every seat the session still holds).</summary>
    public sealed class SessionHandle : SafeHandle
    {
        /// <summary>An invalid handle, for the marshaller to fill in.</summary>
        public SessionHandle() : base(IntPtr.Zero, true) { }

        /// <summary>True for 0, the one value the library never hands out.</summary>
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        /// <summary>The C handle's value (for diagnostics).</summary>
        public ulong Value { get { return unchecked((ulong)handle.ToInt64()); } }

        /// <summary>Closes the session. A handle the library no longer knows counts as closed.</summary>
        protected override bool ReleaseHandle()
        {
            Status st = NativeMethods.tessera_close(Value);
            return st == Status.Ok || st == Status.InvalidHandle;
        }
    }

    /// <summary>Owns a <c>tessera_seat</c>; releasing it calls <c>tessera_release</c>.</summary>
    public sealed class SeatHandle : SafeHandle
    {
        /// <summary>An invalid handle, for the marshaller to fill in.</summary>
        public SeatHandle() : base(IntPtr.Zero, true) { }

        /// <summary>True for 0, the one value the library never hands out.</summary>
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        /// <summary>The C handle's value (for diagnostics).</summary>
        public ulong Value { get { return unchecked((ulong)handle.ToInt64()); } }

        /// <summary>Releases the seat. INVALID_HANDLE means it is already gone (its session
        /// was closed, which released it), which is what releasing wanted.</summary>
        protected override bool ReleaseHandle()
        {
            Status st = NativeMethods.tessera_release(Value);
            return st == Status.Ok || st == Status.InvalidHandle;
        }
    }
}

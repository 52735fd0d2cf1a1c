// Native.cs: the P/Invoke declarations of include/tessera.h, one per exported function, and
// the structs that cross the ABI, laid out exactly as in the header (LP64 Linux).
//
// Nothing here is public: apps use Session, Seat and Library. Strings the library returns
// (tessera_status_str, tessera_last_error, tessera_version) are owned by the library, so
// they come back as IntPtr and are copied with Marshal.PtrToStringAnsi; the marshaller
// never frees them.
using System;
using System.Runtime.InteropServices;

namespace Tessera
{
    /// <summary><c>tessera_open_options</c>: 40 bytes on LP64, pointers and size_t as IntPtr/UIntPtr.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct OpenOptionsNative
    {
        public uint struct_size;
        public uint vendor_id;
        public IntPtr publisher_key;       // const uint8_t *, borrowed for tessera_open only
        public UIntPtr publisher_key_len;  // size_t
        public uint sources;
        public uint timeout_ms;
        public IntPtr servers;             // const char *, NUL-terminated UTF-8, or NULL
    }

    /// <summary><c>tessera_seat_details</c>: 184 bytes on LP64. Blittable (fixed buffers).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct SeatDetailsNative
    {
        public uint struct_size;
        public uint vendor_id;
        public uint product_code;
        public uint features;
        public uint quantity;
        public uint seats_in_use;
        public ulong expiry;
        public uint source;
        public uint counting_unit;
        public uint container_kind;
        public uint flags;
        public fixed byte container_serial[NativeMethods.TESSERA_SERIAL_MAX];
        public uint transport;
        public fixed byte server[NativeMethods.TESSERA_SERIAL_MAX];
    }

    /// <summary><c>tessera_license_info</c>: 192 bytes on LP64. Blittable (fixed buffers), so an
    /// array of it is passed to <c>tessera_license_list</c> pinned, without copies.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct LicenseInfoNative
    {
        public uint struct_size;
        public uint vendor_id;
        public uint product_code;
        public uint features;
        public uint quantity;
        public uint seats_in_use;
        public ulong expiry;
        public uint source;
        public uint counting_unit;
        public uint container_kind;
        public uint flags;
        public int status;
        public uint transport;
        public fixed byte container_serial[NativeMethods.TESSERA_SERIAL_MAX];
        public fixed byte server[NativeMethods.TESSERA_SERIAL_MAX];
        public ulong borrowed_until;
    }

    /// <summary>Every function of tessera.h. Handles are uint64_t; on input they are passed
    /// as SafeHandles (the marshaller add-refs them for the call, so a handle disposed on
    /// another thread cannot be released mid-call) or, where a SafeHandle is being released,
    /// as ulong.</summary>
    internal static class NativeMethods
    {
        /// <summary>The name DllImport looks for: Mono probes libtessera.so (and tessera.so)
        /// on LD_LIBRARY_PATH and the system library path, after any dllmap in Tessera.dll.config.</summary>
        internal const string Lib = "tessera";

        internal const int TESSERA_SERIAL_MAX = 64;

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_open_options_init(IntPtr options, UIntPtr options_size);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_open(ref OpenOptionsNative options, out SessionHandle session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_close(ulong session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_acquire(SessionHandle session, uint product_code, uint features,
                                                      uint flags, out SeatHandle seat);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_acquire_wait(SessionHandle session, uint product_code, uint features,
                                                           uint flags, uint timeout_ms, out SeatHandle seat);

        /// <summary><paramref name="out"/> is null for the size query, else an array of at
        /// least <paramref name="out_cap"/> entries.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_license_list(SessionHandle session, [Out] LicenseInfoNative[] @out,
                                                           UIntPtr out_cap, UIntPtr entry_size, out UIntPtr out_count);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_release(ulong seat);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_seat_info(SeatHandle seat, ref SeatDetailsNative info);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_encrypt(SeatHandle seat, uint flags, byte[] input, UIntPtr input_len,
                                                      [Out] byte[] @out, UIntPtr out_cap, out UIntPtr out_len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_decrypt(SeatHandle seat, uint flags, byte[] input, UIntPtr input_len,
                                                      [Out] byte[] @out, UIntPtr out_cap, out UIntPtr out_len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_activation_request(SessionHandle session, [Out] byte[] @out,
                                                                 UIntPtr out_cap, out UIntPtr out_len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_activation_install(SessionHandle session, byte[] activation,
                                                                 UIntPtr activation_len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_borrow(SessionHandle session, uint product_code, uint features,
                                                     uint days, out ulong until_out);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status tessera_return_borrowed(SessionHandle session, uint product_code);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr tessera_status_str(int status);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr tessera_last_error();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr tessera_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint tessera_abi_version();

        /// <summary>A library-owned C string, copied; never freed here.</summary>
        internal static string CopyString(IntPtr p)
        {
            return p == IntPtr.Zero ? "" : (Marshal.PtrToStringAnsi(p) ?? "");
        }
    }
}

// Exceptions.cs: one exception type per status, under one base per status group, and the
// ThrowIfError helper that turns a non-OK status into the right one with the library's
// thread-local detail message.
using System;

namespace Tessera
{
    /// <summary>A Tessera call failed. Carries the <see cref="Status"/> the C API returned, the
    /// library's detail message (<c>tessera_last_error</c> of the failing call's thread) and
    /// the C function that failed. Anything but success means "not licensed" / "not done".</summary>
    public class TesseraException : Exception
    {
        /// <summary>The status the C API returned.</summary>
        public Status Status { get; private set; }

        /// <summary>The library's detail of this failure ("" when it gave none).</summary>
        public string Detail { get; private set; }

        /// <summary>The C function that failed (e.g. "tessera_acquire"), or null.</summary>
        public string Call { get; private set; }

        /// <summary>An error with a message of the caller's making.</summary>
        public TesseraException(Status status, string message)
            : this(status, message, "", null, null) { }

        /// <summary>The full form: status, message, library detail, C function, inner exception.</summary>
        public TesseraException(Status status, string message, string detail, string call, Exception inner)
            : base(message, inner)
        {
            Status = status;
            Detail = detail ?? "";
            Call = call;
        }
    }

    // ---- status groups -------------------------------------------------------------------

    /// <summary>Statuses 1–99: an argument or a handle is wrong (a bug in the caller).</summary>
    public class UsageException : TesseraException
    {
        /// <summary>See <see cref="TesseraException"/>.</summary>
        public UsageException(Status s, string m, string d, string c) : base(s, m, d, c, null) { }
    }

    /// <summary>Statuses 100–199: a licensing verdict (no license, no seat, tampered data, ...).</summary>
    public class LicensingException : TesseraException
    {
        /// <summary>See <see cref="TesseraException"/>.</summary>
        public LicensingException(Status s, string m, string d, string c) : base(s, m, d, c, null) { }
    }

    /// <summary>Statuses 200–299: I/O or a timeout talking to a file, device or server.</summary>
    public class TransportException : TesseraException
    {
        /// <summary>See <see cref="TesseraException"/>.</summary>
        public TransportException(Status s, string m, string d, string c) : base(s, m, d, c, null) { }
    }

    /// <summary>Statuses 900–999: a bug in the library.</summary>
    public class InternalException : TesseraException
    {
        /// <summary>See <see cref="TesseraException"/>.</summary>
        public InternalException(Status s, string m, string d, string c) : base(s, m, d, c, null) { }
    }

    /// <summary>libtessera could not be loaded, or speaks another ABI than this binding.
    /// <see cref="TesseraException.Status"/> is <see cref="Tessera.Status.Unsupported"/>.</summary>
    public class LibraryLoadException : TesseraException
    {
        /// <summary>The library name DllImport looked for ("tessera", i.e. libtessera.so).</summary>
        public string LibraryName { get; private set; }

        /// <summary>See <see cref="TesseraException"/>.</summary>
        public LibraryLoadException(string libraryName, string message, Exception inner)
            : base(Status.Unsupported, message, "", null, inner)
        {
            LibraryName = libraryName;
        }
    }

    // ---- one type per status ---------------------------------------------------------------
#pragma warning disable 1591 // each is documented by its Status value
    public class InvalidArgumentException : UsageException { public InvalidArgumentException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class InvalidHandleException : UsageException { public InvalidHandleException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class BufferTooSmallException : UsageException { public BufferTooSmallException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class UnsupportedException : UsageException { public UnsupportedException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class ForkedException : UsageException { public ForkedException(Status s, string m, string d, string c) : base(s, m, d, c) { } }

    public class NoLicenseException : LicensingException { public NoLicenseException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class NoSeatException : LicensingException { public NoSeatException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class LicenseExpiredException : LicensingException { public LicenseExpiredException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class FeatureMissingException : LicensingException { public FeatureMissingException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class VmNotAllowedException : LicensingException { public VmNotAllowedException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class ExclusiveDeniedException : LicensingException { public ExclusiveDeniedException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class BindingMismatchException : LicensingException { public BindingMismatchException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class TamperedException : LicensingException { public TamperedException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class ClockRollbackException : LicensingException { public ClockRollbackException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class BadSignatureException : LicensingException { public BadSignatureException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class WrongVendorException : LicensingException { public WrongVendorException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class UnknownVersionException : LicensingException { public UnknownVersionException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class MalformedDataException : LicensingException { public MalformedDataException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class DongleSharedException : LicensingException { public DongleSharedException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class LeaseLostException : LicensingException { public LeaseLostException(Status s, string m, string d, string c) : base(s, m, d, c) { } }

    public class TesseraIOException : TransportException { public TesseraIOException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class TimedOutException : TransportException { public TimedOutException(Status s, string m, string d, string c) : base(s, m, d, c) { } }

    public class InternalErrorException : InternalException { public InternalErrorException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
    public class PanicException : InternalException { public PanicException(Status s, string m, string d, string c) : base(s, m, d, c) { } }
#pragma warning restore 1591

    /// <summary>Status to exception.</summary>
    public static class Errors
    {
        /// <summary>Throws the exception for <paramref name="status"/> unless it is
        /// <see cref="Status.Ok"/>. Reads <c>tessera_last_error</c> at once: call it directly
        /// after the failing C call, on the same thread, with no other Tessera call between.</summary>
        internal static void ThrowIfError(Status status, string call)
        {
            if (status == Status.Ok) return;
            string detail = NativeMethods.CopyString(NativeMethods.tessera_last_error());
            string words = NativeMethods.CopyString(NativeMethods.tessera_status_str((int)status));
            throw Create(status, call, words, detail);
        }

        /// <summary>The exception for a non-OK status: the type for its number (or its group's
        /// type for a number this binding does not know; <see cref="TesseraException"/> outside
        /// every group). Message: "call: words (status N): detail".</summary>
        public static TesseraException Create(Status status, string call, string words, string detail)
        {
            if (status == Status.Ok)
                throw new ArgumentException("Status.Ok is not an error", "status");
            string m = string.Format("{0}{1} (status {2})", call != null ? call + ": " : "",
                                     string.IsNullOrEmpty(words) ? status.ToString() : words, (int)status);
            if (!string.IsNullOrEmpty(detail)) m += ": " + detail;
            string c = call;
            string d = detail ?? "";
            switch (status)
            {
                case Status.InvalidArgument: return new InvalidArgumentException(status, m, d, c);
                case Status.InvalidHandle: return new InvalidHandleException(status, m, d, c);
                case Status.BufferTooSmall: return new BufferTooSmallException(status, m, d, c);
                case Status.Unsupported: return new UnsupportedException(status, m, d, c);
                case Status.Forked: return new ForkedException(status, m, d, c);
                case Status.NoLicense: return new NoLicenseException(status, m, d, c);
                case Status.NoSeat: return new NoSeatException(status, m, d, c);
                case Status.Expired: return new LicenseExpiredException(status, m, d, c);
                case Status.FeatureMissing: return new FeatureMissingException(status, m, d, c);
                case Status.VmNotAllowed: return new VmNotAllowedException(status, m, d, c);
                case Status.ExclusiveDenied: return new ExclusiveDeniedException(status, m, d, c);
                case Status.BindingMismatch: return new BindingMismatchException(status, m, d, c);
                case Status.Tampered: return new TamperedException(status, m, d, c);
                case Status.ClockRollback: return new ClockRollbackException(status, m, d, c);
                case Status.BadSignature: return new BadSignatureException(status, m, d, c);
                case Status.WrongVendor: return new WrongVendorException(status, m, d, c);
                case Status.UnknownVersion: return new UnknownVersionException(status, m, d, c);
                case Status.Malformed: return new MalformedDataException(status, m, d, c);
                case Status.DongleShared: return new DongleSharedException(status, m, d, c);
                case Status.LeaseLost: return new LeaseLostException(status, m, d, c);
                case Status.Io: return new TesseraIOException(status, m, d, c);
                case Status.Timeout: return new TimedOutException(status, m, d, c);
                case Status.Internal: return new InternalErrorException(status, m, d, c);
                case Status.Panic: return new PanicException(status, m, d, c);
            }
            int n = (int)status;
            if (n >= 1 && n <= 99) return new UsageException(status, m, d, c);
            if (n >= 100 && n <= 199) return new LicensingException(status, m, d, c);
            if (n >= 200 && n <= 299) return new TransportException(status, m, d, c);
            if (n >= 900 && n <= 999) return new InternalException(status, m, d, c);
            return new TesseraException(status, m, d, c, null);
        }
    }
}

// Status.cs: tessera_status and the other enumerations of tessera.h, with the header's numbers.
using System;

namespace Tessera
{
    /// <summary>The result of every fallible call (<c>tessera_status</c>). <see cref="Ok"/> is the
    /// only success; the binding throws a <see cref="TesseraException"/> for every other value.
    /// Groups: 1–99 arguments and handles, 100–199 licensing verdicts, 200–299 transport,
    /// 900–999 internal.</summary>
    public enum Status
    {
        /// <summary>Success.</summary>
        Ok = 0,
        /// <summary>An argument is NULL, out of range, or malformed.</summary>
        InvalidArgument = 1,
        /// <summary>A session or seat handle is stale, released, forged, or of the wrong kind.</summary>
        InvalidHandle = 2,
        /// <summary>An output buffer is too small (the binding sizes its buffers itself).</summary>
        BufferTooSmall = 3,
        /// <summary>Well formed but not supported by this build or this license source.</summary>
        Unsupported = 4,
        /// <summary>The session or seat was opened by the parent of this process, which then forked;
        /// handles are per process: open a new session in the child.</summary>
        Forked = 5,
        /// <summary>No license for the product in any allowed source.</summary>
        NoLicense = 100,
        /// <summary>A license exists but all of its seats are in use.</summary>
        NoSeat = 101,
        /// <summary>The license has expired.</summary>
        Expired = 102,
        /// <summary>The license lacks requested feature bits.</summary>
        FeatureMissing = 103,
        /// <summary>The license does not allow virtual machines, and this is one.</summary>
        VmNotAllowed = 104,
        /// <summary>Exclusive use refused, or another process holds the license exclusively.</summary>
        ExclusiveDenied = 105,
        /// <summary>A container or activation is bound to another machine or container.</summary>
        BindingMismatch = 106,
        /// <summary>Data failed its integrity check: a container file was edited, a ciphertext modified.</summary>
        Tampered = 107,
        /// <summary>The clock runs behind the container's high-water mark.</summary>
        ClockRollback = 108,
        /// <summary>A signature does not verify against the publisher key.</summary>
        BadSignature = 109,
        /// <summary>The data belongs to another publisher.</summary>
        WrongVendor = 110,
        /// <summary>A file or message has a format version this library does not know.</summary>
        UnknownVersion = 111,
        /// <summary>A file or message is truncated or not of the expected kind.</summary>
        Malformed = 112,
        /// <summary>A dongle is used by more than one host at once and is locked out.</summary>
        DongleShared = 113,
        /// <summary>A network seat's lease could not be kept. Acquire again.</summary>
        LeaseLost = 114,
        /// <summary>An I/O operation failed (file, device, network).</summary>
        Io = 200,
        /// <summary>An operation did not finish within its timeout.</summary>
        Timeout = 201,
        /// <summary>A bug in the library: an invariant does not hold.</summary>
        Internal = 900,
        /// <summary>A panic was caught at the API boundary.</summary>
        Panic = 901,
    }

    /// <summary>Where a license may come from (<c>TESSERA_SOURCE_*</c>).</summary>
    [Flags]
    public enum Sources : uint
    {
        /// <summary>A USB dongle on this machine.</summary>
        Dongle = 1,
        /// <summary>A software container on this machine.</summary>
        Software = 2,
        /// <summary>A license server on the network.</summary>
        Network = 4,
        /// <summary>All sources (the default).</summary>
        All = 7,
    }

    /// <summary><c>tessera_acquire</c> flags.</summary>
    [Flags]
    public enum AcquireFlags : uint
    {
        /// <summary>A shared seat.</summary>
        None = 0,
        /// <summary>Take the license exclusively; the license must allow it (<c>TESSERA_ACQUIRE_EXCLUSIVE</c>).</summary>
        Exclusive = 1,
    }

    /// <summary>Bits of <see cref="LicenseInfo.Flags"/> (<c>TESSERA_LICENSE_*</c>).</summary>
    [Flags]
    public enum LicenseFlags : uint
    {
        /// <summary>No flag.</summary>
        None = 0,
        /// <summary>The license allows exclusive use (<see cref="AcquireFlags.Exclusive"/>).</summary>
        ExclusiveAllowed = 1,
        /// <summary>A seat borrowed from a license server (<see cref="Session.Borrow"/>), kept on
        /// this machine (<c>TESSERA_LICENSE_BORROWED</c>).</summary>
        Borrowed = 2,
    }

    /// <summary>Bits of <c>tessera_seat_details.flags</c> beyond <see cref="AcquireFlags"/>
    /// (<c>TESSERA_SEAT_*</c>); <see cref="SeatInfo.Borrowed"/> reads them.</summary>
    [Flags]
    public enum SeatFlags : uint
    {
        /// <summary>No flag.</summary>
        None = 0,
        /// <summary>A seat borrowed from a license server (<c>TESSERA_SEAT_BORROWED</c>).</summary>
        Borrowed = 2,
    }

    /// <summary>How <see cref="Seat.Encrypt"/> encrypts (<c>TESSERA_CRYPT_*</c>).</summary>
    public enum CryptMode : uint
    {
        /// <summary>The container derives a per-message key; the app encrypts at memory speed.</summary>
        Derived = 0,
        /// <summary>The data is encrypted inside the container; the key never leaves it.</summary>
        Direct = 1,
    }

    /// <summary>What one seat covers (<c>TESSERA_UNIT_*</c>).</summary>
    public enum CountingUnit : uint
    {
        /// <summary>One machine, physical or virtual.</summary>
        Station = 1,
        /// <summary>One login or terminal-server session.</summary>
        Session = 2,
        /// <summary>One process.</summary>
        Process = 3,
        /// <summary>Each acquire.</summary>
        Handle = 4,
    }

    /// <summary>The kind of container holding a license (<c>TESSERA_CONTAINER_*</c>).</summary>
    public enum ContainerKind : uint
    {
        /// <summary>A software container.</summary>
        Software = 1,
        /// <summary>A dongle.</summary>
        Dongle = 2,
    }

    /// <summary>How a dongle is attached (<c>TESSERA_TRANSPORT_*</c>).</summary>
    public enum Transport : uint
    {
        /// <summary>Not a dongle.</summary>
        None = 0,
        /// <summary>A dongle in HID mode.</summary>
        Hid = 1,
        /// <summary>A dongle in mass-storage mode.</summary>
        Msd = 2,
        /// <summary>A dongle on raw USB bulk endpoints.</summary>
        Usb = 3,
    }
}

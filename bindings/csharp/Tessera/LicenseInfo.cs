// LicenseInfo.cs: one license a session can see without taking a seat (tessera_license_info).
using System;
using System.Runtime.InteropServices;

namespace Tessera
{
    /// <summary>One license <see cref="Session.Licenses"/> lists (<c>tessera_license_info</c>,
    /// strings decoded). A snapshot: <see cref="SeatsInUse"/> and <see cref="Status"/> are those
    /// of the moment of the listing.</summary>
    public sealed class LicenseInfo
    {
        /// <summary>The publisher.</summary>
        public uint VendorId { get; private set; }
        /// <summary>The product.</summary>
        public uint ProductCode { get; private set; }
        /// <summary>Feature bits the license grants.</summary>
        public uint Features { get; private set; }
        /// <summary>The license quantity.</summary>
        public uint Quantity { get; private set; }
        /// <summary>Seats of the license in use now: on this machine for a dongle or software
        /// container, on the server for a network license.</summary>
        public uint SeatsInUse { get; private set; }
        /// <summary>Expiry in seconds since the Unix epoch; 0 when the license is perpetual.</summary>
        public ulong ExpiryUnixSeconds { get; private set; }
        /// <summary>Where the license is: one source.</summary>
        public Sources Source { get; private set; }
        /// <summary>What one seat covers.</summary>
        public CountingUnit CountingUnit { get; private set; }
        /// <summary>The container kind.</summary>
        public ContainerKind ContainerKind { get; private set; }
        /// <summary><see cref="LicenseFlags"/> bits.</summary>
        public LicenseFlags Flags { get; private set; }
        /// <summary>What <see cref="Session.Acquire"/> of this license would meet now, free seats
        /// aside: <see cref="Tessera.Status.Ok"/>, or the verdict (<see cref="Tessera.Status.Expired"/>,
        /// <see cref="Tessera.Status.VmNotAllowed"/>, <see cref="Tessera.Status.ClockRollback"/>, ...).</summary>
        public Status Status { get; private set; }
        /// <summary>How a dongle is attached (<see cref="Tessera.Transport.None"/> for a software container).</summary>
        public Transport Transport { get; private set; }
        /// <summary>The container serial.</summary>
        public string ContainerSerial { get; private set; }
        /// <summary>The license server's name for a network license; "" otherwise.</summary>
        public string Server { get; private set; }

        /// <summary>For a borrowed seat (<see cref="LicenseFlags.Borrowed"/>): when it ends, in
        /// seconds since the Unix epoch; 0 otherwise.</summary>
        public ulong BorrowedUntilUnixSeconds { get; private set; }

        /// <summary>Whether it is a seat borrowed from a license server, kept on this machine.</summary>
        public bool Borrowed { get { return (Flags & LicenseFlags.Borrowed) != 0; } }

        /// <summary>Whether the license allows exclusive use.</summary>
        public bool ExclusiveAllowed { get { return (Flags & LicenseFlags.ExclusiveAllowed) != 0; } }

        /// <summary>The expiry (UTC), or null when the license is perpetual.</summary>
        public DateTime? Expiry
        {
            get
            {
                if (ExpiryUnixSeconds == 0) return null;
                return new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddSeconds(ExpiryUnixSeconds);
            }
        }

        internal unsafe LicenseInfo(LicenseInfoNative d)
        {
            VendorId = d.vendor_id;
            ProductCode = d.product_code;
            Features = d.features;
            Quantity = d.quantity;
            SeatsInUse = d.seats_in_use;
            ExpiryUnixSeconds = d.expiry;
            Source = (Sources)d.source;
            CountingUnit = (CountingUnit)d.counting_unit;
            ContainerKind = (ContainerKind)d.container_kind;
            Flags = (LicenseFlags)d.flags;
            Status = (Status)d.status;
            Transport = (Transport)d.transport;
            ContainerSerial = SeatInfo.Decode(d.container_serial);
            Server = SeatInfo.Decode(d.server);
            // An entry filled only as far as the first struct (an older library) leaves it 0.
            BorrowedUntilUnixSeconds = d.struct_size >= Marshal.OffsetOf(typeof(LicenseInfoNative), "borrowed_until").ToInt64() + 8
                ? d.borrowed_until : 0;
        }

        /// <summary>A one-line description.</summary>
        public override string ToString()
        {
            return string.Format("product {0} of vendor {1:x}, features {2:x}, {3} of {4} seat(s) per {5}, {6} {7}{8}: {9}",
                                 ProductCode, VendorId, Features, SeatsInUse, Quantity, CountingUnit,
                                 ContainerKind, ContainerSerial, Server.Length > 0 ? " on " + Server : "", Status);
        }
    }
}

// Seat.cs: a held seat (tessera_acquire ... tessera_release), its info, and the product
// key's encrypt and decrypt.
using System;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace Tessera
{
    /// <summary>A held seat. Dispose (or <see cref="Release"/>) releases it; a seat the app
    /// forgets is released by its SafeHandle's finalizer. Thread-safe. After release, or after
    /// its session was closed (which releases its seats), every member but
    /// Release/Dispose/IsReleased throws <see cref="ObjectDisposedException"/>.</summary>
    public sealed class Seat : IDisposable
    {
        readonly Session session;   // keeps the session (and its handle) alive while the seat is
        readonly SeatHandle handle;
        // Set at Release. The SafeHandle alone is not enough: while calls on other threads
        // hold a reference to it, Dispose leaves it open (IsClosed stays false) until the
        // last call returns, so new calls would still get through.
        int released;

        internal Seat(Session session, SeatHandle handle)
        {
            this.session = session;
            this.handle = handle;
        }

        /// <summary>The session this seat was acquired in.</summary>
        public Session Session { get { return session; } }

        /// <summary>The handle (still owned by this seat).</summary>
        public SeatHandle Handle { get { return handle; } }

        /// <summary>Whether the seat was released (by this object or by closing its session).</summary>
        public bool IsReleased
        {
            get { return Volatile.Read(ref released) != 0 || handle.IsClosed || session.IsClosed; }
        }

        void ThrowIfReleased()
        {
            if (Volatile.Read(ref released) != 0 || handle.IsClosed)
                throw new ObjectDisposedException("Tessera.Seat", "the seat was released");
            if (session.IsClosed)
                throw new ObjectDisposedException("Tessera.Seat",
                    "the session that held this seat was closed, which released it");
        }

        /// <summary>What the seat is (<c>tessera_seat_info</c>).</summary>
        public SeatInfo Info
        {
            get
            {
                ThrowIfReleased();
                SeatDetailsNative d = new SeatDetailsNative();
                d.struct_size = (uint)Marshal.SizeOf(typeof(SeatDetailsNative));
                Errors.ThrowIfError(NativeMethods.tessera_seat_info(handle, ref d), "tessera_seat_info");
                return new SeatInfo(d);
            }
        }

        /// <summary>Encrypts <paramref name="data"/> with the product key (<c>tessera_encrypt</c>).
        /// The ciphertext is <see cref="Library.CiphertextOverhead"/> bytes longer, self-describing,
        /// and decrypts on any machine licensed for the product. A seat on a license server
        /// encrypts in the app (format 2, under its own seat key) and keeps working while its
        /// server is out of reach, for as long as its lease runs.</summary>
        public byte[] Encrypt(byte[] data, CryptMode mode = CryptMode.Derived)
        {
            if (data == null) throw new ArgumentNullException("data");
            return Crypt(true, (uint)mode, data);
        }

        /// <summary>Decrypts a Tessera ciphertext (<c>tessera_decrypt</c>). Throws
        /// <see cref="TamperedException"/> when it was modified in any way,
        /// <see cref="MalformedDataException"/> when it is not a ciphertext at all. A seat on a
        /// license server opens what it wrote, and what it opened before, with its server out
        /// of reach; what it never opened needs the server.</summary>
        public byte[] Decrypt(byte[] ciphertext)
        {
            if (ciphertext == null) throw new ArgumentNullException("ciphertext");
            return Crypt(false, 0, ciphertext);
        }

        Status Call(bool encrypt, uint flags, byte[] input, byte[] output, out UIntPtr outLen)
        {
            UIntPtr inLen = (UIntPtr)(uint)input.Length;
            UIntPtr cap = (UIntPtr)(uint)(output == null ? 0 : output.Length);
            return encrypt
                ? NativeMethods.tessera_encrypt(handle, flags, input, inLen, output, cap, out outLen)
                : NativeMethods.tessera_decrypt(handle, flags, input, inLen, output, cap, out outLen);
        }

        byte[] Crypt(bool encrypt, uint flags, byte[] input)
        {
            string name = encrypt ? "tessera_encrypt" : "tessera_decrypt";
            ThrowIfReleased();
            // Size query: (NULL, 0) answers TESSERA_E_BUFFER_TOO_SMALL with the size needed.
            UIntPtr need;
            Status st = Call(encrypt, flags, input, null, out need);
            if (st == Status.Ok) return new byte[0];
            if (st != Status.BufferTooSmall) Errors.ThrowIfError(st, name);
            byte[] output = new byte[checked((int)need.ToUInt64())];
            UIntPtr n;
            st = Call(encrypt, flags, input, output, out n);
            if (st != Status.Ok)
            {
                // Read the detail before anything else can touch it, then drop what was written.
                try { Errors.ThrowIfError(st, name); }
                finally { Array.Clear(output, 0, output.Length); }
            }
            int len = checked((int)n.ToUInt64());
            if (len != output.Length) Array.Resize(ref output, len);
            return output;
        }

        /// <summary>Releases the seat (<c>tessera_release</c>). Releasing twice is harmless.
        /// Calls already running on other threads finish first; later calls throw
        /// <see cref="ObjectDisposedException"/>.</summary>
        public void Release()
        {
            Interlocked.Exchange(ref released, 1);
            handle.Dispose();
        }

        /// <summary>Same as <see cref="Release"/>.</summary>
        public void Dispose()
        {
            Release();
        }
    }

    /// <summary>What a seat is (<c>tessera_seat_details</c>, strings decoded).</summary>
    public sealed class SeatInfo
    {

        /// <summary>The publisher.</summary>
        public uint VendorId { get; private set; }
        /// <summary>The product.</summary>
        public uint ProductCode { get; private set; }
        /// <summary>Feature bits the license grants.</summary>
        public uint Features { get; private set; }
        /// <summary>The license quantity.</summary>
        public uint Quantity { get; private set; }
        /// <summary>Seats of the license in use now, this one included.</summary>
        public uint SeatsInUse { get; private set; }
        /// <summary>Expiry in seconds since the Unix epoch; 0 when the license is perpetual.</summary>
        public ulong ExpiryUnixSeconds { get; private set; }
        /// <summary>Where the license is: one source.</summary>
        public Sources Source { get; private set; }
        /// <summary>What one seat covers.</summary>
        public CountingUnit CountingUnit { get; private set; }
        /// <summary>The container kind.</summary>
        public ContainerKind ContainerKind { get; private set; }
        /// <summary>Whether the seat is held exclusively.</summary>
        public bool Exclusive { get; private set; }
        /// <summary>Whether the seat is one borrowed from a license server
        /// (<c>TESSERA_SEAT_BORROWED</c>); its expiry is then when the borrowing ends.</summary>
        public bool Borrowed { get; private set; }
        /// <summary>The container serial.</summary>
        public string ContainerSerial { get; private set; }
        /// <summary>How a dongle is attached (<see cref="Tessera.Transport.None"/> for a software container).</summary>
        public Transport Transport { get; private set; }
        /// <summary>The license server's name for a network seat; "" otherwise.</summary>
        public string Server { get; private set; }

        /// <summary>The expiry, or null when the license is perpetual.</summary>
        public DateTime? Expiry
        {
            get
            {
                if (ExpiryUnixSeconds == 0) return null;
                return new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddSeconds(ExpiryUnixSeconds);
            }
        }

        internal unsafe SeatInfo(SeatDetailsNative d)
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
            Exclusive = (d.flags & (uint)AcquireFlags.Exclusive) != 0;
            Borrowed = (d.flags & (uint)SeatFlags.Borrowed) != 0;
            Transport = (Transport)d.transport;
            ContainerSerial = Decode(d.container_serial);
            Server = Decode(d.server);
        }

        /// <summary>A NUL-terminated UTF-8 field of at most <c>TESSERA_SERIAL_MAX</c> bytes.</summary>
        internal static unsafe string Decode(byte* p)
        {
            int n = 0;
            while (n < NativeMethods.TESSERA_SERIAL_MAX && p[n] != 0) n++;
            byte[] b = new byte[n];
            Marshal.Copy((IntPtr)p, b, 0, n);
            return Encoding.UTF8.GetString(b);
        }

        /// <summary>A one-line description.</summary>
        public override string ToString()
        {
            return string.Format("product {0} of vendor {1:x}, features {2:x}, {3} of {4} seat(s) per {5}, {6} {7}",
                                 ProductCode, VendorId, Features, SeatsInUse, Quantity, CountingUnit,
                                 ContainerKind, ContainerSerial);
        }
    }
}

// Session.cs: the app's open handle to the runtime (tessera_open ... tessera_close).
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace Tessera
{
    /// <summary>What <see cref="Session.Open(SessionOptions)"/> needs (<c>tessera_open_options</c>).</summary>
    public sealed class SessionOptions
    {
        /// <summary>The publisher's vendor id.</summary>
        public uint VendorId { get; set; }

        /// <summary>The publisher's Ed25519 public key, <see cref="Library.PublisherKeyLength"/> bytes.</summary>
        public byte[] PublisherKey { get; set; }

        /// <summary>Where licenses may come from; all by default.</summary>
        public Sources Sources { get; set; }

        /// <summary>How long any one operation may wait; <see cref="TimeSpan.Zero"/> (the
        /// default) means the library's default (5 seconds).</summary>
        public TimeSpan Timeout { get; set; }

        /// <summary>License servers, comma-separated <c>host[:port]</c>; null (the default)
        /// means the TESSERA_SERVERS environment variable.</summary>
        public string Servers { get; set; }

        /// <summary>Options for a publisher, with every other setting at its default.</summary>
        public SessionOptions(uint vendorId, byte[] publisherKey)
        {
            VendorId = vendorId;
            PublisherKey = publisherKey;
            Sources = Sources.All;
            Timeout = TimeSpan.Zero;
        }
    }

    /// <summary>An open session. Dispose (or <see cref="Close"/>) closes it and releases every
    /// seat it still holds; a session the app forgets is closed by its SafeHandle's finalizer.
    /// Thread-safe: many threads may acquire from one session. After closing, every member
    /// but Close/Dispose/IsClosed throws <see cref="ObjectDisposedException"/>.</summary>
    public sealed class Session : IDisposable
    {
        readonly SessionHandle handle;
        int closed;   // set at Close: the SafeHandle stays open while calls hold it (see Seat)

        Session(SessionHandle handle)
        {
            this.handle = handle;
        }

        /// <summary>Opens a session for the publisher <paramref name="vendorId"/> whose public
        /// key is <paramref name="publisherKey"/>, looking in every license source.</summary>
        public static Session Open(uint vendorId, byte[] publisherKey)
        {
            return Open(new SessionOptions(vendorId, publisherKey));
        }

        /// <summary>Opens a session (<c>tessera_open</c>). Succeeds even when there is no license
        /// yet, so the app can offer activation; <see cref="Acquire"/> then says why there is none.
        /// Throws <see cref="InvalidArgumentException"/> for a key of the wrong length, a vendor
        /// id of 0 or unknown source bits.</summary>
        public static Session Open(SessionOptions options)
        {
            if (options == null) throw new ArgumentNullException("options");
            if (options.PublisherKey == null) throw new ArgumentNullException("options.PublisherKey");
            if (options.Timeout < TimeSpan.Zero || options.Timeout.TotalMilliseconds > uint.MaxValue)
                throw new ArgumentOutOfRangeException("options.Timeout", options.Timeout,
                                                      "must be between 0 and 2^32-1 milliseconds");
            Library.EnsureLoaded();

            OpenOptionsNative o = Defaults();
            o.struct_size = (uint)Marshal.SizeOf(typeof(OpenOptionsNative));
            o.vendor_id = options.VendorId;
            o.sources = (uint)options.Sources;
            o.timeout_ms = (uint)Math.Ceiling(options.Timeout.TotalMilliseconds);

            byte[] key = (byte[])options.PublisherKey.Clone();
            GCHandle pin = GCHandle.Alloc(key, GCHandleType.Pinned);
            IntPtr servers = IntPtr.Zero;
            try
            {
                if (options.Servers != null)
                {
                    byte[] s = Encoding.UTF8.GetBytes(options.Servers + "\0");
                    servers = Marshal.AllocHGlobal(s.Length);
                    Marshal.Copy(s, 0, servers, s.Length);
                }
                o.publisher_key = key.Length == 0 ? IntPtr.Zero : pin.AddrOfPinnedObject();
                o.publisher_key_len = (UIntPtr)(uint)key.Length;
                o.servers = servers;

                SessionHandle h;
                Status st = NativeMethods.tessera_open(ref o, out h);
                if (st != Status.Ok)
                {
                    try { Errors.ThrowIfError(st, "tessera_open"); }
                    finally { if (h != null) h.SetHandleAsInvalid(); }
                }
                if (h == null || h.IsInvalid)
                    throw new InternalErrorException(Status.Internal,
                        "tessera_open: returned OK without a session handle", "", "tessera_open");
                return new Session(h);
            }
            finally
            {
                pin.Free();
                if (servers != IntPtr.Zero) Marshal.FreeHGlobal(servers);
            }
        }

        /// <summary>The library's defaults from <c>tessera_open_options_init</c>, for the struct
        /// as this binding declares it (the library writes exactly that many bytes).</summary>
        static OpenOptionsNative Defaults()
        {
            int size = Marshal.SizeOf(typeof(OpenOptionsNative));
            IntPtr buf = Marshal.AllocHGlobal(size);
            try
            {
                Errors.ThrowIfError(NativeMethods.tessera_open_options_init(buf, new UIntPtr((uint)size)),
                                    "tessera_open_options_init");
                return (OpenOptionsNative)Marshal.PtrToStructure(buf, typeof(OpenOptionsNative));
            }
            finally
            {
                Marshal.FreeHGlobal(buf);
            }
        }

        /// <summary>The handle (still owned by this session).</summary>
        public SessionHandle Handle { get { return handle; } }

        /// <summary>Whether the session was closed.</summary>
        public bool IsClosed { get { return Volatile.Read(ref closed) != 0 || handle.IsClosed; } }

        internal void ThrowIfClosed()
        {
            if (IsClosed)
                throw new ObjectDisposedException("Tessera.Session", "the session was closed");
        }

        /// <summary>Acquires a seat of <paramref name="productCode"/> whose license grants at
        /// least the <paramref name="features"/> bits (<c>tessera_acquire</c>). Throws
        /// <see cref="NoLicenseException"/>, <see cref="NoSeatException"/>,
        /// <see cref="FeatureMissingException"/>, ... saying why there is none.</summary>
        public Seat Acquire(uint productCode, uint features = 0, AcquireFlags flags = AcquireFlags.None)
        {
            ThrowIfClosed();
            SeatHandle h;
            Status st = NativeMethods.tessera_acquire(handle, productCode, features, (uint)flags, out h);
            return NewSeat(st, h, "tessera_acquire");
        }

        /// <summary>Like <see cref="Acquire"/>, but while every seat is taken
        /// (<see cref="NoSeatException"/>, or <see cref="ExclusiveDeniedException"/> because another
        /// holder has the license) waits up to <paramref name="timeout"/> for one to come free
        /// (<c>tessera_acquire_wait</c>: the library tries again after pauses growing from 20 ms to
        /// 500 ms). When the time is up the last answer is thrown; any other answer
        /// (<see cref="NoLicenseException"/>, ...) ends the wait at once. <see cref="TimeSpan.Zero"/>
        /// tries once. Blocks the calling thread; other threads may use the session meanwhile.
        /// Throws <see cref="ArgumentOutOfRangeException"/> for a negative timeout or one longer
        /// than 2^32-1 milliseconds.</summary>
        public Seat AcquireWait(uint productCode, TimeSpan timeout, uint features = 0,
                                AcquireFlags flags = AcquireFlags.None)
        {
            if (timeout < TimeSpan.Zero || Math.Ceiling(timeout.TotalMilliseconds) > uint.MaxValue)
                throw new ArgumentOutOfRangeException("timeout", timeout,
                                                      "must be between 0 and 2^32-1 milliseconds");
            // Rounded up, so that a wait shorter than a millisecond is not a single try.
            uint ms = (uint)Math.Ceiling(timeout.TotalMilliseconds);
            ThrowIfClosed();
            SeatHandle h;
            Status st = NativeMethods.tessera_acquire_wait(handle, productCode, features, (uint)flags, ms, out h);
            return NewSeat(st, h, "tessera_acquire_wait");
        }

        Seat NewSeat(Status st, SeatHandle h, string call)
        {
            if (st != Status.Ok)
            {
                try { Errors.ThrowIfError(st, call); }
                finally { if (h != null) h.SetHandleAsInvalid(); }
            }
            if (h == null || h.IsInvalid)
                throw new InternalErrorException(Status.Internal,
                    call + ": returned OK without a seat handle", "", call);
            return new Seat(this, h);
        }

        /// <summary>How many times <see cref="Licenses"/> asks again when the list grew between
        /// its size query and the call that fills the array.</summary>
        internal const int ListTries = 8;

        /// <summary><c>tessera_license_list</c> of one session, as <see cref="ListLicenses"/> calls it.</summary>
        internal delegate Status LicenseListCall(LicenseInfoNative[] @out, UIntPtr out_cap, UIntPtr entry_size,
                                                 out UIntPtr out_count);

        /// <summary>The licenses of the session's publisher that its sources hold (software
        /// containers, dongles, the license server), without taking a seat
        /// (<c>tessera_license_list</c>): product, features, expiry, quantity, seats in use, and
        /// what an acquire would meet (<see cref="LicenseInfo.Status"/>). Licenses the
        /// publisher's key does not verify are not listed; no license at all is an empty list.
        /// Throws when a source cannot be read and no other source holds a license (the
        /// server is down, the home is unreadable).</summary>
        public IReadOnlyList<LicenseInfo> Licenses()
        {
            ThrowIfClosed();
            return ListLicenses((LicenseInfoNative[] o, UIntPtr cap, UIntPtr size, out UIntPtr n) =>
                NativeMethods.tessera_license_list(handle, o, cap, size, out n));
        }

        /// <summary>The size query, then the call, asking again (a bounded number of times) while
        /// the list grew between two calls. The call is passed in so that tests can make it grow.</summary>
        internal static IReadOnlyList<LicenseInfo> ListLicenses(LicenseListCall call)
        {
            const string fn = "tessera_license_list";
            UIntPtr entry = (UIntPtr)(uint)Marshal.SizeOf(typeof(LicenseInfoNative));
            LicenseInfoNative[] buf = null;   // the size query: (NULL, 0)
            for (int i = 0; i < ListTries; i++)
            {
                int cap = buf == null ? 0 : buf.Length;
                UIntPtr count;
                Status st = call(buf, (UIntPtr)(uint)cap, entry, out count);
                ulong n = count.ToUInt64();
                if (st == Status.Ok)
                {
                    if (n > (ulong)cap)
                        throw new InternalErrorException(Status.Internal, string.Format(
                            "{0}: {1} licenses listed into room for {2}", fn, n, cap), "", fn);
                    var list = new List<LicenseInfo>((int)n);
                    for (int j = 0; j < (int)n; j++) list.Add(new LicenseInfo(buf[j]));
                    return list.AsReadOnly();
                }
                if (st != Status.BufferTooSmall) Errors.ThrowIfError(st, fn);
                if (n <= (ulong)cap)
                    throw new InternalErrorException(Status.Internal, string.Format(
                        "{0}: room for {1} licenses was too small for {2}", fn, cap, n), "", fn);
                // More licenses than room: the first time the size query's answer, later a list
                // that grew between two calls (an activation was installed meanwhile, say).
                buf = new LicenseInfoNative[checked((int)n)];
            }
            throw new BufferTooSmallException(Status.BufferTooSmall, string.Format(
                "{0}: the license list grew between each of {1} tries to read it", fn, ListTries), "", fn);
        }

        /// <summary>Step one of offline activation (<c>tessera_activation_request</c>): a request
        /// for this machine to send to the publisher. Makes the publisher's software container
        /// here if there is none.</summary>
        public byte[] ActivationRequest()
        {
            ThrowIfClosed();
            UIntPtr need;
            Status st = NativeMethods.tessera_activation_request(handle, null, UIntPtr.Zero, out need);
            if (st == Status.Ok) return new byte[0];
            if (st != Status.BufferTooSmall) Errors.ThrowIfError(st, "tessera_activation_request");
            // The request made by the size query is the one the next call returns.
            byte[] buf = new byte[checked((int)need.ToUInt64())];
            UIntPtr n;
            st = NativeMethods.tessera_activation_request(handle, buf, (UIntPtr)(uint)buf.Length, out n);
            Errors.ThrowIfError(st, "tessera_activation_request");
            int len = checked((int)n.ToUInt64());
            if (len != buf.Length) Array.Resize(ref buf, len);
            return buf;
        }

        /// <summary>Step two (<c>tessera_activation_install</c>): installs the publisher's answer
        /// into this machine's software container, checked against this session's publisher
        /// key. Licenses already there are kept; on failure nothing changes.</summary>
        public void ActivationInstall(byte[] activation)
        {
            if (activation == null) throw new ArgumentNullException("activation");
            ThrowIfClosed();
            Status st = NativeMethods.tessera_activation_install(handle, activation, (UIntPtr)(uint)activation.Length);
            Errors.ThrowIfError(st, "tessera_activation_install");
        }

        /// <summary>Borrows a seat of <paramref name="productCode"/> (with at least the
        /// <paramref name="features"/> bits) from the session's license server for
        /// <paramref name="days"/> days (<c>tessera_borrow</c>). It is kept in this machine's
        /// container, and <see cref="Acquire"/> serves it from there with no server until it
        /// ends. Returns when it ends (UTC). Throws <see cref="InvalidArgumentException"/> for
        /// days beyond what the license allows, <see cref="NoLicenseException"/> when the
        /// license does not lend (or there is no server), <see cref="NoSeatException"/> when
        /// every seat is taken, a <see cref="TransportException"/> when no server can be reached.</summary>
        public DateTime Borrow(uint productCode, uint days, uint features = 0)
        {
            ThrowIfClosed();
            ulong until;
            Status st = NativeMethods.tessera_borrow(handle, productCode, features, days, out until);
            Errors.ThrowIfError(st, "tessera_borrow");
            return new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddSeconds(until);
        }

        /// <summary>Gives a seat of <paramref name="productCode"/> borrowed into this machine
        /// back to the license server before it ends (<c>tessera_return_borrowed</c>); the
        /// server frees it at once. Throws <see cref="NoLicenseException"/> when none is
        /// borrowed here, a <see cref="TransportException"/> when no server can be reached
        /// (the seat is kept).</summary>
        public void ReturnBorrowed(uint productCode)
        {
            ThrowIfClosed();
            Status st = NativeMethods.tessera_return_borrowed(handle, productCode);
            Errors.ThrowIfError(st, "tessera_return_borrowed");
        }

        /// <summary>Closes the session (its seats are released). Closing twice is harmless.</summary>
        public void Close()
        {
            Interlocked.Exchange(ref closed, 1);
            handle.Dispose();
        }

        /// <summary>Same as <see cref="Close"/>.</summary>
        public void Dispose()
        {
            Close();
        }
    }
}
